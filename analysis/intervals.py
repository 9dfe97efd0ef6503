"""Means with 95% confidence intervals over seeds (Student's t; no SciPy needed)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

# Two-sided 95% quantiles of Student's t, t_{0.975}(df), for df = 1..30; beyond, the normal 1.96
# is within 4% (and the intervals are approximate anyway with a handful of seeds).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t_quantile_975(df: int) -> float:
    return _T975[df - 1] if df <= len(_T975) else 1.96


def mean_ci(values) -> tuple[float, float, int]:
    """(mean, half-width of the 95% t-interval, n) of the finite values; half-width NaN for n < 2."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan, 0
    if len(x) == 1:
        return float(x[0]), math.nan, 1
    return float(x.mean()), t_quantile_975(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x)), len(x)


def summarise(frame: pd.DataFrame, by: list, value: str = "value") -> pd.DataFrame:
    """Per group of ``by``: mean, ci (half-width), low, high and n (seeds) of ``value``."""
    rows = []
    for key, group in frame.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        mean, half, n = mean_ci(group[value])
        rows.append({**dict(zip(by, key)), "mean": mean, "ci": half, "low": mean - half, "high": mean + half,
                     "n": n})
    return pd.DataFrame(rows, columns=[*by, "mean", "ci", "low", "high", "n"])


def format_ci(mean: float, half: float, digits: int = 3) -> str:
    """"0.123 ± 0.010" (or just the mean when there is no interval)."""
    return f"{mean:.{digits}f}" if not np.isfinite(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"


# ------------------------------------------------------ runs of one experiment, grouped
def _label(value):
    """A hashable, readable group label for a config value (lists are joined with '-')."""
    if isinstance(value, (list, tuple)):
        return "-".join(str(v) for v in value)
    return value


def completed_runs(source, experiment: str, by: list | None = None, **filters) -> pd.DataFrame:
    """The experiment's COMPLETED runs (analysis.runs_table), ``by`` columns made hashable."""
    from analysis.runs import runs_table

    table = runs_table(source, experiment=experiment, **filters)
    if table.empty:
        return table
    table = table[table["status"] == "COMPLETED"].copy()
    for column in by or []:
        table[column] = table[column].map(_label)
    return table


def metric_summary(source, experiment: str, metric: str, by: list | None = None, **filters) -> pd.DataFrame:
    """One logged metric per (group, step): mean, ci, low, high and n over the group's runs."""
    from analysis.runs import metrics_table

    by = list(by or [])
    runs = completed_runs(source, experiment, by, **filters)
    if runs.empty:
        return pd.DataFrame(columns=[*by, "step", "mean", "ci", "low", "high", "n"])
    points = metrics_table(source, metric=metric, experiment=experiment).merge(runs[["run", *by]], on="run")
    return summarise(points, [*by, "step"])


def outcomes(source, experiment: str, columns, by: list | None = None, **filters) -> pd.DataFrame:
    """Per group: each result column as "mean ± 95% CI half-width" (strings), and the seed count."""
    by = list(by or [])
    runs = completed_runs(source, experiment, by, **filters)
    rows = []
    for key, group in (runs.groupby(by, sort=True) if by else [((), runs)]):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        for column in columns:
            if column in group:
                mean, half, _ = mean_ci(group[column])
                row[column] = format_ci(mean, half)
        row["seeds"] = len(group)
        rows.append(row)
    return pd.DataFrame(rows)


def aggregate(table: pd.DataFrame, by: str, columns) -> pd.DataFrame:
    """Per value of ``by``: n and, for each column, mean, low and high of the 95% interval."""
    rows = []
    for value, group in table.groupby(by):
        row = {by: value, "n": len(group)}
        for column in columns:
            mean, half, _ = mean_ci(pd.to_numeric(group[column], errors="coerce"))
            row[column], row[f"{column}_low"], row[f"{column}_high"] = mean, mean - half, mean + half
        rows.append(row)
    return pd.DataFrame(rows)


def curves_over_seeds(metrics: pd.DataFrame, runs: pd.DataFrame, by: str, metric: str) -> pd.DataFrame:
    """A metric's curve per value of ``by`` (a config column of ``runs``), over the seeds:
    columns by, step, n, mean, low, high (95% interval). ``metrics`` is a metrics_table."""
    curves = metrics[metrics["metric"] == metric].merge(runs[["run", by]], on="run")
    rows = []
    for (value, step), group in curves.groupby([by, "step"]):
        mean, half, _ = mean_ci(group["value"])
        rows.append({by: value, "step": step, "n": len(group), "mean": mean, "low": mean - half, "high": mean + half})
    return pd.DataFrame(rows)
