"""The finite-state-machine in-context-learning runs (experiments/fsm_icl.py): figures of
one run, and the aggregate over seeds by configuration.

    from analysis import fsm
    table = fsm.aggregate("runs")               # one row per configuration, mean/std/CI
    curves = fsm.icl_curves("runs")             # the in-context curve per configuration
    fsm.hypotheses("runs")                      # the plan's hypotheses, judged at convergence only
    fsm.hypotheses_by_budget("runs", [10, 20, 40, 80])  # the same runs read after fewer epochs
    fsm.budget_figure(fsm.learning_curves("runs"))      # repeated-pair accuracy against steps
"""
from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd

from analysis.figures import plt  # matplotlib with the file-only backend
from analysis.intervals import mean_ci, t_quantile_975
from analysis.runs import CURVE_PREFIX, is_runs_table_file, metrics_table, plateaued, runs_table
from harness.plateau import WINDOW, plateau

EXPERIMENT = "fsm_icl"


# ------------------------------------------------------------------ one run's figures
def epoch_curves(curves: dict, chance: float, ceiling: float, title: str = ""):
    """Train and validation accuracy (and accuracy on repeated pairs) against epochs, with
    chance (1/S) and the ceiling 1 - p_first (1 - 1/S) marked."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for name, style in (("train.acc", "-"), ("val.acc", "-"), ("val.repeat_acc", "--"), ("val.first_acc", ":")):
        if name in curves:
            epochs, values = curves[name]
            ax.plot(np.asarray(epochs) + 1, values, style, label=name)
    ax.axhline(chance, color="grey", lw=0.8, ls=":")
    ax.axhline(ceiling, color="grey", lw=0.8, ls="--")
    ax.text(1, chance, "chance 1/S", fontsize=7, color="grey", va="bottom")
    ax.text(1, ceiling, "ceiling", fontsize=7, color="grey", va="bottom")
    ax.set_xlabel("epoch")
    ax.set_ylabel("next-state accuracy")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    return fig


def icl_curve_figure(series: dict, chance: float, title: str = ""):
    """Accuracy against earlier occurrences of the current (state, action) pair.
    ``series`` maps label -> (repeats, mean, half-width of the error bar or None)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for label, (repeats, mean, error) in series.items():
        ax.errorbar(repeats, mean, yerr=error, marker="o", capsize=3, label=label)
    ax.axhline(chance, color="grey", lw=0.8, ls=":", label="chance 1/S")
    ticks = list(next(iter(series.values()))[0]) if series else []
    ax.set_xticks(ticks, [f"{t}+" if t == ticks[-1] else str(t) for t in ticks] if ticks else [])
    ax.set_xlabel("earlier occurrences of the current (state, action) pair")
    ax.set_ylabel("next-state accuracy")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig



# ------------------------------------------------------------------ aggregation over seeds
# What a configuration is (everything but the seed); the label names the plan's model when it is one.
CONFIG_KEYS = ["model", "d_model", "num_layers", "dataset", "n_transitions", "train_sequences", "fresh_walks",
               "lr", "epochs", "init_from_dataset"]
# what a run spends: walk length, walks (the same set each epoch or fresh ones), the optimiser's
# learning rate (a plan re-run under another rule is another budget), epochs
BUDGET = ["n_transitions", "train_sequences", "fresh_walks", "lr", "epochs"]
SUMMARY = ["final_val_acc", "final_val_first_acc", "final_val_repeat_acc", "final_val_nontrivial_acc",
           "best_val_acc", "ceiling", "chance", "n_parameters"]


def probe_columns(table: pd.DataFrame) -> list:
    """The probe results (``probe_<name>_layer<k>``; not the probe_* config keys)."""
    return sorted(c for c in table.columns if re.fullmatch(r"probe_\w+_layer\d+", str(c)))


def mean_interval(values) -> dict:
    """mean, std (n - 1), n and the half-width of the 95% t interval of the mean
    (analysis.intervals.mean_ci) over the finite values (None and NaN are missing, not 0)."""
    finite = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    mean, half, n = mean_ci(finite)
    return {"mean": mean, "std": float(finite.std(ddof=1)) if n > 1 else float("nan"), "n": n, "ci95": half}


