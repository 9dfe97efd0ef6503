"""Analysis of Toylab runs: loading through Incense into pandas, and figures."""
import importlib

from analysis.intervals import mean_ci, summarise
from analysis.runs import load_runs, metrics_table, runs_table

__all__ = ["load_runs", "mean_ci", "metrics_table", "runs_table", "summarise", "two_stage", "list_ops"]
_TOPICS = ("two_stage", "list_ops")  # per-experiment aggregation, imported on first use (matplotlib, torch)


def __getattr__(name):
    if name in _TOPICS:
        return importlib.import_module(f"analysis.{name}")
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
