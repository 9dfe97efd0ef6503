"""The board of ``make board``: the server and Omniboard started once and left running
(pid and log files in ``.board/``, or ``TOYLAB_BOARD_STATE``), one login for both, and
the runs of ./runs and of the fallback directory uploaded to it."""
from __future__ import annotations

import json
import os
import secrets
from typing import Optional

from localboard.omniboard import OMNIBOARD_MARKER, omniboard_argv, omniboard_env, omniboard_missing, omniboard_ready
from localboard.processes import HOST, STATE, BoardError, pid_alive, port_open, spawn, stop_pid, wait_until
from localboard.server import DB_NAME, SERVER_MARKER, mongo_url, server_argv, server_env, server_installed


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
    if not path.exists():
        STATE.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"user": "toylab", "password": secrets.token_urlsafe(18).replace("-", "x")}, f)
    os.chmod(path, 0o600)
    stored = json.loads(path.read_text())
    return stored["user"], stored["password"]


def board_ports() -> tuple[int, int]:
    """(Omniboard port, server port)."""
    return int(os.environ.get("TOYLAB_BOARD_PORT") or 9000), int(os.environ.get("TOYLAB_BOARD_MONGO_PORT") or 27018)


def sync_runs(mongo_port: int, user: str, password: str):
    """Upload the runs of ./runs (TOYLAB_RUNS_DIR) and of the fallback directory that the
    server does not have yet (``observers.sync``); the SyncReport."""
    from observers.sync import Uploader, connect, default_roots, run_dirs

    client, db = connect(mongo_url(mongo_port, user, password), DB_NAME)
    try:
        return Uploader(db).sync(run_dirs(default_roots()))
    finally:
        client.close()


def start(sync: bool = True) -> dict:
    """Start the server and Omniboard (or reuse the running ones), then sync the runs."""
    from observers import runs_dir

    missing = missing_prerequisites()
    if missing:
        raise BoardError("make board needs: " + "; ".join(missing))
    user, password = credentials()
    web_port, mongo_port = board_ports()
    data = (runs_dir() / "board" / "mongo.sqlite3").resolve()
    server_pid, web_pid = STATE / "server.pid", STATE / "omniboard.pid"

    server_up = pid_alive(server_pid, SERVER_MARKER) and port_open(mongo_port)
    if not server_up:
        stop_pid(web_pid, OMNIBOARD_MARKER)  # Omniboard does not reconnect to a restarted server
        if port_open(mongo_port):
            raise BoardError(f"port {mongo_port} is taken by another program: set TOYLAB_BOARD_MONGO_PORT")
        log = STATE / "server.log"
        process = spawn(server_argv(mongo_port, data), server_env(user, password), log, server_pid)
        wait_until(lambda: port_open(mongo_port), 60, "the local MongoDB server", process, log)
    if not (pid_alive(web_pid, OMNIBOARD_MARKER) and omniboard_ready(web_port)):
        if port_open(web_port):
            raise BoardError(f"port {web_port} is taken by another program: set TOYLAB_BOARD_PORT")
        log = STATE / "omniboard.log"
        process = spawn(omniboard_argv(), omniboard_env(web_port, mongo_port, user, password), log, web_pid)
        wait_until(lambda: omniboard_ready(web_port), 90, "Omniboard", process, log)

    report = sync_runs(mongo_port, user, password) if sync else None
    return {"url": f"http://{HOST}:{web_port}/sacred", "user": user, "mongo_port": mongo_port,
            "web_port": web_port, "sync": report}


def stop() -> list[str]:
    """Stop Omniboard and the server if they run; what was stopped."""
    stopped = []
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


__all__ = ["BoardError", "board_ports", "credentials", "missing_prerequisites", "start", "stop", "sync_runs"]
