"""How Toylab runs are recorded: the one place that attaches observers to an experiment.

- Default (the embedded default): Sacred file storage under ``./runs``, or under
  ``TOYLAB_RUNS_DIR`` when set.
- ``TOYLAB_MONGO_URL`` set: MongoDB instead, database ``TOYLAB_MONGO_DB`` (default
  ``sacred``), through ``observers.mongo.ResilientMongoObserver``: it survives outages
  and falls back to file storage under ``TOYLAB_FALLBACK_DIR`` (see observers/mongo.py).
  The URL may carry a password; it is read from the environment only and never written
  to a run record, a log line or captured output.
- The command line already names an observer (``-F DIR``, ``-m ...``) or asks for an
  unobserved run (``-u``), or code attached an observer itself: nothing is added.

``attach(ex)`` also keeps progress bars out of the captured output and turns SIGTERM and
SIGINT into an interrupt, so a killed run ends INTERRUPTED with its metrics so far (even
when a non-interactive shell started it with SIGINT ignored), reported in one line with
exit code 130 (SIGINT) or 143 (SIGTERM). A full disk under file storage (``StorageFull``)
stops the run FAILED, reported in one line naming the run directory, exit code 74.
A run in a thread that no signal reaches (a sweep's Dask task) is stopped by
``request_stop(run)`` from another thread: it ends INTERRUPTED at its next metric.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import warnings
from pathlib import Path

# Sacred imports pkg_resources, which warns on every start; nothing a user can act on (harness
# filters it too: whichever of the two is imported first, no Sacred start warns).
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from sacred import Experiment  # noqa: E402
from sacred.observers import FileStorageObserver, MongoObserver  # noqa: E402
from sacred.utils import apply_backspaces_and_linefeeds  # noqa: E402


from observers.file_storage import AtomicFileStorageObserver, StorageFull  # noqa: E402


# Command-line options of Sacred that attach an observer of their own.
_OBSERVER_OPTIONS = ("--file_storage", "--mongo_db", "--sql", "--tiny_db", "--s3", "--gcs", "--queue")


class Terminated(KeyboardInterrupt):
    """Raised in the run when the process receives SIGTERM: the run ends INTERRUPTED.

    A KeyboardInterrupt, like Ctrl-C, and not an Exception: the signal can arrive anywhere,
    and every ``except Exception`` on the way (Sacred's own guard around each observer call,
    which swallowed a SIGTERM that landed while a checkpoint artifact was being saved, then
    let the run complete) must let it through. Sacred records it as INTERRUPTED."""

    STATUS = "INTERRUPTED"
    EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM

    def __init__(self):
        super().__init__("received SIGTERM")


class Stopped(KeyboardInterrupt):
    """Raised in a run at its next metric after ``request_stop``: the run ends INTERRUPTED
    (with its metrics so far and, where the experiment keeps them, its checkpoint)."""

    STATUS = "INTERRUPTED"

    def __init__(self):
        super().__init__("stopped: the sweep was interrupted")


def request_stop(run) -> None:
    """Ask ``run`` (a Sacred Run, running in another thread) to end INTERRUPTED at its next
    metric: the way to interrupt a run in a thread that no signal reaches, such as a sweep's
    Dask task. A flag, read by the run's own thread; nothing is thrown into it from outside."""
    run.stop_requested = True


def runs_dir() -> Path:
    """Where file-storage runs go: ``TOYLAB_RUNS_DIR`` or ``./runs``."""
    return Path(os.environ.get("TOYLAB_RUNS_DIR") or "runs")


def fallback_dir() -> Path:
    """Where runs go when MongoDB is unreachable: ``TOYLAB_FALLBACK_DIR`` or ``<runs dir>/fallback``."""
    return Path(os.environ.get("TOYLAB_FALLBACK_DIR") or runs_dir() / "fallback")


def mongo_settings() -> tuple[str, str] | None:
    """(url, database) from the environment, or None when MongoDB is not configured."""
    url = os.environ.get("TOYLAB_MONGO_URL")
    return (url, os.environ.get("TOYLAB_MONGO_DB") or "sacred") if url else None


