"""Load Toylab runs into pandas through Incense, from file storage or MongoDB.

    runs_table("runs")                                   # a file-storage directory
    runs_table("mongodb://localhost:27017", experiment="grokking", p=10)
    runs_table("docs/results/phase_mse_seeds.csv")       # a runs table `toylab export` wrote
    metrics_table("runs", metric="test.acc")

``runs_table``: one row per run: ``run``, ``experiment``, ``status``, ``start_time``,
``stop_time``, ``sweep`` (the sweep that ran it, or None), every config key as a column (nested keys dotted) and the run's result
values (``t_train``, ``t_test``, ``t_rqi``, ``phase``, final accuracies, ...).
``metrics_table``: the long frame ``run``, ``metric``, ``step``, ``value``; in MongoDB a
metric longer than one document (see observers/metric_documents.py) is joined from its chunks.

Dead runs: a run killed with SIGKILL (or whose machine died) stays RUNNING in the record
forever. ``runs_table`` reports a RUNNING run whose last heartbeat is older than
``dead_after`` seconds (default 120, as Omniboard's PROBABLY_DEAD) with status ``DEAD``;
the recorded status stays in the column ``recorded_status``.

A runs table written by ``toylab export`` (``.csv`` or ``.parquet``) is a source of
``runs_table`` too, so results committed as data (docs/results) are analysed like stored
runs: its rows as exported (the status as recorded then), the same filters. It holds no
artifacts (``load_runs`` refuses it in one line) and only the metric curves exported with it
(``export(..., curves=[...])``: a column ``curve:<metric>`` per curve), which
``metrics_table`` reads back with each row's ``start_time``: run ids repeat across the
stores a table accumulates from, and the run id with its start time tells two runs apart.

Keyword filters match config values (``p=10``, ``seed=[0, 1, 2]``); ``experiment``
matches the experiment name. A run directory that cannot be read (half-written, invalid
JSON) is skipped with a one-line warning naming it; loading never stops on one bad run.
"""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

RUN_COLUMNS = ["run", "experiment", "status", "recorded_status", "start_time", "stop_time", "heartbeat", "sweep",
               "sweep_point"]
CURVE_PREFIX = "curve:"  # an exported runs table's column holding one metric's {"steps": [...], "values": [...]}
DEAD_AFTER = 120.0  # seconds without a heartbeat after which a RUNNING run counts as DEAD


TABLE_SUFFIXES = (".csv", ".parquet")  # the runs tables analysis.export writes


def _is_mongo(source) -> bool:
    return isinstance(source, str) and source.startswith(("mongodb://", "mongodb+srv://"))


def is_runs_table_file(source) -> bool:
    """Whether ``source`` names an exported runs table rather than a store of runs."""
    return isinstance(source, (str, Path)) and not _is_mongo(source) and Path(source).suffix in TABLE_SUFFIXES


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value


def _matches(config: dict, filters: dict) -> bool:
    for key, wanted in filters.items():
        value = config.get(key)
        if isinstance(wanted, (list, tuple, set)):
            if value not in wanted:
                return False
        elif value != wanted:
            return False
    return True


def load_runs(source, experiment: Optional[str] = None, db_name: Optional[str] = None, **config_filters) -> list:
    """Incense experiments (runs) from a file-storage directory or a MongoDB URL."""
    if is_runs_table_file(source):
        raise ValueError(f"{source} is an exported runs table: it has the runs' rows, not their metrics or "
                         "artifacts; read it with runs_table")
    if _is_mongo(source):
        return _load_mongo(source, experiment, db_name, config_filters)
    return _load_files(Path(source), experiment, config_filters)


def _load_mongo(url: str, experiment, db_name, config_filters) -> list:
    from incense import ExperimentLoader

    import observers

    db_name = db_name or (observers.mongo_settings() or (None, "sacred"))[1]
    # unpickle=False: a run's info is data, never code to run on the reader's machine
    loader = ExperimentLoader(mongo_uri=url, db_name=db_name, unpickle=False)
    query: dict = {}
    if experiment is not None:
        query["experiment.name"] = experiment
    for key, wanted in config_filters.items():
        query[f"config.{key}"] = {"$in": list(wanted)} if isinstance(wanted, (list, tuple, set)) else wanted
    import pymongo.errors

    from observers.mongo import redact

    try:
        return list(loader.find(query))
    except pymongo.errors.OperationFailure as error:  # one line, without the credentials
        raise PermissionError(f"MongoDB refused access to database {db_name} "
                              f"({redact(str(error).splitlines()[0], url)}): check the user and password") from None
    except pymongo.errors.ConnectionFailure as error:
        raise ConnectionError(f"no MongoDB reachable at {redact(url, url)} ({type(error).__name__})") from None


