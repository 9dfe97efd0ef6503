"""What the local board's processes share: paths, 127.0.0.1 ports, waiting for a process
to come up, the pid files of the processes ``make board`` leaves running, and the lock
that makes two ``make board`` at the same moment start one board."""
from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator, Optional

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


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(ip, port) of every TCP socket process ``pid`` listens on, from /proc (empty if it is gone)."""
    import ipaddress

    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return set()
    found = set()
    for table, width in (("tcp", 4), ("tcp6", 16)):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            hex_ip, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_ip)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4))  # host-order 32-bit words
            found.add((str(ipaddress.ip_address(raw)), int(hex_port, 16)))
    return found


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (empty if it is gone)."""
    return {port for _, port in listening_addresses(pid)}


def last_log_line(log: Optional[Path]) -> str:
    lines = log.read_text(errors="replace").strip().splitlines() if log and log.exists() else []
    return f"{lines[-1].strip()} (log: {log})" if lines else "no output"


def wait_until(predicate, timeout: float, what: str, process: Optional[subprocess.Popen] = None,
               log: Optional[Path] = None) -> None:
    """Return once ``predicate()`` holds; BoardError (one line: the log's last line and
    where the log is) if ``process`` exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            raise BoardError(f"{what} exited with code {process.returncode}: {last_log_line(log)}")
        time.sleep(0.1)
    raise BoardError(f"{what} did not come up within {timeout:.0f} s: {last_log_line(log)}")


@contextmanager
def board_lock(timeout: float = 600) -> Iterator[None]:
    """Hold ``STATE/lock`` (flock) while starting or stopping the board: a second ``make
    board`` waits for the first, then finds its processes and reuses them. The kernel drops
    the lock when its holder exits, however it dies, so it never goes stale; the spawned
    processes do not inherit it (close_fds)."""
    STATE.mkdir(parents=True, exist_ok=True)
    fd = os.open(STATE / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline, told = time.monotonic() + timeout, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() > deadline:
                raise BoardError(f"another 'make board' or 'make board-stop' has held {STATE / 'lock'} "
                                 f"for {timeout:.0f} s: wait for it, or stop it")
            if not told:
                print("board: another 'make board' is starting or stopping it; waiting for that one", file=sys.stderr)
                told = True
            time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # releases the lock


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
        with suppress(ProcessLookupError):  # it may exit at any moment
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGCONT)  # a stopped (SIGSTOP, ^Z) process acts on SIGTERM only once continued
        deadline = time.monotonic() + timeout
        while pid_alive(pid_file, marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid_file, marker):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return pid is not None
