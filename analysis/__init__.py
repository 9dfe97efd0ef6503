"""Analysis of Toylab runs: loading through Incense into pandas, and figures."""
from analysis.intervals import mean_ci, summarise
from analysis.runs import load_runs, metrics_table, runs_table
from analysis import two_stage  # noqa: E402  (two-stage learning: agreement curves over seeds)

__all__ = ["load_runs", "mean_ci", "metrics_table", "runs_table", "summarise", "two_stage"]
