"""Liu et al. (2022)'s published phase diagrams beside ours: on the paper's split, and over seeds.

    grid = published_grid("mse")                                  # the paper's cells, its steps
    runs = sweep_runs("runs", "phase_mse_seeds")                   # analysis.runs
    table = phase_table(runs, "decoder_lr", "decoder_weight_decay")
    cells = seed_cells(table, "decoder_lr", "decoder_weight_decay")  # shares of phases, medians
    numbers = compare(table, "mse")                                 # agreement, rank correlation, typicality
    fig = comparison_figure(table, "mse")

The data: ``analysis/reference/liu2022_phase_diagrams.json``, the three 1e5-step grids that
the paper's code repository publishes (ejmichaud/grokking-squared,
phase_diagram_plot/data_add_r.h5, data_add_c.h5, data_add_r_reprlr.h5; MIT license), as
steps to train and test accuracy >= 0.9 per cell, 99999 = never. Each grid is one split
of the 55 pairs: seed 58 of the repository's notebook for MSE and representation lr,
seed 6 for cross-entropy (``toymodels.addition.NOTEBOOK_SEEDS``; the experiment's
``draws="paper_notebook"`` draws them).

Step convention. The paper records the index of the update after which accuracy reached
0.9 (a loop index from 0, measured after the update); Toylab records the number of updates
before the measurement (``t`` = measured on the parameters before update ``t``). The same
crossing is therefore Toylab's t = the paper's t + 1: ``paper_steps`` subtracts the one, and
every comparison here is in the paper's convention. Phases do not depend on it.

Comparison numbers (``compare``), over the published cells that our runs span:
- ``agreement``: the share of cells whose majority phase over our seeds is the paper's
  (a cell we have no run for counts as disagreeing, and is listed in ``missing``);
- ``spearman_t_train`` / ``spearman_t_test``: the rank correlation of log steps (the ranks
  of the steps: the logarithm keeps the order), over the cells where both the paper and our
  median reach the threshold (ranks from pandas; no SciPy);
- ``steps_equal``: the cells whose median steps are the paper's exactly (paper's convention);
- ``typicality``: the mean over cells of the share of our seeds that have the paper's
  phase, beside ``seed_typicality``: the same score of each of our seeds against the
  other seeds (leave one out). The paper's diagram is typical of ours when it scores like
  one of our seeds; ``verdict`` says which, and gives none from fewer than ``min_seeds``
  seeds (5, the issue's minimum: two seeds' leave-one-out scores are one number, and a
  majority of two is a tie).

Seeds: a rule fixed before any result (experiments/grokking.py, SEEDS): seeds 0..9. The
alternative rule, the first ten seeds whose split leaves every test sum reachable (a
property of the split alone, known before training), is ``reachable_seeds``. ``SEED_RULES``
holds both; ``rule_seeds_done`` gives the prefix of a rule's seeds that a table completes
(``runs[runs.seed.isin(rule_seeds_done(runs, "reachable", x, y))]``: that rule's comparison).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from analysis.grokking import PHASE_COLORS, _edges, _is_log_axis, phase_cells
from toymodels.addition import make_addition_task
from toymodels.phases import PHASES, classify_phase

REFERENCE = Path(__file__).with_name("reference") / "liu2022_phase_diagrams.json"
DIAGRAMS = ("mse", "cross_entropy", "representation_lr")
# the name a diagram's sweeps carry: phase_<name>_<kind> (experiments/grokking.py SWEEPS)
SWEEP_NAMES = {"mse": "mse", "cross_entropy": "cross_entropy", "representation": "representation_lr"}
PAPER_BUDGET = 100000  # the published grids' budget; 99999 (budget - 1) is "never"
PAPER_MARGIN = 1000  # Delta of the published phase rule
MIN_SEEDS = 5  # fewer seeds give the numbers but no verdict on how typical the paper's diagram is
SHORT = {"comprehension": "com", "grokking": "grk", "memorization": "mem", "confusion": "cnf"}  # figure labels


# ----------------------------------------------------------------------- the data
@lru_cache(maxsize=1)
def reference() -> dict:
    """The reference file as it is (source, how to read it, the three diagrams)."""
    return json.loads(REFERENCE.read_text())


def source() -> str:
    return reference()["source"]


def _config_key(text: str) -> str:
    """A grid axis' config key ("encoder_lr (the representation's learning rate)" -> "encoder_lr")."""
    return text.split()[0]