def model_name(model: str, d_model: int, num_layers: int) -> str:
    """The plan's name for a model size (sequence_models.PRESETS), or its description."""
    from toymodels.sequence_models import PRESETS

    for name, preset in PRESETS.items():
        if (preset["model"], preset["d_model"], preset["num_layers"]) == (model, d_model, num_layers):
            return name
    return f"{model} d{d_model} L{num_layers}"


def _previous_dataset(run, datasets: dict):
    """The dataset of the run a curriculum stage started from (None: it started afresh)."""
    if run is None or pd.isna(run):
        return None
    try:
        return datasets.get(int(run), f"run {run}")
    except (TypeError, ValueError):  # a run directory
        return f"run {run}"


def load(source, **filters) -> pd.DataFrame:
    """The completed training runs of fsm_icl, one row each, with a ``configuration`` label
    (model name, dataset, and the curriculum's previous dataset when there was one)."""
    table = runs_table(source, experiment=EXPERIMENT, **filters)
    if table.empty or "kind" not in table:
        return pd.DataFrame(columns=["run", "configuration", *CONFIG_KEYS, "seed", *SUMMARY])
    table = table[(table["status"] == "COMPLETED") & (table["kind"] == "train")].copy()
    # runs recorded before fresh_walks existed trained on one fixed set
    table["fresh_walks"] = table["fresh_walks"].fillna(False).astype(bool) if "fresh_walks" in table else False
    # a curriculum stage is labelled by the dataset of the run it started from: as the stage
    # recorded it, or (runs recorded before it did) as the run of that id in the same store
    datasets = dict(zip(table["run"], table["dataset"]))
    previous = table["init_from"] if "init_from" in table else pd.Series(None, index=table.index)
    recorded = table["init_from_dataset"] if "init_from_dataset" in table else pd.Series(None, index=table.index)
    table["init_from_dataset"] = [dataset if isinstance(dataset, str) else _previous_dataset(run, datasets)
                                  for run, dataset in zip(previous, recorded)]
    table["model_name"] = [model_name(*row) for row in table[["model", "d_model", "num_layers"]].itertuples(
        index=False)]
    table["configuration"] = [f"{name} {dataset}" + (f" after {previous}" if isinstance(previous, str) else "")
                              for name, dataset, previous in table[["model_name", "dataset", "init_from_dataset"]]
                              .itertuples(index=False)]
    return table.reset_index(drop=True)


def aggregate(source_or_table, metrics: list | None = None, **filters) -> pd.DataFrame:
    """One row per configuration (all seeds together): for each metric its mean, std, n
    and 95% interval half-width (``<metric>_mean``, ``_std``, ``_n``, ``_ci95``), plus the
    runs and seeds it pools. Probe metrics (``probe_*``) are included when present."""
    table = source_or_table if isinstance(source_or_table, pd.DataFrame) else load(source_or_table, **filters)
    if metrics is None:
        metrics = [m for m in SUMMARY if m in table] + probe_columns(table)
    rows = []
    for keys, group in table.groupby(["configuration", *CONFIG_KEYS], dropna=False, sort=True):
        row = dict(zip(["configuration", *CONFIG_KEYS], keys))
        row["runs"] = sorted(int(r) for r in group["run"])
        row["seeds"] = sorted(int(s) for s in group["seed"])
        row["plateaued_runs"] = int(plateaued(group).sum())  # of len(row["runs"]): harness.plateau
        for metric in metrics:
            for stat, value in mean_interval(group[metric].tolist()).items():
                row[f"{metric}_{stat}"] = value
        rows.append(row)
    return pd.DataFrame(rows)


