"""Analysis of Toylab runs: loading through Incense into pandas, and figures."""
from analysis.runs import load_runs, metrics_table, runs_table
from analysis import flow_vs_regression

__all__ = ["load_runs", "metrics_table", "runs_table", "flow_vs_regression"]
