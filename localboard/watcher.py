"""The board's watcher: while ``make board`` is up, new and running file-storage runs reach it.

    python -m localboard.watcher --pid-file FILE ROOT [ROOT ...]

Started by ``python -m localboard start`` (detached, like the server and Omniboard; pid in
``.board/watcher.pid``, output in ``.board/watcher.log``) for ./runs (``TOYLAB_RUNS_DIR``)
and the fallback directory, and stopped by ``python -m localboard stop``.

Every ``POLL_SECONDS`` (2) it lists the run directories under its roots and stats the files
Sacred's file storage writes while a run goes on (``observers.sync.RUN_FILES``: run.json,
metrics.json, cout.txt, ...; an artifact added rewrites run.json). Nothing is read and
nothing is asked of the server when no size or mtime changed. A run directory that changed
(at its start: every one) goes through ``observers.sync.Uploader`` with ``running=True``: a
new run is uploaded, RUNNING ones too, and one uploaded before is updated in place (status,
heartbeat, result, captured output; only the metric points past those stored are appended),
each run one document, each point stored once, as ``python -m observers sync`` does it. A
run it cannot read yet (a half-written file, QUEUED) is tried again at the next poll, and so
is one whose upload failed otherwise (said once in the log); the other runs go on.

The server gone or restarting: the poll fails, and is retried every 2 s, quietly (one log
line when it goes, one when it is back; pymongo reconnects by itself). It never writes the
login: it comes from its environment (``TOYLAB_BOARD_USER`` / ``TOYLAB_BOARD_PASSWORD``,
port ``TOYLAB_BOARD_MONGO_PORT``), and every log line has the password cut out. It exits on
SIGTERM / SIGINT between two runs (a write cut off by a kill is redone whole by the next
sync), and by itself once its pid file names another process: never two watchers per board.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Optional
from urllib.parse import quote

POLL_SECONDS = 2.0
WATCHER_MARKER = "localboard.watcher"  # on the watcher's command line: how a pid file is known to be it


class Watcher:
    """Follows the run directories under ``roots`` into one database: ``poll()`` uploads or
    updates the runs whose files changed since the last poll."""

    def __init__(self, roots: Iterable[os.PathLike], db, log: Callable[[str], None] = lambda message: None):
        from observers.sync import Uploader

        self.roots = [Path(root) for root in roots]
        self.db = db
        self.log = log
        self.uploader = Uploader(db)
        self.seen: dict[Path, list] = {}  # run dir -> its file state when it was last synced
        self.failed: dict[Path, str] = {}  # run dir -> why its last sync failed (said once)

    def changed(self) -> list[tuple[Path, list]]:
        """(run dir, file state) of every run directory whose files differ from the last sync: stats only."""
        from observers.sync import file_state, run_dirs

        found = []
        for run_dir in run_dirs(self.roots):
            state = file_state(run_dir)
            if self.seen.get(run_dir) != state:
                found.append((run_dir, state))
        return found

    def poll(self, stopping: Callable[[], bool] = lambda: False):
        """Sync the run directories that changed; the SyncReport. The server gone (or refusing
        the login) stops the poll: the rest waits for the next one. Any other error stops only
        that run's sync (said once in the log; tried again at the next poll): the other runs go on."""
        import pymongo.errors

        from localboard import columns
        from observers.sync import SyncReport

        report, refresh = SyncReport(), False
        for run_dir, state in self.changed():
            if stopping():
                break
            before = (len(report.uploaded), len(report.updated), len(report.skipped))
            try:
                self.uploader.sync([run_dir], report, running=True)
            except pymongo.errors.ConnectionFailure:
                raise
            except pymongo.errors.OperationFailure as error:
                if error.code in (13, 18):  # Unauthorized, AuthenticationFailed: no run gets through
                    raise
                self._failed(run_dir, error, report)
                continue
            except Exception as error:  # noqa: BLE001 -- a run the server or the encoder refuses
                self._failed(run_dir, error, report)
                continue
            self.failed.pop(run_dir, None)
            after = (len(report.uploaded), len(report.updated), len(report.skipped))
            if after[2] == before[2]:  # uploaded, updated or unchanged: done until its files change again
                self.seen[run_dir] = state
            # the board's columns follow new runs and the results of runs that ended
            refresh = refresh or after[0] > before[0] or (after[1] > before[1] and _status(run_dir) != "RUNNING")
        if refresh:
            columns.configure(self.db)
        return report

    def _failed(self, run_dir: Path, error: Exception, report) -> None:
        message = f"could not upload {run_dir}: {type(error).__name__}: {error}"
        if self.failed.get(run_dir) != message:
            self.log(message)
        self.failed[run_dir] = message
        report.skipped.append((run_dir, message))
        report.current = None


def _status(run_dir: Path) -> Optional[str]:
    try:
        return json.loads((run_dir / "run.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


class QuietLog:
    """One line per change of state (never the password), to stderr (the watcher's log file)."""

    def __init__(self, secrets: Iterable[str] = ()):
        self.secrets = [s for secret in secrets if secret for s in {secret, quote(secret, safe="")}]
        self.last: Optional[str] = None

    def say(self, message: str, once: bool = True) -> None:
        for secret in self.secrets:
            message = message.replace(secret, "***")
        if once and message == self.last:
            return
        self.last = message
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} watcher: {message}", file=sys.stderr, flush=True)


def _still_mine(pid_file: Path, named_me: list) -> bool:
    """False once ``pid_file`` names another process, or is gone after it named this one."""
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return not named_me  # spawn writes it just after starting this process
    if pid == os.getpid():
        named_me[:] = [True]
        return True
    return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localboard.watcher", description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="+", help="file-storage directories to follow")
    parser.add_argument("--pid-file", type=Path, required=True, help="exit once this names another process")
    parser.add_argument("--interval", type=float, default=POLL_SECONDS, help="seconds between two polls")
    args = parser.parse_args(argv)
    user, password = os.environ.get("TOYLAB_BOARD_USER"), os.environ.get("TOYLAB_BOARD_PASSWORD")
    port = os.environ.get("TOYLAB_BOARD_MONGO_PORT", "")
    if not (user and password and port.isdigit()):
        print("watcher: needs TOYLAB_BOARD_USER, TOYLAB_BOARD_PASSWORD and TOYLAB_BOARD_MONGO_PORT "
              "(python -m localboard start sets them)", file=sys.stderr)
        return 2

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    import pymongo
    import pymongo.errors

    from localboard.server import DB_NAME, mongo_url

    log = QuietLog([password])
    timeout_ms = 3000
    client = pymongo.MongoClient(mongo_url(int(port), user, password), serverSelectionTimeoutMS=timeout_ms,
                                 connectTimeoutMS=timeout_ms, socketTimeoutMS=60_000)
    watcher = Watcher(args.roots, client[DB_NAME], lambda message: log.say(message, once=False))
    named_me: list = []
    down = False
    try:
        while not stop.is_set() and _still_mine(args.pid_file, named_me):
            try:
                watcher.poll(stop.is_set)
                if down:
                    log.say("the server answers again; following the runs")
                    down = False
            except pymongo.errors.PyMongoError as error:
                if not down:
                    log.say(f"the server on port {port} does not answer or refuses the login "
                            f"({type(error).__name__}); retrying every {args.interval:g} s")
                    down = True
            except Exception as error:  # noqa: BLE001 -- keep following the other runs; said once
                log.say(f"poll failed: {type(error).__name__}: {error}")
            stop.wait(args.interval)
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
