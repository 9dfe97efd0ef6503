"""Render the project's notebooks: execute each one in place on stored runs, so that the
committed copy shows its tables and figures on a code host without anyone running it.

    make notebooks                                   # every notebook, on $TOYLAB_RUNS_DIR (or ./runs)
    python -m analysis.notebooks --source /work/store/runs grokking two_stage
    python -m analysis.notebooks --source docs/results/fsm_plan_cpu.csv fsm_icl   # a committed runs table

Each notebook reads its runs from ``TOYLAB_RUNS_DIR`` (or ``TOYLAB_MONGO_URL``) and names
the sweeps it draws in its first cells. A runs table (``toylab export``'s CSV or Parquet, as
the committed ones in docs/results) is a source too, for a notebook that reads
``TOYLAB_RUNS_TABLE``: the render sets that instead, so a table outlives the store it came
from and the committed copy can be redrawn from the repository. The rendered copy records in its metadata
(``toylab.rendered``) where its runs came from, how many run directories (or table rows) it held,
when, and the TOYLAB_* settings it was rendered with (``settings``: e.g. a sweep or a committed
runs table other than the notebook's default). The tests execute every notebook on a quick
sweep in memory and never write the committed copies; a test checks that every committed
notebook carries its outputs.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

from analysis.runs import is_runs_table_file, runs_table

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
TIMEOUT = 1800  # s per cell: the list-operations walkthrough trains a model in the notebook


def notebook_paths(names=()) -> list[Path]:
    """The notebooks to render: all of notebooks/, or the named ones (with or without .ipynb)."""
    everything = sorted(NOTEBOOKS.glob("*.ipynb"))
    if not names:
        return everything
    by_name = {path.stem: path for path in everything}
    unknown = [name for name in names if Path(name).stem not in by_name]
    if unknown:
        raise SystemExit(f"notebook {unknown[0]!r} is not one of: {', '.join(sorted(by_name))}")
    return [by_name[Path(name).stem] for name in names]


RUNS_TABLE = "TOYLAB_RUNS_TABLE"
SOURCES = (RUNS_TABLE, "TOYLAB_MONGO_URL", "TOYLAB_RUNS_DIR")  # where a notebook reads its runs from


def _variable(source: str) -> str:
    """The environment variable a notebook reads ``source`` from."""
    if source.startswith("mongodb"):
        return "TOYLAB_MONGO_URL"
    return RUNS_TABLE if is_runs_table_file(source) else "TOYLAB_RUNS_DIR"


def _located(source: str) -> str:
    """A runs directory or table as the notebook (run from the repository's top) finds it: by its
    place in the repository when it is in it, so a committed copy names no one's machine."""
    path = Path(source).resolve()
    return str(path.relative_to(NOTEBOOKS.parent) if path.is_relative_to(NOTEBOOKS.parent) else path)


def _describe(source: str) -> dict:
    if source.startswith("mongodb"):
        return {"source": "MongoDB (TOYLAB_MONGO_URL)"}  # never the URL: it may hold a password
    runs = Path(source)
    if is_runs_table_file(source):
        return {"source": _located(source), "runs_in_table": len(runs_table(source))}
    return {"source": _located(source),
            "run_directories": sum(1 for d in runs.iterdir() if d.is_dir() and d.name.isdigit())}


def _settings() -> dict:
    """The TOYLAB_* variables a notebook may read besides its source (which sweep, which runs
    table, which seed rule), so the rendered copy says what it was rendered with; never one
    that may hold a credential (a URL, a user or a password). A path is recorded as the source is
    (``_located``): a committed table by its place in the repository."""
    secret = ("URL", "USER", "PASSWORD", "SECRET", "TOKEN")
    return {name: _located(value) if os.path.isabs(value) and Path(value).exists() else value
            for name, value in sorted(os.environ.items())
            if name.startswith("TOYLAB_") and name not in SOURCES  # the source is recorded as such
            and not any(word in name for word in secret) and "://" not in value}


def render(path: Path, source: str) -> dict:
    """Execute ``path`` in place with its runs read from ``source``; returns what it recorded."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    # the source alone: a notebook prefers a table, then MongoDB, then a directory, so another
    # source variable left in the environment would be read instead of ``source``
    previous = {name: os.environ.pop(name) for name in SOURCES if name in os.environ}
    variable = _variable(source)
    os.environ[variable] = source if variable == "TOYLAB_MONGO_URL" else _located(source)
    try:
        NotebookClient(notebook, timeout=TIMEOUT, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent.parent)}}).execute()
    finally:
        os.environ.pop(variable)
        os.environ.update(previous)
    rendered = {**_describe(source), "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if settings := _settings():
        rendered["settings"] = settings
    notebook.metadata.setdefault("toylab", {})["rendered"] = rendered
    nbformat.write(notebook, path)
    return rendered


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.notebooks", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebooks to render (default: all of notebooks/)")
    parser.add_argument("--source", default=os.environ.get("TOYLAB_MONGO_URL") or os.environ.get("TOYLAB_RUNS_DIR")
                        or "runs", help="runs directory, MongoDB URL or runs table (.csv, .parquet: `toylab export`) "
                                        "(default: $TOYLAB_MONGO_URL, $TOYLAB_RUNS_DIR, ./runs)")
    args = parser.parse_args(argv)
    table = is_runs_table_file(args.source)
    if table and not Path(args.source).is_file():
        print(f"--source {args.source}: no such runs table", file=sys.stderr)
        return 2
    if not table and not args.source.startswith("mongodb") and not Path(args.source).is_dir():
        print(f"--source {args.source}: no such runs directory", file=sys.stderr)
        return 2
    paths = notebook_paths(args.names)
    if table and (blind := [path.stem for path in paths if RUNS_TABLE not in path.read_text()]):
        # rendered anyway, it would read ./runs and record the table as its source
        print(f"--source {args.source}: a runs table, and {', '.join(blind)} reads none ({RUNS_TABLE}); "
              f"give it a runs directory or a MongoDB URL", file=sys.stderr)
        return 2
    for path in paths:
        started = datetime.datetime.now()
        rendered = render(path, args.source)
        seconds = (datetime.datetime.now() - started).total_seconds()
        print(f"{path.relative_to(NOTEBOOKS.parent)}: executed in {seconds:.0f} s on {rendered['source']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
