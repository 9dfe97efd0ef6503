"""The speed engine of the toy-addition trainer (``toymodels.addition_train``): the
parameters of G same-shaped ``ToyAdditionModel``s as one flat (G, P) buffer, forward and
hand-written backward passes through their MLPs as batched matrix products, and the fused
Adam(W) kernel called directly on the buffer.
"""
from __future__ import annotations

import torch

from toymodels.addition import OptimizerSettings, ToyAdditionModel

# name -> (function, backward(grad, output)): the backward is written in terms of the
# activation's output, so the training loop keeps no pre-activations.
ACTIVATIONS = {
    "tanh": (torch.tanh, torch.ops.aten.tanh_backward),
    "relu": (torch.relu, lambda grad, a: torch.ops.aten.threshold_backward(grad, a, 0)),
    "sigmoid": (torch.sigmoid, torch.ops.aten.sigmoid_backward),
}


class FlatNetwork:
    """The parameters of G same-shaped models as one (G, P) buffer, with hand-written
    backward passes and an Adam(W) update over the whole buffer.

    At this size (a 200-wide MLP on 55 rows) autograd's per-node overhead costs more than
    the arithmetic; the gradients here are checked against autograd in the tests.
    """

    def __init__(self, models: list[ToyAdditionModel], optimizers: list[OptimizerSettings]):
        self.models, self.optimizers = models, optimizers
        first = models[0]
        self.representation, self.activation = first.representation, first.activation
        self._act, self._act_backward = ACTIVATIONS[first.activation]
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

    def compacted(self, keep: list[int]) -> "FlatNetwork":
        """A network of the models in rows ``keep`` only, with their Adam state; every
        model's parameters are written back first (the others are done training)."""
        self.write_back()
        net = FlatNetwork([self.models[b] for b in keep], [self.optimizers[b] for b in keep])
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
