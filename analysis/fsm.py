"""The finite-state-machine in-context-learning runs (experiments/fsm_icl.py): figures of
one run, and the aggregate over seeds by configuration.

    from analysis import fsm
    table = fsm.aggregate("runs")               # one row per configuration, mean/std/CI
    curves = fsm.icl_curves("runs")             # the in-context curve per configuration
"""
from __future__ import annotations

import numpy as np

from analysis.figures import plt  # matplotlib with the file-only backend

EXPERIMENT = "fsm_icl"


# ------------------------------------------------------------------ one run's figures
def epoch_curves(curves: dict, chance: float, ceiling: float, title: str = ""):
    """Train and validation accuracy (and accuracy on repeated pairs) against epochs, with
    chance (1/S) and the ceiling 1 - p_first (1 - 1/S) marked."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for name, style in (("train.acc", "-"), ("val.acc", "-"), ("val.repeat_acc", "--"), ("val.first_acc", ":")):
        if name in curves:
            epochs, values = curves[name]
            ax.plot(np.asarray(epochs) + 1, values, style, label=name)
    ax.axhline(chance, color="grey", lw=0.8, ls=":")
    ax.axhline(ceiling, color="grey", lw=0.8, ls="--")
    ax.text(1, chance, "chance 1/S", fontsize=7, color="grey", va="bottom")
    ax.text(1, ceiling, "ceiling", fontsize=7, color="grey", va="bottom")
    ax.set_xlabel("epoch")
    ax.set_ylabel("next-state accuracy")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    return fig


def icl_curve_figure(series: dict, chance: float, title: str = ""):
    """Accuracy against earlier occurrences of the current (state, action) pair.
    ``series`` maps label -> (repeats, mean, half-width of the error bar or None)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for label, (repeats, mean, error) in series.items():
        ax.errorbar(repeats, mean, yerr=error, marker="o", capsize=3, label=label)
    ax.axhline(chance, color="grey", lw=0.8, ls=":", label="chance 1/S")
    ticks = list(next(iter(series.values()))[0]) if series else []
    ax.set_xticks(ticks, [f"{t}+" if t == ticks[-1] else str(t) for t in ticks] if ticks else [])
    ax.set_xlabel("earlier occurrences of the current (state, action) pair")
    ax.set_ylabel("next-state accuracy")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig

