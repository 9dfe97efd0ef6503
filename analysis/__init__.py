"""Analysis of Toylab runs: loading through Incense into pandas, and figures."""
from analysis.runs import load_runs, metrics_table, runs_table
from analysis.sweeps import (aggregate, critical_fraction, critical_fraction_figure, curves_over_seeds,
                             dof_probability, mean_ci,
                             phase_cells, phase_diagram, phase_table, sweep_runs)

__all__ = ["aggregate", "critical_fraction", "critical_fraction_figure", "curves_over_seeds", "dof_probability", "load_runs", "mean_ci",
           "metrics_table", "phase_cells", "phase_diagram", "phase_table", "runs_table", "sweep_runs"]
