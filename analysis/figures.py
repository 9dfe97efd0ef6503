"""Figures shared by experiments and notebooks (saved as run artifacts, PNG)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # figures are files; no display needed on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def training_curves(curves: dict, thresholds: dict | None = None, title: str = ""):
    """Train/test accuracy and RQI against steps (log-scaled), with threshold steps marked.

    ``curves`` maps metric name -> (steps, values); ``thresholds`` maps label -> step or None.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for name, style in (("train.acc", "-"), ("test.acc", "-"), ("rqi", "--")):
        if name in curves:
            steps, values = curves[name]
            ax.plot(np.asarray(steps) + 1, values, style, label=name)
    for label, step in (thresholds or {}).items():
        if step is not None:
            ax.axvline(step + 1, color="grey", lw=0.8, ls=":")
            ax.text(step + 1, 0.02, label, rotation=90, fontsize=7, color="grey", va="bottom")
    ax.set_xscale("log")
    ax.set_xlabel("step + 1")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="center left")
    fig.tight_layout()
    return fig


def representation(embedding: np.ndarray, title: str = ""):
    """Each symbol against its learned representation (first two dimensions if d >= 2)."""
    E = np.asarray(embedding)
    fig, ax = plt.subplots(figsize=(6.4, 2.4 if E.shape[1] == 1 else 4.8), dpi=110)
    y = np.zeros(len(E)) if E.shape[1] == 1 else E[:, 1]
    ax.scatter(E[:, 0], y, c=np.arange(len(E)), cmap="viridis", s=40)
    for k, (x0, y0) in enumerate(zip(E[:, 0], y)):
        ax.annotate(str(k), (x0, y0), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.set_xlabel("dimension 0")
    if E.shape[1] == 1:
        ax.set_yticks([])
    else:
        ax.set_ylabel("dimension 1")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def mean_curves(summary, by=None, x: str = "epoch", ax=None, label_prefix: str = "", chance=None,
                ylabel: str = "", log_x: bool = False):
    """Mean curves with shaded 95% intervals (columns mean, low, high of an
    ``analysis.intervals.summarise`` frame against ``x``), one line per group of ``by``."""
    by = list(by or [])
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for key, group in (summary.groupby(by, sort=True) if by else [((), summary)]):
        key = key if isinstance(key, tuple) else (key,)
        label = label_prefix + ", ".join(f"{k}={v}" for k, v in zip(by, key)) or None
        group = group.sort_values(x)
        line, = ax.plot(group[x], group["mean"], marker="o" if log_x else None, ms=3, label=label)
        ax.fill_between(group[x], group["low"], group["high"], color=line.get_color(), alpha=0.2, lw=0)
    if chance is not None:
        ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    return ax
