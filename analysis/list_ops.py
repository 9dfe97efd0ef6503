"""List operations: the run's figures, and accuracies aggregated over seeds.

    operation_accuracy("runs", by=["n_examples"])        # test accuracy per operation: mean ± 95% CI
    accuracy_curves("runs", metric="val.acc", by=["positions"])
    figures.mean_curves(accuracy_curves("runs"), by=["n_examples"], ylabel="validation accuracy")
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis import intervals
from analysis.figures import plt
from toymodels.list_ops import OPERATIONS

EXPERIMENT = "list_ops"
OUTCOMES = ("test_acc", *(f"test_acc_{name}" for name in OPERATIONS), "min_operation_acc", "best_epoch")


def operation_accuracy(source, by: list | None = None, columns=OUTCOMES, **filters) -> pd.DataFrame:
    """Per group: test accuracy overall and per operation as "mean ± 95% CI half-width", seeds."""
    return intervals.outcomes(source, EXPERIMENT, columns, by, **filters)


def accuracy_curves(source, metric: str = "val.acc", by: list | None = None, **filters) -> pd.DataFrame:
    """A per-epoch metric (train.loss, train.acc, val.loss, val.acc) per group and epoch: mean, 95% CI."""
    return intervals.metric_summary(source, EXPERIMENT, metric, by, **filters).rename(columns={"step": "epoch"})


# --------------------------------------------------------------------- one run's figures
def operation_bars(by_operation: dict, chance: float = 0.1):
    """Test accuracy of each operation (and overall) as bars, chance marked."""
    names = [n for n in by_operation if n != "all"] + ["all"]
    fig, ax = plt.subplots(figsize=(6.0, 3.6), dpi=100)
    bars = ax.bar(names, [by_operation[n] for n in names], color=["C0"] * (len(names) - 1) + ["C7"])
    for bar, name in zip(bars, names):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01, f"{by_operation[name]:.3f}",
                ha="center", fontsize=8)
    ax.axhline(chance, color="grey", ls=":", lw=1, label="chance (1/10)")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("test accuracy (best checkpoint)")
    ax.legend(fontsize=7, loc="lower right")
    fig.subplots_adjust(left=0.12, right=0.98, bottom=0.1, top=0.95)
    return fig


def training_curves(history: list, best_epoch: int):
    """Train and validation loss and accuracy per epoch; the kept checkpoint marked."""
    epochs = np.arange(1, len(history) + 1)
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100)
    for split in ("train", "val"):
        loss_ax.plot(epochs, [h[f"{split}.loss"] for h in history], label=split)
        acc_ax.plot(epochs, [h[f"{split}.acc"] for h in history], label=split)
    for ax, name in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.axvline(best_epoch, color="grey", ls=":", lw=1, label="best val accuracy")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.legend(fontsize=7)
    acc_ax.set_ylim(0, 1.02)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.15, top=0.95, wspace=0.25)
    return fig


def attention_figure(maps: list, text: str, focused_below: float = 0.5):
    """One example's attention, a panel per (layer, head): rows are queries, columns keys
    (its real tokens only); each title gives H / log n averaged over queries and whether
    the head is focused (below ``focused_below``) or distributed."""
    from toymodels.list_ops import attention_entropy

    tokens = ["CLS", *text.split()]
    n_layers, n_heads = len(maps), maps[0].shape[0]
    fig, axes = plt.subplots(n_layers, n_heads, figsize=(2.4 * n_heads, 2.5 * n_layers + 0.4), dpi=90,
                             squeeze=False)
    for layer, weights in enumerate(maps):
        entropy = attention_entropy(weights)
        for head in range(n_heads):
            ax = axes[layer, head]
            ax.imshow(weights[head].numpy(), vmin=0, vmax=1, cmap="viridis")
            kind = "focused" if entropy[head] < focused_below else "distributed"
            ax.set_title(f"L{layer} H{head}: H/log n={entropy[head]:.2f} {kind}", fontsize=7)
            ax.set_xticks(range(len(tokens)), tokens, fontsize=6, rotation=90)
            ax.set_yticks(range(len(tokens)), tokens if head == 0 else [""] * len(tokens), fontsize=6)
    fig.suptitle(f"{text}   (log n = {math.log(len(tokens)):.2f})", fontsize=9)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.08, top=0.9, wspace=0.3, hspace=0.5)
    return fig