def _run_dirs(root: Path) -> Iterable[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"no runs directory at {root}")
    dirs = [d for d in root.iterdir() if d.is_dir() and d.name.isdigit()]
    return sorted(dirs, key=lambda d: int(d.name))


def _load_files(root: Path, experiment, config_filters) -> list:
    from incense.experiment import FileSystemExperiment

    runs = []
    for run_dir in _run_dirs(root):
        if experiment is not None and _experiment_name(run_dir) not in (experiment, None):
            continue  # another experiment's run: its metrics are never parsed
        try:
            run = _read_run_dir(run_dir, FileSystemExperiment)
        except Exception as error:  # noqa: BLE001 - one bad run must not stop the load
            _warn(f"skipping run directory {run_dir}: {type(error).__name__}: {error}")
            continue
        if experiment is not None and run.experiment["name"] != experiment:
            continue
        if config_filters and not _matches(_flat_config(run), config_filters):
            continue
        runs.append(run)
    return runs


def _experiment_name(run_dir: Path) -> Optional[str]:
    """The experiment named in run.json, or None when it cannot be read (_read_run_dir says why)."""
    try:
        return json.loads((run_dir / "run.json").read_text())["experiment"]["name"]
    except Exception:  # noqa: BLE001
        return None


def _warn(message: str) -> None:
    warnings.warn(" ".join(str(message).split()), stacklevel=3)  # always one line


def _read_json(path: Path, default):
    """A run's JSON file; ``default`` (with a warning) when it is missing or unreadable,
    or raise when ``default`` is None (the file is required)."""
    if default is not None and not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except Exception as error:  # noqa: BLE001
        if default is None:
            raise ValueError(f"{path.name}: {type(error).__name__}: {error}") from None
        _warn(f"run directory {path.parent}: ignoring unreadable {path.name} ({type(error).__name__}: {error})")
        return default


def _read_run_dir(run_dir: Path, cls):
    """Incense's run object, tolerating what a run may not have written (yet): a queued or
    early-killed run has no info.json or metrics.json (Incense alone crashes on it), a run
    killed while writing may leave invalid JSON in them. run.json and config.json are
    required; the other files are replaced by empty stand-ins with a warning."""
    from pyrsistent import freeze

    data = _read_json(run_dir / "run.json", None)
    if not isinstance(data, dict) or "experiment" not in data or "status" not in data:
        raise ValueError("run.json holds no run (no experiment or status)")
    data["config"] = _read_json(run_dir / "config.json", None)
    data["info"] = _read_json(run_dir / "info.json", {})
    cout = run_dir / "cout.txt"
    data["captured_out"] = cout.read_text(errors="replace") if cout.exists() else ""
    raw_metrics = _read_json(run_dir / "metrics.json", {})
    metrics = {}
    for name, points in raw_metrics.items() if isinstance(raw_metrics, dict) else ():
        try:
            metrics[name] = pd.Series(points["values"], index=pd.Index(points["steps"], name="step"), name=name)
        except Exception as error:  # noqa: BLE001
            _warn(f"run directory {run_dir}: ignoring malformed metric {name!r} ({type(error).__name__})")
    return cls(int(run_dir.name), freeze(data), _artifacts(run_dir), metrics)


class _ArtifactFile:
    """An artifact's file, opened only when its content is asked for, and read whole then.
    Incense opens every artifact of every run it loads and keeps it open: a sweep of a few
    thousand runs would exceed a common limit of 1024 open files."""

    def __init__(self, path: Path):
        self.name = str(path)
        self._buffer = None

    def __getattr__(self, item):  # read, seek, readline, ...: from the bytes, the file closed again
        if self._buffer is None:
            self._buffer = io.BytesIO(Path(self.name).read_bytes())
        return getattr(self._buffer, item)


