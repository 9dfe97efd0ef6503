"""Analysis of Toylab runs: loading through Incense into pandas, aggregation over seeds, figures."""
import importlib

from analysis.export import export
from analysis.grokking import (critical_fraction, critical_fraction_figure, dof_probability, phase_cells,
                               phase_diagram, phase_table)
from analysis.intervals import aggregate, curves_over_seeds, mean_ci, summarise
from analysis.runs import load_runs, metrics_table, runs_table, sweep_runs

__all__ = ["export", "aggregate", "critical_fraction", "critical_fraction_figure", "curves_over_seeds",
           "dof_probability", "load_runs", "mean_ci", "metrics_table", "phase_cells", "phase_diagram", "phase_table",
           "runs_table", "summarise", "sweep_runs", "two_stage", "list_ops", "fsm", "flow_vs_regression", "paper"]
# per-experiment aggregation, imported on first use (matplotlib, torch); paper: Liu et al.'s published
# phase diagrams and the comparison with ours (analysis.paper.published_grid("mse"))
_TOPICS = ("two_stage", "list_ops", "fsm", "flow_vs_regression", "paper")


def __getattr__(name):
    if name in _TOPICS:
        return importlib.import_module(f"analysis.{name}")
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
