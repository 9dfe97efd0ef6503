"""Analysis of Toylab runs: loading through Incense into pandas, and figures."""
from analysis.runs import load_runs, metrics_table, runs_table

__all__ = ["load_runs", "metrics_table", "runs_table"]
