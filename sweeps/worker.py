"""What a Dask worker does with a block of points: claim, skip what is COMPLETED, train the
rest together when the experiment allows, record each as its own run; and how a stopped
sweep's runs end INTERRUPTED rather than RUNNING."""
from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import threading
import time
from pathlib import Path

from distributed import WorkerPlugin

import observers
from sweeps.points import Point, load_experiment

# The runs this worker process is running now, and the sweeps asked to stop, by the token of
# the sweep command that submitted them (a fresh one per command: a sweep run again after a
# stop, on the same workers of an existing scheduler, is not refused).
_LOCK = threading.Lock()
_RUNNING: dict[str, set] = {}
_STOPPED: set[str] = set()
_TERMINATING = threading.Event()  # this worker process had SIGTERM (``_terminate``)


# Seconds a stopped sweep waits for its running runs to reach their next metric and end
# INTERRUPTED (TOYLAB_SWEEP_STOP_GRACE); a run still going then is left as it is (shown DEAD).
STOP_GRACE = 60.0


def stop_grace() -> float:
    return float(os.environ.get("TOYLAB_SWEEP_STOP_GRACE") or STOP_GRACE)


class LeaveInterruptsToTheSweep(WorkerPlugin):
    """Dask worker plugin for the sweep's own local workers. A Ctrl-C at the terminal, and a
    SIGTERM sent to the whole command (``kill -TERM -<pgid>``, ``timeout``, the time limit of
    a SLURM job the command runs in, ``systemctl stop``), reach every process of the command, and a worker process
    they reached died on the spot with its run RUNNING (shown DEAD). The workers ignore
    SIGINT and the sweep command stops their runs (``stop``); at SIGTERM a worker stops its
    runs itself (``_terminate``), so each ends INTERRUPTED with its metrics."""

    name = "toylab-leave-interrupts-to-the-sweep"

    def setup(self, worker):
        if threading.current_thread() is threading.main_thread():  # a worker's event loop: its main thread
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, _terminate)


class StopSweepCommand(WorkerPlugin):
    """``stop(token)`` on every worker of the cluster, and on each that joins it later: a
    worker the nanny restarts after the sweep command was stopped (its predecessor killed)
    would otherwise be handed the stopped command's queued blocks and start their runs, which
    the command's exit then leaves RUNNING for good."""

    def __init__(self, token: str):
        self.token = token
        self.name = f"toylab-stop-{token}"

    def setup(self, worker):
        stop(self.token)


def _terminate(signum, frame) -> None:
    """SIGTERM in a worker process: its runs end INTERRUPTED at their next metric, it starts
    no more points (it answers BUSY, so the sweep hands them to another worker), and once the
    runs have ended it signals itself again; with nothing running, or at a second SIGTERM, it
    ends as SIGTERM would have ended it."""
    with _LOCK:
        runs = [run for running in _RUNNING.values() for run in running]
    if not runs or _TERMINATING.is_set():
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _TERMINATING.set()
    for run in runs:
        observers.request_stop(run)

    def again_once_stopped():
        deadline = time.monotonic() + stop_grace()
        while _running() and time.monotonic() < deadline:
            time.sleep(0.2)
        # the sweep command, when it had the signal too, takes the outcomes and closes its
        # workers meanwhile; a worker signalled alone ends here (its nanny starts another)
        time.sleep(10)
        os.kill(os.getpid(), signum)

    threading.Thread(target=again_once_stopped, name="toylab-terminate", daemon=True).start()


def _running() -> int:
    with _LOCK:
        return sum(len(running) for running in _RUNNING.values())


def stop(token: str) -> int:
    """Ask this worker's runs of the sweep command ``token`` to end INTERRUPTED at their next
    metric, and start none of its points from now on. Returns how many runs were asked."""
    with _LOCK:
        _STOPPED.add(token)
        runs = list(_RUNNING.get(token, ()))
    for run in runs:
        observers.request_stop(run)
    return len(runs)


def still_running(token: str) -> int:
    """How many runs of the sweep command ``token`` this worker is still running."""
    with _LOCK:
        return len(_RUNNING.get(token, ()))


def _stopped(token: str) -> bool:
    with _LOCK:
        return token in _STOPPED


