"""The Dask cluster a sweep runs on, and the coordinator that hands it blocks of points."""
from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Optional

from sweeps.claims import _safe, completed_in_table, counted, default_store
from sweeps.points import blocks, expand, load_experiment, point_configs
from sweeps.worker import LeaveInterruptsToTheSweep, StopSweepCommand, run_block, still_running, stop, stop_grace

BLOCK_SIZE = 16  # points trained together: past ~16 the batched trainer stops gaining (benchmarks/sweep_throughput.py)
BUSY_RETRY = 2.0  # seconds before a point claimed elsewhere is tried again


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) of the sweep command, once its running runs were stopped:
    ``interrupted``, the run ids recorded INTERRUPTED; ``left_running``, how many runs did not
    end within the grace period."""

    def __init__(self, interrupted: list, left_running: int):
        super().__init__("sweep interrupted")
        self.interrupted, self.left_running = interrupted, left_running


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
    # No worker time-to-live: a scheduler that misses 5 min of heartbeats removes the worker, and
    # after a machine sleeps (or the sweep is paused with SIGSTOP) that long, every worker
    # missed them: each was killed with its run left RUNNING for good and the point run again.
    # A local worker that really dies closes its connection, and the nanny restarts it.
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                          "distributed.scheduler.worker-ttl": None}):
        # no dashboard; the scheduler's own HTTP endpoint (health checks) on a free local port, so a
        # second sweep on the machine does not warn that 8787 is taken
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                               scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, silence_logs=logging.ERROR)
    client = Client(cluster)
    client.register_plugin(LeaveInterruptsToTheSweep())  # also on workers the nanny restarts
    return client


def slurm_cluster(partition: Optional[str] = None, walltime: str = "01:00:00", memory: str = "4GB", cores: int = 1,
                  jobs: int = 1, **extra):
    """A dask-jobqueue SLURMCluster: each job one worker process per core, one thread each."""
    from dask_jobqueue import SLURMCluster

    return SLURMCluster(queue=partition, walltime=walltime, memory=memory, cores=cores, processes=cores,
                        job_script_prologue=[f"cd {Path.cwd()}"], **extra)


def run_sweep(experiment_file: str, spec: dict, sweep: str, client, block_size: int = BLOCK_SIZE,
              store=None, progress: Optional[bool] = None, points=None, done_in: Optional[str] = None) -> list[dict]:
    """Run every point of ``spec`` on ``client``'s cluster; one summary dict per point.
    ``points``: the spec's points with their configs when the caller has built them already.
    ``done_in``: a runs table (``toylab export``) whose COMPLETED runs of this sweep count as
    done too (another store's, committed), so they are not run again here."""
    from tqdm.auto import tqdm

    module = load_experiment(experiment_file)
    # every point's config is built here, once: bad values stop the sweep before anything runs,
    # and the blocks and workers use these configs
    points = points or point_configs(module, expand(module.ex.path, spec))
    store = store or default_store()
    by_key = {point.key: point for point in points}
    if len(by_key) < len(points):
        raise SystemExit("the sweep has duplicate points (a key in both the grid and `with`?)")
    summary: dict = {}
    # a resumed sweep sends only what is missing (workers check again, under claims)
    elsewhere = completed_in_table(done_in, sweep) if done_in else []
    done, stale = counted(store.completed_runs(sweep) + elsewhere, points)
    if done_in:  # this sweep's points only: the table may hold other seeds of the sweep's name
        in_table, _ = counted(elsewhere, points)
        print(f"sweep {sweep}: {len(in_table.keys() & by_key.keys())} points have a COMPLETED run in "
              f"{done_in} (they count as done)", flush=True)
    if stale:  # said before anything runs: a user who edited a named config by mistake can stop here
        shown = "; ".join(f"run {run}: " + ", ".join(f"{key} {was!r}, now {now!r}" for key, (was, now) in diff.items())
                          for _, run, diff in stale[:3])
        print(f"sweep {sweep}: {len(stale)} points have a COMPLETED run made under other values of their named "
              f"configs ({shown}{'; ...' if len(stale) > 3 else ''}): they run again", file=sys.stderr, flush=True)
    waiting = [run for run in done.values() if str(run).startswith("fallback ")]
    if waiting:  # recorded while MongoDB was unreachable: done, but not in MongoDB until synced
        where = store.fallback.root
        runs_are = "run is" if len(waiting) == 1 else "runs are"
        print(f"sweep {sweep}: {len(waiting)} COMPLETED {runs_are} in fallback file storage {where}, not in MongoDB "
              f"(they count as done): upload them with: python -m observers sync {where}", file=sys.stderr, flush=True)
    for point in points:
        if point.key in done:
            summary[point.key] = {"key": point.key, "status": "SKIPPED", "run": done[point.key]}
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))  # SLURM workers may still be queued
    pending = blocks(module, [point for point in points if point.key not in summary], block_size, n_workers)
    bar = tqdm(total=len(points), initial=len(summary), desc=f"sweep {sweep}", unit="point", dynamic_ncols=True,
               disable=(not sys.stderr.isatty()) if progress is None else not progress)
    token = uuid.uuid4().hex  # this command's: what `stop` asks the workers to end
    futures: dict = {}
    try:
        while pending:
            futures = {client.submit(run_block, str(Path(experiment_file).resolve()), sweep, block, store, token,
                                     pure=False, key=f"sweep-{_safe(sweep)}-{uuid.uuid4().hex[:12]}"): block
                       for block in pending}
            pending = []
            remaining = set(futures)
            while remaining:
                finished = {future for future in remaining if future.done()}
                if not finished:
                    time.sleep(0.5)
                remaining -= finished
                for future in finished:
                    block = futures.pop(future)
                    try:
                        outcomes = future.result()
                    except Exception as error:  # noqa: BLE001 - e.g. KilledWorker: the points failed, the sweep goes on
                        outcomes = [{"key": p.key, "status": "FAILED", "run": None,
                                     "error": f"{type(error).__name__}: {error}"} for p in block]
                    # released once read: Dask computes again a result lost with a worker that
                    # dies later, which ran the block a second time behind the sweep's back
                    future.release()
                    # claimed by another worker or sweep, or left by a worker that had SIGTERM
                    # alone: try again once it is released
                    busy = [by_key[o["key"]] for o in outcomes if o["status"] == "BUSY" or o.get("retry")]
                    if busy:
                        pending.extend([p] for p in busy)
                    for outcome in outcomes:
                        if outcome["status"] != "BUSY" and not outcome.get("retry"):
                            summary[outcome["key"]] = outcome
                            bar.update(1)
                processing = _processing(client)
                running = sum(len(futures[f]) for f in remaining if f.key in processing)
                failed = sum(o["status"] == "FAILED" for o in summary.values())
                bar.set_postfix({"done": len(summary) - failed, "running": running, "failed": failed}, refresh=True)
            if pending:
                time.sleep(BUSY_RETRY)
    except KeyboardInterrupt:
        bar.close()
        raise _stop_runs(client, token, sweep, [f for f in futures if not f.done()]) from None
    bar.close()
    return [{"point": by_key[key], **summary[key]} for key in by_key]