def _artifacts(run_dir: Path) -> dict:
    from incense.artifact import Artifact

    reserved = {"run.json", "cout.txt", "metrics.json", "config.json"}
    return {path.name: Artifact(path.name, _ArtifactFile(path)) for path in sorted(run_dir.iterdir())
            if path.name not in reserved and not path.is_dir()}


def _flat_config(run) -> dict:
    out: dict = {}
    _flatten("", _thaw(run.config), out)
    return out


def _thaw(value):
    from pyrsistent import thaw

    return thaw(value)


def runs_table(source, experiment: Optional[str] = None, db_name: Optional[str] = None,
               dead_after: float = DEAD_AFTER, **config_filters) -> pd.DataFrame:
    """One row per run: id, status, times, config keys as columns, result values.
    A RUNNING run without a heartbeat for ``dead_after`` seconds has status DEAD."""
    if is_runs_table_file(source):
        return _read_runs_table_file(Path(source), experiment, config_filters)
    rows, config_columns, result_columns = [], set(), set()
    for run in load_runs(source, experiment, db_name, **config_filters):
        row = {"run": run.id, "experiment": run.experiment["name"], "status": run.status,
               "recorded_status": run.status,
               "start_time": run.get("start_time"), "stop_time": run.get("stop_time"),
               "heartbeat": run.get("heartbeat"),
               # the sweeps package tags its runs with the sweep and the point
               "sweep": (run.get("meta") or {}).get("sweep"), "sweep_point": (run.get("meta") or {}).get("sweep_point")}
        config = _flat_config(run)
        row.update(config)
        config_columns.update(config)
        result = _thaw(run.get("result"))
        if isinstance(result, dict):
            row.update({key: value for key, value in result.items() if key not in row})
            result_columns.update(key for key in result if key not in config)
        elif result is not None:
            row["result"] = result
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=RUN_COLUMNS)
    for column in ("start_time", "stop_time", "heartbeat"):
        table[column] = pd.to_datetime(table[column], errors="coerce", utc=True, format="mixed")
    last_sign = table["heartbeat"].fillna(table["start_time"])
    stale = pd.Timestamp.now(tz="UTC") - last_sign > pd.Timedelta(seconds=dead_after)
    table.loc[(table["recorded_status"] == "RUNNING") & stale, "status"] = "DEAD"
    table = table.sort_values("run").reset_index(drop=True)
    # which columns are config and which are results (both are plain columns of the table)
    table.attrs.update(config_columns=sorted(config_columns), result_columns=sorted(result_columns))
    return table


def _read_runs_table_file(path: Path, experiment: Optional[str], config_filters: dict) -> pd.DataFrame:
    """An exported runs table (``analysis.export``) read back: times as UTC timestamps, the
    same experiment and config filters as a store. Which columns were config is not in the
    file: ``attrs`` name every column that is not a run column as config."""
    if not path.is_file():
        raise FileNotFoundError(f"no runs table at {path}")
    table = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    for column in ("start_time", "stop_time", "heartbeat"):
        if column in table:
            table[column] = pd.to_datetime(table[column], errors="coerce", utc=True, format="mixed")
    for column in table.columns:  # the lists and dicts the export wrote as JSON text, as they were
        if pd.api.types.is_string_dtype(table[column]) and (parsed := _json_containers(table[column])) is not None:
            table[column] = parsed
    if experiment is not None and not table.empty:
        table = table[table["experiment"] == experiment]
    if config_filters and not table.empty:
        table = table[[_matches(row, config_filters) for row in table.to_dict("records")]]
    table = table.reset_index(drop=True)
    table.attrs.update(config_columns=[c for c in table.columns if c not in RUN_COLUMNS
                                       and not c.startswith(CURVE_PREFIX)], result_columns=[])
    return table


def _json_containers(column: pd.Series) -> Optional[pd.Series]:
    """The column with its JSON lists and objects parsed, if every value in it is one (else None:
    a text column that merely starts with a bracket stays text)."""
    values = column.dropna()
    if values.empty or not values.map(lambda v: isinstance(v, str) and v[:1] in "[{").all():
        return None
    try:
        return column.map(lambda v: json.loads(v) if isinstance(v, str) else v)
    except ValueError:
        return None


def mongo_metrics(database, run_id) -> dict:
    """Every metric of a MongoDB run as a Series by step, joining the ``metric_chunks``
    documents of metrics longer than one document (observers/metric_documents.py)."""
    from observers.metric_documents import read_metrics

    return {name: pd.Series(series["values"], index=series["steps"], name=name)
            for name, series in read_metrics(database, run_id, timestamps=False).items()}


