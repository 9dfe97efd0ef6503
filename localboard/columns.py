"""The columns the board adds to Omniboard: by itself Omniboard makes a column of every field
of the run document and of every config key (``c_decoder_lr``, ...), but of no value inside
the result; a sweep reads as a table once the config keys that vary between the runs and the
result values are columns of their own.

Omniboard keeps custom columns in the ``omniboard.custom.columns`` collection, one document
``{name, config_path}`` per column, ``config_path`` a dotted path into the run document
(``config.decoder_lr``, ``result.phase``). The board writes its own columns there (marked
``toylab: true``, refreshed at every ``make board``) and leaves the ones a user added in
Omniboard alone.

Where they appear is Omniboard's (2.16.1) and the browser's, not the database's: the runs
table appends custom columns after the run's own fields and config keys, puts Id, Experiment
Name and Hostname first and Tags and Notes after Status, shows every column, and keeps order,
widths and hidden columns in the browser's localStorage only (RunsTable in
board/node_modules/omniboard/web/src/components/RunsTable/runsTable.js: ``_parseRunsResponseData``,
``loadData``, ``stateFilterKeys``; ``omniboard.settings`` holds no column state). So the
board's columns are the right end of the table, in the order written here.
"""
from __future__ import annotations

COLLECTION = "omniboard.custom.columns"
MAX_CONFIG_COLUMNS = 12  # past that the table is wider than a screen; the run's page shows the rest


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}", inner, out)
    elif not isinstance(value, list):
        out[prefix] = value


def columns(runs) -> list[dict]:
    """The board's columns for these run documents: the config keys whose values differ
    between runs (fewest distinct values last, so the swept keys of a sweep come first), then
    every scalar result key, in the order the runs report them."""
    values: dict = {}
    results: dict = {}
    for run in runs:
        flat: dict = {}
        _flatten("config", run.get("config") or {}, flat)
        for path, value in flat.items():
            values.setdefault(path, set()).add(repr(value))
        result = run.get("result")
        if isinstance(result, dict):
            for key, value in result.items():
                if not isinstance(value, (dict, list)):
                    results.setdefault(f"result.{key}", None)
    varying = sorted((path for path, seen in values.items() if len(seen) > 1), key=lambda p: (-len(values[p]), p))
    chosen = varying[:MAX_CONFIG_COLUMNS]
    return ([{"name": path.split(".", 1)[1], "config_path": path} for path in chosen]
            + [{"name": path.split(".", 1)[1], "config_path": path} for path in results
               if path.split(".", 1)[1] not in {p.split(".", 1)[1] for p in chosen}])


def configure(db) -> list[str]:
    """Write the board's columns for the runs in ``db``; the column names."""
    wanted = columns(db.runs.find({}, {"config": 1, "result": 1}))
    collection = db[COLLECTION]
    collection.delete_many({"toylab": True})
    taken = {doc.get("name") for doc in collection.find({}, {"name": 1})}  # a user's own columns win
    mine = [{**column, "toylab": True} for column in wanted if column["name"] not in taken]
    if mine:
        collection.insert_many(mine)
    return [column["name"] for column in mine]
