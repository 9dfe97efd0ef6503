"""The sweep command line: ``python -m sweeps EXPERIMENT_FILE [--sweep NAME] [--grid KEY=V1,V2] ... [with ...]``
(see the sweeps package docstring)."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import sweeps
from sweeps.claims import FileStore, default_store
from sweeps.cluster import BLOCK_SIZE, make_client, run_sweep
from sweeps.points import expand, load_experiment, parse_value, point_configs
from sweeps.summary import print_summary


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints the whole usage first; one line says what is wrong
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not allowed: give an integer >= 1")
    return value


def seeds_arg(text: str):
    """--seeds N (seeds 0..N-1) or --seeds S1,S2,... (those seeds: the rest of a seed rule
    that an earlier session or machine has already run); one seed S alone is ``S,``, since a
    bare number is the count."""
    refused = argparse.ArgumentTypeError(f"{text} is not allowed: give N >= 1 (seeds 0..N-1), "
                                         "S1,S2,... (those seeds) or S, (seed S alone)")
    try:
        if "," not in text:
            return positive_int(text)
        seeds = [int(part) for part in (text[:-1] if text.endswith(",") else text).split(",")]
    except (ValueError, argparse.ArgumentTypeError):
        raise refused from None
    if any(seed < 0 for seed in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text} is not allowed: seeds are distinct integers >= 0")
    return seeds


def parse_args(argv: list[str]):
    words = list(argv)
    updates, named_configs = {}, []
    if "with" in words:  # Sacred's spelling, fixed for every point: named configs and KEY=VALUE, mixed
        at = words.index("with")
        for item in words[at + 1:]:
            key, sep, value = item.partition("=")
            if sep:
                updates[key] = parse_value(value)
            elif item.isidentifier():
                named_configs.append(item)
            else:
                raise SystemExit(f"`with {item}`: expected a named config or KEY=VALUE")
        words = words[:at]
    parser = _OneLineParser(prog="python -m sweeps", description=sweeps.__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment_file", help="an experiment file with `ex` (and optionally SWEEPS)")
    parser.add_argument("--sweep", help="a named sweep of the experiment's SWEEPS")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="a swept key and its values (repeat for a cartesian product)")
    parser.add_argument("--seeds", type=seeds_arg,
                        help="N: seeds 0..N-1 for every grid point (config key `seed`); S1,S2,...: those seeds; "
                             "S,: seed S alone")
    parser.add_argument("--named-config", action="append", default=[], help="a named config for every point")
    parser.add_argument("--name", help="the sweep's tag (default: the --sweep name, else 'grid')")
    parser.add_argument("--done-in", metavar="FILE",
                        help="a runs table `toylab export` wrote (e.g. docs/results/NAME.csv): the points with a "
                             "COMPLETED run of this sweep in it count as done, as the store's own")
    parser.add_argument("--list", action="store_true", help="print the points and exit")
    parser.add_argument("--block-size", type=positive_int, default=BLOCK_SIZE,
                        help=f"points trained together in one process (default {BLOCK_SIZE}; 1: one run at a time)")
    where = parser.add_argument_group("where the workers run (default: a local cluster, one process per core)")
    where.add_argument("--workers", type=positive_int, help="local worker processes")
    where.add_argument("--scheduler", help="address of an existing Dask scheduler, e.g. tcp://host:8786")
    where.add_argument("--slurm", action="store_true", help="workers as SLURM jobs (dask-jobqueue)")
    where.add_argument("--slurm-partition", help="SLURM partition (queue)")
    where.add_argument("--slurm-walltime", default="01:00:00", help="walltime per job (default 01:00:00)")
    where.add_argument("--slurm-memory", default="4GB", help="memory per job (default 4GB)")
    where.add_argument("--slurm-cores", type=positive_int, default=1, help="cores (= worker processes) per job")
    where.add_argument("--slurm-jobs", type=positive_int, default=1, help="number of SLURM jobs")
    args = parser.parse_args(words)
    args.named_config += named_configs
    return args, updates


def build_spec(args, updates: dict, module) -> tuple[dict, str]:
    """The sweep spec from a named sweep and the command line's additions."""
    named = getattr(module, "SWEEPS", {})
    if args.sweep:
        if args.sweep not in named:
            raise SystemExit(f"--sweep {args.sweep!r}: {args.experiment_file} declares "
                             f"{', '.join(named) or 'no named sweeps'}")
        spec = json.loads(json.dumps(named[args.sweep]))  # a copy
    else:
        spec = {}
    grid = spec.setdefault("grid", {})
    for item in args.grid:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise SystemExit(f"--grid {item}: expected KEY=V1,V2,...")
        grid[key] = [parse_value(v) for v in values.split(",")]
    if args.seeds is not None:
        spec["seeds"] = args.seeds
    spec["named_configs"] = spec.get("named_configs", []) + args.named_config
    spec.setdefault("config", {}).update(updates)
    for key in grid:
        spec["config"].pop(key, None)
    if not grid and not spec.get("variants") and not spec.get("seeds"):
        raise SystemExit("nothing to sweep: give --sweep NAME, --grid KEY=V1,V2,... or --seeds N")
    return spec, args.name or args.sweep or "grid"


