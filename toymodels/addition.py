"""The toy model of Liu et al. (2022), "Towards Understanding Grokking: An Effective
Theory of Representation Learning" (arXiv 2205.10343), in plain PyTorch: its task,
model, objective and optimiser settings. ``toymodels.addition_train`` trains it.

Task: symbols 0..p-1, samples are the unordered pairs (i, j), i <= j, labelled i + j
(not mod p: 2p - 1 classes). A representation r maps each symbol to a vector of
dimension ``hidden_rep_dim``; the pair is encoded as h = r(i) + r(j) and a decoder MLP
maps h to the output. With MSE each sum has a fixed random target vector and the
prediction is the nearest one; with cross-entropy the decoder outputs logits.

Two representations:
- ``"embedding"`` (the paper's toy model): a free table E of shape (p, hidden_rep_dim).
- ``"encoder"`` (the repository's Sacred script): fixed random symbol vectors through
  an encoder MLP.

Two ways of drawing the split, the targets and the initialisation from a seed (``DRAWS``):
Toylab's own (``make_addition_task``, ``Objective``, ``ToyAdditionModel``), and the paper's
phase-diagram notebooks' (``notebook_task``, ``notebook_initialise``), with which seed 58
is the split of the paper's published MSE and representation-lr diagrams, and seed 6 that
of its cross-entropy diagram.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn

from toymodels.layers import mlp

# the activations the trainer has hand-written backward passes for (toymodels.addition_engine)
ACTIVATIONS = ("tanh", "relu", "sigmoid")
REPRESENTATIONS = ("embedding", "encoder")
LOSSES = ("mse", "cross_entropy")
OPTIMIZERS = ("adamw", "adam")  # adam: coupled L2 weight decay, as the Sacred script
DTYPES = {"float32": torch.float32, "float64": torch.float64}
DRAWS = ("toylab", "paper_notebook")  # how a seed becomes a split, targets and initial parameters


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


# The paper's phase-diagram notebooks (ejmichaud/grokking-squared, phase_diagram_plot/
# phase_diagram.ipynb: MSE, seed 58; phase_diagram-classification.ipynb: cross-entropy,
# seed 6) seed numpy and torch with one seed and draw, in this order:
#   numpy: input templates N(0, 1) of shape (p, output_dim), unused by the latent model;
#          MSE only: the target vectors N(0, 1) of shape (2p - 1, 30);
#          the training pairs, np.random.choice(p(p+1)/2, n_train, replace=False), as
#          indices into the pairs (i, j), i <= j, in row-major order;
#   torch: an encoder Linear(10, w), Linear(w, w), Linear(w, latent) (built, unused),
#          the decoder Linear(latent, w), Linear(w, w), Linear(w, output_dim),
#          then the embedding table torch.rand(p, latent) - 1/2.
# They cover p = 10, 45 training pairs, latent dimension 1, width 200, depth 3 and, for
# MSE, 30-dimensional targets. (toy/train_add.py draws differently: targets first, no
# templates, the table before the decoder; it made none of the published diagrams.)
NOTEBOOK_SHAPES = {"p": 10, "n_train": 45, "hidden_rep_dim": 1, "decoder_width": 200, "decoder_depth": 3}
NOTEBOOK_TARGET_DIM = 30  # MSE only
NOTEBOOK_INPUT_DIM = 10  # the unused encoder's input dimension
# The seed of each published diagram: 58 reproduces the MSE and representation-lr grids'
# steps, 6 the cross-entropy grid's (cells of each: tests/test_paper_comparison.py).
NOTEBOOK_SEEDS = {"mse": 58, "representation_lr": 58, "cross_entropy": 6}


def notebook_task(p: int, n_train: int, loss: str, target_dim: int, seed: int
                  ) -> tuple[AdditionTask, Optional[torch.Tensor]]:
    """The split, and for MSE the float32 target vectors (2p - 1, target_dim), drawn as the
    paper's notebooks draw them with numpy seeded ``seed`` (legacy ``np.random.seed``
    stream); for cross-entropy the targets are None (one-hot, nothing drawn), and the
    unused input templates have the decoder's output dimension 2p - 1."""
    output_dim = target_dim if loss == "mse" else 2 * p - 1
    rng = np.random.RandomState(seed)  # the same stream as np.random.seed(seed)
    rng.normal(0, 1, size=(p, output_dim))  # the input templates: drawn, unused
    targets = None
    if loss == "mse":
        targets = torch.tensor(rng.normal(0, 1, size=(2 * p - 1, target_dim)), dtype=torch.float32)
    train_rows = torch.from_numpy(rng.choice(n_pairs(p), n_train, replace=False))
    i, j = torch.triu_indices(p, p)  # row-major (i, j), i <= j: the notebooks' pair order
    train_mask = torch.zeros(n_pairs(p), dtype=torch.bool)
    train_mask[train_rows] = True
    return AdditionTask(p=p, pairs=torch.stack([i, j], dim=1), labels=i + j, train_mask=train_mask), targets


# ---------------------------------------------------------------------------- model
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


