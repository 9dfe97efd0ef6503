"""Render the project's notebooks: execute each one in place on stored runs, so that the
committed copy shows its tables and figures on a code host without anyone running it.

    make notebooks                                   # every notebook, on $TOYLAB_RUNS_DIR (or ./runs)
    python -m analysis.notebooks --source /work/store/runs grokking two_stage

Each notebook reads its runs from ``TOYLAB_RUNS_DIR`` (or ``TOYLAB_MONGO_URL``) and names
the sweeps it draws in its first cells; the rendered copy records in its metadata
(``toylab.rendered``) where its runs came from, how many run directories that source held,
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


def _describe(source: str) -> dict:
    if source.startswith("mongodb"):
        return {"source": "MongoDB (TOYLAB_MONGO_URL)"}  # never the URL: it may hold a password
    runs = Path(source)
    return {"source": str(runs.resolve()),
            "run_directories": sum(1 for d in runs.iterdir() if d.is_dir() and d.name.isdigit())}


def _settings() -> dict:
    """The TOYLAB_* variables a notebook may read besides its source (which sweep, which runs
    table, which seed rule), so the rendered copy says what it was rendered with; never one
    that may hold a credential (a URL, a user or a password)."""
    secret = ("URL", "USER", "PASSWORD", "SECRET", "TOKEN")
    return {name: value for name, value in sorted(os.environ.items())
            if name.startswith("TOYLAB_") and name != "TOYLAB_RUNS_DIR"
            and not any(word in name for word in secret) and "://" not in value}


def render(path: Path, source: str) -> dict:
    """Execute ``path`` in place with its runs read from ``source``; returns what it recorded."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    variable = "TOYLAB_MONGO_URL" if source.startswith("mongodb") else "TOYLAB_RUNS_DIR"
    previous = os.environ.get(variable)
    os.environ[variable] = source if variable == "TOYLAB_MONGO_URL" else str(Path(source).resolve())
    try:
        NotebookClient(notebook, timeout=TIMEOUT, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent.parent)}}).execute()
    finally:
        if previous is None:
            os.environ.pop(variable)
        else:
            os.environ[variable] = previous
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
                        or "runs", help="runs directory or MongoDB URL (default: $TOYLAB_MONGO_URL, "
                                        "$TOYLAB_RUNS_DIR, ./runs)")
    args = parser.parse_args(argv)
    if not args.source.startswith("mongodb") and not Path(args.source).is_dir():
        print(f"--source {args.source}: no such runs directory", file=sys.stderr)
        return 2
    for path in notebook_paths(args.names):
        started = datetime.datetime.now()
        rendered = render(path, args.source)
        seconds = (datetime.datetime.now() - started).total_seconds()
        print(f"{path.relative_to(NOTEBOOKS.parent)}: executed in {seconds:.0f} s on {rendered['source']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
