"""The board of ``make board``: the server and Omniboard started once and left running
(pid and log files in ``.board/``, or ``TOYLAB_BOARD_STATE``), one login for both, the
runs of ./runs and of the fallback directory uploaded to it, and the watcher that keeps
uploading them while they are written (localboard/watcher.py)."""
from __future__ import annotations

import json
import os
import re
import secrets
import sys
from typing import Optional

from localboard import columns
from localboard.omniboard import OMNIBOARD_MARKER, omniboard_argv, omniboard_env, omniboard_missing, omniboard_status
from localboard.processes import (HOST, STATE, BoardError, board_lock, listening_ports, pid_alive, port_open, spawn,
                                  stop_pid, wait_until)
from localboard.server import (DB_NAME, SERVER_MARKER, mongo_url, server_argv, server_env, server_installed,
                               server_problem)
from localboard.watcher import WATCHER_MARKER


def missing_prerequisites() -> list[str]:
    """What the server + Omniboard need that is not installed (empty when ready)."""
    missing = []
    if not server_installed():
        missing.append("the server venv .board/venv (make board-deps; needs Python >= 3.13)")
    return missing + omniboard_missing()


def credentials() -> tuple[str, str]:
    """(user, password): from the environment, else from (or generated into) .board/credentials."""
    user, password = os.environ.get("TOYLAB_BOARD_USER"), os.environ.get("TOYLAB_BOARD_PASSWORD")
    if user and password:
        if ":" in user + password:
            raise BoardError("TOYLAB_BOARD_USER / TOYLAB_BOARD_PASSWORD must not contain ':' (Omniboard's login format)")
        return user, password
    path = STATE / "credentials"
    if not path.exists():  # written whole or not at all: a kill mid-write leaves only the .tmp file
        STATE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"credentials.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"user": "toylab", "password": secrets.token_urlsafe(18).replace("-", "x")}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    os.chmod(path, 0o600)
    try:
        stored = json.loads(path.read_text())
        return stored["user"], stored["password"]
    except (ValueError, KeyError, TypeError) as error:
        raise BoardError(f"{path} is not the JSON {{\"user\": ..., \"password\": ...}} make board writes ({error}): "
                         "fix it, or run 'make board-stop', delete it and run 'make board' for a new login") from None


PORTS = (("TOYLAB_BOARD_PORT", 9000), ("TOYLAB_BOARD_MONGO_PORT", 27018))  # (Omniboard, server)


def board_ports() -> tuple[int, int]:
    """(Omniboard port, server port), from the environment; BoardError naming the variable
    and what it may be when a value is not a TCP port or both are the same."""
    ports = []
    for name, default in PORTS:
        raw = os.environ.get(name, "").strip()
        if not raw:
            ports.append(default)
            continue
        if not re.fullmatch(r"[0-9]{1,5}", raw) or not 1 <= int(raw) <= 65535:
            raise BoardError(f"{name}={raw!r} is not a TCP port: set it to a number from 1 to 65535 "
                             f"(or unset it for {default})")
        ports.append(int(raw))
    if ports[0] == ports[1]:
        raise BoardError(f"TOYLAB_BOARD_PORT and TOYLAB_BOARD_MONGO_PORT are both {ports[0]}: "
                         "Omniboard and the server need two different ports")
    return ports[0], ports[1]


def sync_runs(mongo_port: int, user: str, password: str):
    """Upload the runs of ./runs (TOYLAB_RUNS_DIR) and of the fallback directory that the
    server does not have yet (``observers.sync``); the SyncReport."""
    import pymongo.errors

    from observers.sync import Uploader, connect, default_roots, run_dirs

    client, db = connect(mongo_url(mongo_port, user, password), DB_NAME)
    try:
        report = Uploader(db).sync(run_dirs(default_roots()), running=True)
        columns.configure(db)  # the config keys that vary and the results, as Omniboard columns
        return report
    except pymongo.errors.PyMongoError as error:
        raise BoardError(f"uploading the runs to the server on port {mongo_port} failed: {error}; "
                         "run 'make board' again (a run half-uploaded is uploaded again)") from None
    finally:
        client.close()


def _ours_on(pid_file, marker: str, port: int) -> Optional[int]:
    """The pid of ``pid_file`` if it is alive, ours and listening on ``port``; a process of
    ours that is not (killed mid-start, hung before listening, or started for another port)
    is stopped, so that one board never has two servers on one SQLite file."""
    pid = pid_alive(pid_file, marker)
    if pid is not None and port not in listening_ports(pid):
        stop_pid(pid_file, marker)
        return None
    return pid


def watched_roots() -> list[str]:
    """The directories the watcher follows: ./runs (TOYLAB_RUNS_DIR) and the fallback directory, absolute."""
    from observers.sync import default_roots

    return [str(root.resolve()) for root in default_roots()]


