"""Two-stage learning: the run's summary figure, and curves aggregated over seeds.

    agreement_curves("runs")                        # stage-2 agreement per epoch, mean and 95% CI over seeds
    agreement_curves("runs", metric="control.agreement")
    sample_efficiency("runs", by=["input_dim"])    # final agreement per stage-2 training-set size
    outcomes("runs", by=["hidden_sizes"])           # final agreement / control / ceiling / kappa per group
    plot_curves(sample_efficiency("runs", by=["input_dim"]), by=["input_dim"], x="samples")

Runs are grouped by the config columns in ``by`` (list values such as ``hidden_sizes``
become strings, "256-128-64"); each group's seeds give the mean and the 95% t-interval.
"""
from __future__ import annotations

import pandas as pd

from analysis import figures, intervals
from analysis.figures import plt

EXPERIMENT = "two_stage"
OUTCOMES = ("test_agreement", "test_kappa", "test_correlation", "control_agreement", "ceiling_agreement",
            "stage1_epochs")


def completed_runs(source, by: list | None = None, **filters) -> pd.DataFrame:
    """The completed two-stage runs with their ``by`` columns made hashable."""
    return intervals.completed_runs(source, EXPERIMENT, by, **filters)


def agreement_curves(source, metric: str = "stage2.agreement", by: list | None = None, **filters) -> pd.DataFrame:
    """Agreement (or any per-epoch metric: stage2.kappa, control.agreement, ...) against the stage-2 epoch."""
    return intervals.metric_summary(source, EXPERIMENT, metric, by, **filters).rename(columns={"step": "epoch"})


def sample_efficiency(source, metric: str = "sample_efficiency.agreement", by: list | None = None,
                      **filters) -> pd.DataFrame:
    """Final agreement against the stage-2 training-set size (the metric's step is the size)."""
    return intervals.metric_summary(source, EXPERIMENT, metric, by, **filters).rename(columns={"step": "samples"})


def outcomes(source, by: list | None = None, columns=OUTCOMES, **filters) -> pd.DataFrame:
    """Per group: every outcome column as "mean ± 95% CI half-width" (strings), and the seed count."""
    return intervals.outcomes(source, EXPERIMENT, columns, by, **filters)


def plot_curves(summary: pd.DataFrame, by: list | None = None, x: str = "epoch", ax=None, label_prefix: str = "",
                chance: float | None = None):
    """Mean agreement curves with shaded 95% intervals, one line per group of ``by``."""
    return figures.mean_curves(summary, by, x, ax, label_prefix, chance, ylabel="agreement with Network_1 (held out)",
                               log_x=x == "samples")


# --------------------------------------------------------------------- one run's figure
def summary_figure(curves: dict, efficiency: dict, result: dict, n_classes: int):
    """The run's multi-panel summary: stage-1 curve, stage-2 curve, agreement over epochs
    (with the control and the ceiling), sample efficiency, and the key numbers.

    ``curves`` maps metric name -> (epochs, values); ``efficiency`` maps training-set size
    -> compare() dict; ``result`` is the run's result."""
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), dpi=90)
    # fixed spacing: tight_layout measures every label and costs more than drawing the figure
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.08, top=0.95, wspace=0.25, hspace=0.35)
    (stage1_ax, stage2_ax, agreement_ax), (efficiency_ax, correlation_ax, text_ax) = axes

    def plot(ax, name, **style):
        if name in curves:
            ax.plot(*curves[name], **style)

    plot(stage1_ax, "stage1.acc", label="train accuracy (random labels)")
    plot(stage1_ax, "stage1.loss", label="train loss", ls="--")
    stage1_ax.set_title("stage 1: Network_1 memorises random labels", fontsize=9)
    plot(stage2_ax, "stage2.acc", label="Network_2 train accuracy")
    plot(stage2_ax, "stage2.loss", label="Network_2 train loss", ls="--")
    plot(stage2_ax, "control.acc", label="control train accuracy", color="grey")
    stage2_ax.set_title("stage 2: Network_2 learns Network_1's labels", fontsize=9)
    plot(agreement_ax, "stage2.agreement", label="Network_2 vs Network_1")
    plot(agreement_ax, "control.agreement", label="control (random labels)", color="grey")
    if "ceiling_agreement" in result:
        agreement_ax.axhline(result["ceiling_agreement"], color="green", ls="--", lw=1,
                             label="ceiling (two Network_2s)")
    agreement_ax.axhline(1 / n_classes, color="black", ls=":", lw=1, label=f"1/{n_classes}")
    agreement_ax.set_title("held-out agreement per stage-2 epoch", fontsize=9)
    agreement_ax.set_ylim(0, 1)
    sizes = sorted(efficiency)
    efficiency_ax.plot(sizes, [efficiency[n]["agreement"] for n in sizes], "o-", label="agreement")
    efficiency_ax.plot(sizes, [efficiency[n]["kappa"] for n in sizes], "s--", label="Cohen's kappa")
    efficiency_ax.set_xscale("log")
    efficiency_ax.set_ylim(0, 1)
    efficiency_ax.set_title("sample efficiency (held out, end of training)", fontsize=9)
    efficiency_ax.set_xlabel("stage-2 training samples")
    plot(correlation_ax, "stage2.correlation", label="Network_2 vs Network_1")
    plot(correlation_ax, "control.correlation", label="control", color="grey")
    correlation_ax.set_title("softmax output correlation per stage-2 epoch", fontsize=9)
    for ax in (stage1_ax, stage2_ax, agreement_ax, correlation_ax):
        ax.set_xlabel("epoch")
    for ax in (stage1_ax, stage2_ax, agreement_ax, efficiency_ax, correlation_ax):
        ax.legend(fontsize=7)

    lines = [f"stage 1: {result['stage1_train_acc']:.3f} fitted, {result['stage1_epochs']} epochs",
             f"agreement (held out): {result['test_agreement']:.3f}",
             f"chance from class frequencies: {result['test_chance']:.3f}",
             f"Cohen's kappa: {result['test_kappa']:.3f}",
             f"output correlation: {result['test_correlation']:.3f}"]
    if "control_agreement" in result:
        lines.append(f"control agreement: {result['control_agreement']:.3f} (kappa {result['control_kappa']:.3f})")
    if "ceiling_agreement" in result:
        lines.append(f"ceiling (two Network_2s): {result['ceiling_agreement']:.3f}")
    lines += [f"agreement at n={n}: {efficiency[n]['agreement']:.3f}" for n in sizes]
    text_ax.axis("off")
    text_ax.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=8.5)
    return fig