def metrics_table(source, metric: Optional[str | list] = None, experiment: Optional[str] = None,
                  db_name: Optional[str] = None, **config_filters) -> pd.DataFrame:
    """Long frame of every logged point: columns run, metric, step, value (and start_time
    from an exported runs table: the curves it was exported with)."""
    wanted = {metric} if isinstance(metric, str) else set(metric) if metric else None
    if is_runs_table_file(source):
        table = runs_table(source, experiment=experiment, **config_filters)
        if not any(column.startswith(CURVE_PREFIX) for column in table.columns):
            raise ValueError(f"{source} is an exported runs table without curves: export it with "
                             "`toylab export ... --curves NAME ...` to read metrics from it")
        return _table_curves(table, wanted)
    frames = []
    for run in load_runs(source, experiment, db_name, **config_filters):
        metrics = mongo_metrics(run._database, run.id) if _is_mongo(source) else run.metrics
        for name, series in metrics.items():
            if wanted is None or name in wanted:
                frames.append(pd.DataFrame({"run": run.id, "metric": name, "step": series.index.to_numpy(),
                                            "value": series.to_numpy()}))
    if not frames:
        return pd.DataFrame({"run": pd.Series(dtype="int64"), "metric": pd.Series(dtype="object"),
                             "step": pd.Series(dtype="int64"), "value": pd.Series(dtype="float64")})
    return pd.concat(frames, ignore_index=True)


def _table_curves(table: pd.DataFrame, wanted: Optional[set]) -> pd.DataFrame:
    """The long metrics frame of the curve columns of an exported runs table."""
    frames = []
    for column in (c for c in table.columns if c.startswith(CURVE_PREFIX)):
        name = column[len(CURVE_PREFIX):]
        if wanted is not None and name not in wanted:
            continue
        for run, start, curve in table[["run", "start_time", column]].itertuples(index=False):
            if isinstance(curve, dict):
                frames.append(pd.DataFrame({"run": run, "start_time": start, "metric": name,
                                            "step": pd.Series(curve["steps"], dtype="int64"),
                                            "value": pd.Series(curve["values"], dtype="float64")}))
    if not frames:
        return pd.DataFrame({"run": pd.Series(dtype="int64"), "start_time": pd.Series(dtype="datetime64[ns, UTC]"),
                             "metric": pd.Series(dtype="object"), "step": pd.Series(dtype="int64"),
                             "value": pd.Series(dtype="float64")})
    return pd.concat(frames, ignore_index=True)


def plateaued(table: pd.DataFrame) -> pd.Series:
    """Per run: did it finish learning (the ``plateau`` record ``harness.plateau`` leaves in a
    run's info)? A run without a record (recorded before the rule existed) has not shown that it did."""
    records = table["plateau"] if "plateau" in table else pd.Series([None] * len(table), index=table.index)
    return pd.Series([isinstance(r, dict) and bool(r.get("plateaued")) for r in records], index=table.index,
                     dtype=bool)


def sweep_runs(source, sweep: str, experiment: str | None = None, db_name: str | None = None,
               **config_filters) -> pd.DataFrame:
    """The COMPLETED runs of one sweep (``meta.sweep``): runs_table rows, from a file-storage
    directory or a MongoDB URL; ``experiment`` narrows it when two experiments share a sweep name.
    ``source`` may also be a ``runs_table`` already loaded (one load for several sweeps).
    One run per point: a point run again after its named config was edited (the sweep does
    not count a run made under other values) has two COMPLETED runs, and the later counts."""
    if isinstance(source, pd.DataFrame):
        if config_filters:
            raise ValueError("config filters apply while loading; filter the table itself instead")
        table = source if experiment is None or source.empty else source[source["experiment"] == experiment]
    else:
        table = runs_table(source, experiment=experiment, db_name=db_name, **config_filters)
    if table.empty:
        return table
    table = table[(table["sweep"] == sweep) & (table["status"] == "COMPLETED")]
    if "sweep_point" in table:
        latest = table.sort_values("start_time", kind="stable").drop_duplicates("sweep_point", keep="last")
        table = table[table["sweep_point"].isna() | table.index.isin(latest.index)]
    return table.reset_index(drop=True)
