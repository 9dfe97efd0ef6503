"""The headline figure of each replication, drawn from stored runs (issue 16).

    make figures                                                  # $TOYLAB_MONGO_URL, $TOYLAB_RUNS_DIR or ./runs
    python -m analysis.headline_figures --source /path/to/runs --out /tmp/figures
    python -m analysis.headline_figures --only grokking --only two_stage
    python -m analysis.headline_figures --source docs/results/phase_mse_seeds.csv   # a runs table export wrote

PNGs go into ``--out`` (docs/figures), and SOURCES.md beside them names for each figure the
experiment, how its runs were selected, their ids and count, the source and the date. Each
figure is drawn by the analysis function its notebook uses. A figure whose runs are missing
is skipped with one line saying what to run; one not drawn this time keeps its earlier row
while its PNG is there. Exit 0 when a figure was written (and none failed), 1 when none
was, 2 when the source cannot be read.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from collections import namedtuple
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from itertools import groupby
from pathlib import Path

import numpy as np
from pyrsistent import thaw

from analysis import flow_vs_regression as fvr, fsm, paper, two_stage as ts
from analysis.figures import plt
from analysis.grokking import critical_fraction_figure, dof_probability, phase_table
from analysis.intervals import mean_ci
from analysis.list_ops import operation_bars
from analysis.runs import CURVE_PREFIX, is_runs_table_file, load_runs, plateaued, runs_table, sweep_runs
from observers.mongo import redact

# the published diagrams, their sweeps on the paper's split and over seeds (experiments/grokking.py SWEEPS)
PHASE_SWEEPS = {f"phase_{name}_{kind}": diagram for kind in ("paper_split", "seeds")
                for name, diagram in paper.SWEEP_NAMES.items()}
# the flow comparison's sweeps, by preference: the first group with runs is drawn, each
# configuration at its longest budget ("converged": every paradigm at 30000 epochs, and
# "converged_longer": 4x that where those had not plateaued; "num_train_recon": num_train at
# 3000 epochs with --grid kind=recon)
FLOW_SWEEPS = (("converged", "converged_longer"), ("num_train",), ("num_train_recon",))
TWO_STAGE_VARIATION = ["input_dim", "input_cov", "hidden_sizes", "stage1_samples"]  # as notebooks/two_stage.ipynb


@dataclass
class Figure:
    name: str  # the file in --out
    shows: str
    experiment: str
    selection: str  # sweep tag or config: how the runs were chosen
    runs: list
    figure: object = None  # a matplotlib figure, or
    png: bytes = b""  # a stored artifact, copied as it is


Skip = namedtuple("Skip", "name reason")  # a figure not drawn, and what to run for it


@lru_cache(maxsize=None)
def grokking_runs(source: str):
    return runs_table(source, experiment="grokking")  # one load for every grokking sweep


def grokking(source):
    for sweep, diagram in PHASE_SWEEPS.items():
        runs = sweep_runs(grokking_runs(source), sweep)
        if runs.empty:
            if sweep.endswith("paper_split"):  # the *_seeds diagrams are drawn when their runs are there
                yield Skip(f"{sweep}.png", f"no COMPLETED runs of sweep {sweep}: "
                                           f"python -m sweeps experiments/grokking.py --sweep {sweep}")
            continue
        x, _, y, _ = paper.published_axes(diagram)
        budget = int(runs["train_steps"].max())
        for name, selected, selection in _phase_selections(sweep, runs, x, y):
            title = f"{selection.replace('`', '')}: {len(selected)} runs, budget {budget} steps"
            try:
                fig = paper.comparison_figure(phase_table(selected, x, y), diagram, x, y, budget=budget, title=title)
            except ValueError as error:  # e.g. none of its cells is a published cell
                yield Skip(f"{name}.png", f"sweep {sweep}: {error}")
                continue
            yield Figure(f"{name}.png", f"phase diagram ({diagram}): the paper's, ours, where they differ",
                         "grokking", selection, selected["run"].tolist(), fig)


def _phase_selections(sweep, runs, x, y):
    """(figure name, runs, how they were chosen): the paper's split as it is; over seeds one
    figure per seed rule, named after the rule's sweep, from the rule's seeds the runs complete
    (a table holding seeds 0-4 and 7 is seeds 0-4 under 0..9 and 1-4, 7 under reachable)."""
    if sweep.endswith("paper_split"):
        yield sweep, runs, f"sweep `{sweep}`"
        return
    for rule, suffix in (("0..9", ""), ("reachable", "_reachable")):
        seeds = paper.rule_seeds_done(runs, rule, x, y)
        if seeds:
            yield (f"{sweep}{suffix}", runs[runs["seed"].isin(seeds)],
                   f"sweep `{sweep}`, seed rule {rule}: seeds {', '.join(map(str, seeds))}")


def critical_fraction(source):
    scan = sweep_runs(grokking_runs(source), "fraction_scan")
    if scan.empty:
        yield Skip("critical_fraction.png", "no COMPLETED runs of sweep fraction_scan: "
                                            "python -m sweeps experiments/grokking.py --sweep fraction_scan")
        return
    p, measured = int(scan["p"].iloc[0]), sorted(set(scan["train_fraction"]))  # the sweep fixes p
    between = np.round(np.arange(measured[0], measured[-1] + 1e-9, 0.05), 2).tolist()  # the curve between them
    probability = dof_probability(p, sorted(set(measured) | set(between)))
    fig = critical_fraction_figure(probability, scan, title=f"critical training fraction (p = {p}): sweep "
                                   f"fraction_scan, {len(scan)} runs, {int(scan['train_steps'].max())} steps")
    yield Figure("critical_fraction.png", "P(dof = 2) beside final test accuracy and RQI against the fraction",
                 "grokking", "sweep `fraction_scan`", scan["run"].tolist(), fig)


def fsm_icl(source):
    runs = fsm.plan_runs(fsm.load_cpu_plan(source))  # as the hypotheses judge them
    curves = fsm.icl_curves(runs)
    if curves.empty:
        yield Skip("fsm_icl.png", "no COMPLETED fsm_icl training runs: "
                                  "python experiments/fsm_icl.py with small_lstm_5s5a cpu")
        return
    curves = curves[curves["n"] > 0]
    # a curve of unfinished runs must not read as a finding: its budget and plateau count are in the legend
    per_configuration = runs.assign(plateaued=plateaued(runs)).groupby("configuration").agg(
        epochs=("epochs", "max"), plateaued=("plateaued", "sum"), runs=("run", "size"))
    series = {}
    for label, c in curves.groupby("label"):
        row = per_configuration.loc[c["configuration"].iloc[0]]
        label = f"{label} ({row['epochs']} epochs, {row['plateaued']} of {row['runs']} plateaued)"
        series[label] = (c["repeats"].tolist(), c["mean"].tolist(), c["ci95"].fillna(0).tolist())
    fig = fsm.icl_curve_figure(series, float(runs["chance"].max()), "final validation accuracy by earlier "
                               f"occurrences of (state, action): mean ± 95% CI over seeds, {len(runs)} runs")
    used = runs[[isinstance(c, (list, tuple)) for c in runs["final_val_icl_acc"]]]
    yield Figure("fsm_icl.png", "in-context curve per configuration", "fsm_icl",
                 "the runs at the plan's walks, each configuration at its longest budget "
                 "(`analysis.fsm.plan_runs`): " + ", ".join(sorted(set(used["configuration"]))),
                 used["run"].tolist(), fig)


def fsm_budget(source):
    runs = fsm.load_cpu_plan(source)
    if not runs.empty and is_runs_table_file(source) and any(CURVE_PREFIX + m not in runs for m in fsm.CURVE_METRICS):
        yield Skip("fsm_budget.png", f"{source} was exported without the curves: toylab export ... "
                                     f"--curves {','.join(fsm.CURVE_METRICS)}")
        return
    curves = fsm.learning_curves(source, runs=runs)
    if curves.empty:
        yield Skip("fsm_budget.png", "no COMPLETED fsm_icl training runs: "
                                     "python -m sweeps experiments/fsm_icl.py --sweep plan_cpu")
        return
    used = runs.merge(curves[["run", "start_time"]].drop_duplicates(), on=["run", "start_time"])
    budget = fsm.plan_budget(runs)
    walks = (f"{budget['train_sequences']} {'fresh ' if budget['fresh_walks'] else ''}walks of "
             f"{budget['n_transitions']} steps per epoch, Adam lr {budget['lr']:g}")
    fig = fsm.budget_figure(curves, fsm.steps_per_epoch(used),
                            f"accuracy on repeated pairs during training: mean, 95% band over seeds "
                            f"({len(used)} runs; {walks}; each configuration at its longest budget)")
    yield Figure("fsm_budget.png", "repeated-pair accuracy against training steps per configuration (where "
                 "curves cross, a verdict depends on the budget)", "fsm_icl",
                 "the runs at the plan's walks, each configuration at its longest budget (`analysis.fsm.plan_runs`)",
                 used["run"].tolist(), fig)


def two_stage(source):
    runs = ts.completed_runs(source, by=TWO_STAGE_VARIATION)
    if runs.empty:
        yield Skip("two_stage.png", "no COMPLETED two_stage runs: python experiments/two_stage.py with seed=0")
        return
    by = [c for c in TWO_STAGE_VARIATION if c in runs and runs[c].nunique() > 1]  # one line per group
    chance = 1 / runs["n_classes"].iloc[0] if runs["n_classes"].nunique() == 1 else None
    ax = ts.plot_curves(ts.agreement_curves(source, by=by), by=by, label_prefix="Network_2 vs Network_1 ")
    ts.plot_curves(ts.agreement_curves(source, metric="control.agreement"), ax=ax, label_prefix="control",
                   chance=chance)
    for k, (key, group) in enumerate(runs.groupby(by, sort=True) if by else [((), runs)]):  # colours as the lines
        mean, _, n = mean_ci(group.get("ceiling_agreement", []))
        if n:
            ax.axhline(mean, color=f"C{k}", ls="--", lw=1, label=f"ceiling: two Network_2s (mean of {n}) "
                       + ", ".join(f"{c}={v}" for c, v in zip(by, key if isinstance(key, tuple) else (key,))))
    ax.legend(fontsize=7)
    ax.set_title(f"held-out agreement with Network_1: mean, 95% CI over seeds ({len(runs)} runs)", fontsize=9)
    config = "; ".join(f"{c}={'/'.join(map(str, sorted(set(runs[c]))))}" for c in TWO_STAGE_VARIATION if c in runs)
    yield Figure("two_stage.png", "stage-2 agreement per epoch against the control and the ceiling", "two_stage",
                 f"every COMPLETED run ({config})", runs["run"].tolist(), ax.figure)


def list_ops(source):
    runs = [run for run in load_runs(source, experiment="list_ops") if run.status == "COMPLETED"]
    if not runs:
        yield Skip("list_ops_*.png", "no COMPLETED list_ops runs: python experiments/list_ops.py with medium seed=1")
        return
    run = max(runs, key=lambda r: r.id)  # the newest
    config, result = thaw(run.config), thaw(run.result)
    operations = [op for op in config["operations"] if f"test_acc_{op}" in result]
    selection = (f"the newest COMPLETED run (n_examples={config['n_examples']}, max_length={config['max_length']}, "
                 f"epochs={config['epochs']}, seed={config['seed']})")
    bars = operation_bars({**{op: result[f"test_acc_{op}"] for op in operations}, "all": result["test_acc"]})
    yield Figure("list_ops_accuracy.png", "test accuracy per operation, redrawn from the run's result",
                 "list_ops", selection, [run.id], bars)
    stored = [f"attention_{op}.png" for op in operations if f"attention_{op}.png" in run.artifacts]
    if not stored:
        yield Skip("list_ops_attention.png", f"list_ops run {run.id} stores no attention_*.png artifact")
        return
    yield Figure("list_ops_attention.png", f"attention maps of one test example: the run's artifact {stored[0]}, "
                 "copied (the maps are not stored as data, only their entropies)", "list_ops", selection, [run.id],
                 png=run.artifacts[stored[0]].content)


def flow_vs_regression(source):
    table = fvr.paradigm_table(source)
    runs = table[table["network.architecture"] == "concat"] if not table.empty else table
    chosen = next((names for names in FLOW_SWEEPS if not runs.empty and runs["sweep"].isin(names).any()), ())
    runs = fvr.at_longest_budget(runs[runs["sweep"].isin(chosen)]) if chosen else runs.iloc[:0]
    if runs.empty:
        yield Skip("flow_vs_regression_*.png", "no COMPLETED runs of sweep converged or num_train: "
                                               "python -m sweeps experiments/flow_vs_regression.py --sweep converged")
        return
    errors = fvr.summarise(runs, ["kind", "paradigm", "dataset.num_train"], ["final_eval_l2"])
    for kind, group in errors.groupby("kind"):
        used = runs[runs["kind"] == kind]
        left_out = f", {int(group['diverged'].sum())} diverged runs left out" if group["diverged"].sum() else ""
        budgets = "-".join(f"{b:,.0f}" for b in sorted({used["budget"].min(), used["budget"].max()}))
        fig = fvr.plot_against_samples(group, "final_eval_l2", "eval MSE (mean, 95% CI over seeds)",
                                       title=f"{kind}: error on the evaluation set, {len(used)} runs, "
                                             f"{budgets} epochs{left_out}")
        sweeps = ", ".join(f"`{s}`" for s in sorted(set(used["sweep"])))
        yield Figure(f"flow_vs_regression_{kind}.png", f"eval MSE against training samples per paradigm ({kind})",
                     "flow_vs_regression", f"sweep {sweeps}, concat MLP", used["run"].tolist(), fig)


def transformer_grokking(source, named_config="cpu_grokking"):
    runs = [run for run in load_runs(source, experiment="grokking_transformer") if run.status == "COMPLETED"
            and named_config in thaw(run.meta).get("named_configs", [])]
    if not runs:
        yield Skip("grokking_transformer_cpu.png", "no COMPLETED grokking_transformer runs with cpu_grokking: "
                                                   "python experiments/grokking_transformer.py with cpu_grokking seed=0")
        return
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for k, run in enumerate(sorted(runs, key=lambda r: r.config["seed"])):
        result = thaw(run.result)
        for metric, style in (("train.acc", "--"), ("test.acc", "-")):
            series = run.metrics[metric]
            ax.plot(series.index + 1, series.values, style, color=f"C{k}",
                    label=f"seed {run.config['seed']} {metric.split('.')[0]}"
                          + (f" (t_train {result['t_train']}, t_test {result['t_test']})" if metric == "test.acc" else ""))
    ax.set_xscale("log")
    ax.set(xlabel="step + 1", ylabel="accuracy", ylim=(0, 1.02))
    ax.legend(fontsize=7)
    config = runs[0].config
    ax.set_title(f"transformer, {config['operation']} mod {config['p']}, {config['train_fraction']:.0%} of the pairs: "
                 f"{len(runs)} runs", fontsize=9)
    yield Figure("grokking_transformer_cpu.png", "train and test accuracy against steps, per seed",
                 "grokking_transformer", f"every COMPLETED run `with {named_config}`", [r.id for r in runs], fig)


FIGURES = {"grokking": grokking, "critical_fraction": critical_fraction, "fsm_icl": fsm_icl, "fsm_budget": fsm_budget,
           "two_stage": two_stage, "list_ops": list_ops, "flow_vs_regression": flow_vs_regression,
           "grokking_transformer": transformer_grokking}
# drawn from the runs table alone, so also from a runs table `toylab export` wrote (docs/results)
FROM_RUNS_TABLE = ("grokking", "critical_fraction", "fsm_icl", "fsm_budget")  # fsm_budget: its curves exported


# ------------------------------------------------------------------ SOURCES.md
def id_ranges(ids) -> str:
    """[1, 2, 3, 7, 9, 10] -> "1-3, 7, 9-10"."""
    steps = groupby(enumerate(sorted({int(i) for i in ids})), key=lambda k_id: k_id[1] - k_id[0])
    return ", ".join(f"{g[0][1]}-{g[-1][1]}" if len(g) > 1 else str(g[0][1]) for g in (list(g) for _, g in steps))


HEADER = """# Sources of the figures