def _stop_runs(client, token: str, sweep: str, in_flight: list) -> SweepInterrupted:
    """The sweep command was interrupted: every worker ends its runs of this command
    INTERRUPTED at their next metric and starts no more points. Waits for those runs (up to
    ``stop_grace()`` seconds; a second Ctrl-C stops waiting) and says which runs were interrupted."""
    from distributed import wait

    grace = stop_grace()
    left = 0
    try:
        # a worker that had the SIGTERM too and nothing running has ended already: ask the
        # others, and from here to the end keep the local scheduler's errors about it quiet
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
        try:  # kept by the scheduler for the workers that join from now on; sent to those there now
            client.register_plugin(StopSweepCommand(token))
        except Exception:  # noqa: BLE001 - the send to a worker gone meanwhile failed; the scheduler keeps
            pass  # the plugin all the same (it stores it before sending), and `stop` below asks the others
        asked = sum(client.run(stop, token, on_error="ignore").values())
        print(f"\nsweep {sweep}: stopping, {asked} running run{'' if asked == 1 else 's'} to end INTERRUPTED at "
              f"the next metric (waiting up to {grace:.0f} s; Ctrl-C again to leave them RUNNING)",
              file=sys.stderr, flush=True)
        deadline = time.time() + grace
        while True:
            left = sum(client.run(still_running, token, on_error="ignore").values())
            if not left or time.time() > deadline:
                break
            time.sleep(0.5)
        try:
            wait(in_flight, timeout=5)  # the stopped runs' outcomes, on their way from the workers
        except TimeoutError:  # a block still training, before its runs exist: nothing to report
            pass
    except KeyboardInterrupt:
        pass
    except Exception as error:  # noqa: BLE001 - e.g. workers already gone: nothing left to stop
        print(f"sweep {sweep}: could not stop the workers' runs ({type(error).__name__}: {error})", file=sys.stderr)
    interrupted = []
    for future in in_flight:
        if future.done() and future.status == "finished":
            interrupted += [o["run"] for o in future.result() if o["status"] == "INTERRUPTED"]
    return SweepInterrupted(sorted(interrupted, key=str), left)


def _processing(client) -> set:
    """The keys of the tasks the scheduler has handed to workers (best effort: for the progress bar)."""
    try:
        return {key for keys in client.processing().values() for key in keys}
    except Exception:  # noqa: BLE001
        return set()
