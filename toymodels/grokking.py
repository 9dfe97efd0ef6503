"""The toy model of Liu et al. (2022), "Towards Understanding Grokking: An Effective
Theory of Representation Learning" (arXiv 2205.10343), in plain PyTorch.

Task: symbols 0..p-1, samples are the unordered pairs (i, j), i <= j, labelled i + j
(not mod p: 2p - 1 classes). A representation r maps each symbol to a vector of
dimension ``hidden_rep_dim``; the pair is encoded as h = r(i) + r(j) and a decoder MLP
maps h to the output. With MSE each sum has a fixed random target vector and the
prediction is the nearest one; with cross-entropy the decoder outputs logits.

Two representations:
- ``"embedding"`` (the paper's toy model): a free table E of shape (p, hidden_rep_dim).
- ``"encoder"`` (the repository's Sacred script): fixed random symbol vectors through
  an encoder MLP.

``train`` is the hot loop: one forward over all pairs per step (the loss uses the
train rows, the test metrics the others), per-step records kept as tensors and reduced
once per chunk, so threshold steps are exact without a host sync per metric per step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from toymodels.phases import first_crossing
from toymodels.representation import PARALLELOGRAM_TOLERANCE, rqi

# name -> (module, function, backward(grad, output)): the backward is written in terms of
# the activation's output, so the training loop keeps no pre-activations.
ACTIVATIONS = {
    "tanh": (nn.Tanh, torch.tanh, torch.ops.aten.tanh_backward),
    "relu": (nn.ReLU, torch.relu, lambda grad, a: torch.ops.aten.threshold_backward(grad, a, 0)),
    "sigmoid": (nn.Sigmoid, torch.sigmoid, torch.ops.aten.sigmoid_backward),
}
REPRESENTATIONS = ("embedding", "encoder")
LOSSES = ("mse", "cross_entropy")
OPTIMIZERS = ("adamw", "adam")  # adam: coupled L2 weight decay, as the Sacred script
DTYPES = {"float32": torch.float32, "float64": torch.float64}
METRICS = ("train.loss", "train.acc", "test.loss", "test.acc", "rqi")


# ----------------------------------------------------------------------------- data
def n_pairs(p: int) -> int:
    return p * (p + 1) // 2


def n_train_pairs(p: int, train_fraction: float) -> int:
    """Training pairs for a fraction of the p(p+1)/2 pairs (rounded to nearest)."""
    return int(round(train_fraction * n_pairs(p)))


@dataclass
class AdditionTask:
    """All pairs of the task with their labels and the train/test split."""

    p: int
    pairs: torch.Tensor  # (n, 2) long, i <= j
    labels: torch.Tensor  # (n,) long, i + j
    train_mask: torch.Tensor  # (n,) bool

    @property
    def n_classes(self) -> int:
        return 2 * self.p - 1

    @property
    def train_pairs(self) -> torch.Tensor:
        return self.pairs[self.train_mask]

    @property
    def test_pairs(self) -> torch.Tensor:
        return self.pairs[~self.train_mask]


def make_addition_task(p: int, train_fraction: float, seed: int) -> AdditionTask:
    """The p(p+1)/2 unordered pairs, a random ``train_fraction`` of them for training."""
    i, j = torch.triu_indices(p, p)
    pairs = torch.stack([i, j], dim=1)
    generator = torch.Generator().manual_seed(seed)
    train_rows = torch.randperm(len(pairs), generator=generator)[: n_train_pairs(p, train_fraction)]
    train_mask = torch.zeros(len(pairs), dtype=torch.bool)
    train_mask[train_rows] = True
    return AdditionTask(p=p, pairs=pairs, labels=i + j, train_mask=train_mask)


# ---------------------------------------------------------------------------- model
def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (not after the last)."""
    layers: list[nn.Module] = []
    for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if k:
            layers.append(ACTIVATIONS[activation][0]())
        layers.append(nn.Linear(fan_in, fan_out))
    return nn.Sequential(*layers)