def main(argv: Optional[list[str]] = None) -> int:
    import harness
    from sacred.utils import SacredError

    args, updates = parse_args(sys.argv[1:] if argv is None else argv)
    module = load_experiment(args.experiment_file)
    spec, sweep = build_spec(args, updates, module)
    try:  # every point's config, built once; a bad value is refused before a worker starts
        points = point_configs(module, expand(module.ex.path, spec))
    except harness.ConfigError as error:
        print(f"harness.ConfigError: {error}", file=sys.stderr)
        return 2
    except SacredError as error:  # e.g. a --grid key or a named config the experiment does not have
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        print(f"{type(error).__name__}: {lines[0]}" + (f" ({'; '.join(lines[2:])})" if len(lines) > 2 else ""),
              file=sys.stderr)
        return 2
    if args.done_in is not None:  # checked before anything runs, like every other argument
        from analysis.runs import is_runs_table_file

        if not is_runs_table_file(args.done_in) or not Path(args.done_in).is_file():
            print(f"--done-in {args.done_in}: no runs table there (a .csv or .parquet file that toylab export "
                  "wrote)", file=sys.stderr)
            return 2
    if args.list:
        try:
            for point in points:
                print(f"{point.key}  {point.describe()}")
            sys.stdout.flush()
        except BrokenPipeError:  # `--list | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    slurm = None
    if args.slurm:
        slurm = {"partition": args.slurm_partition, "walltime": args.slurm_walltime, "memory": args.slurm_memory,
                 "cores": args.slurm_cores, "jobs": args.slurm_jobs}
    store = default_store()
    store.check()  # a MongoDB that refuses the login or is not there: one line, before any worker starts
    started = time.time()
    signal.signal(signal.SIGTERM, _interrupt)  # e.g. `kill` or a scheduler's job limit: stopped like Ctrl-C
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started in the background by a script
        signal.signal(signal.SIGINT, signal.default_int_handler)
    client = make_client(args.workers, args.scheduler, slurm)
    cluster = None if args.scheduler else client.cluster  # ours to close; an existing cluster stays up
    try:
        n_workers = len(client.scheduler_info().get("workers", {}))
        print(f"sweep {sweep}: {len(points)} points on {n_workers or 'pending'} Dask "
              f"workers ({client.scheduler.address}); recording to {_where(store)}", flush=True)
        rows = run_sweep(args.experiment_file, spec, sweep, client, block_size=args.block_size, store=store,
                         points=points, done_in=args.done_in)
    except KeyboardInterrupt as interrupt:
        stopped = getattr(interrupt, "interrupted", [])
        left = getattr(interrupt, "left_running", 0)
        print(f"\nsweep {sweep} interrupted: " + (f"run{'' if len(stopped) == 1 else 's'} {', '.join(map(str, stopped))} "
                                                   "recorded INTERRUPTED; " if stopped else "") +
              (f"{left} did not reach a metric in time and stay RUNNING (shown DEAD); " if left else "") +
              "run the same command again to run only the points not COMPLETED", file=sys.stderr)
        return 130
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    store.drop_expired_claims(sweep)  # e.g. those a worker could not release while MongoDB was away
    code = print_summary(rows, sweep, results=getattr(module, "SWEEP_RESULTS", ()), runs=store.runs(sweep))
    print(f"wall time {time.time() - started:.1f} s")
    return code


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"received signal {signum}")


def _where(store) -> str:
    return f"file storage {store.root}" if isinstance(store, FileStore) else f"MongoDB database {store.db_name}"


if __name__ == "__main__":
    sys.exit(main())