Drawn by `make figures` (`python -m analysis.headline_figures`) from stored runs, by the analysis
functions the notebooks use; nothing is drawn by hand. One row per figure: the runs it came from
(experiment, how they were selected, their ids and count), the source and when it was drawn.
Run ids are a store's: a runs table in `docs/results` holds several sessions' stores, whose
ids repeat (a run there is its id and start time), so its ids list each id once.

| figure | shows | experiment | runs | count | run ids | source | generated |
|---|---|---|---|---|---|---|---|
"""


def write_sources(out: Path, rows: dict) -> None:
    """SOURCES.md with ``rows`` (file name -> table row), keeping the earlier rows of figures
    not drawn this time whose PNG is still in ``out``."""
    path, kept = out / "SOURCES.md", {}
    if path.exists():
        for line in path.read_text().splitlines():
            match = re.match(r"\| \[([^\]]+)\]", line)
            if match and match.group(1) not in rows and (out / match.group(1)).exists():
                kept[match.group(1)] = line
    path.write_text(HEADER + "".join(line + "\n" for _, line in sorted({**kept, **rows}.items())))


def save(item: Figure, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if item.figure is None:
        (out / item.name).write_bytes(item.png)
        return
    item.figure.savefig(out / item.name, bbox_inches="tight")
    plt.close(item.figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.headline_figures", description=__doc__.split("\n")[0])
    parser.add_argument("--source", default=os.environ.get("TOYLAB_MONGO_URL") or os.environ.get("TOYLAB_RUNS_DIR")
                        or "runs", help="a file-storage directory, a MongoDB URL (default: as the notebooks) or a "
                                        "runs table export wrote (.csv, .parquet: the phase diagrams, the "
                                        "critical fraction and the FSM figures only)")
    parser.add_argument("--out", default="docs/figures", help="where the PNGs and SOURCES.md go")
    parser.add_argument("--only", action="append", choices=list(FIGURES), help="only these figures (repeatable)")
    args = parser.parse_args(argv)
    source, out, rows, notes, failed = args.source, Path(args.out), {}, [], False
    shown = redact(source, source)  # a MongoDB URL without its credentials
    grokking_runs.cache_clear()  # a new look at the source on every call
    warnings.formatwarning = lambda message, *rest, **kw: f"warning: {message}\n"  # one line each
    table_file = is_runs_table_file(source)
    if table_file and not Path(source).is_file():
        print(f"error: no runs table at {source}", file=sys.stderr)
        return 2
    if not table_file and not source.startswith(("mongodb://", "mongodb+srv://")) and not Path(source).is_dir():
        print(f"error: no runs directory at {source}", file=sys.stderr)
        return 2
    groups = args.only or (FROM_RUNS_TABLE if table_file else FIGURES)
    if table_file and set(groups) - set(FROM_RUNS_TABLE):
        print(f"error: {source} is a runs table: it draws {', '.join(FROM_RUNS_TABLE)} only (the others need "
              "the runs' metrics or artifacts)", file=sys.stderr)
        return 2
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for group in groups:
        try:
            with plt.rc_context():  # a figure's style (seaborn themes) stays with it
                for item in FIGURES[group](source):
                    if isinstance(item, Skip):
                        notes.append(f"skipped {item.name}: {item.reason}")
                        continue
                    save(item, out)
                    print(f"wrote {out / item.name} ({len(item.runs)} runs)")
                    rows[item.name] = (f"| [{item.name}]({item.name}) | {item.shows} | {item.experiment} | "
                                       f"{item.selection} | {len(item.runs)} | {id_ranges(item.runs)} | "
                                       f"`{shown}` | {when} |")
        except (FileNotFoundError, ConnectionError, PermissionError) as error:  # the source itself
            print(f"error: {error}", file=sys.stderr)
            return 2
        except Exception as error:  # noqa: BLE001 - one figure's failure does not stop the others
            notes.append(f"failed {group}: {type(error).__name__}: {' '.join(str(error).split())}")
            failed = True
    if not rows and not failed and (runs_table(source).empty if table_file else not load_runs(source)):
        print(f"error: no runs in {shown}", file=sys.stderr)
        return 1
    for line in notes + ([] if rows else [f"error: no figure written from {shown}"]):
        print(line, file=sys.stderr)
    if rows:
        write_sources(out, rows)
        print(f"wrote {out / 'SOURCES.md'}")
    return 0 if rows and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