def preload(experiment_file: str) -> None:
    """Import the experiment in this (worker) process ahead of its first point."""
    load_experiment(experiment_file)


def run_block(experiment_file: str, sweep: str, points: list[Point], store, token: str = "") -> list[dict]:
    """Run the points of one block on this worker; one dict per point (its status and run).
    ``token``: the sweep command's, for ``stop``."""
    saved = dict(os.environ)
    for name, value in store.environment().items():  # the runs record where the sweep records
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    try:
        return _run_block(load_experiment(experiment_file), sweep, points, store, token)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _run_block(module, sweep: str, points: list[Point], store, token: str) -> list[dict]:
    with contextlib.ExitStack() as stack:
        outcomes, mine = {}, []
        done = store.completed(sweep, points)
        for point in points:
            if point.key in done:
                outcomes[point.key] = {"status": "SKIPPED", "run": done[point.key]}
            elif _TERMINATING.is_set():  # this worker is ending: another one runs the point
                outcomes[point.key] = {"status": "BUSY"}
            elif stack.enter_context(store.claim(sweep, point.key)):
                mine.append(point)
            else:
                outcomes[point.key] = {"status": "BUSY"}
        done = store.completed(sweep, points)  # under the claims: someone may have finished a point meanwhile
        for point in list(mine):
            if point.key in done:
                outcomes[point.key] = {"status": "SKIPPED", "run": done[point.key]}
                mine.remove(point)
        shares = [None] * len(mine)
        if len(mine) > 1 and hasattr(module, "train_block"):
            try:
                shares = module.train_block([point.config for point in mine])
            except Exception as error:  # noqa: BLE001 - each point then trains in its own run, which reports
                print(f"block training failed ({type(error).__name__}: {error}); running its points one by one",
                      file=sys.stderr)
        for point, share in zip(mine, shares):
            if _stopped(token):  # the sweep was stopped: the rest of the block is not started
                outcomes[point.key] = {"status": "STOPPED"}
            elif _TERMINATING.is_set():
                outcomes[point.key] = {"status": "BUSY"}
            else:
                outcomes[point.key] = _record(module, sweep, point, share, store, token)
    return [{"key": point.key, **outcomes[point.key]} for point in points]


def _record(module, sweep: str, point: Point, share, store, token: str = "") -> dict:
    """Run one point as an ordinary run of the experiment; its main records it (and takes
    ``share``, what ``train_block`` trained for it, when there is one)."""
    run = None
    store.wait_until_reachable()  # a short MongoDB outage: wait, rather than start the run in the fallback
    try:
        # a worker prints nothing per run (its captured output is recorded in the run, as usual)
        options = {"--capture": "sys", "--loglevel": "ERROR"}
        run = module.ex._create_run(config_updates=dict(point.updates), named_configs=list(point.named_configs),
                                    meta_info={"sweep": sweep, "sweep_point": point.key},
                                    info={"sweep": sweep}, options=options)
        with _LOCK:
            _RUNNING.setdefault(token, set()).add(run)
            if token in _STOPPED:  # stopped between the check and now: the first metric ends it
                observers.request_stop(run)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                run(*([share] if share is not None else []))
        finally:
            with _LOCK:
                _RUNNING[token].discard(run)
    except KeyboardInterrupt:
        if not (_stopped(token) or _TERMINATING.is_set()):
            raise
        # stopped by its worker's SIGTERM alone: the sweep goes on, and runs the point again elsewhere
        return {"status": "INTERRUPTED", "run": getattr(run, "_id", None), "retry": not _stopped(token)}
    except BaseException as error:  # noqa: BLE001 - a failed point is reported, the sweep goes on
        return {"status": "FAILED", "run": getattr(run, "_id", None), "error": f"{type(error).__name__}: {error}"}
    fallback = next((str(o.fallback_run_dir) for o in run.observers if getattr(o, "fallback_run_dir", None)), None)
    if fallback is None:
        store.tag(run._id, sweep)
    result = run.result if isinstance(run.result, dict) else {}
    return {"status": "COMPLETED", "run": run._id if fallback is None else f"fallback {Path(fallback).name}",
            "fallback": fallback,
            "result": {k: v for k, v in result.items() if isinstance(v, (str, int, float, bool, type(None)))}}