def sweep_diagram(sweep: str) -> Optional[str]:
    """The published diagram a phase sweep is compared with, from its name (``phase_mse``,
    ``phase_cross_entropy_seeds`` -> ``cross_entropy``); None for a sweep that names none."""
    for name, diagram in sorted(SWEEP_NAMES.items(), key=lambda item: -len(item[0])):
        if sweep == f"phase_{name}" or sweep.startswith(f"phase_{name}_"):
            return diagram
    return None


def published_axes(diagram: str) -> tuple[str, list, str, list]:
    """(row key, row values, column key, column values) of a published grid, keys as the
    experiment's config keys, values exactly as published."""
    if diagram not in DIAGRAMS:
        raise ValueError(f"unknown diagram {diagram!r}: use one of {', '.join(DIAGRAMS)}")
    d = reference()["diagrams"][diagram]
    return (_config_key(d["rows"]["key"]), list(d["rows"]["values"]),
            _config_key(d["columns"]["key"]), list(d["columns"]["values"]))


def published_grid(diagram: str, budget: int = PAPER_BUDGET, margin: float = PAPER_MARGIN) -> pd.DataFrame:
    """One row per published cell: the row and column values (named by their config keys),
    ``t_train`` and ``t_test`` in the paper's convention (None where not reached), and the
    phase with ``margin``. With a ``budget`` below the paper's, a step is kept only when a
    run of that budget would see it (paper t + 1 <= budget - 1, Toylab's last measured
    step), so a quick sweep can be compared with what the paper's runs did by then."""
    row_key, rows, column_key, columns = published_axes(diagram)
    d = reference()["diagrams"][diagram]

    def reached(t: float) -> Optional[int]:
        t = int(t)
        return None if t >= PAPER_BUDGET - 1 or t + 1 > budget - 1 else t

    records = []
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            t_train, t_test = reached(d["train_steps"][i][j]), reached(d["test_steps"][i][j])
            records.append({row_key: row, column_key: column, "t_train": t_train, "t_test": t_test,
                            "phase": classify_phase(t_train, t_test, budget, margin)})
    frame = pd.DataFrame(records)
    for name in ("t_train", "t_test"):  # ints and None, not floats and NaN
        frame[name] = pd.Series([record[name] for record in records], dtype=object)
    return frame


def paper_steps(t) -> Optional[int]:
    """A Toylab threshold step in the paper's convention (the index of the update after
    which the threshold was reached): t - 1; None (never) stays None."""
    if t is None or (isinstance(t, float) and np.isnan(t)):
        return None
    return int(t) - 1