def icl_curves(source_or_table, **filters) -> pd.DataFrame:
    """The final in-context curve per configuration and budget: accuracy by earlier
    occurrences of the (state, action) pair (the last bucket: that many or more), mean /
    std / 95% CI over seeds. Long frame: label, configuration, n_transitions,
    train_sequences, fresh_walks, epochs, repeats, mean, std, n, ci95; the label is the configuration,
    with its budget when the same configuration was run at several."""
    table = source_or_table if isinstance(source_or_table, pd.DataFrame) else load(source_or_table, **filters)
    columns = ["label", "configuration", *BUDGET, "repeats", "mean", "std", "n", "ci95"]
    if table.empty:
        return pd.DataFrame(columns=columns)
    budgets = table.groupby("configuration")[BUDGET].apply(lambda g: len(g.drop_duplicates()))
    rows = []
    for keys, group in table.groupby(["configuration", *BUDGET], sort=True):
        configuration, budget = keys[0], dict(zip(BUDGET, keys[1:]))
        label = configuration if budgets[configuration] == 1 else (
            f"{configuration} [T={budget['n_transitions']}, N={budget['train_sequences']}"
            f"{' fresh per epoch' if budget['fresh_walks'] else ''}, lr {budget['lr']:g}, "
            f"{budget['epochs']} epochs]")
        curves = [curve for curve in group["final_val_icl_acc"] if isinstance(curve, (list, tuple))]
        for repeats in range(max((len(c) for c in curves), default=0)):
            values = [c[repeats] for c in curves if len(c) > repeats]
            rows.append({"label": label, "configuration": configuration, **budget, "repeats": repeats,
                         **mean_interval(values)})
    return pd.DataFrame(rows, columns=columns)


def format_interval(row, metric: str, digits: int = 3) -> str:
    """'0.512 ± 0.031 (n=3)': mean ± 95% half-width, or the mean alone for one seed."""
    mean, ci, n = row[f"{metric}_mean"], row[f"{metric}_ci95"], row[f"{metric}_n"]
    if not n:
        return "no runs"
    if n == 1 or not np.isfinite(ci):
        return f"{mean:.{digits}f} (n=1)"
    return f"{mean:.{digits}f} ± {ci:.{digits}f} (n={n})"


# ------------------------------------------------------------------ the plan's five hypotheses
def plan_budget(table: pd.DataFrame) -> dict:
    """The most common budget (``BUDGET``: n_transitions, train_sequences, fresh_walks, lr,
    epochs) among runs that started afresh, the newest between as many. Its walks (``WALKS``)
    are the plan's: the hypotheses compare models on them only, each at the longest budget it
    was trained for (so CPU-sized and full-size runs are never compared with each other). To
    read one plan among older runs, load with a filter (``fsm.load(source, fresh_walks=True)``)."""
    fresh = table[table["init_from_dataset"].isna()] if "init_from_dataset" in table else table
    if fresh.empty:
        return {}
    # the budget with the most runs; between as many, the newest plan's (a re-sized plan
    # replaces the old one once it has as many runs; run ids are not comparable across stores)
    newest = pd.to_datetime(fresh["start_time"]) if "start_time" in fresh else fresh["run"]
    sizes = fresh.assign(newest=newest).groupby(BUDGET).agg(runs=("run", "size"), newest=("newest", "max"))
    best = sizes.sort_values(["runs", "newest"], ascending=False).index[0]
    kinds = {"fresh_walks": bool, "lr": float}
    return {key: kinds.get(key, int)(v) for key, v in zip(BUDGET, best)}


WALKS = ["n_transitions", "train_sequences", "fresh_walks", "lr"]  # a budget without its epochs: walks and lr


def load_cpu_plan(source, **filters) -> pd.DataFrame:
    """``load``, kept to the CPU plan as the experiment defines it now (the walks and learning
    rate of its ``cpu`` named config), so a plan re-run under a new rule is read alone however
    many runs the old one has; every run when none was made under it (a full-size plan, a
    small test store)."""
    from experiments.fsm_icl import ex

    cpu = ex.named_configs["cpu"]()
    table = load(source, **{key: cpu[key] for key in WALKS}, **filters)
    return table if not table.empty else load(source, **filters)


def _longest(aggregated: pd.DataFrame, label: str, walks: dict):
    """The aggregate row of configuration ``label`` at ``walks`` with the most epochs, or None:
    each model is judged at the longest budget it was trained for (the plan doubles a
    configuration's epochs until its runs plateau)."""
    rows = aggregated[aggregated["configuration"] == label]
    for key, value in walks.items():
        rows = rows[rows[key] == value]
    return None if rows.empty else rows.sort_values("epochs").iloc[-1]


def _row(aggregated: pd.DataFrame, label: str, budget: dict):
    """The aggregate row of configuration ``label`` at ``budget``, or None."""
    rows = aggregated[aggregated["configuration"] == label]
    for key, value in budget.items():
        rows = rows[rows[key] == value]
    return None if rows.empty else rows.iloc[0]


