"""Regression vs flow matching (experiments/flow_vs_regression.py): one run's figures, and
the comparison of paradigms across seeds from stored runs.

    table = paradigm_table("runs")                       # one row per completed run, with a paradigm label
    summarise(table, ["kind", "paradigm", "dataset.num_train"], ["final_eval_l2"])
    paired_difference(table, "final_eval_l2", "regression", "flow (gaussian)")
    longest = at_longest_budget(table)                  # each configuration at its longest budget
    paired_difference(longest, "final_eval_l2", "regression", "flow (gaussian)", by=CONFIGURATION[:-1])
    paired_difference(longest, "final_eval_l2", "concat", "film", compared="network.architecture")
    integration_table("runs")                            # eval L2 against integration steps, Euler and RK4

Intervals are 95% Student-t intervals of the mean over seeds (n - 1 degrees of freedom).
A run whose flow integration blew up (eval MSE not finite or above ``DIVERGED_L2``) is
marked ``diverged``: summaries leave it out of means and intervals and count it instead,
since one overflowed run (MSE ~1e40) would make any mean meaningless.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from analysis.figures import plt
from analysis.intervals import mean_ci
from analysis.runs import metrics_table, plateaued, runs_table

__all__ = ["EXPERIMENT", "CONFIGURATION", "mean_ci", "paradigm_table", "at_longest_budget", "summarise",
           "paired_difference", "integration_table", "plot_against_samples"]

EXPERIMENT = "flow_vs_regression"
# Targets are sums of sinusoids with weights summing to 1, so |f| <= 1 (and |P f| <= sqrt(8)):
# an eval MSE above 10 means predictions off by more than 3 on average, i.e. diverged.
DIVERGED_L2 = 10.0


def _paradigm(row) -> str:
    if row.get("mode") == "regression":
        return "regression"
    return f"flow ({row.get('training.initial_dist')})"


def paradigm_table(source, **config_filters) -> pd.DataFrame:
    """The completed runs of the experiment (``analysis.runs_table``) with a ``paradigm``
    column: "regression", "flow (zeros)" or "flow (gaussian)"."""
    table = runs_table(source, experiment=EXPERIMENT, **config_filters)
    if table.empty:
        return table.assign(paradigm=pd.Series(dtype="object"))
    table = table[table["status"] == "COMPLETED"].reset_index(drop=True)
    table["paradigm"] = [_paradigm(row) for row in table.to_dict("records")]
    table["diverged"] = diverged(table["final_eval_l2"])
    table["plateaued"] = plateaued(table)
    return table


# what a configuration is, apart from its budget and seed
CONFIGURATION = ["kind", "dataset.num_train", "network.architecture", "paradigm"]


def at_longest_budget(table: pd.DataFrame) -> pd.DataFrame:
    """The runs of each configuration (``CONFIGURATION``) at the longest budget
    (``training.num_epochs``) it was run at with all its seeds: where a budget was too short
    for a configuration to plateau and it ran again longer (the ``converged_longer`` sweep),
    the longer runs replace the shorter ones once they have as many seeds (a longer sweep
    still running does not turn a 3-seed mean into a 1-seed one). A ``budget`` column says
    which budget each configuration is at."""
    if table.empty:
        return table.assign(budget=pd.Series(dtype="float"))
    keys = [column for column in CONFIGURATION if column in table.columns]
    table = table.reset_index(drop=True)
    seeds = table.groupby(keys + ["training.num_epochs"], dropna=False)["seed"].nunique().rename("n").reset_index()
    seeds = seeds[seeds["n"] == seeds.groupby(keys, dropna=False)["n"].transform("max")]
    budgets = seeds.groupby(keys, dropna=False)["training.num_epochs"].max().rename("budget").reset_index()
    table = table.merge(budgets, on=keys, how="left")
    return table[table["training.num_epochs"] == table["budget"]].reset_index(drop=True)


def diverged(l2: pd.Series) -> pd.Series:
    """True where an eval MSE is not finite or above DIVERGED_L2."""
    values = pd.to_numeric(l2, errors="coerce")
    return ~np.isfinite(values) | (values > DIVERGED_L2)


def summarise(table: pd.DataFrame, by: list, metrics: list) -> pd.DataFrame:
    """Per group of ``by``: ``diverged`` (runs left out, see the module docstring),
    ``plateaued`` (how many of the other runs finished learning), and for each metric the
    mean, 95% interval (low, high) and n of the other runs."""
    rows = []
    for key, group in table.groupby(by, sort=True):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        if "diverged" in group.columns:
            row["diverged"] = int(group["diverged"].sum())
            group = group[~group["diverged"].astype(bool)]
        if "plateaued" in group.columns:
            row["plateaued"] = int(group["plateaued"].astype(bool).sum())
        for metric in metrics:
            mean, half, n = mean_ci(group[metric])
            row.update({f"{metric}.mean": mean, f"{metric}.low": mean - half, f"{metric}.high": mean + half,
                        f"{metric}.n": n})
        rows.append(row)
    return pd.DataFrame(rows)


def paired_difference(table: pd.DataFrame, metric: str, first: str, second: str, by: tuple | None = None,
                      compared: str = "paradigm") -> pd.DataFrame:
    """metric(first) - metric(second) for runs whose ``compared`` column (the paradigm by
    default; ``"network.architecture"`` compares "concat" with "film") has those two values and
    that share the seed (hence the target function and training conditions) and ``by`` (by
    default everything else a configuration is, and the budget): columns difference.mean,
    .low, .high, .n per group, ``diverged`` (pairs left out), ``plateaued`` (pairs whose two
    runs both finished learning) and ``verdict``: "not converged: k of n pairs plateaued"
    unless every pair did, else which side is lower (the interval excludes 0) or
    "inconclusive"; "no pairs (k diverged)" when none is left. The pairing removes the spread between target functions."""
    if by is None:
        by = [column for column in CONFIGURATION + ["training.num_epochs"] if column != compared]
    by = [column for column in by if column in table.columns and column != compared] or ["kind"]
    keys = by + ["seed"]
    columns = [metric, "diverged", "plateaued"]
    table = table.assign(plateaued=table["plateaued"] if "plateaued" in table else plateaued(table))
    a = table[table[compared] == first].set_index(keys)[columns]
    b = table[table[compared] == second].set_index(keys)[columns]
    joined = a.add_suffix(".first").join(b.add_suffix(".second"), how="inner").reset_index()
    joined["difference"] = joined[f"{metric}.first"] - joined[f"{metric}.second"]
    joined["diverged"] = joined["diverged.first"] | joined["diverged.second"]  # a pair with one diverged run
    joined["plateaued"] = joined["plateaued.first"].astype(bool) & joined["plateaued.second"].astype(bool)
    summary = summarise(joined, by, ["difference"])
    summary["verdict"] = [_verdict(row, first, second) for row in summary.to_dict("records")]
    return summary


def _verdict(row: dict, first: str, second: str) -> str:
    """A comparison is a finding only when both sides of every pair finished learning."""
    n = row["difference.n"]
    if not n:
        return f"no pairs ({row['diverged']} diverged)"
    if row["plateaued"] < n:
        return f"not converged: {row['plateaued']} of {n} pairs plateaued"
    if n < 2:
        return "one seed: no interval"
    if row["difference.high"] < 0:
        return f"{first} lower"
    if row["difference.low"] > 0:
        return f"{second} lower"
    return "inconclusive"  # the interval includes 0


def integration_table(source, **config_filters) -> pd.DataFrame:
    """Flow runs' eval L2 of the final model against integration steps: columns run,
    method, num_steps, l2, diverged (of that point) and the runs' kind, paradigm, seed,
    dataset.num_train, network.architecture."""
    runs = paradigm_table(source, mode="flow", **config_filters)
    points = metrics_table(source, metric=[f"integration.{m}.eval.l2" for m in ("euler", "rk4")],
                           experiment=EXPERIMENT)
    if runs.empty or points.empty:
        return pd.DataFrame(columns=["run", "method", "num_steps", "l2", "kind", "paradigm", "seed"])
    points = points.assign(method=points["metric"].str.split(".").str[1], num_steps=points["step"],
                           l2=points["value"], diverged=diverged(points["value"]))
    points = points[["run", "method", "num_steps", "l2", "diverged"]]
    columns = [c for c in ("run", "kind", "paradigm", "seed", "dataset.num_train", "network.architecture")
               if c in runs.columns]
    return points.merge(runs[columns], on="run")


def plot_against_samples(summary: pd.DataFrame, metric: str, ylabel: str, title: str = "", log: bool = True,
                         x: str = "dataset.num_train"):
    """One line per paradigm: the mean of ``metric`` against the number of training
    samples with its 95% interval as a band (from ``summarise``); the legend says how many
    of the paradigm's runs plateaued, so a line of unfinished runs is not read as a finding."""
    fig, ax = plt.subplots(figsize=(5.6, 3.8), dpi=110)
    for paradigm, group in summary.groupby("paradigm"):
        group = group.sort_values(x)
        label = paradigm
        if "plateaued" in group:
            label += f" ({int(group['plateaued'].sum())} of {int(group[f'{metric}.n'].sum())} runs plateaued)"
        ax.plot(group[x], group[f"{metric}.mean"], "o-", label=label)
        low = group[f"{metric}.low"].clip(lower=group[f"{metric}.mean"] / 100) if log else group[f"{metric}.low"]
        ax.fill_between(group[x], low, group[f"{metric}.high"], alpha=0.2)  # a log axis cannot show <= 0
    ax.set_xscale("log")
    return _finish(fig, ax, "training samples", ylabel, title, log_y=log)


