"""Analysis of Toylab runs: loading through Incense into pandas, and figures."""
from analysis.runs import load_runs, metrics_table, runs_table
from analysis import fsm  # noqa: E402 - builds on runs_table

__all__ = ["fsm", "load_runs", "metrics_table", "runs_table"]
