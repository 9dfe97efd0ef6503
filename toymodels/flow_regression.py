"""Regression vs flow matching on a few samples of a known function, in plain PyTorch.

The question (issue 6): when a target function is learned from very few samples, what
does each training paradigm do between the samples? Regression predicts f(c) directly;
flow matching (Lipman et al. 2023, arXiv 2210.02747; Liu et al. 2023, arXiv 2209.03003)
learns a velocity field v(x, c, t) and integrates dx/dt = v from t = 0 to 1.

Targets (``make_dataset``):
- ``recon``: f(c) = sum_i w_i trig_i(2 pi freq_i <u_i, c> + phase_i) per output
  dimension, c in [0, 1]^condition_dim, freq_i distinct primes (so no component is a
  harmonic of another), trig_i sin or cos, u_i a unit direction (1 when c is scalar);
  everything drawn from the seed.
- ``proj``: g(c) = P f(c) with f into R^output_dim as above and P = U U^T the orthogonal
  projection onto a random subspace span(U) of dimension subspace_dim: every target lies
  in a known subspace, and U is kept for the metrics.

Models take (x, c, t) and return a vector of x's dimension: ``ConcatMLP`` concatenates
them; ``FiLMMLP`` runs x through an MLP whose hidden layers are scaled and shifted by
FiLM parameters (Perez et al. 2018, arXiv 1709.07871) computed from (c, t).

Paradigms (``train``):
- regression: prediction = model(0, c, 0), loss ||prediction - f(c)||^2.
- flow: x0 from ``initial_dist`` (zeros or standard Gaussian), x1 = f(c),
  x_t = (1 - t) x0 + t x1 with t ~ U[0, 1], loss ||v(x_t, c, t) - (x1 - x0)||^2;
  prediction = ``integrate`` v from x0 with Euler or RK4 in ``num_eval_steps`` steps.
  With x0 = 0 the target velocity x1 is the same at every t, so flow matching is
  regression with the extra inputs (x_t, t), and one Euler step returns v(0, c, 0).

The training loop works on whole batches (one forward per step, no per-sample Python)
and reads the loss back from the device only at ``log_interval``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn
from tqdm.auto import tqdm

from toymodels.layers import activation_module, mlp

KINDS = ("recon", "proj")
MODES = ("regression", "flow")
ARCHITECTURES = ("concat", "film")
INITIAL_DISTS = ("zeros", "gaussian")
INTEGRATION_METHODS = ("euler", "rk4")
WEIGHT_STRATEGIES = ("uniform", "inverse_freq")
SAMPLING_STRATEGIES = ("grid", "random")
ACTIVATIONS = ("relu", "gelu", "silu", "tanh")  # names in toymodels.layers.ACTIVATIONS


# ----------------------------------------------------------------------------- data
def primes_up_to(limit: int) -> list[int]:
    """The primes <= limit (sieve of Eratosthenes)."""
    if limit < 2:
        return []
    sieve = [True] * (limit + 1)
    sieve[0] = sieve[1] = False
    for k in range(2, math.isqrt(limit) + 1):
        if sieve[k]:
            sieve[k * k::k] = [False] * len(sieve[k * k::k])
    return [k for k, is_prime in enumerate(sieve) if is_prime]


@dataclass
class TrigTarget:
    """f(c) = sum_i w_i trig_i(2 pi freq_i <u_i, c> + phase_i), one sum per output
    dimension, then projected onto span(basis) when ``basis`` is given."""

    frequencies: torch.Tensor  # (dim, K) distinct primes within each output dimension
    phases: torch.Tensor  # (dim, K) in [0, 2 pi)
    weights: torch.Tensor  # (dim, K), each row sums to 1
    use_cos: torch.Tensor  # (dim, K) bool: cos instead of sin
    directions: torch.Tensor  # (dim, K, condition_dim) unit vectors
    basis: Optional[torch.Tensor] = None  # (dim, subspace_dim) orthonormal U (proj), None (recon)

    def unprojected(self, c: torch.Tensor) -> torch.Tensor:
        """f(c) for conditions c of shape (n, condition_dim): shape (n, dim)."""
        position = torch.einsum("nc,dkc->ndk", c, self.directions)
        angle = 2 * math.pi * self.frequencies * position + self.phases
        wave = torch.where(self.use_cos, torch.cos(angle), torch.sin(angle))
        return (self.weights * wave).sum(-1)

    def __call__(self, c: torch.Tensor) -> torch.Tensor:
        f = self.unprojected(c)
        return f if self.basis is None else f @ self.basis @ self.basis.T

    @property
    def projection(self) -> Optional[torch.Tensor]:
        """P = U U^T (proj), None (recon)."""
        return None if self.basis is None else self.basis @ self.basis.T


def make_target(dim: int, condition_dim: int, num_components: int, weight_strategy: str, max_frequency: int,
                generator: torch.Generator, subspace_dim: Optional[int] = None) -> TrigTarget:
    """A random ``TrigTarget``: per output dimension ``num_components`` distinct primes
    <= ``max_frequency``, uniform phases, sin or cos, weights uniform or proportional to
    1 / frequency (then normalised to sum to 1)."""
    primes = torch.tensor(primes_up_to(max_frequency))
    if len(primes) < num_components:
        raise ValueError(f"only {len(primes)} primes <= {max_frequency}, {num_components} components asked")
    choice = torch.stack([torch.randperm(len(primes), generator=generator)[:num_components] for _ in range(dim)])
    frequencies = primes[choice].sort(dim=-1).values.to(torch.float32)
    phases = 2 * math.pi * torch.rand(dim, num_components, generator=generator)
    use_cos = torch.rand(dim, num_components, generator=generator) < 0.5
    directions = torch.randn(dim, num_components, condition_dim, generator=generator)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    if condition_dim == 1:
        directions = directions.abs()  # c in [0, 1] runs forward along every component
    raw = torch.ones_like(frequencies) if weight_strategy == "uniform" else 1 / frequencies
    weights = raw / raw.sum(-1, keepdim=True)
    basis = None
    if subspace_dim is not None:
        basis, _ = torch.linalg.qr(torch.randn(dim, subspace_dim, generator=generator))
    return TrigTarget(frequencies, phases, weights, use_cos, directions, basis)


def training_conditions(num_train: int, condition_dim: int, sampling_strategy: str,
                        generator: torch.Generator) -> torch.Tensor:
    """``num_train`` conditions in [0, 1]^condition_dim: cell midpoints of a regular grid
    (for condition_dim > 1, a random subset of the smallest grid holding num_train points)
    or uniform random points."""
    if sampling_strategy == "random":
        return torch.rand(num_train, condition_dim, generator=generator)
    per_axis = math.ceil(num_train ** (1 / condition_dim) - 1e-9)
    axis = (torch.arange(per_axis, dtype=torch.float32) + 0.5) / per_axis
    grid = torch.cartesian_prod(*[axis] * condition_dim).reshape(-1, condition_dim)
    if len(grid) > num_train:
        grid = grid[torch.randperm(len(grid), generator=generator)[:num_train].sort().values]
    return grid


def evaluation_conditions(num_eval: int, condition_dim: int, generator: torch.Generator) -> torch.Tensor:
    """The dense evaluation set: an even grid over [0, 1] including both ends for a scalar
    condition (so curves can be drawn over c), uniform random points otherwise."""
    if condition_dim == 1:
        return torch.linspace(0, 1, num_eval).unsqueeze(1)
    return torch.rand(num_eval, condition_dim, generator=generator)


@dataclass
class Dataset:
    kind: str
    target: TrigTarget
    train_c: torch.Tensor  # (num_train, condition_dim)
    train_y: torch.Tensor  # (num_train, dim)
    eval_c: torch.Tensor  # (num_eval, condition_dim)
    eval_y: torch.Tensor  # (num_eval, dim)

    @property
    def dim(self) -> int:
        return self.train_y.shape[1]

    @property
    def condition_dim(self) -> int:
        return self.train_c.shape[1]


def make_dataset(kind: str, num_train: int, num_eval: int, target_dim: int, condition_dim: int,
                 num_components: int, weight_strategy: str, sampling_strategy: str, max_frequency: int,
                 output_dim: int, subspace_dim: int, seed: int) -> Dataset:
    """The task of ``kind`` drawn from ``seed``: recon targets have ``target_dim``
    dimensions, proj targets ``output_dim`` (in a subspace of ``subspace_dim``)."""
    generator = torch.Generator().manual_seed(seed)
    dim = target_dim if kind == "recon" else output_dim
    target = make_target(dim, condition_dim, num_components, weight_strategy, max_frequency, generator,
                         subspace_dim if kind == "proj" else None)
    train_c = training_conditions(num_train, condition_dim, sampling_strategy, generator)
    eval_c = evaluation_conditions(num_eval, condition_dim, generator)
    return Dataset(kind, target, train_c, target(train_c), eval_c, target(eval_c))


# ----------------------------------------------------------------------------- models
class ConcatMLP(nn.Module):
    """v(x, c, t) = MLP([x, c, t]): ``num_layers`` hidden layers of ``hidden_dim``."""

    def __init__(self, dim: int, condition_dim: int, hidden_dim: int = 256, num_layers: int = 3,
                 activation: str = "gelu"):
        super().__init__()
        self.net = mlp([dim + condition_dim + 1] + [hidden_dim] * num_layers + [dim], activation)

    def forward(self, x: torch.Tensor, c: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, c, t], dim=-1))


class FiLMMLP(nn.Module):
    """x through ``num_layers`` hidden layers; each layer's pre-activation h becomes
    h * (1 + scale) + shift, with (scale, shift) per layer from an MLP of (c, t)."""

    def __init__(self, dim: int, condition_dim: int, hidden_dim: int = 256, num_layers: int = 3,
                 activation: str = "gelu"):
        super().__init__()
        self.num_layers, self.hidden_dim = num_layers, hidden_dim
        self.layers = nn.ModuleList(nn.Linear(dim if k == 0 else hidden_dim, hidden_dim) for k in range(num_layers))
        self.activation = activation_module(activation)
        self.film = mlp([condition_dim + 1, hidden_dim, 2 * num_layers * hidden_dim], activation)
        self.output = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        modulation = self.film(torch.cat([c, t], dim=-1)).view(-1, 2, self.num_layers, self.hidden_dim)
        scale, shift = modulation.unbind(1)
        h = x
        for k, layer in enumerate(self.layers):
            h = self.activation(layer(h) * (1 + scale[:, k]) + shift[:, k])
        return self.output(h)


def make_model(architecture: str, dim: int, condition_dim: int, hidden_dim: int, num_layers: int,
               activation: str) -> nn.Module:
    cls = {"concat": ConcatMLP, "film": FiLMMLP}[architecture]
    return cls(dim, condition_dim, hidden_dim, num_layers, activation)


# ----------------------------------------------------------------------------- flow matching
def initial_points(n: int, dim: int, initial_dist: str, generator: torch.Generator) -> torch.Tensor:
    """x0: zeros (a deterministic start) or standard Gaussian samples."""
    if initial_dist == "zeros":
        return torch.zeros(n, dim)
    return torch.randn(n, dim, generator=generator)


def flow_matching_batch(x1: torch.Tensor, initial_dist: str, generator: torch.Generator):
    """One batch of the conditional flow-matching objective on the straight path:
    (x_t, t, target velocity x1 - x0), with x0 ~ initial_dist and t ~ U[0, 1]."""
    x0 = initial_points(len(x1), x1.shape[1], initial_dist, generator)
    t = torch.rand(len(x1), 1, generator=generator)
    x_t = (1 - t) * x0 + t * x1
    return x_t, t, x1 - x0


def integrate(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor, num_steps: int,
              method: str = "euler", t0: float = 0.0, t1: float = 1.0) -> torch.Tensor:
    """x(t1) for dx/dt = velocity(x, t) from x(t0) = x0 in ``num_steps`` fixed steps of
    Euler (first order) or classical Runge-Kutta (RK4, fourth order). ``t`` is passed as
    a column (n, 1) so the velocity can concatenate it to its inputs."""
    h = (t1 - t0) / num_steps
    x = x0
    column = torch.empty(len(x0), 1, dtype=x0.dtype)
    for step in range(num_steps):
        t = t0 + step * h
        k1 = velocity(x, column.fill_(t))
        if method == "euler":
            x = x + h * k1
            continue
        k2 = velocity(x + h / 2 * k1, column.fill_(t + h / 2))
        k3 = velocity(x + h / 2 * k2, column.fill_(t + h / 2))
        k4 = velocity(x + h * k3, column.fill_(t + h))
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


@torch.no_grad()
def predict(model: nn.Module, c: torch.Tensor, mode: str, x0: Optional[torch.Tensor] = None, num_steps: int = 1,
            method: str = "euler") -> torch.Tensor:
    """The paradigm's prediction at conditions c. Regression: model(0, c, 0). Flow: the
    integral of v(., c, .) from x0 (zeros when None)."""
    dim = model_dim(model)
    start = torch.zeros(len(c), dim) if x0 is None else x0
    if mode == "regression":
        return model(torch.zeros(len(c), dim), c, torch.zeros(len(c), 1))
    return integrate(lambda x, t: model(x, c, t), start, num_steps, method)


def model_dim(model: nn.Module) -> int:
    return model.output.out_features if isinstance(model, FiLMMLP) else model.net[-1].out_features


# ----------------------------------------------------------------------------- metrics
def errors(prediction: torch.Tensor, truth: torch.Tensor) -> dict:
    """l1: mean absolute error, l2: mean squared error (both per coordinate; inf or NaN
    when the prediction diverged)."""
    error = prediction.double() - truth.double()
    return {"l1": error.abs().mean().item(), "l2": error.pow(2).mean().item()}


def principal_angles(basis: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Principal angles (radians, ascending) between span(basis) (orthonormal columns,
    k of them) and the best rank-k span of the rows of ``points``: arccos of the singular
    values of U^T Q, Q an orthonormal basis of that span."""
    k = basis.shape[1]
    left, _, _ = torch.linalg.svd(points.T.double(), full_matrices=False)
    cosines = torch.linalg.svdvals(basis.T.double() @ left[:, :k])
    return torch.arccos(cosines.clamp(-1, 1)).flip(0)