class ToyAdditionModel(nn.Module):
    """h = r(i) + r(j), output = decoder(h).

    Args:
        p: number of symbols.
        hidden_rep_dim: dimension of the symbol representation r (1 in the paper).
        output_dim: decoder output size (target-vector dimension for MSE, 2p - 1 for CE).
        representation: "embedding" (free table) or "encoder" (MLP over random symbol vectors).
        init_scale: the embedding table starts uniform(-0.5, 0.5) * init_scale.
        symbol_rep_dim, encoder_width, encoder_depth: the encoder's input dimension, width
            and number of linear layers (encoder representation only).
        decoder_width, decoder_depth: the decoder's width and number of linear layers.
        activation: nonlinearity of both MLPs.
        seed: seeds the random symbol vectors of the encoder.
    """

    def __init__(self, p: int, hidden_rep_dim: int, output_dim: int, representation: str = "embedding",
                 init_scale: float = 1.0, symbol_rep_dim: int = 10, encoder_width: int = 200,
                 encoder_depth: int = 3, decoder_width: int = 200, decoder_depth: int = 3,
                 activation: str = "tanh", seed: int = 0):
        super().__init__()
        self.representation = representation
        self.activation = activation
        if representation == "embedding":
            self.embedding = nn.Parameter((torch.rand(p, hidden_rep_dim) - 0.5) * init_scale)
        else:
            symbols = torch.randn(p, symbol_rep_dim, generator=torch.Generator().manual_seed(seed))
            self.register_buffer("symbol_vectors", symbols)
            widths = [symbol_rep_dim] + [encoder_width] * (encoder_depth - 1) + [hidden_rep_dim]
            self.encoder = mlp(widths, activation)
        widths = [hidden_rep_dim] + [decoder_width] * (decoder_depth - 1) + [output_dim]
        self.decoder = mlp(widths, activation)

    def symbol_representations(self) -> torch.Tensor:
        """r(k) for every symbol, shape (p, hidden_rep_dim)."""
        if self.representation == "embedding":
            return self.embedding
        return self.encoder(self.symbol_vectors)

    def representation_parameters(self) -> list[nn.Parameter]:
        return [self.embedding] if self.representation == "embedding" else list(self.encoder.parameters())

    def layers(self) -> tuple[list[nn.Linear], list[nn.Linear]]:
        """The encoder's (empty for the embedding table) and the decoder's linear layers."""
        linear = lambda seq: [m for m in seq if isinstance(m, nn.Linear)]  # noqa: E731
        return (linear(self.encoder) if self.representation == "encoder" else []), linear(self.decoder)

    def decode_pairs(self, r: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """Decoder output for each pair given the symbol representations r."""
        return self.decoder(r[pairs[:, 0]] + r[pairs[:, 1]])

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        return self.decode_pairs(self.symbol_representations(), pairs)


class Objective:
    """Per-row loss and prediction for MSE onto fixed random target vectors, or CE.

    Args:
        loss: "mse" or "cross_entropy".
        n_classes: number of sums, 2p - 1.
        target_dim: dimension of the MSE target vectors.
        seed: seeds the target vectors (N(0, 1) entries, as in the paper).
    """

    def __init__(self, loss: str, n_classes: int, target_dim: int, seed: int, dtype=torch.float32):
        self.loss = loss
        self.output_dim = target_dim if loss == "mse" else n_classes
        self.dtype = dtype
        if loss == "mse":
            generator = torch.Generator().manual_seed(seed)
            self.targets = torch.randn(n_classes, target_dim, generator=generator).to(dtype)
            self._target_sq = self.targets.pow(2).sum(dim=1)

    def row_loss(self, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.loss == "mse":
            return (output - self.targets[labels]).pow(2).mean(dim=1)
        return nn.functional.cross_entropy(output, labels, reduction="none")

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        if self.loss == "mse":  # nearest target vector: argmin ||o||^2 - 2 o.t + ||t||^2
            return (self._target_sq - 2 * output @ self.targets.T).argmin(dim=1)
        return output.argmax(dim=1)


@dataclass
class OptimizerSettings:
    """Adam(W) on two parameter groups, the representation ("encoder") and the decoder.

    "adamw" (the paper) decays weights decoupled from the gradient; "adam" (the
    repository's Sacred script) adds weight_decay * theta to the gradient (coupled L2).
    """

    name: str = "adamw"
    encoder_lr: float = 1e-3
    decoder_lr: float = 1e-4
    encoder_weight_decay: float = 0.0
    decoder_weight_decay: float = 0.0
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8


# ------------------------------------------------------------------------- training
@dataclass
class TrainOutcome:
    """What a training run reached. Threshold steps are None when never reached."""

    steps: int  # steps measured (0 .. steps-1)
    t_train: Optional[int] = None
    t_test: Optional[int] = None
    t_rqi: Optional[int] = None
    final: dict = field(default_factory=dict)  # the METRICS at the last measured step
    stopped_early: bool = False


def train(models, tasks, objectives, optimizers, train_steps: int, log_every: int,
          on_log: Optional[Callable[[int, int, dict], None]] = None, acc_threshold: float = 0.9,
          rqi_threshold: float = 0.95, rqi_tolerance: float = PARALLELOGRAM_TOLERANCE,
          chunk_steps: int = 500, stop_when: Optional[Callable[[int, TrainOutcome], bool]] = None,
          progress: Optional[bool] = None, resume: Optional[dict] = None,
          on_checkpoint: Optional[Callable[[dict], None]] = None) -> list[TrainOutcome]:
    """Full-batch training of one model or of G models of the same shape at once.

    Each of ``models``, ``tasks``, ``objectives``, ``optimizers`` is one item or a list of
    G (a single item is shared). Every model keeps its own data split, targets, learning
    rates and weight decays; the G models advance together through batched matrix
    products, so a sweep's grid points cost little more than one. Metrics at step s are
    measured on the parameters before update s, for train and test from the same forward.

    ``on_log(k, step, metrics)`` is called for model k in step order at every multiple of
    ``log_every``, at each first threshold crossing and at the last step.
    ``stop_when(k, outcome)`` is asked after every chunk of steps; once it returns True
    model k is frozen (its outcome and parameters stay as they were; without checkpoints
    it also leaves the batch, so the others run faster) and training ends when every
    model has stopped. Trained parameters are written back into ``models``.

    Checkpoints: ``on_checkpoint(state)`` is called after every chunk with the training
    state at that chunk boundary (parameters, Adam moments, threshold steps so far, the
    next step); ``resume=state`` continues from it. Training is deterministic given the
    state, so an interrupted and resumed run ends exactly where an uninterrupted one does.
    """
    models, tasks, objectives, optimizers = _as_batch(models, tasks, objectives, optimizers)
    G = len(models)
    net = _FlatNetwork(models, optimizers)
    p = tasks[0].p
    pairs, labels = tasks[0].pairs, tasks[0].labels
    if any(t.p != p for t in tasks) or any(o.loss != objectives[0].loss for o in objectives):
        raise ValueError("models trained together must share p and the loss")
    dtype = net.dtype
    train_mask = torch.stack([t.train_mask for t in tasks])  # (G, n)
    n_train, n_test = train_mask.sum(1), (~train_mask).sum(1)
    train_weights = train_mask.to(dtype) / n_train[:, None].to(dtype)
    loss_name = objectives[0].loss
    if loss_name == "mse":
        targets = torch.stack([o.targets.to(dtype) for o in objectives])  # (G, classes, D)
        row_targets = targets[:, labels]  # (G, n, D)
        targets_T = targets.transpose(1, 2).contiguous()
        target_sq = targets.pow(2).sum(-1)[:, None, :]  # (G, 1, classes)
        grad_scale = (train_weights * (2.0 / targets.shape[-1]))[..., None]  # d loss / d diff
    # h = r(i) + r(j) for every pair as one product with the pair-symbol incidence matrix
    incidence = torch.zeros(len(pairs), p, dtype=dtype)
    incidence.index_put_((torch.arange(len(pairs)), pairs[:, 0]), torch.ones(len(pairs), dtype=dtype))
    incidence.index_put_((torch.arange(len(pairs)), pairs[:, 1]), torch.ones(len(pairs), dtype=dtype),
                         accumulate=True)
    incidence_T = incidence.T.contiguous()

    outcomes = [TrainOutcome(steps=0) for _ in range(G)]
    active = torch.ones(G, dtype=torch.bool)
    batch = list(range(G))  # the model in each row of the batch
    # Without checkpoints (whose state is the whole batch), stopped models leave the batch.
    compact = stop_when is not None and on_checkpoint is None and resume is None and G > 1
    start_step = 0
    if resume is not None:
        start_step = _restore(resume, net, outcomes, active, chunk_steps)
    bar = tqdm(total=train_steps, initial=start_step, desc="train", unit="step", disable=None if progress is None else not progress,
               mininterval=0.5, dynamic_ncols=True)
    records: dict[str, list] = {"row_loss": [], "correct": [], "rep": []}
    record_loss, record_correct, record_rep = records["row_loss"], records["correct"], records["rep"]

    def flush(first_step: int) -> None:
        """Reduce a chunk of per-step records to metrics, thresholds and log calls."""
        row_loss = torch.stack(records["row_loss"]).double()  # (K, G, n)
        correct = torch.stack(records["correct"])  # (K, G, n)
        reps = torch.stack(records["rep"]).double()  # (K, G, p, d)
        for values in records.values():
            values.clear()
        mask = train_mask[None]
        metrics = {
            "train.loss": ((row_loss * mask).sum(-1) / n_train).numpy(),
            # exact: integer counts divided in float64 (9/10 in float32 is < 0.9)
            "train.acc": ((correct & mask).sum(-1).double() / n_train).numpy(),
            "test.loss": ((row_loss * ~mask).sum(-1) / n_test).numpy(),
            "test.acc": ((correct & ~mask).sum(-1).double() / n_test).numpy(),
            "rqi": rqi(reps, rqi_tolerance).numpy(),
        }  # each (K, G)
        last_step = first_step + len(row_loss) - 1
        for b, k in enumerate(batch):  # batch row b holds model k
            if not active[k]:
                continue
            outcome = outcomes[k]
            crossings = set()
            for name, key, threshold, strict in (("t_train", "train.acc", acc_threshold, False),
                                                 ("t_test", "test.acc", acc_threshold, False),
                                                 ("t_rqi", "rqi", rqi_threshold, True)):
                if getattr(outcome, name) is None:
                    step = first_crossing(metrics[key][:, b], threshold, strict=strict, offset=first_step)
                    if step is not None:
                        setattr(outcome, name, step)
                        crossings.add(step)
            outcome.steps = last_step + 1
            outcome.final = {name: float(values[-1, b]) for name, values in metrics.items()}
            if outcome.steps < train_steps and stop_when is not None and stop_when(k, outcome):
                outcome.stopped_early = True
                active[k] = False
                net.freeze(b)
            if on_log is not None:
                for i, step in enumerate(range(first_step, last_step + 1)):
                    if step % log_every == 0 or step in crossings or step == last_step and (
                            outcome.steps == train_steps or outcome.stopped_early):
                        on_log(k, step, {name: float(values[i, b]) for name, values in metrics.items()})
        bar.update(len(row_loss))
        shown = outcomes[0].final
        bar.set_postfix({"train": f"{shown['train.acc']:.2f}", "test": f"{shown['test.acc']:.2f}",
                         "rqi": f"{shown['rqi']:.2f}"}, refresh=False)

    chunk_start = start_step
    for step in range(start_step, train_steps):
        r = net.representations()  # (G, p, d)
        hidden = torch.matmul(incidence, r)  # (G, n, d)
        output = net.decoder_forward(hidden)
        with torch.no_grad():
            if loss_name == "mse":
                diff = output - row_targets
                row_loss = diff.pow(2).mean(-1)
                grad_output = diff * grad_scale
                # nearest target vector: argmin ||t||^2 - 2 o.t (||o||^2 is the same for all t)
                predicted = torch.baddbmm(target_sq, output, targets_T, alpha=-2).argmin(-1)
            else:
                log_probs = torch.log_softmax(output, dim=-1)
                row_loss = -log_probs.gather(-1, labels.expand(len(batch), -1)[..., None]).squeeze(-1)
                grad_output = log_probs.exp()
                grad_output[..., labels.new_tensor(range(len(labels))), labels] -= 1.0
                grad_output *= train_weights[..., None]
                predicted = output.argmax(-1)
        record_loss.append(row_loss)
        record_correct.append(predicted == labels)
        record_rep.append(r.clone())  # the table is updated in place
        grad_hidden = net.decoder_backward(grad_output)
        net.representations_backward(torch.matmul(incidence_T, grad_hidden))
        net.optimizer_step()
        if step - chunk_start + 1 == chunk_steps or step == train_steps - 1:
            flush(chunk_start)
            chunk_start = step + 1
            if on_checkpoint is not None:
                on_checkpoint(_checkpoint(net, outcomes, active, chunk_start, chunk_steps))
            if not active.any():
                break
            if compact and not all(active[k] for k in batch):
                # stopped models leave the batch: their forward and backward would be wasted
                keep = [b for b, k in enumerate(batch) if active[k]]
                net, batch, index = net.compacted(keep), [batch[b] for b in keep], torch.tensor(keep)
                train_mask, n_train, n_test, train_weights = (x[index] for x in (train_mask, n_train, n_test,
                                                                                  train_weights))
                if loss_name == "mse":
                    row_targets, targets_T, target_sq, grad_scale = (x[index] for x in (row_targets, targets_T,
                                                                                         target_sq, grad_scale))
    bar.close()
    net.write_back()
    return outcomes


def _checkpoint(net: "_FlatNetwork", outcomes: list, active: torch.Tensor, next_step: int,
                chunk_steps: int) -> dict:
    """The training state at a chunk boundary, as plain tensors and numbers (torch.save-able)."""
    return {"next_step": next_step, "chunk_steps": chunk_steps, "theta": net.theta.clone(),
            "active": active.clone(), "frozen": sorted(set(range(len(outcomes))) - {g["model"] for g in net.groups}),
            "adam": [{"exp_avg": g["exp_avg"].clone(), "exp_avg_sq": g["exp_avg_sq"].clone(),
                      "step": g["step"].clone(), "model": g["model"]} for g in net.groups],
            "outcomes": [vars(o).copy() for o in outcomes]}


def _restore(state: dict, net: "_FlatNetwork", outcomes: list, active: torch.Tensor, chunk_steps: int) -> int:
    """Load a ``_checkpoint`` state into a freshly built network; returns the next step."""
    if state["chunk_steps"] != chunk_steps or state["theta"].shape != net.theta.shape:
        raise ValueError("the checkpoint was written by a different model shape or chunk size")
    for k in state["frozen"]:
        net.freeze(k)
    net.theta.copy_(state["theta"])
    for group, saved in zip(net.groups, state["adam"]):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            group[key].copy_(saved[key])
    active.copy_(state["active"])
    for outcome, saved in zip(outcomes, state["outcomes"]):
        vars(outcome).update(saved)
    return state["next_step"]


def _as_batch(*arguments):
    """Lists of equal length G from arguments that are single items or lists."""
    lists = [list(a) if isinstance(a, (list, tuple)) else None for a in arguments]
    G = max((len(x) for x in lists if x is not None), default=1)
    return [x if x is not None else [a] * G for a, x in zip(arguments, lists)]


class _FlatNetwork:
    """The parameters of G same-shaped models as one (G, P) buffer, with hand-written
    backward passes and an Adam(W) update over the whole buffer.

    At this size (a 200-wide MLP on 55 rows) autograd's per-node overhead costs more than
    the arithmetic; the gradients here are checked against autograd in the tests.
    """

    def __init__(self, models: list[ToyAdditionModel], optimizers: list[OptimizerSettings]):
        self.models, self.optimizers = models, optimizers
        first = models[0]
        self.representation, self.activation = first.representation, first.activation
        self._act, self._act_backward = ACTIVATIONS[first.activation][1:]
        encoder_layers, decoder_layers = zip(*(m.layers() for m in models))
        tensors = []  # (name, [per-model tensor], is_encoder)
        if self.representation == "embedding":
            tensors.append(("embedding", [m.embedding.detach() for m in models], True))
        for group, layer_lists in (("encoder", encoder_layers), ("decoder", decoder_layers)):
            for index in range(len(layer_lists[0])):
                tensors.append((f"{group}.{index}.weight", [ls[index].weight.detach() for ls in layer_lists],
                                group == "encoder"))
                tensors.append((f"{group}.{index}.bias", [ls[index].bias.detach() for ls in layer_lists],
                                group == "encoder"))
        shapes = [ts[0].shape for _, ts, _ in tensors]
        if any(t.shape != shape for (_, ts, _), shape in zip(tensors, shapes) for t in ts):
            raise ValueError("models trained together must have the same shapes")
        self.dtype = tensors[0][1][0].dtype
        G = len(models)
        self.theta = torch.cat([torch.stack(ts).reshape(G, -1) for _, ts, _ in tensors], dim=1)
        # Gradients are written straight into one persistent (G, P) buffer laid out like
        # theta: a fresh concatenated gradient every step costs a large allocation (and its
        # page faults), which at this size is as slow as a matrix product.
        self.grad = torch.zeros_like(self.theta)
        self.views, self.grad_views, offset = {}, {}, 0
        for (name, _, _), shape in zip(tensors, shapes):
            size = shape.numel()
            self.views[name] = self.theta[:, offset:offset + size].view(G, *shape)
            self.grad_views[name] = self.grad[:, offset:offset + size].view(G, *shape)
            offset += size
        self.is_encoder = torch.cat([torch.full((s.numel(),), enc) for (_, _, enc), s in zip(tensors, shapes)])
        self.symbol_vectors = first.symbol_vectors if self.representation == "encoder" else None
        # per layer: (weight name, W, W transposed, bias broadcast over rows), all views
        self.layer_views = {
            group: [(f"{group}.{i}.weight", self.views[f"{group}.{i}.weight"],
                     self.views[f"{group}.{i}.weight"].transpose(1, 2), self.views[f"{group}.{i}.bias"][:, None, :])
                    for i in range(len(layer_lists[0]))]
            for group, layer_lists in (("encoder", encoder_layers), ("decoder", decoder_layers))}
        # One parameter group per model and part (representation, decoder): a contiguous
        # slice of the model's row with its own learning rate and weight decay.
        names = {o.name for o in optimizers}
        if len(names) > 1:
            raise ValueError("models trained together must use the same optimizer")
        if any((o.betas, o.eps) != (optimizers[0].betas, optimizers[0].eps) for o in optimizers):
            raise ValueError("models trained together must share Adam's betas and eps")
        # The kernel behind torch.optim.AdamW(fused=True) / Adam(fused=True), called
        # directly: torch.optim's per-step Python bookkeeping costs several times the
        # kernel at this size. tests/test_toymodels.py checks it against torch.optim.
        self._adam_kernel = {"adamw": torch._fused_adamw_, "adam": torch._fused_adam_}[names.pop()]
        (self.beta1, self.beta2), self.eps = optimizers[0].betas, optimizers[0].eps
        n_encoder_params = int(self.is_encoder.sum())
        self.groups = []
        for k, o in enumerate(optimizers):
            for part, lr, decay in ((slice(0, n_encoder_params), o.encoder_lr, o.encoder_weight_decay),
                                    (slice(n_encoder_params, None), o.decoder_lr, o.decoder_weight_decay)):
                if part.start == part.stop:
                    continue
                param = self.theta[k, part]
                self.groups.append({"model": k, "part": part, "param": param, "grad": self.grad[k, part],
                                    "lr": lr, "weight_decay": decay,
                                    "exp_avg": torch.zeros_like(param), "exp_avg_sq": torch.zeros_like(param),
                                    "step": torch.zeros((), dtype=torch.float32)})
        self._saved: dict[str, list] = {}
        self.names = [name for name, _, _ in tensors]

    # -- forward and backward through an MLP whose layers are stored as views
    def _mlp_forward(self, group: str, x: torch.Tensor) -> torch.Tensor:
        layers = self.layer_views[group]
        inputs = []
        for index, (_, _, W_T, b) in enumerate(layers):
            inputs.append(x)
            x = torch.baddbmm(b, x, W_T)
            if index < len(layers) - 1:
                x = self._act(x)
        self._saved[group] = inputs
        return x

    def _mlp_backward(self, group: str, grad: torch.Tensor) -> torch.Tensor:
        inputs = self._saved.pop(group)
        for index in reversed(range(len(inputs))):
            x = inputs[index]
            weight_name, W, _, _ = self.layer_views[group][index]
            torch.bmm(grad.transpose(1, 2), x, out=self.grad_views[weight_name])
            torch.sum(grad, 1, out=self.grad_views[weight_name[:-6] + "bias"])
            grad = torch.bmm(grad, W)
            if index:  # x is the previous layer's activation output
                grad = self._act_backward(grad, x)
        return grad

    def representations(self) -> torch.Tensor:
        if self.representation == "embedding":
            return self.views["embedding"]
        symbols = self.symbol_vectors.expand(self.theta.shape[0], -1, -1)
        return self._mlp_forward("encoder", symbols)

    def representations_backward(self, grad_r: torch.Tensor) -> None:
        if self.representation == "embedding":
            self.grad_views["embedding"].copy_(grad_r)
        else:
            self._mlp_backward("encoder", grad_r)

    def decoder_forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._mlp_forward("decoder", hidden)

    def decoder_backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        return self._mlp_backward("decoder", grad_output)

    def optimizer_step(self) -> None:
        torch._foreach_add_([group["step"] for group in self.groups], 1.0)  # one call for every group's count
        for group in self.groups:
            self._adam_kernel([group["param"]], [group["grad"]], [group["exp_avg"]],
                              [group["exp_avg_sq"]], [], [group["step"]], lr=group["lr"], beta1=self.beta1,
                              beta2=self.beta2, weight_decay=group["weight_decay"], eps=self.eps,
                              amsgrad=False, maximize=False)

    def compacted(self, keep: list[int]) -> "_FlatNetwork":
        """A network of the models in rows ``keep`` only, with their Adam state; every
        model's parameters are written back first (the others are done training)."""
        self.write_back()
        net = _FlatNetwork([self.models[b] for b in keep], [self.optimizers[b] for b in keep])
        old = {(group["model"], group["part"].start): group for group in self.groups}
        for group in net.groups:
            saved = old[(keep[group["model"]], group["part"].start)]
            for key in ("exp_avg", "exp_avg_sq", "step"):
                group[key].copy_(saved[key])
        return net

    def freeze(self, k: int) -> None:
        """Stop updating model k (early stopping inside a batch)."""
        self.groups = [group for group in self.groups if group["model"] != k]

    def write_back(self) -> None:
        """Copy the trained parameters into the nn.Modules they came from."""
        for k, model in enumerate(self.models):
            encoder_layers, decoder_layers = model.layers()
            with torch.no_grad():
                if self.representation == "embedding":
                    model.embedding.copy_(self.views["embedding"][k])
                for group, layers in (("encoder", encoder_layers), ("decoder", decoder_layers)):
                    for index, layer in enumerate(layers):
                        layer.weight.copy_(self.views[f"{group}.{index}.weight"][k])
                        layer.bias.copy_(self.views[f"{group}.{index}.bias"][k])
