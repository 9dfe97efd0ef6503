"""``toylab SUBCOMMAND ...``: sweeps, the board, sync, a runs table, export.

    toylab sweep experiments/grokking.py --sweep phase_mse_quick       # python -m sweeps ...
    toylab board start | stop                                          # make board / make board-stop
    toylab sync [DIR ...]                                              # python -m observers sync ...
    toylab runs [SOURCE] [--experiment E] [--status S] [--sweep N] [KEY=VALUE ...] [--columns K1,K2]
    toylab export [SOURCE] --to runs.csv|runs.parquet [--append] [--metrics [NAME ...]] [--curves NAME,...]
                  [filters as for runs]
    toylab figures [--source SOURCE] [--out DIR] [--only NAME]             # make figures
    toylab notebooks [--source SOURCE] [NOTEBOOK ...]                        # make notebooks

SOURCE is a runs directory, a MongoDB URL or a runs table export wrote (its rows, and the
curves exported with them); by default where runs are recorded now (TOYLAB_MONGO_URL, else TOYLAB_RUNS_DIR or ./runs).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

RESULT_COLUMNS = ("phase", "t_train", "t_test", "t_rqi", "final_train_acc", "final_test_acc", "final_val_acc",
                  "best_val_acc", "test_acc", "final_agreement")  # shown when the runs have them
RUN_COLUMNS = ("run", "experiment", "status")
PASSED_ON = {"sweep": "python -m sweeps", "board": "python -m localboard", "sync": "python -m observers sync",
             "figures": "python -m analysis.headline_figures", "notebooks": "python -m analysis.notebooks"}


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints the whole usage first; one line says what is wrong
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="toylab", description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog=__doc__.split("\n\n", 1)[1])
    commands = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", parser_class=_OneLineParser)
    for name, what in (("sweep", "run a sweep on Dask (the options of python -m sweeps)"),
                       ("board", "the local MongoDB-compatible server and Omniboard: start | stop"),
                       ("sync", "upload file-storage and fallback runs to TOYLAB_MONGO_URL, each once"),
                       ("figures", "draw the headline figures from stored runs into docs/figures (make figures)"),
                       ("notebooks", "execute the notebooks in place on stored runs (make notebooks)")):
        command = commands.add_parser(name, help=what, add_help=False)
        command.add_argument("arguments", nargs=argparse.REMAINDER)
    for name, what in (("runs", "a table of runs in the terminal"), ("export", "runs or metrics to CSV or Parquet")):
        command = commands.add_parser(name, help=what, description=what)
        command.add_argument("source", nargs="?", help="a runs directory, a MongoDB URL or a runs table "
                                                       "export wrote (default: where runs are recorded now)")
        command.add_argument("filters", nargs="*", metavar="KEY=VALUE", help="config values the runs must have")
        command.add_argument("--experiment", help="only this experiment's runs")
        command.add_argument("--status", help="only runs with this status (COMPLETED, RUNNING, DEAD, FAILED, ...)")
        command.add_argument("--sweep", help="only the runs of this sweep")
        if name == "runs":
            command.add_argument("--columns", help="config keys to show (default: those that differ between "
                                                   "the runs)")
        else:
            command.add_argument("--to", required=True, metavar="FILE", help="FILE.csv or FILE.parquet")
            command.add_argument("--append", action="store_true",
                                 help="add the runs to the runs table in FILE (each run once) instead of replacing it")
            command.add_argument("--metrics", nargs="*", metavar="NAME",
                                 help="export the metrics (all, or these) instead of the runs table")
            command.add_argument("--curves", type=curve_names, metavar="NAME,NAME,...",
                                 help="add these metrics' curves to the runs table (a column curve:NAME each), "
                                      "so analyses of curves work from the file")
    return parser


def default_source() -> str:
    import observers

    mongo = observers.mongo_settings()
    return mongo[0] if mongo else str(observers.runs_dir())


def _filters(items: list[str]) -> dict:
    from sweeps import parse_value

    filters = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"toylab: {item!r}: a filter is KEY=VALUE (a config key and its value)")
        filters[key] = parse_value(value)
    return filters


def _load(args):
    import analysis
    from analysis.export import select

    source = args.source or default_source()
    if "=" in source and not source.startswith("mongodb"):  # `toylab runs p=10`: a filter, not a source
        args.filters.insert(0, source)
        source = default_source()
    try:
        table = analysis.runs_table(source, experiment=args.experiment, **_filters(args.filters))
    except (FileNotFoundError, PermissionError, ConnectionError) as error:
        raise SystemExit(f"toylab: {error}") from None
    return source, select(table, args.status, args.sweep)


def _cell(value) -> str:
    if value is None or value != value:  # value != value: NaN (a result that is None, in a float column)
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def runs_command(args) -> int:
    """Print the runs: id, experiment, status, the chosen (or varying) config keys, the results."""
    import pandas as pd

    source, table = _load(args)
    if table.empty:
        print(f"no runs in {source}" + (" matching the filters" if args.filters or args.status or args.sweep
                                         or args.experiment else ""))
        return 0
    config_keys = table.attrs.get("config_columns", [])
    if args.columns:
        chosen = [c.strip() for c in args.columns.split(",") if c.strip()]
        unknown = [c for c in chosen if c not in table.columns]
        if unknown:
            raise SystemExit(f"toylab: --columns {', '.join(unknown)}: not a config key of these runs")
    else:
        chosen = [c for c in config_keys if table[c].map(repr).nunique() > 1 and
                  not table[c].map(lambda v: isinstance(v, (list, dict))).any()]
    present = [c for c in table.attrs.get("result_columns", []) if table[c].notna().any()
               and not table[c].map(lambda v: isinstance(v, (list, dict))).any()]
    # the headline results where the experiment has them, else every scalar result
    results = [c for c in RESULT_COLUMNS if c in present] or present
    shown = pd.DataFrame({c: table[c].map(_cell) for c in [*RUN_COLUMNS, *chosen, *results]})
    widths = {c: max(len(c), *shown[c].map(len)) for c in shown.columns}
    print("  ".join(c.ljust(widths[c]) for c in shown.columns).rstrip())
    for row in shown.itertuples(index=False):
        print("  ".join(str(v).ljust(widths[c]) for c, v in zip(shown.columns, row)).rstrip())
    print(f"{len(table)} runs in {_where(source)}")
    return 0


def curve_names(text: str) -> list:
    """--curves val.acc,val.repeat_acc: one argument, so nothing after it is taken for a name."""
    names = [name.strip() for name in text.split(",")]
    if not all(names) or any("=" in name for name in names):
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed: give metric names separated by commas")
    return names


def export_command(args) -> int:
    import analysis

    source, table = _load(args)  # the same selection as `toylab runs`, checked before writing
    what = "metrics" if args.metrics is not None else "runs"
    before = _rows_in(args.to) if args.append else 0
    try:
        path = analysis.export(source, args.to, what=what, experiment=args.experiment, status=args.status,
                               sweep=args.sweep, metric=args.metrics or None, append=args.append,
                               curves=args.curves, **_filters(args.filters))
    except ValueError as error:
        raise SystemExit(f"toylab export: {error}") from None
    if what == "metrics":
        print(f"the metrics of {len(table)} runs written to {path}")
    elif args.append:  # the runs the file did not hold yet: a run exported before is kept once
        after = _rows_in(path)
        print(f"{after - before} runs added to {path} ({len(table) - (after - before)} of the {len(table)} "
              f"selected were in it already; {after} runs in it)")
    else:
        print(f"{len(table)} runs written to {path}")
    return 0


def _rows_in(path) -> int:
    """Rows of a runs table file (0 when there is none yet)."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        return 0
    return len(pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path))


def _where(source: str) -> str:
    from observers.mongo import redact

    return redact(source, source) if source.startswith("mongodb") else source


def _passed_on(name: str, arguments: list[str]) -> int:
    if name == "sweep":
        from sweeps.__main__ import main as command
    elif name == "board":
        from localboard.__main__ import main as command
    elif name == "figures":
        from analysis.headline_figures import main as command
    elif name == "notebooks":
        from analysis.notebooks import main as command
    else:
        from observers.sync import main as command
    return command(arguments)


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSED_ON:  # the tools' own command lines, unchanged (options first too)
        return _passed_on(argv[0], argv[1:])
    parser = _parser()
    args, extra = parser.parse_known_args(argv)  # KEY=VALUE filters may stand after the options too
    if extra and (args.command not in ("runs", "export") or any("=" not in item for item in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.filters += extra
    if args.command is None:
        parser.print_help()
        return 2
    if args.command in PASSED_ON:  # e.g. after a global option
        return _passed_on(args.command, args.arguments)
    try:
        return {"runs": runs_command, "export": export_command}[args.command](args)
    except BrokenPipeError:  # `toylab runs | head`: the reader has what it wanted
        sys.stderr.close()
        return 0
