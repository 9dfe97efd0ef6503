"""What the local board's processes share: paths, 127.0.0.1 ports, waiting for a process
to come up, and the pid files of the processes ``make board`` leaves running."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
BOARD = REPO / "board"  # the assets: server.py, localhost.js, package.json, ...
# git-ignored: the server venv, credentials, pid and log files (TOYLAB_BOARD_STATE moves all
# but the venv, so tests run a board of their own next to the user's)
STATE = Path(os.environ.get("TOYLAB_BOARD_STATE") or REPO / ".board")
HOST = "127.0.0.1"


class BoardError(RuntimeError):
    """Something the board needs is missing or did not start; the message says what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def wait_until(predicate, timeout: float, what: str, process: Optional[subprocess.Popen] = None,
               log: Optional[Path] = None) -> None:
    """Return once ``predicate()`` holds; BoardError (with the log's tail) if ``process``
    exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-800:] if log and log.exists() else ""
            raise BoardError(f"{what} exited with code {process.returncode}: {tail.strip()}")
        time.sleep(0.1)
    raise BoardError(f"{what} did not come up within {timeout:.0f} s")


def pid_alive(pid_file: Path, marker: str) -> Optional[int]:
    """The pid recorded in ``pid_file`` if that process is alive and is ours (``marker`` in its command line)."""
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return None
    return pid if marker in cmdline else None


def spawn(argv: list, env: dict, log: Path, pid_file: Path) -> subprocess.Popen:
    """Start ``argv`` in a session of its own (it outlives this process), output to ``log``, pid to ``pid_file``."""
    STATE.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                   start_new_session=True, cwd=REPO)
    pid_file.write_text(str(process.pid))
    return process


def stop_pid(pid_file: Path, marker: str, timeout: float = 15) -> bool:
    """SIGTERM (then SIGKILL after ``timeout`` s) the process of ``pid_file`` if it is ours; True if it ran."""
    pid = pid_alive(pid_file, marker)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid_file, marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid_file, marker):
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return pid is not None