def start_watcher(mongo_port: int, user: str, password: str) -> int:
    """Start the watcher (localboard/watcher.py) for this board; its pid. The login goes in its
    environment, as for the server, never on its command line."""
    env = {**server_env(user, password), "TOYLAB_BOARD_MONGO_PORT": str(mongo_port)}
    env.pop("TOYLAB_MONGO_URL", None)  # it writes to the board's server only
    pid_file = STATE / "watcher.pid"
    argv = [sys.executable, "-m", WATCHER_MARKER, "--pid-file", str(pid_file), *watched_roots()]
    return spawn(argv, env, STATE / "watcher.log", pid_file).pid


def start(sync: bool = True) -> dict:
    """Start the server and Omniboard (or reuse the running ones), then sync the runs and
    start the watcher that follows them (``sync=False``: neither).

    Under ``STATE/lock``, so a second ``make board`` at the same moment waits and then
    reuses them. A server that is gone (SIGKILL, crash, reboot) is started again on the same
    SQLite file (WAL journal: a kill mid-write loses no acknowledged write and corrupts
    nothing); Omniboard is then restarted too, and so is an Omniboard whose API fails. The
    watcher is stopped first and started again after the sync: one uploader at a time, so
    no run is inserted twice, and the one it runs is always this start's."""
    from observers import runs_dir

    web_port, mongo_port = board_ports()  # bad values: an error before anything is written or started
    missing = missing_prerequisites()
    if missing:
        raise BoardError("make board needs: " + "; ".join(missing))
    with board_lock():
        stop_pid(STATE / "watcher.pid", WATCHER_MARKER)
        server_pid, web_pid = STATE / "server.pid", STATE / "omniboard.pid"
        server = _ours_on(server_pid, SERVER_MARKER, mongo_port)
        web = _ours_on(web_pid, OMNIBOARD_MARKER, web_port)
        for (name, _), port, ours in zip(PORTS, (web_port, mongo_port), (web, server)):
            if ours is None and port_open(port):
                raise BoardError(f"port {port} ({name}) is in use by another program: "
                                 f"set {name} to a free port (1-65535)")
        user, password = credentials()
        started = []
        try:
            if server is None:
                if web is not None:  # Omniboard does not reconnect to a restarted server
                    stop_pid(web_pid, OMNIBOARD_MARKER)
                    web = None
                data = (runs_dir() / "board" / "mongo.sqlite3").resolve()
                log = STATE / "server.log"
                process = spawn(server_argv(mongo_port, data), server_env(user, password), log, server_pid)
                started.append((server_pid, SERVER_MARKER))
                wait_until(lambda: mongo_port in listening_ports(process.pid), 60, "the local MongoDB server",
                           process, log)
            problem = server_problem(mongo_port, user, password)
            if problem:
                raise BoardError(f"the local MongoDB server (pid {pid_alive(server_pid, SERVER_MARKER)}, port "
                                 f"{mongo_port}) is running but {problem}: run 'make board-stop', then 'make board'")
            if web is not None and omniboard_status(web_port, user, password) != "ok":
                stop_pid(web_pid, OMNIBOARD_MARKER)  # its pool to the server has given up: only a restart helps
                web = None
            if web is None:
                log = STATE / "omniboard.log"
                process = spawn(omniboard_argv(), omniboard_env(web_port, mongo_port, user, password), log, web_pid)
                started.append((web_pid, OMNIBOARD_MARKER))

                def omniboard_up() -> bool:
                    ports = listening_ports(process.pid)
                    if ports and web_port not in ports:  # Omniboard moves to the next port when its own is taken
                        raise BoardError(f"port {web_port} (TOYLAB_BOARD_PORT) was taken by another program while "
                                         f"Omniboard started: set TOYLAB_BOARD_PORT to a free port (1-65535)")
                    return web_port in ports and omniboard_status(web_port, user, password) == "ok"

                wait_until(omniboard_up, 90, "Omniboard", process, log)
        except BaseException:
            for pid_file, marker in reversed(started):  # leave nothing half-started behind
                stop_pid(pid_file, marker)
            raise
        report = sync_runs(mongo_port, user, password) if sync else None
        watcher = start_watcher(mongo_port, user, password) if sync else None
    return {"url": f"http://{HOST}:{web_port}/sacred", "user": user, "mongo_port": mongo_port,
            "web_port": web_port, "sync": report, "watcher": watcher, "watched": watched_roots()}


def stop() -> list[str]:
    """Stop the watcher, Omniboard and the server if they run; what was stopped."""
    stopped = []
    with board_lock():
        if stop_pid(STATE / "watcher.pid", WATCHER_MARKER):
            stopped.append("the runs watcher")
        if stop_pid(STATE / "omniboard.pid", OMNIBOARD_MARKER):
            stopped.append("Omniboard")
        if stop_pid(STATE / "server.pid", SERVER_MARKER):
            stopped.append("the local MongoDB server")
    return stopped


def password_hint() -> str:
    """Where the password is, for the message that never prints it."""
    if os.environ.get("TOYLAB_BOARD_PASSWORD"):
        return "TOYLAB_BOARD_PASSWORD"
    return f"{STATE / 'credentials'} (readable by you only)"


__all__ = ["BoardError", "board_ports", "credentials", "missing_prerequisites", "start", "start_watcher", "stop",
           "sync_runs"]