def notebook_initialise(model: ToyAdditionModel, seed: int, init_scale: float = 1.0) -> None:
    """Overwrite an embedding-table model's initial decoder and table with the draws of the
    paper's notebooks from torch seeded ``seed`` (see ``notebook_task``): the unused
    encoder first, then the decoder, then the table, (torch.rand(p, latent) - 1/2) *
    init_scale (the notebooks' init_scale is 1)."""
    if model.representation != "embedding":
        raise ValueError("the notebooks' draws are for the embedding table")
    _, decoder_layers = model.layers()
    p, latent = model.embedding.shape
    width = decoder_layers[0].out_features
    sizes = [latent] + [layer.out_features for layer in decoder_layers]
    torch.manual_seed(seed)
    mlp([NOTEBOOK_INPUT_DIM, width, width, latent], model.activation)  # the notebooks' encoder: built, unused
    decoder = mlp(sizes, model.activation)
    embedding = (torch.rand(p, latent) - 0.5) * init_scale
    with torch.no_grad():
        model.decoder.load_state_dict(decoder.state_dict())
        model.embedding.copy_(embedding)


# The loss and the prediction, defined once for one model's outputs (n, ...) and for G
# models' (G, n, ...): Objective uses them on one model, BatchedObjective in the trainer.
def _squared_error(diff: torch.Tensor) -> torch.Tensor:
    """MSE of each row from its difference to the row's target vector."""
    return diff.pow(2).mean(-1)


def _cross_entropy(log_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each row from its log-probabilities."""
    return -log_probs.gather(-1, labels.expand(log_probs.shape[:-1])[..., None]).squeeze(-1)


def _nearest_target(output: torch.Tensor, targets_T: torch.Tensor, target_sq: torch.Tensor) -> torch.Tensor:
    """The class of the nearest target vector for outputs (G, n, D), targets_T (G, D, classes)
    and target_sq (G, 1, classes): argmin ||t||^2 - 2 o.t (||o||^2 is the same for all t)."""
    return torch.baddbmm(target_sq, output, targets_T, alpha=-2).argmin(-1)


class Objective:
    """Per-row loss and prediction for MSE onto fixed random target vectors, or CE.

    Args:
        loss: "mse" or "cross_entropy".
        n_classes: number of sums, 2p - 1.
        target_dim: dimension of the MSE target vectors.
        seed: seeds the target vectors (N(0, 1) entries, as in the paper).
        targets: given target vectors (n_classes, target_dim) instead of drawing them
            (``notebook_task``'s); ``seed`` is then unused.
    """

    def __init__(self, loss: str, n_classes: int, target_dim: int, seed: int, dtype=torch.float32,
                 targets: Optional[torch.Tensor] = None):
        self.loss = loss
        self.output_dim = target_dim if loss == "mse" else n_classes
        self.dtype = dtype
        if loss == "mse":
            if targets is None:
                targets = torch.randn(n_classes, target_dim, generator=torch.Generator().manual_seed(seed))
            elif targets.shape != (n_classes, target_dim):
                raise ValueError(f"targets of shape {tuple(targets.shape)}, expected {(n_classes, target_dim)}")
            self.targets = targets.to(dtype)
            self._targets_T = self.targets.T.contiguous()[None]  # (1, D, classes)
            self._target_sq = self.targets.pow(2).sum(-1)[None, None]  # (1, 1, classes)

    def row_loss(self, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.loss == "mse":
            return _squared_error(output - self.targets[labels])
        return _cross_entropy(torch.log_softmax(output, dim=-1), labels)

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        if self.loss == "mse":
            return _nearest_target(output[None], self._targets_T, self._target_sq)[0]
        return output.argmax(dim=-1)


class BatchedObjective:
    """The objectives of G models on the same labelled rows, for outputs (G, n, output_dim):
    the trainer's hot path. One call gives each row's loss, the gradient of each model's
    weighted loss sum_rows weight * row_loss with respect to the output, and each row's
    prediction; what does not depend on the output is computed once, here.

    Args:
        objectives: the G models' objectives, all with the same loss.
        labels: (n,) the label of each row, the same for every model.
        weights: (G, n) each model's weight of each row in its loss (zero off its
            training rows); the computation is in their dtype.
    """

    def __init__(self, objectives: list[Objective], labels: torch.Tensor, weights: torch.Tensor):
        self.loss, self.labels, self.weights = objectives[0].loss, labels, weights
        self._rows = torch.arange(len(labels))
        if self.loss == "mse":
            targets = torch.stack([o.targets.to(weights.dtype) for o in objectives])  # (G, classes, D)
            self._row_targets = targets[:, labels]  # (G, n, D)
            self._targets_T = targets.transpose(1, 2).contiguous()
            self._target_sq = targets.pow(2).sum(-1)[:, None, :]  # (G, 1, classes)
            self._grad_scale = (weights * (2.0 / targets.shape[-1]))[..., None]  # d loss / d diff

    def select(self, index: torch.Tensor) -> "BatchedObjective":
        """The objectives of the models in rows ``index`` only."""
        selected = copy.copy(self)
        selected.weights = self.weights[index]
        if self.loss == "mse":
            for name in ("_row_targets", "_targets_T", "_target_sq", "_grad_scale"):
                setattr(selected, name, getattr(self, name)[index])
        return selected

    def __call__(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(row loss (G, n), d weighted loss / d output (G, n, output_dim), prediction (G, n))."""
        if self.loss == "mse":
            diff = output - self._row_targets
            return (_squared_error(diff), diff * self._grad_scale,
                    _nearest_target(output, self._targets_T, self._target_sq))
        log_probs = torch.log_softmax(output, dim=-1)
        grad_output = log_probs.exp()  # softmax - one-hot(label)
        grad_output[..., self._rows, self.labels] -= 1.0
        grad_output *= self.weights[..., None]
        return _cross_entropy(log_probs, self.labels), grad_output, output.argmax(-1)


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
