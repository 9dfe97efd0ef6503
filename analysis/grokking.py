"""The grokking experiment's sweeps: phase diagrams, the critical training fraction.

    runs = sweep_runs("runs", "phase_mse_quick")                    # analysis.runs; or a MongoDB URL
    table = phase_table(runs, "decoder_lr", "decoder_weight_decay")  # one row per run
    fig = phase_diagram(table, "decoder_lr", "decoder_weight_decay")
    scan = sweep_runs("runs", "fraction_scan_quick")
    fig = critical_fraction_figure(dof_probability(10, fractions), scan)

Several seeds per cell: the cell shows its majority phase, and how many of its seeds
agree. Curves over seeds are a mean with a 95% interval (Student t; binomial Wilson for
the dof probability, which is a proportion of sampled training sets).
"""
from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pandas as pd

from analysis.intervals import aggregate
from toymodels.addition import make_addition_task, n_pairs, n_train_pairs
from toymodels.phases import PHASES
from toymodels.representation import degrees_of_freedom

PHASE_COLORS = {"comprehension": "#2ca02c", "grokking": "#1f77b4", "memorization": "#ff7f0e", "confusion": "#d62728"}


def phase_table(runs: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """One row per run: x, y, phase, t_train, t_test, t_rqi, final_rqi, seed, run."""
    columns = [x, y, "phase", "t_train", "t_test", "t_rqi", "final_rqi", "seed", "run"]
    return runs[columns].sort_values([x, y, "seed"]).reset_index(drop=True)


def phase_cells(table: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """One row per (x, y) cell: majority phase, agreement (seeds with it / seeds), means."""
    rows = []
    for (xv, yv), cell in table.groupby([x, y]):
        counts = cell["phase"].value_counts()
        # ties go to the phase listed first in PHASES (comprehension before grokking ...)
        best = max(counts.index, key=lambda phase: (counts[phase], -PHASES.index(phase)))
        rows.append({x: xv, y: yv, "phase": best, "agreement": counts[best] / len(cell), "seeds": len(cell),
                     "t_test": pd.to_numeric(cell["t_test"], errors="coerce").mean(),
                     "final_rqi": cell["final_rqi"].mean()})
    return pd.DataFrame(rows)


def _is_log_axis(name: str, values) -> bool:
    values = np.asarray(values, dtype=float)
    return name.endswith("_lr") and bool(np.all(values > 0))


def _edges(values, log: bool) -> np.ndarray:
    """Cell edges around sorted axis values (midpoints, in log space for a log axis)."""
    v = np.log10(values) if log else np.asarray(values, dtype=float)
    if len(v) == 1:
        mids = np.array([v[0] - 0.5, v[0] + 0.5])
    else:
        inner = (v[1:] + v[:-1]) / 2
        mids = np.concatenate([[v[0] - (inner[0] - v[0])], inner, [v[-1] + (v[-1] - inner[-1])]])
    return 10 ** mids if log else mids


def phase_diagram(table: pd.DataFrame, x: str, y: str, title: str = ""):
    """Three panels over the swept axes: the majority phase (agreement written in the cell
    when seeds disagree), steps to generalise (mean t_test), final RQI."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    sns.set_theme(style="white", context="paper")
    cells = phase_cells(table, x, y)
    xs, ys = np.sort(cells[x].unique()), np.sort(cells[y].unique())
    log_x, log_y = _is_log_axis(x, xs), _is_log_axis(y, ys)
    X, Y = _edges(xs, log_x), _edges(ys, log_y)
    grids = {name: np.full((len(ys), len(xs)), np.nan) for name in ("phase", "t_test", "final_rqi")}
    for _, cell in cells.iterrows():
        i, j = np.searchsorted(ys, cell[y]), np.searchsorted(xs, cell[x])
        grids["phase"][i, j] = PHASES.index(cell["phase"])
        grids["t_test"][i, j] = cell["t_test"]
        grids["final_rqi"][i, j] = cell["final_rqi"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), dpi=100)
    cmap = ListedColormap([PHASE_COLORS[p] for p in PHASES])
    axes[0].pcolormesh(X, Y, np.ma.masked_invalid(grids["phase"]), cmap=cmap,
                       norm=BoundaryNorm(np.arange(len(PHASES) + 1) - 0.5, len(PHASES)))
    for _, cell in cells.iterrows():
        if cell["agreement"] < 1:
            axes[0].text(cell[x], cell[y], f"{cell['agreement']:.0%}", ha="center", va="center", fontsize=7)
    axes[0].legend(handles=[Patch(color=PHASE_COLORS[p], label=p) for p in PHASES], fontsize=7,
                   loc="upper left", bbox_to_anchor=(0, -0.15), ncol=4)
    seeds = cells["seeds"].max()
    axes[0].set_title(f"phase (majority of {seeds} seed{'s' if seeds > 1 else ''} per cell)")
    for ax, name, label, cm in ((axes[1], "t_test", "steps to generalise (mean t_test)", "viridis"),
                                (axes[2], "final_rqi", "final RQI (mean)", "magma")):
        mesh = ax.pcolormesh(X, Y, np.ma.masked_invalid(grids[name]), cmap=cm)
        fig.colorbar(mesh, ax=ax)
        ax.set_title(label)
    for ax in axes:
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_xscale("log" if log_x else "linear")
        ax.set_yscale("log" if log_y else "linear")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def dof_probability(p: int, fractions, samples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """P(dof = 2) against the training fraction, from the combinatorics alone: the share of
    ``samples`` random training sets (the experiment's own splits, seeds seed..seed+samples-1)
    that determine the linear structure, with a 95% Wilson interval."""
    rows = []
    for fraction in fractions:
        hits = sum(degrees_of_freedom(make_addition_task(p, fraction, s).train_pairs.numpy(), p) == 2
                   for s in range(seed, seed + samples))
        low, high = _wilson(hits, samples)
        rows.append({"train_fraction": fraction, "n_train": n_train_pairs(p, fraction), "n_pairs": n_pairs(p),
                     "p_dof2": hits / samples, "p_dof2_low": low, "p_dof2_high": high, "samples": samples})
    return pd.DataFrame(rows)


def _wilson(hits: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    centre = (hits + z * z / 2) / (n + z * z)
    half = z * np.sqrt(hits * (n - hits) / n + z * z / 4) / (n + z * z)
    return centre - half, centre + half


def critical_fraction(probability: pd.DataFrame) -> float:
    """The training fraction where P(dof = 2) crosses 0.5 (linear interpolation)."""
    f, q = probability["train_fraction"].to_numpy(), probability["p_dof2"].to_numpy()
    above = np.flatnonzero(q >= 0.5)
    if len(above) == 0 or above[0] == 0:
        return float(f[above[0]]) if len(above) else np.nan
    k = above[0]
    return float(f[k - 1] + (0.5 - q[k - 1]) * (f[k] - f[k - 1]) / (q[k] - q[k - 1]))


def critical_fraction_figure(probability: pd.DataFrame, scan: pd.DataFrame | None = None, title: str = ""):
    """P(dof = 2) against the training fraction, beside the measured final test accuracy and
    RQI of a training-fraction sweep (mean over seeds with 95% intervals)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    f = probability["train_fraction"]
    ax.plot(f, probability["p_dof2"], "k-", label="P(dof = 2), combinatorics")
    ax.fill_between(f, probability["p_dof2_low"], probability["p_dof2_high"], color="k", alpha=0.15)
    if scan is not None and len(scan):
        measured = aggregate(scan, "train_fraction", ["final_test_acc", "final_rqi"])
        for column, color, label in (("final_test_acc", "C0", "final test accuracy"), ("final_rqi", "C3", "final RQI")):
            mean = measured[column]
            yerr = np.vstack([mean - measured[f"{column}_low"], measured[f"{column}_high"] - mean])
            ax.errorbar(measured["train_fraction"], mean, yerr=np.nan_to_num(yerr), fmt="o-", color=color,
                        capsize=3, label=f"{label} (mean, 95% CI, {int(measured['n'].min())}+ seeds)")
    critical = critical_fraction(probability)
    if np.isfinite(critical):
        ax.axvline(critical, color="grey", ls=":", lw=1)
        ax.text(critical, 0.02, f" critical {critical:.2f}", color="grey", fontsize=8)
    ax.set_xlabel("training fraction")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title or "critical training fraction")
    fig.tight_layout()
    return fig