def default_observer():
    """The observer a run gets when nothing else was asked for."""
    mongo = mongo_settings()
    if mongo:
        from observers.mongo import ResilientMongoObserver

        url, db_name = mongo
        return ResilientMongoObserver(url=url, db_name=db_name)
    return AtomicFileStorageObserver(str(runs_dir()))


def attach(ex: Experiment) -> Experiment:
    """Give ``ex`` Toylab's recording: default observers, clean captured output, SIGTERM."""
    ex.captured_out_filter = apply_backspaces_and_linefeeds
    added: list = []  # the observers this function added, replaced on every run

    @ex.option_hook
    def choose_observers(options):
        for observer in added:
            if observer in ex.observers:
                ex.observers.remove(observer)
        added.clear()
        named_elsewhere = any(options.get(flag) for flag in _OBSERVER_OPTIONS)
        if named_elsewhere or options.get("--unobserved") or ex.observers:
            return
        added.append(default_observer())
        ex.observers.append(added[-1])

    @ex.pre_run_hook
    def stop_at_the_next_metric(_run):
        # Two things that cannot stop the run from where they are found: the heartbeat thread
        # finds the disk full (metrics.json no longer fits), another thread asks for a stop
        # (request_stop). The run's next metric stops it, in the run's own thread.
        log_scalar = _run.log_scalar

        def log_scalar_while_recorded(metric_name, value, step=None):
            if getattr(_run, "stop_requested", False):
                raise Stopped()
            for observer in _run.observers:
                full = getattr(observer, "storage_full", None)
                if full is not None:
                    raise full
            return log_scalar(metric_name, value, step)

        _run.log_scalar = log_scalar_while_recorded

    @ex.pre_run_hook
    def interrupt_on_sigterm(_run):
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only (e.g. a Dask worker's task thread)

        def handler(signum, frame):
            if _run.status == "RUNNING":
                raise Terminated()
            waiting = [observer for observer in _run.observers if getattr(observer, "waiting_to_end", False)]
            if waiting:
                # the run is over but MongoDB is down: stop waiting for it (a flag, not an
                # exception thrown into pymongo), so the observer writes the complete run to
                # its fallback directory before the process exits
                for observer in waiting:
                    observer.stop_waiting = True
                return
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

        signal.signal(signal.SIGTERM, handler)
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # e.g. started with & by a script
            signal.signal(signal.SIGINT, signal.default_int_handler)  # KeyboardInterrupt: INTERRUPTED

    run_commandline = ex.run_commandline  # what @ex.automain calls

    def run_commandline_reporting_an_interrupt_in_one_line(*args, **kwargs):
        try:
            return run_commandline(*args, **kwargs)
        except StorageFull as full:  # the disk of the run's file storage is full
            print(full.report(), file=sys.stderr)
            sys.exit(full.EXIT_CODE)
        except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM
            run = ex.current_run
            if run is None or run.status != "INTERRUPTED":
                raise  # interrupted before a run was recorded: Python's usual report
            what = "SIGTERM" if isinstance(interrupt, Terminated) else "Ctrl-C (SIGINT)"
            print(f"received {what}: run recorded as INTERRUPTED in {describe(run)}", file=sys.stderr)
            sys.exit(getattr(interrupt, "EXIT_CODE", 128 + signal.SIGINT))

    ex.run_commandline = run_commandline_reporting_an_interrupt_in_one_line
    return ex


def describe(run) -> str:
    """Where a run is recorded, for the user; never includes credentials."""
    places = []
    for observer in run.observers:
        if isinstance(observer, FileStorageObserver) and observer.dir:
            places.append(f"file storage {observer.dir}")
        elif hasattr(observer, "describe"):
            places.append(observer.describe())
        elif isinstance(observer, MongoObserver):
            places.append(f"MongoDB database {observer.runs.database.name}, run {run._id}")
        else:
            places.append(type(observer).__name__)
    return "; ".join(places) or "not recorded (unobserved run)"


def read_artifact(run, name: str) -> bytes:
    """An artifact of an earlier run (a run id where runs are recorded now, or a run dir)."""
    from observers.artifacts import read_artifact as read

    return read(run, name)