def _difference(a, b, metric: str) -> dict:
    """a - b with a Welch-style 95% half-width (dof: the smaller n - 1, conservative)."""
    if a is None or b is None:
        return {"difference": float("nan"), "ci95": float("nan"), "verdict": "no runs"}
    ma, sa, na = a[f"{metric}_mean"], a[f"{metric}_std"], a[f"{metric}_n"]
    if b is not None and isinstance(b, (int, float)):
        mb, sb, nb = float(b), 0.0, np.inf
    else:
        mb, sb, nb = b[f"{metric}_mean"], b[f"{metric}_std"], b[f"{metric}_n"]
    if not na or not nb:
        return {"difference": float("nan"), "ci95": float("nan"), "verdict": "no runs"}
    difference = ma - mb
    if na < 2 or nb < 2:
        return {"difference": difference, "ci95": float("nan"), "verdict": "one seed: no interval"}
    se = np.sqrt(sa ** 2 / na + (sb ** 2 / nb if np.isfinite(nb) else 0.0))
    half = t_quantile_975(int(min(na, nb)) - 1) * se
    verdict = "supported" if difference - half > 0 else "contradicted" if difference + half < 0 else "inconclusive"
    return {"difference": difference, "ci95": half, "verdict": verdict}


def hypotheses(source_or_table, **filters) -> pd.DataFrame:
    """The plan's five hypotheses as rows: the claim, the two sides compared (mean ± 95%
    CI over seeds), their difference ± 95% CI and a verdict ("supported" when the interval
    of the difference lies above 0 in the predicted direction, "contradicted" below it,
    otherwise "inconclusive"). Accuracy here is on repeated (state, action) pairs, the
    in-context part; "skill" rescales it to (acc - 1/S) / (1 - 1/S) to compare machines
    with different S."""
    table = source_or_table if isinstance(source_or_table, pd.DataFrame) else load(source_or_table, **filters)
    table = table.copy()
    if not table.empty:
        table["final_val_repeat_skill"] = (table["final_val_repeat_acc"] - table["chance"]) / (1 - table["chance"])
    aggregated = aggregate(table, metrics=[m for m in ["final_val_acc", "final_val_repeat_acc",
                                                       "final_val_repeat_skill"] if m in table]
                           + [c for c in probe_columns(table) if c.startswith("probe_table_acc")])
    if aggregated.empty:
        aggregated = pd.DataFrame(columns=["configuration", "epochs", "final_val_acc_n"])

    budget = plan_budget(table)
    walks = {key: budget[key] for key in WALKS} if budget else {}

    def row(label):
        return _longest(aggregated, label, walks) if walks else None

    def side(r, metric):
        return "no runs" if r is None else f"{r['configuration']} ({r['epochs']} epochs): {format_interval(r, metric)}"

    lstm = row("lstm 5s5a")
    last_layer = f"probe_table_acc_layer{2}"  # the plan's LSTMs have 2 layers: layer 2 is the top one
    # curriculum: easy -> 5s5a (two stages of E epochs), against 5s5a from scratch with as
    # many epochs (2E) at the same walks; no such control: no verdict
    chained = row("small_lstm 5s5a after easy")
    scratch = None if chained is None else _row(aggregated, "small_lstm 5s5a",
                                                {**walks, "epochs": 2 * int(chained["epochs"])})
    plan = [
        ("1 parameter fairness", "at matched parameters (~1.06M) the LSTM beats the deep vanilla RNN",
         lstm, row("deep_rnn 5s5a"), "final_val_repeat_acc"),
        ("2 capacity vs architecture", "gating beats 4x the parameters: small LSTM (68K) > vanilla RNN (270K)",
         row("small_lstm 5s5a"), row("vanilla_rnn 5s5a"), "final_val_repeat_acc"),
        ("2 capacity vs architecture", "capacity within an architecture: LSTM (1.06M) > small LSTM (68K)",
         lstm, row("small_lstm 5s5a"), "final_val_repeat_acc"),
        ("2 capacity vs architecture", "attention beats recurrence: transformer (110K) > LSTM (1.06M)",
         row("transformer 5s5a"), lstm, "final_val_repeat_acc"),
        ("3 linear separability", "seen table entries are linearly decodable from the LSTM's top layer "
         "(probe accuracy > chance 1/S)", lstm, None if lstm is None else 1.0 / 5, last_layer),
        ("4 scaling to harder machines", "more actions are harder: LSTM skill on 5s5a > on 5s8a",
         lstm, row("lstm 5s8a"), "final_val_repeat_skill"),
        ("4 scaling to harder machines", "more states and actions are harder: LSTM skill on 5s5a > on 8s8a",
         lstm, row("lstm 8s8a"), "final_val_repeat_skill"),
        ("5 curriculum", "easy -> 5s5a beats 5s5a from scratch with as many epochs (small LSTM)", chained, scratch,
         "final_val_acc"),
    ]
    rows = []
    for hypothesis, claim, a, b, metric in plan:
        if a is not None and f"{metric}_mean" not in a:
            a = None
        b_text = f"chance {b:.3f}" if isinstance(b, float) else side(b, metric)
        outcome = _difference(a, b, metric)
        unfinished = [_unfinished(r) for r in (a, b) if r is not None and not isinstance(r, float)]
        if outcome["verdict"] in VERDICTS and any(unfinished):
            # a verdict from a model still learning is not a finding: say so, with the budget
            outcome["verdict"] = "not converged: " + "; ".join(u for u in unfinished if u)
        rows.append({"hypothesis": hypothesis, "claim": claim, "metric": metric, "A": side(a, metric), "B": b_text,
                     **outcome})
    return pd.DataFrame(rows)


