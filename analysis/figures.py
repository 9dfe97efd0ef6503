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


def save(fig, path) -> str:
    fig.savefig(path)
    plt.close(fig)
    return str(path)
