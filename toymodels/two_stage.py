"""Two-stage learning on random labels: data, networks and metrics (plain PyTorch).

Stage 1: Network_1 memorises uniformly random labels of Gaussian inputs. Stage 2:
Network_2, freshly initialised, learns Network_1's argmax labels on fresh inputs. If
Network_1 memorised an arbitrary lookup table, Network_2 could not predict it on held-out
inputs (agreement at chance); if it learned a smooth function, Network_2 can.

Metrics between two networks on the same inputs:
- agreement: fraction of inputs where the argmaxes match;
- chance agreement: sum_k p1(k) p2(k) with p1, p2 the predicted-class frequencies (1/K only
  when both predict the classes equally often), and Cohen's kappa = (agreement - chance) /
  (1 - chance);
- output correlation: Pearson correlation between the two softmax outputs, all inputs and
  classes pooled.

Networks: an MLP (``hidden_sizes``, ReLU) on flat vectors, or a CIFAR-style ResNet-18
(3x3 stem, four stages of two basic blocks, widths w, 2w, 4w, 8w) on inputs reshaped to
``channels x s x s`` images, written here so no torchvision is needed.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from toymodels.classifier import EpochStats, evaluate, predict, train_epoch
from toymodels.layers import mlp

ARCHITECTURES = ("mlp", "resnet18")
INPUT_COVARIANCES = ("isotropic", "power_law")


# ----------------------------------------------------------------------------- data
def input_scales(input_dim: int, input_cov: str = "isotropic", cov_exponent: float = 1.0) -> torch.Tensor:
    """Per-coordinate standard deviations of the inputs. "isotropic": all 1; "power_law":
    variance of coordinate k (1-based) proportional to k^-cov_exponent, normalised to mean
    variance 1, so the inputs have principal components for first layers to align with
    (Maennel et al. 2020) at the same overall scale."""
    if input_cov == "isotropic":
        return torch.ones(input_dim)
    if input_cov == "power_law":
        variances = torch.arange(1, input_dim + 1, dtype=torch.float64) ** -cov_exponent
        return (variances / variances.mean()).sqrt().float()
    raise ValueError(f"input_cov={input_cov!r}: use one of {', '.join(INPUT_COVARIANCES)}")


def gaussian_inputs(n: int, scales: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``n`` independent draws from N(0, diag(scales^2))."""
    return torch.randn(n, len(scales), generator=generator) * scales


def random_labels(n: int, n_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Uniformly random labels, independent of everything else: a labelling with no structure."""
    return torch.randint(0, n_classes, (n,), generator=generator)


# ---------------------------------------------------------------------------- networks
class MLPClassifier(nn.Module):
    """input_dim -> hidden_sizes (ReLU between) -> n_classes logits."""

    def __init__(self, input_dim: int, hidden_sizes: Sequence[int], n_classes: int):
        super().__init__()
        self.layers = mlp([input_dim, *hidden_sizes, n_classes], "relu")

    def forward(self, x):
        return self.layers(x)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection (He et al. 2016)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:  # project when the shape changes
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """The CIFAR variant of ResNet-18 (3x3 stem, no max-pool), on flat inputs reshaped to
    ``channels x image_size x image_size``; ``width`` 64 is the standard network."""

    def __init__(self, channels: int, image_size: int, n_classes: int, width: int = 64):
        super().__init__()
        self.shape = (channels, image_size, image_size)
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        blocks, in_channels = [], width
        for stage, out_channels in enumerate((width, 2 * width, 4 * width, 8 * width)):
            for block in range(2):
                stride = 2 if stage and not block else 1
                blocks.append(BasicBlock(in_channels, out_channels, stride))
                in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(in_channels, n_classes)

    def forward(self, x):
        h = self.blocks(self.stem(x.view(-1, *self.shape)))
        return self.head(F.adaptive_avg_pool2d(h, 1).flatten(1))


def image_size_for(input_dim: int, channels: int) -> Optional[int]:
    """The side s with channels * s * s == input_dim, or None when there is none."""
    if input_dim % channels:
        return None
    side = math.isqrt(input_dim // channels)
    return side if side * side * channels == input_dim else None


def build_network(architecture: str, input_dim: int, hidden_sizes: Sequence[int], n_classes: int,
                  channels: int = 3, resnet_width: int = 64) -> nn.Module:
    if architecture == "mlp":
        return MLPClassifier(input_dim, hidden_sizes, n_classes)
    if architecture == "resnet18":
        side = image_size_for(input_dim, channels)
        if side is None:
            raise ValueError(f"input_dim={input_dim} is not channels x s x s for channels={channels}")
        return ResNet18(channels, side, n_classes, resnet_width)
    raise ValueError(f"architecture={architecture!r}: use one of {', '.join(ARCHITECTURES)}")


# ---------------------------------------------------------------------------- training
def fit(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, epochs: int, lr: float, batch_size: int,
        seed: int, stop_at_acc: Optional[float] = None,
        on_epoch: Optional[Callable[[int, EpochStats], None]] = None, progress: bool = False) -> list[EpochStats]:
    """Adam on cross-entropy for up to ``epochs`` epochs (minibatch order from ``seed``).

    After each epoch, ``on_epoch(epoch, stats)`` (epochs count from 1) with the loss and
    accuracy on the whole training set at the current parameters; training stops early
    when that accuracy reaches ``stop_at_acc``. Returns the per-epoch stats; ``progress``
    shows a bar over the epochs."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history = []
    for epoch in tqdm(range(1, epochs + 1), desc="epochs", leave=False, disable=not progress):
        train_epoch(model, optimizer, (inputs,), labels, batch_size, generator)
        stats = evaluate(model, (inputs,), labels)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(epoch, stats)
        if stop_at_acc is not None and stats.acc >= stop_at_acc:
            break
    return history


def argmax_labels(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The network's predicted class for each input: the labels Network_2 learns from."""
    return predict(model, (inputs,)).argmax(-1)


# ----------------------------------------------------------------------------- metrics
def agreement(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """Fraction of inputs where both networks predict the same class."""
    return (logits_a.argmax(-1) == logits_b.argmax(-1)).double().mean().item()


def chance_agreement(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """Agreement expected from the predicted-class frequencies alone: sum_k p1(k) p2(k)."""
    n_classes = logits_a.shape[-1]
    p1 = torch.bincount(logits_a.argmax(-1), minlength=n_classes).double() / len(logits_a)
    p2 = torch.bincount(logits_b.argmax(-1), minlength=n_classes).double() / len(logits_b)
    return (p1 * p2).sum().item()


def cohen_kappa(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """(agreement - chance) / (1 - chance): 0 at chance, 1 for identical predictions."""
    chance = chance_agreement(logits_a, logits_b)
    if chance >= 1.0:  # both predict one and the same class everywhere
        return 1.0
    return (agreement(logits_a, logits_b) - chance) / (1.0 - chance)


def output_correlation(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """Pearson correlation between the two softmax outputs, all inputs and classes pooled."""
    a = F.softmax(logits_a.double(), -1).flatten()
    b = F.softmax(logits_b.double(), -1).flatten()
    a, b = a - a.mean(), b - b.mean()
    denominator = (a.norm() * b.norm()).item()
    return (a @ b).item() / denominator if denominator > 0 else 0.0


def compare(logits_a: torch.Tensor, logits_b: torch.Tensor) -> dict:
    """Every agreement metric between two networks' logits on the same inputs."""
    return {"agreement": agreement(logits_a, logits_b), "chance": chance_agreement(logits_a, logits_b),
            "kappa": cohen_kappa(logits_a, logits_b), "correlation": output_correlation(logits_a, logits_b)}
