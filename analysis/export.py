"""Runs and metrics out of Toylab: a runs table or a metrics table as CSV or Parquet.

    analysis.export("runs", "runs.csv", experiment="grokking", sweep="phase_mse_quick")
    analysis.export("runs", "curves.parquet", what="metrics", metric=["test.acc"])
    analysis.export("runs", "docs/results/phase_mse_seeds.csv", sweep="phase_mse_seeds", append=True)

``append=True`` adds the runs to a runs table written before (another session's, from
another store), so a measurement that takes several sessions accumulates in one file; a
run already in it (same experiment, run id and start time) is kept once.

``curves=["val.acc", ...]`` adds to a runs table each run's curve of those metrics, as a
column ``curve:<metric>`` ({"steps": [...], "values": [...]}), so an analysis that reads
curves (accuracy against steps, a plateau recomputed at a shorter budget) works from the
table as from the store: ``metrics_table`` reads them back.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Optional

import pandas as pd

from analysis.runs import CURVE_PREFIX, metrics_table, runs_table

FORMATS = (".csv", ".parquet")


def export(source, path, what: str = "runs", experiment: Optional[str] = None, db_name: Optional[str] = None,
           status: Optional[str] = None, sweep: Optional[str] = None, metric=None, append: bool = False,
           curves=None, **config_filters) -> Path:
    """Write the runs table (``what="runs"``: one row per run, config keys and results as
    columns) or the metrics table (``"metrics"``: run, metric, step, value) of ``source`` (a
    runs directory or a MongoDB URL) to ``path``, CSV or Parquet by its suffix. ``status`` and
    ``sweep`` select runs; ``curves`` (metric names) adds those curves to a runs table; further
    keywords filter on config values. Returns the path."""
    path = Path(path)
    if path.suffix not in FORMATS:
        raise ValueError(f"{path}: the file name must end in {' or '.join(FORMATS)}")
    if what not in ("runs", "metrics"):
        raise ValueError(f"what={what!r}: use runs or metrics")
    if append and what != "runs":
        raise ValueError("append adds runs to a runs table; metrics are exported whole")
    if curves and what != "runs":
        raise ValueError("curves are columns of a runs table; a metrics export holds every point already")
    runs = select(runs_table(source, experiment=experiment, db_name=db_name, **config_filters), status, sweep)
    if what == "runs":
        table = _with_curves(runs, source, curves, experiment, db_name, config_filters) if curves else runs
    else:
        table = metrics_table(source, metric=metric, experiment=experiment, db_name=db_name, **config_filters)
        table = table[table["run"].isin(runs["run"])].reset_index(drop=True)
    table = _plain(table)
    if append and path.exists():
        table = _appended(path, table)
    if path.suffix == ".csv":
        table.to_csv(path, index=False)
    else:
        table.to_parquet(path, index=False)
    return path


def _with_curves(runs: pd.DataFrame, source, curves, experiment, db_name, config_filters) -> pd.DataFrame:
    """``runs`` with a column ``curve:<metric>`` per metric of ``curves``: each run's steps and values."""
    points = metrics_table(source, metric=list(curves), experiment=experiment, db_name=db_name, **config_filters)
    # from a runs table the run ids may repeat (several stores): a run is its id and start time there
    same_run = ["run", "start_time"] if "start_time" in points else ["run"]
    runs = runs.copy()
    for name in curves:
        mine = points[points["metric"] == name].sort_values([*same_run, "step"])
        by_run = {key if isinstance(key, tuple) else (key,): {"steps": group["step"].tolist(),
                                                              "values": group["value"].tolist()}
                  for key, group in mine.groupby(same_run, dropna=False)}
        if not by_run:
            raise ValueError(f"curves: no selected run logged a metric {name!r}")
        runs[CURVE_PREFIX + name] = [by_run.get(tuple(key)) for key in runs[same_run].itertuples(index=False)]
    return runs


def _appended(path: Path, table: pd.DataFrame) -> pd.DataFrame:
    """The runs table in ``path`` with ``table``'s runs added (each run once), both as the
    file format gives them back, so a column keeps one type."""
    read = pd.read_csv if path.suffix == ".csv" else pd.read_parquet
    if path.suffix == ".csv":
        table = pd.read_csv(io.StringIO(table.to_csv(index=False)))
    before = read(path)
    combined = pd.concat([before, table], ignore_index=True)
    same_run = [c for c in ("experiment", "run", "start_time") if c in combined]
    combined = combined.drop_duplicates(subset=same_run, keep="last")
    return combined.sort_values([c for c in ("start_time", "run") if c in combined], kind="stable")


def select(runs: pd.DataFrame, status: Optional[str] = None, sweep: Optional[str] = None) -> pd.DataFrame:
    """The rows of a runs table with that status (e.g. COMPLETED, DEAD) and from that sweep."""
    if status is not None:
        runs = runs[runs["status"] == status]
    if sweep is not None:
        runs = runs[runs["sweep"] == sweep]
    return runs.reset_index(drop=True)


def _plain(table: pd.DataFrame) -> pd.DataFrame:
    """Columns a file format can hold: lists and dicts (e.g. a config list) as JSON text, and
    columns that mix numbers with text as text."""
    table = table.copy()
    for column in table.columns:
        if table[column].dtype != object:
            continue
        values = table[column].dropna()
        if values.map(lambda v: isinstance(v, (list, tuple, dict))).any():
            table[column] = table[column].map(lambda v: v if v is None else json.dumps(v, default=str))
        elif values.map(type).nunique() > 1:
            table[column] = table[column].map(lambda v: v if v is None else str(v))
    return table