VERDICTS = ("supported", "contradicted", "inconclusive", "one seed: no interval")


def _unfinished(row) -> str:
    """'' when every run of an aggregate row plateaued, else which did not, and its budget."""
    runs = len(row["runs"])
    if row.get("plateaued_runs", 0) == runs:
        return ""
    return f"{row['configuration']} {row['plateaued_runs']} of {runs} runs plateaued at {row['epochs']} epochs"


# ------------------------------------------------------------------ how a verdict moves with budget
CURVE_METRICS = {"val.acc": "final_val_acc", "val.repeat_acc": "final_val_repeat_acc"}
BY_BUDGET = ("1 parameter fairness", "2 capacity vs architecture", "4 scaling to harder machines")


def plan_runs(table: pd.DataFrame) -> pd.DataFrame:
    """The runs the hypotheses judge: on the plan's walks, started afresh, each configuration
    at its longest budget."""
    budget = plan_budget(table)
    if not budget:
        return table.iloc[0:0]
    table = table[table["init_from_dataset"].isna()]
    for key in WALKS:
        table = table[table[key] == budget[key]]
    return table[table["epochs"] == table.groupby("configuration")["epochs"].transform("max")]


def learning_curves(source, runs: pd.DataFrame | None = None, **filters) -> pd.DataFrame:
    """The logged validation curves of the runs at the plan's walks that started afresh, each
    configuration at its longest budget (``runs``: a ``load`` table already read from
    ``source``): long frame run, start_time, configuration, seed, chance, plateaued (its
    recorded plateau), metric (val.acc, val.repeat_acc), epoch, value. ``source`` may be a runs
    table exported with these curves (``toylab export --curves val.acc,val.repeat_acc``)."""
    table = plan_runs(load(source, **filters) if runs is None else runs)
    if table.empty:
        return pd.DataFrame(columns=["run", "start_time", "configuration", "seed", "chance", "plateaued", "metric",
                                     "epoch", "value"])
    if is_runs_table_file(source):
        missing = [name for name in CURVE_METRICS if CURVE_PREFIX + name not in table]
        if missing:
            raise ValueError(f"{source} has no curve of {', '.join(missing)}: export it with "
                             f"--curves {','.join(CURVE_METRICS)}")
        without = int(table[CURVE_PREFIX + "val.repeat_acc"].map(lambda c: not isinstance(c, dict)).sum())
        if without:
            warnings.warn(f"{source}: {without} of the plan's runs have no curves (exported without --curves): "
                          "left out of the curves")
    points = metrics_table(source, metric=list(CURVE_METRICS), experiment=EXPERIMENT, **filters)
    # a runs table accumulated from several stores repeats run ids: its curves carry the start time too
    same_run = ["run", "start_time"] if "start_time" in points else ["run"]
    points = points.rename(columns={"step": "epoch"})
    runs = table[["run", "start_time", "configuration", "seed", "chance"]].assign(plateaued=plateaued(table))
    return points.merge(runs, on=same_run)