def subspace_metrics(prediction: torch.Tensor, basis: torch.Tensor) -> dict:
    """How far predictions stray from the true subspace span(U):
    subspace_angle: the largest principal angle (degrees) between span(predictions) and
    span(U); subspace_alignment_error: mean sin^2 of the principal angles (0: same
    subspace, 1: orthogonal); in_subspace_variance: ||U U^T Y||^2 / ||Y||^2 over all
    predictions Y, the share of their (uncentred) variance inside the subspace.
    All three are NaN when a prediction is not finite (a diverged flow integration)."""
    if not torch.isfinite(prediction).all():
        return dict.fromkeys(("subspace_angle", "subspace_alignment_error", "in_subspace_variance"), math.nan)
    angles = principal_angles(basis, prediction.double())
    prediction = prediction.double()  # squares of large (diverging) predictions overflow float32
    inside = prediction @ basis.double()
    total = prediction.pow(2).sum().clamp_min(torch.finfo(prediction.dtype).tiny)
    return {"subspace_angle": math.degrees(angles.max().item()),
            "subspace_alignment_error": angles.sin().pow(2).mean().item(),
            "in_subspace_variance": (inside.pow(2).sum() / total).item()}


def off_subspace_fraction(prediction: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Per prediction: ||(I - U U^T) y||^2 / ||y||^2 (0: entirely in the subspace)."""
    off = prediction - prediction @ basis @ basis.T
    return off.pow(2).sum(-1) / prediction.pow(2).sum(-1).clamp_min(torch.finfo(prediction.dtype).tiny)


# ----------------------------------------------------------------------------- training
@dataclass
class TrainSettings:
    mode: str = "regression"
    batch_size: int = 64
    num_epochs: int = 1000
    learning_rate: float = 1e-3
    log_interval: int = 10  # epochs between train.loss records
    eval_interval: int = 50  # epochs between evaluations (train and eval sets)
    initial_dist: str = "zeros"
    num_eval_steps: int = 20
    integration_method: str = "rk4"


@dataclass
class Evaluator:
    """Predictions and metrics on the training and evaluation sets. The Gaussian starting
    points x0 are drawn once, so successive evaluations differ only by the model."""

    dataset: Dataset
    settings: TrainSettings
    seed: int
    starts: dict = field(default_factory=dict)

    def __post_init__(self):
        generator = torch.Generator().manual_seed(self.seed + 2)
        for split in ("train", "eval"):
            c = getattr(self.dataset, f"{split}_c")
            self.starts[split] = initial_points(len(c), self.dataset.dim, self.settings.initial_dist, generator)

    def predict(self, model: nn.Module, split: str, num_steps: Optional[int] = None,
                method: Optional[str] = None) -> torch.Tensor:
        s = self.settings
        return predict(model, getattr(self.dataset, f"{split}_c"), s.mode, self.starts[split],
                       num_steps or s.num_eval_steps, method or s.integration_method)

    def metrics(self, model: nn.Module) -> dict:
        out = {}
        for split in ("train", "eval"):
            prediction = self.predict(model, split)
            out.update({f"{split}.{k}": v for k, v in errors(prediction, getattr(self.dataset, f"{split}_y")).items()})
            if split == "eval" and self.dataset.target.basis is not None:
                out.update({f"eval.{k}": v for k, v in subspace_metrics(prediction, self.dataset.target.basis).items()})
        return out


@dataclass
class Outcome:
    final: dict  # metrics after the last epoch
    best: dict  # metrics at the evaluation with the lowest eval.l2
    best_epoch: int
    best_state: dict  # the model's state_dict at best_epoch
    steps: int  # optimizer steps taken


def loss_on_batch(model: nn.Module, c: torch.Tensor, y: torch.Tensor, mode: str, initial_dist: str,
                  generator: torch.Generator) -> torch.Tensor:
    """The paradigm's loss on one batch: mean over the batch of a squared norm."""
    if mode == "regression":
        prediction = model(torch.zeros_like(y), c, torch.zeros(len(y), 1))
        return (prediction - y).pow(2).sum(-1).mean()
    x_t, t, velocity = flow_matching_batch(y, initial_dist, generator)
    return (model(x_t, c, t) - velocity).pow(2).sum(-1).mean()


def train(model: nn.Module, dataset: Dataset, settings: TrainSettings, seed: int,
          on_log: Optional[Callable[[int, dict], None]] = None, on_save: Optional[Callable[[Outcome], None]] = None,
          save_interval: int = 0, progress: Optional[bool] = None) -> Outcome:
    """Adam on the paradigm's loss for ``num_epochs`` epochs of shuffled minibatches.
    ``on_log(epoch, metrics)`` gets train.loss every ``log_interval`` epochs and the
    evaluation metrics every ``eval_interval`` epochs and after the last epoch;
    ``on_save(outcome so far)`` runs every ``save_interval`` epochs (0: never)."""
    s = settings
    generator = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=s.learning_rate)
    evaluator = Evaluator(dataset, s, seed)
    n = len(dataset.train_c)
    batch_size = min(s.batch_size, n)
    best = {"eval.l2": math.inf}
    best_epoch, best_state, final, steps = -1, {}, {}, 0
    running, running_batches = torch.zeros(()), 0

    def evaluate(epoch: int) -> dict:
        nonlocal best, best_epoch, best_state
        model.eval()
        metrics = evaluator.metrics(model)
        model.train()
        if metrics["eval.l2"] < best["eval.l2"]:
            best, best_epoch = metrics, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return metrics

    bar = tqdm(range(s.num_epochs), desc=f"train ({s.mode})", unit="epoch", disable=None if progress is None else not progress,
               mininterval=1.0)
    for epoch in bar:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            index = order[start:start + batch_size]
            loss = loss_on_batch(model, dataset.train_c[index], dataset.train_y[index], s.mode, s.initial_dist,
                                 generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.detach()
            running_batches += 1
            steps += 1
        last = epoch == s.num_epochs - 1
        record = {}
        if (epoch + 1) % s.log_interval == 0 or last:
            record["train.loss"] = (running / running_batches).item()
            running, running_batches = torch.zeros(()), 0
        if (epoch + 1) % s.eval_interval == 0 or last:
            record.update(evaluate(epoch))
            final = record
        if record and on_log is not None:
            on_log(epoch, record)
        if on_save is not None and save_interval and (epoch + 1) % save_interval == 0 and not last:
            on_save(Outcome(final, best, best_epoch, best_state, steps))
    bar.close()
    return Outcome(final, best, best_epoch, best_state, steps)


def integration_errors(model: nn.Module, dataset: Dataset, settings: TrainSettings, seed: int,
                       num_steps: tuple = (1, 2, 4, 8, 16, 32, 64)) -> dict:
    """Eval-set L2 of a flow model for each integration method and number of steps:
    {method: {steps: l2}} (the stiffness of the learned field shows as slow convergence)."""
    evaluator = Evaluator(dataset, settings, seed)
    model.eval()
    return {method: {k: errors(evaluator.predict(model, "eval", k, method), dataset.eval_y)["l2"]
                     for k in num_steps} for method in INTEGRATION_METHODS}