def _finish(fig, ax, xlabel: str, ylabel: str, title: str, log_y: bool = True):
    """Labels, title, legend (when something is labelled) and layout of a one-axes figure."""
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- one run's figures
def training_curves(curves: dict, title: str = ""):
    """train.loss and the train/eval L2 against epochs (log y)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for name, style in (("train.loss", "-"), ("train.l2", "--"), ("eval.l2", "-")):
        if name in curves:
            epochs, values = curves[name]
            ax.plot(np.asarray(epochs) + 1, np.maximum(values, 1e-12), style, label=name, lw=1)
    return _finish(fig, ax, "epoch", "loss / MSE", title)


def predictions(dataset, prediction, title: str = "", max_dims: int = 3):
    """Prediction and truth over c (first coordinate), training points marked; one panel
    per output dimension (the first ``max_dims``)."""
    dims = min(dataset.dim, max_dims)
    fig, axes = plt.subplots(dims, 1, figsize=(6.4, 2.2 * dims + 0.6), dpi=110, sharex=True, squeeze=False)
    order = np.argsort(dataset.eval_c[:, 0].numpy())
    c = dataset.eval_c[order, 0].numpy()
    for d, ax in enumerate(axes[:, 0]):
        ax.plot(c, dataset.eval_y[order, d].numpy(), color="black", lw=1, label="truth")
        ax.plot(c, prediction[order, d].numpy(), color="tab:red", lw=1, label="prediction")
        ax.plot(dataset.train_c[:, 0].numpy(), dataset.train_y[:, d].numpy(), "o", ms=3, color="tab:blue",
                label="training points")
        ax.set_ylabel(f"output {d}")
        _truth_limits(ax, dataset.eval_y[:, d].numpy())
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[0, 0].set_title(title + _diverged_note(prediction), fontsize=9)
    axes[-1, 0].set_xlabel("c" if dataset.condition_dim == 1 else "c[0]")
    fig.tight_layout()
    return fig


def _finite_rows(values: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(values).all(-1) if values.dim() > 1 else torch.isfinite(values)


def _diverged_note(prediction) -> str:
    """Flow integration can blow up (a stiff learned field): say how many points did."""
    bad = int((~_finite_rows(prediction)).sum())
    return f" ({bad} of {len(prediction)} predictions not finite)" if bad else ""


def _truth_limits(ax, truth: np.ndarray):
    """Keep the truth readable when predictions diverge: the y range of the truth, padded."""
    low, high = float(np.min(truth)), float(np.max(truth))
    pad = 0.5 * (high - low) + 1e-6
    ax.set_ylim(max(ax.get_ylim()[0], low - pad), min(ax.get_ylim()[1], high + pad))


def error_distribution(dataset, prediction, title: str = ""):
    """Histogram of log10 of the per-point squared error on the evaluation set (finite
    errors only; the title counts the others)."""
    error = (prediction - dataset.eval_y).double().pow(2).mean(-1)
    finite = error[torch.isfinite(error)].clamp_min(1e-12).log10().numpy()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    ax.hist(finite, bins=40, color="tab:gray")
    return _finish(fig, ax, "log10 squared error per evaluation point (mean over coordinates)", "points",
                   title + _diverged_note(prediction), log_y=False)


def integration(by_method: dict, title: str = ""):
    """Eval L2 against integration steps, one line per method ({method: {steps: l2}})."""
    fig, ax = plt.subplots(figsize=(5.6, 3.6), dpi=110)
    for method, by_steps in by_method.items():
        steps = sorted(by_steps)
        ax.plot(steps, [by_steps[k] for k in steps], "o-", label=method)
    ax.set_xscale("log", base=2)
    return _finish(fig, ax, "integration steps", "eval MSE", title)


def subspace(dataset, prediction, title: str = ""):
    """Projection task: predictions in the coordinates of the true subspace (left) and the
    norm of their component off it against c (right); the truth has none off it.
    Non-finite predictions (a diverged integration) are left out and counted in the title."""
    basis, kept = dataset.target.basis, _finite_rows(prediction)
    note = _diverged_note(prediction)
    prediction, c = prediction[kept], dataset.eval_c[kept, 0]
    inside, truth = prediction @ basis, dataset.eval_y @ basis
    off = (prediction - prediction @ basis @ basis.T).norm(dim=-1)
    second = 1 % basis.shape[1]  # a one-dimensional subspace is drawn against itself
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.8), dpi=110)
    left.plot(truth[:, 0].numpy(), truth[:, second].numpy(), color="black", lw=1, label="truth")
    left.plot(inside[:, 0].numpy(), inside[:, second].numpy(), ".", ms=2, color="tab:red", label="prediction")
    scale = 2 * float(truth.abs().max()) + 1e-6  # diverged predictions would hide the truth
    left.set_xlim(-scale, scale)
    left.set_ylim(-scale, scale)
    left.set_xlabel("u1 . y")
    left.set_ylabel("u2 . y")
    left.legend(fontsize=7)
    left.set_title("on the subspace", fontsize=9)
    order = np.argsort(c.numpy())
    right.plot(c[order].numpy(), off[order].numpy(), color="tab:red", lw=1)
    right.set_xlabel("c" if dataset.condition_dim == 1 else "c[0]")
    right.set_ylabel("||(I - U U^T) prediction||")
    right.set_title("off the subspace", fontsize=9)
    fig.suptitle(title + note, fontsize=9)
    fig.tight_layout()
    return fig