def steps_per_epoch(runs: pd.DataFrame) -> int | None:
    """Training steps per epoch of these runs (walks / batch size), None when they differ."""
    steps = {-(-int(n) // int(b)) for n, b in runs[["train_sequences", "batch_size"]].itertuples(index=False)}
    return steps.pop() if len(steps) == 1 else None


def hypotheses_by_budget(source, epochs: list, runs: pd.DataFrame | None = None, **filters) -> pd.DataFrame:
    """The accuracy hypotheses (1, 2 and 4) as the same runs read after each of ``epochs``
    epochs: every run's validation values at that epoch, and its own plateau rule (the
    metric, tolerance and window of its ``plateau`` record) recomputed on its curve up to
    there, so a short budget reads "not converged" where the curve was still rising. A run
    without a measurement at that epoch is left out there. Columns: epochs and the
    ``hypotheses`` columns; ``runs``: a ``load`` table already read from ``source``."""
    table = load(source, **filters) if runs is None else runs
    curves = learning_curves(source, runs=table, **filters)
    # a run is its id and start time: ids repeat in a runs table accumulated from several stores
    series = {run: {metric: (group["epoch"].tolist(), group["value"].tolist())
                    for metric, group in points.sort_values("epoch").groupby("metric")}
              for run, points in curves.groupby(["run", "start_time"], dropna=False)}
    judged = [run for run in table.drop(columns=probe_columns(table)).to_dict("records")
              if (run["run"], run["start_time"]) in series]
    rows = []
    for budget in epochs:
        read = []
        for run in judged:
            truncated = {metric: tuple(map(list, zip(*[(e, v) for e, v in zip(*curve) if e < budget]))) or ([], [])
                         for metric, curve in series[(run["run"], run["start_time"])].items()}
            if any(not steps or steps[-1] != budget - 1 for steps, _ in truncated.values()):
                continue  # no measurement at that epoch
            rule = run["plateau"] if isinstance(run.get("plateau"), dict) else {}
            record = plateau(truncated, rule.get("metric", "val.repeat_acc"), tolerance=rule.get("tolerance"),
                             window=rule.get("window", WINDOW))
            read.append({**run, **{column: truncated[metric][1][-1] for metric, column in CURVE_METRICS.items()},
                         "epochs": budget, "plateau": record})
        if read:
            verdicts = hypotheses(pd.DataFrame(read))
            rows.append(verdicts[verdicts["hypothesis"].isin(BY_BUDGET)].assign(epochs=budget))
    columns = ["epochs", "hypothesis", "claim", "metric", "A", "B", "difference", "ci95", "verdict"]
    return pd.concat(rows, ignore_index=True)[columns] if rows else pd.DataFrame(columns=columns)


def budget_figure(curves: pd.DataFrame, steps_per_epoch: int | None = None, title: str = ""):
    """Accuracy on repeated pairs against training (epochs, or steps when ``steps_per_epoch``
    is given) per configuration: mean and 95% band over seeds, chance dotted, the legend with
    how many runs plateaued. Where two curves cross, the verdict on that pair depends on the
    budget."""
    fig, ax = plt.subplots(figsize=(7.2, 4.4), dpi=110)
    repeat = curves[curves["metric"] == "val.repeat_acc"]
    scale = steps_per_epoch or 1
    for k, (configuration, group) in enumerate(repeat.groupby("configuration", sort=True)):
        by_epoch = group.groupby("epoch")["value"]
        stats = pd.DataFrame([{"epoch": epoch, **dict(zip(("mean", "half", "n"), mean_ci(values)))}
                              for epoch, values in by_epoch])
        x = (stats["epoch"] + 1) * scale
        finished = (f", {int(group.groupby(['run', 'start_time'])['plateaued'].first().sum())} plateaued"
                    if "plateaued" in group else "")
        ax.plot(x, stats["mean"], color=f"C{k % 10}", lw=1.4,
                label=f"{configuration} (n={int(stats['n'].max())}{finished})")
        ax.fill_between(x, stats["mean"] - stats["half"].fillna(0), stats["mean"] + stats["half"].fillna(0),
                        color=f"C{k % 10}", alpha=0.15, lw=0)
    for chance in sorted(set(repeat["chance"])):
        ax.axhline(chance, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("training steps" if steps_per_epoch else "epochs")
    ax.set_ylabel("validation accuracy on repeated pairs")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    return fig
