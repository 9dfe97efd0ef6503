"""Sweeps on Dask: the cartesian product of config values, every point an ordinary Sacred run.

    python -m experiments.sweep experiments/grokking.py --sweep phase_mse_quick
    python -m experiments.sweep experiments/grokking.py --grid decoder_lr=1e-5,1e-4,1e-3 \\
        --grid decoder_weight_decay=0,5,10 --seeds 3 with train_steps=2000
    python -m experiments.sweep experiments/grokking.py --sweep phase_mse --workers 2
    python -m experiments.sweep experiments/grokking.py --sweep phase_mse --scheduler tcp://10.0.0.5:8786
    python -m experiments.sweep experiments/grokking.py --sweep phase_mse --slurm \\
        --slurm-partition cpu --slurm-walltime 02:00:00 --slurm-memory 8GB --slurm-jobs 4

Points. An experiment file has ``ex`` and may declare named sweeps in a module-level dict
``SWEEPS = {name: {"grid": {key: [values]}, "named_configs": [...], "variants": [...],
"config": {key: value}, "seeds": N or [seeds]}}`` (plain JSON data). The points are
variants x grid x seeds; ``--grid``, ``--seeds`` and ``with`` extend or override a named
sweep. Every point is run as ``ex`` would run it from the command line, recorded by the
usual observers (file storage, or MongoDB with TOYLAB_MONGO_URL: every worker records to
the same store), with ``meta.sweep`` (the sweep's name, ``--name``) and ``meta.sweep_point``
(a hash of the point's named configs and config updates) in its run record.

Where. A local Dask cluster of worker processes by default (one per core, ``--workers N``);
``--scheduler ADDRESS`` uses an existing Dask cluster; ``--slurm`` starts workers as SLURM
jobs through dask-jobqueue. Workers record to the store of their own environment
(TOYLAB_MONGO_URL / TOYLAB_RUNS_DIR; local and SLURM workers inherit this command's);
for file storage the directory is passed as an absolute path and must be shared.

Exactly once. A point runs only under a claim: an fcntl lock on a file per point in
``<runs dir>/.sweep_claims/`` (released by the kernel when its process dies), or a
document in MongoDB's ``sweep_claims`` collection (unique _id, kept alive by a heartbeat;
an expired lease can be taken over). Under the claim a worker first looks for a COMPLETED
run of the point in this sweep and skips it when there is one. So re-running a stopped
sweep runs only what is missing, a point whose worker died is retried (Dask reschedules
the task; the dead run stays RUNNING, shown DEAD by analysis.runs_table), and no point
gets two COMPLETED runs. Failed points are listed at the end with their run ids and the
command exits 1.

Speed. Points whose configs differ only in per-model keys (an experiment's
``block_signature(config)``, e.g. seeds, learning rates, weight decays) are trained
together in blocks of ``--block-size`` by the experiment's ``train_block(configs)``;
each point is then recorded by its own run of ``main``, which takes its share.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import importlib.util
import io
import itertools
import json
import logging
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

BLOCK_SIZE = 16  # points trained together: past ~16 the batched trainer stops gaining (benchmarks/sweep_throughput.py)
CLAIM_LEASE = 60.0  # seconds a MongoDB claim survives without a heartbeat from its worker
CLAIM_HEARTBEAT = 10.0  # seconds between a claim's heartbeats
BUSY_RETRY = 2.0  # seconds before a point claimed elsewhere is tried again


# ----------------------------------------------------------------------------- points
@dataclass(frozen=True)
class Point:
    """One run of a sweep: named configs and config updates, and its identity."""

    named_configs: tuple
    updates: dict = field(hash=False)
    key: str = ""

    def describe(self) -> str:
        parts = list(self.named_configs) + [f"{k}={v}" for k, v in self.updates.items()]
        return " ".join(parts)


def point_key(experiment: str, named_configs, updates: dict) -> str:
    """Identity of a point: the same experiment, named configs and config updates."""
    text = json.dumps({"experiment": experiment, "named_configs": list(named_configs), "config": updates},
                      sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def expand(experiment: str, spec: dict) -> list[Point]:
    """The points of a sweep spec: variants x grid (cartesian, in the grid's order) x seeds."""
    grid = spec.get("grid", {})
    seeds = spec.get("seeds")
    seeds = list(range(seeds)) if isinstance(seeds, int) else seeds
    variants = spec.get("variants") or [None]
    points = []
    for variant in variants:
        named = tuple(spec.get("named_configs", [])) + ((variant,) if variant else ())
        for values in itertools.product(*grid.values()):
            for seed in seeds if seeds is not None else [None]:
                updates = dict(spec.get("config", {}))
                updates.update(zip(grid, values))
                if seed is not None:
                    updates["seed"] = seed
                points.append(Point(named, updates, point_key(experiment, named, updates)))
    return points


def parse_value(text: str):
    """A command-line value: a Python/JSON literal (1e-3, 10, true, [1, 2]) or else a string."""
    lowered = {"true": True, "false": False, "null": None, "none": None}
    if text.lower() in lowered:
        return lowered[text.lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


# ------------------------------------------------------------------------ experiments
_MODULES: dict = {}


def load_experiment(path: str):
    """The experiment module of ``path`` (imported once per process, not as __main__)."""
    path = str(Path(path).resolve())
    if path not in _MODULES:
        name = "toylab_sweep_" + hashlib.sha1(path.encode()).hexdigest()[:8]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None:
            raise SystemExit(f"cannot import {path}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        if not hasattr(module, "ex"):
            raise SystemExit(f"{path} defines no Sacred experiment `ex`")
        _MODULES[path] = module
    return _MODULES[path]


def preload(experiment_file: str) -> None:
    """Import the experiment in this (worker) process ahead of its first point."""
    load_experiment(experiment_file)


def point_config(module, point: Point) -> dict:
    """The full config of a point, as its run will see it (config hooks validate it); no run is recorded."""
    run = module.ex._create_run(config_updates=dict(point.updates), named_configs=list(point.named_configs),
                                options={"--unobserved": True, "--loglevel": "ERROR"})
    return dict(run.config)


def blocks(module, points: list[Point], block_size: int, n_workers: int = 1) -> list[list[Point]]:
    """Points grouped into blocks of the same ``block_signature``: at most ``block_size`` each,
    and as many blocks as it takes to keep ``n_workers`` busy (a multiple of it, of even size)."""
    signature = getattr(module, "block_signature", None)
    if signature is None or not hasattr(module, "train_block") or block_size <= 1:
        return [[p] for p in points]
    groups: dict = {}
    singles = []
    for point in points:
        key = signature(point_config(module, point))
        (singles.append([point]) if key is None else groups.setdefault(key, []).append(point))
    out = []
    for group in groups.values():
        n_blocks = -(-len(group) // block_size)
        n_blocks = min(len(group), -(-n_blocks // n_workers) * n_workers)
        out.extend(group[i::n_blocks] for i in range(n_blocks))  # interleaved: neighbours spread over blocks
    return out + singles


# ----------------------------------------------------------------------------- stores
class FileStore:
    """Sacred file storage under ``root``; claims are fcntl locks on files in ``root/.sweep_claims``."""

    _held: set = set()  # POSIX locks belong to the process: threads of one worker must also exclude each other
    _held_lock = threading.Lock()

    def __init__(self, root: str):
        self.root = Path(root)

    def environment(self) -> dict:
        return {"TOYLAB_RUNS_DIR": str(self.root), "TOYLAB_MONGO_URL": None}

    def completed(self, sweep: str) -> dict:
        """point key -> run id of the COMPLETED runs of ``sweep``."""
        found = {}
        if not self.root.is_dir():
            return found
        for run_dir in self.root.iterdir():
            if not run_dir.name.isdigit():
                continue
            try:
                data = json.loads((run_dir / "run.json").read_text())
            except (OSError, ValueError):
                continue  # being written or broken: not a completed run
            meta = data.get("meta") or {}
            if data.get("status") == "COMPLETED" and meta.get("sweep") == sweep:
                found[meta.get("sweep_point")] = int(run_dir.name)
        return found

    @contextlib.contextmanager
    def claim(self, sweep: str, key: str):
        """Yields True while this process holds the point's claim, False when someone else does."""
        import fcntl

        directory = self.root / ".sweep_claims" / _safe(sweep)
        directory.mkdir(parents=True, exist_ok=True)
        name = str(directory / f"{key}.lock")
        with self._held_lock:
            if name in self._held:
                yield False
                return
            self._held.add(name)
        handle = open(name, "a+")
        try:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
            try:
                handle.seek(0)
                handle.truncate()
                handle.write(f"{os.uname().nodename} pid {os.getpid()} since {time.time():.0f}\n")
                handle.flush()
                yield True
            finally:
                fcntl.lockf(handle, fcntl.LOCK_UN)
        finally:
            handle.close()
            with self._held_lock:
                self._held.discard(name)

    def tag(self, run_id, sweep: str) -> None:
        """File storage has no tags beyond meta.sweep."""


class MongoStore:
    """MongoDB (TOYLAB_MONGO_URL of this process); claims are ``sweep_claims`` documents with a lease."""

    def __init__(self, db_name: str, url: Optional[str] = None):
        self.db_name = db_name
        self.url = url
        self._db = None

    def environment(self) -> dict:
        return {}

    @property
    def db(self):
        if self._db is None:
            import pymongo

            url = self.url or os.environ.get("TOYLAB_MONGO_URL")
            if not url:
                raise RuntimeError("this worker has no TOYLAB_MONGO_URL: start it with the sweep's environment")
            self._db = pymongo.MongoClient(url, serverSelectionTimeoutMS=10000)[self.db_name]
        return self._db

    def completed(self, sweep: str) -> dict:
        cursor = self.db.runs.find({"meta.sweep": sweep, "status": "COMPLETED"}, {"meta.sweep_point": 1})
        return {doc["meta"].get("sweep_point"): doc["_id"] for doc in cursor}

    @contextlib.contextmanager
    def claim(self, sweep: str, key: str):
        import pymongo.errors

        claims = self.db.sweep_claims
        claim_id, owner = f"{sweep}/{key}", uuid.uuid4().hex
        now = time.time()
        try:
            claims.insert_one({"_id": claim_id, "owner": owner, "heartbeat": now})
        except pymongo.errors.DuplicateKeyError:
            # held: take it over only if its lease expired (its worker died), atomically
            taken = claims.find_one_and_update({"_id": claim_id, "heartbeat": {"$lt": now - CLAIM_LEASE}},
                                               {"$set": {"owner": owner, "heartbeat": now}})
            if taken is None:
                yield False
                return
        stop = threading.Event()

        def beat():
            while not stop.wait(CLAIM_HEARTBEAT):
                with contextlib.suppress(Exception):  # a missed beat only shortens the lease
                    claims.update_one({"_id": claim_id, "owner": owner}, {"$set": {"heartbeat": time.time()}})

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield True
        finally:
            stop.set()
            thread.join()
            claims.delete_one({"_id": claim_id, "owner": owner})

    def tag(self, run_id, sweep: str) -> None:
        """Omniboard's tag column shows the sweep."""
        with contextlib.suppress(Exception):  # the run is recorded either way; a tag is a convenience
            self.db.runs.update_one({"_id": run_id}, {"$addToSet": {"omniboard.tags": sweep}})


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def default_store():
    """Where this process records runs (observers.default_observer's choice)."""
    import observers

    mongo = observers.mongo_settings()
    return MongoStore(mongo[1]) if mongo else FileStore(str(observers.runs_dir().resolve()))


# ----------------------------------------------------------------------------- worker
def run_block(experiment_file: str, sweep: str, points: list[Point], store) -> list[dict]:
    """Run the points of one block on this worker: claim, skip what is COMPLETED, train the
    rest together when the experiment allows, record each as its own run. One dict per point."""
    saved = dict(os.environ)
    for name, value in store.environment().items():  # the runs record where the sweep records
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    try:
        return _run_block(load_experiment(experiment_file), sweep, points, store)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _run_block(module, sweep: str, points: list[Point], store) -> list[dict]:
    with contextlib.ExitStack() as stack:
        outcomes, mine = {}, []
        done = store.completed(sweep)
        for point in points:
            if point.key in done:
                outcomes[point.key] = {"status": "SKIPPED", "run": done[point.key]}
            elif stack.enter_context(store.claim(sweep, point.key)):
                mine.append(point)
            else:
                outcomes[point.key] = {"status": "BUSY"}
        done = store.completed(sweep)  # under the claims: someone may have finished a point meanwhile
        for point in list(mine):
            if point.key in done:
                outcomes[point.key] = {"status": "SKIPPED", "run": done[point.key]}
                mine.remove(point)
        if len(mine) > 1 and hasattr(module, "train_block"):
            try:
                module.train_block([point_config(module, point) for point in mine])
            except Exception as error:  # noqa: BLE001 - each point then trains in its own run, which reports
                print(f"block training failed ({type(error).__name__}: {error}); running its points one by one",
                      file=sys.stderr)
        for point in mine:
            outcomes[point.key] = _record(module, sweep, point, store)
    return [{"key": point.key, **outcomes[point.key]} for point in points]


def _record(module, sweep: str, point: Point, store) -> dict:
    """Run one point as an ordinary run of the experiment (its main records it)."""
    run = None
    try:
        # a worker prints nothing per run (its captured output is recorded in the run, as usual)
        options = {"--capture": "sys", "--loglevel": "ERROR"}
        run = module.ex._create_run(config_updates=dict(point.updates), named_configs=list(point.named_configs),
                                    meta_info={"sweep": sweep, "sweep_point": point.key},
                                    info={"sweep": sweep}, options=options)
        with contextlib.redirect_stdout(io.StringIO()):
            run()
    except BaseException as error:  # noqa: BLE001 - a failed point is reported, the sweep goes on
        if isinstance(error, KeyboardInterrupt):
            raise
        return {"status": "FAILED", "run": getattr(run, "_id", None), "error": f"{type(error).__name__}: {error}"}
    store.tag(run._id, sweep)
    result = run.result if isinstance(run.result, dict) else {}
    return {"status": "COMPLETED", "run": run._id,
            "result": {k: v for k, v in result.items() if isinstance(v, (str, int, float, bool, type(None)))}}


# ------------------------------------------------------------------------ coordinator
def make_client(workers: Optional[int] = None, scheduler: Optional[str] = None, slurm: Optional[dict] = None):
    """A Dask client: an existing scheduler, a SLURM cluster, or local worker processes."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler)
    if slurm is not None:
        cluster = slurm_cluster(**slurm)
        cluster.scale(jobs=slurm["jobs"])
        return Client(cluster)
    n = workers or os.cpu_count() or 1
    # quiet: the progress bar and the summary report what matters (a restarted worker is retried)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536 (to hand memory back to the OS);
    # setting it also freezes glibc's mmap threshold at 128 KiB, so every step's activations
    # (~0.7 MB for a block of 16 toy models) were mapped and faulted in afresh: 5-25x the page
    # faults and about a fifth of the throughput. Training allocates the same sizes every step, so
    # glibc's own adaptive default is what fits.
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
    return Client(cluster)


def slurm_cluster(partition: Optional[str] = None, walltime: str = "01:00:00", memory: str = "4GB", cores: int = 1,
                  jobs: int = 1, **extra):
    """A dask-jobqueue SLURMCluster: each job one worker process per core, one thread each."""
    from dask_jobqueue import SLURMCluster

    return SLURMCluster(queue=partition, walltime=walltime, memory=memory, cores=cores, processes=cores,
                        job_script_prologue=[f"cd {Path.cwd()}"], **extra)


def run_sweep(experiment_file: str, spec: dict, sweep: str, client, block_size: int = BLOCK_SIZE,
              store=None, progress: Optional[bool] = None) -> list[dict]:
    """Run every point of ``spec`` on ``client``'s cluster; one summary dict per point."""
    from tqdm.auto import tqdm

    module = load_experiment(experiment_file)
    experiment = module.ex.path
    points = expand(experiment, spec)
    store = store or default_store()
    for point in points:  # bad values stop the sweep here, before anything runs (one line per ConfigError)
        point_config(module, point)
    by_key = {point.key: point for point in points}
    if len(by_key) < len(points):
        raise SystemExit("the sweep has duplicate points (a key in both the grid and `with`?)")
    summary: dict = {}
    done = store.completed(sweep)  # a resumed sweep sends only what is missing (workers check again, under claims)
    for point in points:
        if point.key in done:
            summary[point.key] = {"key": point.key, "status": "SKIPPED", "run": done[point.key]}
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))  # SLURM workers may still be queued
    pending = blocks(module, [point for point in points if point.key not in summary], block_size, n_workers)
    bar = tqdm(total=len(points), initial=len(summary), desc=f"sweep {sweep}", unit="point", dynamic_ncols=True,
               disable=(not sys.stderr.isatty()) if progress is None else not progress)
    while pending:
        futures = {client.submit(run_block, str(Path(experiment_file).resolve()), sweep, block, store, pure=False,
                                 key=f"sweep-{_safe(sweep)}-{uuid.uuid4().hex[:12]}"): block for block in pending}
        pending = []
        remaining = set(futures)
        while remaining:
            finished = {future for future in remaining if future.done()}
            if not finished:
                time.sleep(0.5)
            remaining -= finished
            for future in finished:
                block = futures[future]
                try:
                    outcomes = future.result()
                except Exception as error:  # noqa: BLE001 - e.g. KilledWorker: the points failed, the sweep goes on
                    outcomes = [{"key": p.key, "status": "FAILED", "run": None,
                                 "error": f"{type(error).__name__}: {error}"} for p in block]
                busy = [by_key[o["key"]] for o in outcomes if o["status"] == "BUSY"]
                if busy:  # claimed by another worker or sweep: try again once it is released
                    pending.extend([p] for p in busy)
                for outcome in outcomes:
                    if outcome["status"] != "BUSY":
                        summary[outcome["key"]] = outcome
                        bar.update(1)
            processing = _processing(client)
            running = sum(len(futures[f]) for f in remaining if f.key in processing)
            failed = sum(o["status"] == "FAILED" for o in summary.values())
            bar.set_postfix({"done": len(summary) - failed, "running": running, "failed": failed}, refresh=True)
        if pending:
            time.sleep(BUSY_RETRY)
    bar.close()
    return [{"point": by_key[key], **summary[key]} for key in by_key]


def _processing(client) -> set:
    """The keys of the tasks the scheduler has handed to workers (best effort: for the progress bar)."""
    try:
        return {key for keys in client.processing().values() for key in keys}
    except Exception:  # noqa: BLE001
        return set()


def print_summary(rows: list[dict], sweep: str, stream=None) -> int:
    """The end summary: a table of points, counts, and failures with run ids. Returns the exit code."""
    stream = stream or sys.stdout
    swept = sorted({k for row in rows for k in row["point"].updates
                    if len({json.dumps(r["point"].updates.get(k)) for r in rows}) > 1})
    header = ["status", "run"] + swept + (["phase"] if any("phase" in (r.get("result") or {}) for r in rows) else [])
    lines = [header]
    for row in rows:
        values = [row["status"], str(row.get("run"))] + [str(row["point"].updates.get(k)) for k in swept]
        if "phase" in header:
            values.append(str((row.get("result") or {}).get("phase", "")))
        lines.append(values)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip(), file=stream)
    counts = {status: sum(r["status"] == status for r in rows) for status in ("COMPLETED", "SKIPPED", "FAILED")}
    print(f"sweep {sweep}: {len(rows)} points: {counts['COMPLETED']} run now, {counts['SKIPPED']} already "
          f"COMPLETED (skipped), {counts['FAILED']} failed", file=stream)
    phases = [(r.get("result") or {}).get("phase") for r in rows if r["status"] == "COMPLETED"]
    if any(phases):
        tally = {phase: phases.count(phase) for phase in sorted(set(phases) - {None})}
        print("phases of the runs done now: " + ", ".join(f"{k} {v}" for k, v in tally.items()), file=stream)
    for row in rows:
        if row["status"] == "FAILED":
            print(f"FAILED: run {row.get('run')} ({row['point'].describe()}): {row.get('error')}", file=stream)
    return 1 if counts["FAILED"] else 0


# ----------------------------------------------------------------------- command line
def parse_args(argv: list[str]):
    words = list(argv)
    updates = {}
    if "with" in words:  # Sacred's spelling: KEY=VALUE after `with` are fixed for every point
        at = words.index("with")
        for item in words[at + 1:]:
            key, sep, value = item.partition("=")
            if not sep:
                raise SystemExit(f"`with {item}`: expected KEY=VALUE")
            updates[key] = parse_value(value)
        words = words[:at]
    parser = argparse.ArgumentParser(prog="python -m experiments.sweep", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment_file", help="an experiment file with `ex` (and optionally SWEEPS)")
    parser.add_argument("--sweep", help="a named sweep of the experiment's SWEEPS")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="a swept key and its values (repeat for a cartesian product)")
    parser.add_argument("--seeds", type=int, help="seeds 0..N-1 for every grid point (config key `seed`)")
    parser.add_argument("--named-config", action="append", default=[], help="a named config for every point")
    parser.add_argument("--name", help="the sweep's tag (default: the --sweep name, else 'grid')")
    parser.add_argument("--list", action="store_true", help="print the points and exit")
    parser.add_argument("--block-size", type=int, default=BLOCK_SIZE,
                        help=f"points trained together in one process (default {BLOCK_SIZE}; 1: one run at a time)")
    where = parser.add_argument_group("where the workers run (default: a local cluster, one process per core)")
    where.add_argument("--workers", type=int, help="local worker processes")
    where.add_argument("--scheduler", help="address of an existing Dask scheduler, e.g. tcp://host:8786")
    where.add_argument("--slurm", action="store_true", help="workers as SLURM jobs (dask-jobqueue)")
    where.add_argument("--slurm-partition", help="SLURM partition (queue)")
    where.add_argument("--slurm-walltime", default="01:00:00", help="walltime per job (default 01:00:00)")
    where.add_argument("--slurm-memory", default="4GB", help="memory per job (default 4GB)")
    where.add_argument("--slurm-cores", type=int, default=1, help="cores (= worker processes) per job")
    where.add_argument("--slurm-jobs", type=int, default=1, help="number of SLURM jobs")
    args = parser.parse_args(words)
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
    import observers

    args, updates = parse_args(sys.argv[1:] if argv is None else argv)
    module = load_experiment(args.experiment_file)
    spec, sweep = build_spec(args, updates, module)
    try:
        for point in expand(module.ex.path, spec):  # every bad value is refused before a worker starts
            point_config(module, point)
    except observers.ConfigError as error:
        print(f"observers.ConfigError: {error}", file=sys.stderr)
        return 2
    if args.list:
        for point in expand(module.ex.path, spec):
            print(f"{point.key}  {point.describe()}")
        return 0
    slurm = None
    if args.slurm:
        slurm = {"partition": args.slurm_partition, "walltime": args.slurm_walltime, "memory": args.slurm_memory,
                 "cores": args.slurm_cores, "jobs": args.slurm_jobs}
    started = time.time()
    client = make_client(args.workers, args.scheduler, slurm)
    cluster = None if args.scheduler else client.cluster  # ours to close; an existing cluster stays up
    try:
        n_workers = len(client.scheduler_info().get("workers", {}))
        print(f"sweep {sweep}: {len(expand(module.ex.path, spec))} points on {n_workers or 'pending'} Dask "
              f"workers ({client.scheduler.address}); recording to {_where(default_store())}", flush=True)
        rows = run_sweep(args.experiment_file, spec, sweep, client, block_size=args.block_size)
    except KeyboardInterrupt:
        print(f"\nsweep {sweep} interrupted: run the same command again to run only the points not COMPLETED",
              file=sys.stderr)
        return 130
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    code = print_summary(rows, sweep)
    print(f"wall time {time.time() - started:.1f} s")
    return code


def _where(store) -> str:
    return f"file storage {store.root}" if isinstance(store, FileStore) else f"MongoDB database {store.db_name}"


if __name__ == "__main__":
    # through the importable module, so Dask ships run_block by reference, not __main__ by value
    from experiments import sweep as importable

    sys.exit(importable.main())