def with_paper_steps(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``t_train_paper`` and ``t_test_paper`` (``paper_steps`` of each run)."""
    out = table.copy()
    for name in ("t_train", "t_test"):
        out[f"{name}_paper"] = [paper_steps(t) for t in out[name]]
    return out


# ---------------------------------------------------------------------- the seeds
def every_test_sum_seen(task) -> bool:
    """Whether every test pair's sum occurs among the training pairs' sums: otherwise that
    pair's target is never trained and test accuracy is capped below 1 (0.8 for seed 0)."""
    train_sums = set(task.labels[task.train_mask].tolist())
    return all(s in train_sums for s in task.labels[~task.train_mask].tolist())


def reachable_seeds(n: int = 10, p: int = 10, train_fraction: float = 45 / 55, start: int = 0,
                    limit: int = 10000) -> list[int]:
    """The first ``n`` seeds from ``start`` whose split (the experiment's own draws,
    ``draws="toylab"``) leaves every test sum reachable; known from the split alone."""
    seeds = []
    for seed in range(start, start + limit):
        if every_test_sum_seen(make_addition_task(p, train_fraction, seed)):
            seeds.append(seed)
            if len(seeds) == n:
                return seeds
    raise ValueError(f"fewer than {n} such seeds in {start}..{start + limit - 1}")


# the two seed rules, their ten seeds in order (experiments/grokking.py SEEDS, REACHABLE_SEEDS)
SEED_RULES = {"0..9": list(range(10)), "reachable": reachable_seeds(10)}


def rule_seeds_done(runs: pd.DataFrame, rule: str, x: str, y: str) -> list[int]:
    """The seeds of a seed ``rule`` that a comparison can use now: the rule's seeds in its
    order, up to the first one without a run in every (x, y) cell the runs cover. A rule's
    first five seeds are its first five, never five of its ten picked by which finished."""
    if rule not in SEED_RULES:
        raise ValueError(f"unknown seed rule {rule!r}: use one of {', '.join(SEED_RULES)}")
    cells = set(zip(runs[x], runs[y]))
    done = []
    for seed in SEED_RULES[rule]:
        mine = runs[runs["seed"] == seed]
        if not cells or set(zip(mine[x], mine[y])) != cells:
            break
        done.append(seed)
    return done


# ------------------------------------------------------------------ over the seeds
def _median_steps(values) -> float:
    """The median threshold step, "never" counted as later than any step: NaN when the
    median seed never reaches the threshold."""
    steps = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").fillna(np.inf).to_numpy(float)
    median = float(np.median(steps)) if len(steps) else np.inf
    return median if np.isfinite(median) else np.nan


def seed_cells(table: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """One row per (x, y) cell of a multi-seed table (``analysis.phase_table``): the majority
    phase and its share (``phase_cells``), the share of seeds in each phase
    (``share_comprehension`` ...), and the medians of t_train and t_test in the paper's
    convention (``t_train_median``, ``t_test_median``; NaN when most seeds never reach it)."""
    if table.empty:
        raise ValueError("no runs to summarise")
    majority = phase_cells(table, x, y)[[x, y, "phase", "agreement", "seeds"]].rename(columns={"agreement": "share"})
    rows = []
    for (xv, yv), cell in table.groupby([x, y]):
        counts = cell["phase"].value_counts()
        row = {x: xv, y: yv}
        row.update({f"share_{phase}": counts.get(phase, 0) / len(cell) for phase in PHASES})
        row["t_train_median"] = _median_steps(paper_steps(t) for t in cell["t_train"])
        row["t_test_median"] = _median_steps(paper_steps(t) for t in cell["t_test"])
        rows.append(row)
    return majority.merge(pd.DataFrame(rows), on=[x, y])


def _snapped(table: pd.DataFrame, diagram: str, x: str, y: str) -> pd.DataFrame:
    """``table`` with its x and y values replaced by the published grid value each is within
    0.1% of (the older phase_mse sweep rounds its learning rates to 4 digits); values on no
    published row or column stay as they are."""
    row_key, rows, column_key, columns = published_axes(diagram)
    out = table.copy()
    for name in (x, y):
        published = np.asarray(rows if name == row_key else columns, dtype=float)

        def snap(value, published=published):
            close = np.flatnonzero(np.abs(published - float(value)) <= 1e-3 * np.abs(published))
            return float(published[close[0]]) if len(close) else value
        out[name] = out[name].map(snap)
    return out


def _key(value) -> float:
    """Grid values as merge keys: 12 significant digits (a value that went through JSON
    and back is the same cell)."""
    return float(f"{float(value):.12g}")


def _with_keys(frame: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    out = frame.copy()
    out["_x"], out["_y"] = out[x].map(_key), out[y].map(_key)
    return out


def _spearman(a: pd.Series, b: pd.Series) -> float:
    """Spearman's rank correlation: Pearson's correlation of the (average-tie) ranks."""
    if len(a) < 3:
        return np.nan
    ra, rb = a.rank().to_numpy(float), b.rank().to_numpy(float)
    if ra.std() == 0 or rb.std() == 0:
        return np.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def compare(table: pd.DataFrame, diagram: str, x: Optional[str] = None, y: Optional[str] = None,
            budget: int = PAPER_BUDGET, margin: float = PAPER_MARGIN, min_seeds: int = MIN_SEEDS) -> dict:
    """Our runs (one or many seeds a cell; ``analysis.phase_table``'s columns) against the
    published ``diagram`` (``published_grid`` at our ``budget``), over the published cells
    whose row and column values our runs span. See the module docstring for the numbers."""
    row_key, _, column_key, _ = published_axes(diagram)
    x, y = x or row_key, y or column_key
    if {x, y} != {row_key, column_key}:
        raise ValueError(f"the published {diagram} grid is {row_key} x {column_key}, not {x} x {y}")
    paper = _with_keys(published_grid(diagram, budget, margin), x, y).rename(
        columns={"t_train": "t_train_paper", "t_test": "t_test_paper", "phase": "phase_paper"})
    table = _snapped(table, diagram, x, y)
    spanned = _with_keys(table, x, y)
    paper = paper[paper["_x"].isin(set(spanned["_x"])) & paper["_y"].isin(set(spanned["_y"]))]
    if paper.empty:
        raise ValueError(f"none of our cells is a cell of the published {diagram} grid")
    ours = spanned.merge(paper[["_x", "_y"]], on=["_x", "_y"])  # our runs in published cells
    cells = _with_keys(seed_cells(table, x, y), x, y).drop(columns=[x, y])
    merged = paper.merge(cells, on=["_x", "_y"], how="left")
    present = merged["seeds"].notna()
    agree = present & (merged["phase"] == merged["phase_paper"])
    merged["share_of_paper_phase"] = [row[f"share_{row['phase_paper']}"] if ok else 0.0
                                      for ok, (_, row) in zip(present, merged.iterrows())]

    both = {}  # ranks of log steps are the ranks of the steps: Spearman's rho needs no logarithm
    for name in ("t_train", "t_test"):
        theirs, mine = pd.to_numeric(merged[f"{name}_paper"], errors="coerce"), merged[f"{name}_median"]
        ok = present & theirs.notna() & mine.notna()
        both[name] = (_spearman(theirs[ok], mine[ok].astype(float)), int(ok.sum()))

    seed_scores = _leave_one_out(ours)
    paper_score = float(merged["share_of_paper_phase"].mean())
    below = sum(s < paper_score for s in seed_scores.values())
    if not seed_scores:
        verdict = "one seed: no leave-one-out scores to compare with"
    elif len(seed_scores) < min_seeds:
        verdict = (f"too few seeds for a verdict ({len(seed_scores)}, at least {min_seeds}): the paper's diagram "
                   f"scores {paper_score:.3f}, our seeds {min(seed_scores.values()):.3f}.."
                   f"{max(seed_scores.values()):.3f}")
    elif paper_score > max(seed_scores.values()):  # not "within": it matches our seeds better than any of them
        verdict = (f"typical: the paper's diagram scores {paper_score:.3f}, above each of our seeds' "
                   f"{min(seed_scores.values()):.3f}..{max(seed_scores.values()):.3f} (above {below} of "
                   f"{len(seed_scores)}): it has our seeds' phases more often than any one of our seeds")
    elif paper_score >= min(seed_scores.values()):
        verdict = (f"typical: the paper's diagram scores {paper_score:.3f}, within our seeds' "
                   f"{min(seed_scores.values()):.3f}..{max(seed_scores.values()):.3f} (above {below} of "
                   f"{len(seed_scores)})")
    else:
        verdict = (f"not typical: the paper's diagram scores {paper_score:.3f}, below every one of our "
                   f"{len(seed_scores)} seeds ({min(seed_scores.values()):.3f}..{max(seed_scores.values()):.3f})")
    steps_equal = present & _equal(merged["t_train_paper"], merged["t_train_median"]) & _equal(
        merged["t_test_paper"], merged["t_test_median"])
    return {
        "diagram": diagram, "x": x, "y": y, "cells": int(len(merged)),
        "missing": merged.loc[~present, [x, y]].values.tolist(),
        "seeds": int(merged["seeds"].max()) if present.any() else 0,
        "agreeing": int(agree.sum()), "agreement": float(agree.mean()),
        "spearman_t_train": both["t_train"][0], "spearman_t_train_cells": both["t_train"][1],
        "spearman_t_test": both["t_test"][0], "spearman_t_test_cells": both["t_test"][1],
        "typicality": paper_score, "seed_typicality": seed_scores, "verdict": verdict,
        "steps_equal": int(steps_equal.sum()),
        "table": merged.drop(columns=["_x", "_y"]),
    }


def _equal(theirs: pd.Series, mine: pd.Series) -> pd.Series:
    """Same step, or both never."""
    a, b = pd.to_numeric(theirs, errors="coerce"), pd.to_numeric(mine, errors="coerce")
    return (a == b) | (a.isna() & b.isna())


def _leave_one_out(ours: pd.DataFrame) -> dict:
    """Each seed's typicality among the others: the mean over its cells of the share of the
    other seeds (in that cell) that have its phase. Cells where it is alone are skipped."""
    scores = {}
    for seed, runs in ours.groupby("seed"):
        shares = []
        for _, run in runs.iterrows():
            others = ours[(ours["_x"] == run["_x"]) & (ours["_y"] == run["_y"]) & (ours["seed"] != seed)]
            if len(others):
                shares.append(float((others["phase"] == run["phase"]).mean()))
        if shares:
            scores[int(seed)] = float(np.mean(shares))
    return scores


def differences(comparison: dict) -> pd.DataFrame:
    """The cells of a ``compare`` result whose majority phase is not the paper's, with both
    sides' steps (paper's convention): what has to be explained on the paper's split."""
    table = comparison["table"]
    keep = table["phase"] != table["phase_paper"]
    columns = [comparison["x"], comparison["y"], "phase_paper", "phase", "share", "t_train_paper", "t_train_median",
                                               "t_test_paper", "t_test_median"]
    out = table.loc[keep, columns].reset_index(drop=True)
    out["differs_in"] = [differs_in(row) for _, row in out.iterrows()]
    return out


def differs_in(row) -> str:
    """Which part of the phase rule puts a cell on different sides (fixed before any result):
    ``no run`` (we have none in that cell), ``train threshold`` (one side reaches train accuracy 0.9 within the budget, the other
    never), ``test threshold`` (the same for test accuracy), or ``margin`` (both reach both;
    t_test - t_train falls on either side of Delta). Steps are the paper's convention."""
    def reached(value):
        return value is not None and not pd.isna(value)

    if not reached(row["phase"]):
        return "no run"
    if reached(row["t_train_paper"]) != reached(row["t_train_median"]):
        return "train threshold"
    if reached(row["t_test_paper"]) != reached(row["t_test_median"]):
        return "test threshold"
    return "margin"


# ------------------------------------------------------------------------ figure
def comparison_figure(table: pd.DataFrame, diagram: str, x: Optional[str] = None, y: Optional[str] = None,
                      budget: int = PAPER_BUDGET, margin: float = PAPER_MARGIN, title: str = ""):
    """Three panels over the published cells our runs span: the paper's phases, ours
    (majority over seeds, the share written where seeds disagree) and where they differ
    (paper's / our phase initials), with the comparison numbers in the title."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    result = compare(table, diagram, x, y, budget, margin)
    cells, x, y = result["table"], result["x"], result["y"]
    sns.set_theme(style="white", context="paper")
    xs, ys = np.sort(cells[x].unique()), np.sort(cells[y].unique())
    log_x, log_y = _is_log_axis(x, xs), _is_log_axis(y, ys)
    X, Y = _edges(xs, log_x), _edges(ys, log_y)
    grids = {name: np.full((len(ys), len(xs)), np.nan) for name in ("paper", "ours", "differ")}
    position = {}
    for index, cell in cells.iterrows():
        i, j = np.searchsorted(ys, cell[y]), np.searchsorted(xs, cell[x])
        position[index] = (i, j)
        grids["paper"][i, j] = PHASES.index(cell["phase_paper"])
        if pd.notna(cell["seeds"]):
            grids["ours"][i, j] = PHASES.index(cell["phase"])
            grids["differ"][i, j] = float(cell["phase"] != cell["phase_paper"])
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), dpi=100)
    phase_map = ListedColormap([PHASE_COLORS[p] for p in PHASES])
    norm = BoundaryNorm(np.arange(len(PHASES) + 1) - 0.5, len(PHASES))
    axes[0].pcolormesh(X, Y, np.ma.masked_invalid(grids["paper"]), cmap=phase_map, norm=norm)
    axes[0].set_title(f"paper ({diagram}, published grid)")
    axes[1].pcolormesh(X, Y, np.ma.masked_invalid(grids["ours"]), cmap=phase_map, norm=norm)
    axes[1].set_title(f"ours: majority of {result['seeds']} seed{'s' if result['seeds'] != 1 else ''}")
    axes[2].pcolormesh(X, Y, np.ma.masked_invalid(grids["differ"]), cmap=ListedColormap(["#e8e8e8", "#8b0000"]),
                       vmin=0, vmax=1)
    axes[2].set_title(f"where they differ ({result['cells'] - result['agreeing']} of {result['cells']} cells)")
    for index, cell in cells.iterrows():
        if pd.isna(cell["seeds"]):
            axes[2].text(cell[x], cell[y], "none", ha="center", va="center", fontsize=6)
            continue
        if cell["share"] < 1:
            axes[1].text(cell[x], cell[y], f"{cell['share']:.0%}", ha="center", va="center", fontsize=6)
        if cell["phase"] != cell["phase_paper"]:
            axes[2].text(cell[x], cell[y], f"{SHORT[cell['phase_paper']]}/{SHORT[cell['phase']]}", ha="center",
                         va="center", fontsize=5, color="white")
    axes[0].legend(handles=[Patch(color=PHASE_COLORS[p], label=p) for p in PHASES], fontsize=7,
                   loc="upper left", bbox_to_anchor=(0, -0.15), ncol=4)
    axes[2].legend(handles=[Patch(color="#8b0000", label="differs: paper / ours (" + ", ".join(SHORT.values()) + ")"),
                            Patch(color="#e8e8e8", label="agrees")], fontsize=7,
                   loc="upper left", bbox_to_anchor=(0, -0.15), ncol=2)
    for ax in axes:
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_xscale("log" if log_x else "linear")
        ax.set_yscale("log" if log_y else "linear")
    numbers = (f"agreement {result['agreeing']}/{result['cells']} ({result['agreement']:.1%}); Spearman log t_train "
               f"{result['spearman_t_train']:.2f}, log t_test {result['spearman_t_test']:.2f}; typicality "
               f"{result['typicality']:.3f}")
    if result["seed_typicality"]:
        scores = result["seed_typicality"].values()
        numbers += f" (our seeds, leave one out: {min(scores):.3f}..{max(scores):.3f})"
    fig.suptitle((title + "\n" if title else "") + numbers, fontsize=9)
    fig.tight_layout()
    return fig
