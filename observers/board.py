"""Browse runs without Docker: a local MongoDB-compatible server and Omniboard (``make board``).

    python -m observers board start   # start both (or reuse them), sync ./runs, print URL + login
    python -m observers board stop    # stop both

- The server is mongoeco's wire-protocol server (``board/server.py``), run by its own
  Python >= 3.13 venv ``.board/venv`` (``make board-deps`` builds it); its data is the
  SQLite file ``<runs dir>/board/mongo.sqlite3``, so it survives restarts.
- Omniboard comes from ``board/package.json`` + ``package-lock.json`` (``npm ci``). It is
  started with ``board/localhost.js`` preloaded, which binds it to 127.0.0.1 and passes
  its login without putting the password on the command line.
- Credentials: ``TOYLAB_BOARD_USER`` / ``TOYLAB_BOARD_PASSWORD`` when set, otherwise
  generated once into ``.board/credentials`` (mode 0600, git-ignored). The same user and
  password log in to the server and to Omniboard. They are passed to both processes in
  their environment, never printed.
- Ports: ``TOYLAB_BOARD_PORT`` (Omniboard, default 9000) and ``TOYLAB_BOARD_MONGO_PORT``
  (server, default 27018), both on 127.0.0.1.

``LocalMongo`` is the server as a process the tests also use: start on a free port with a
temporary SQLite file, stop, kill, restart on the same port and file.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
BOARD = REPO / "board"
# git-ignored: the server venv, credentials, pid and log files (TOYLAB_BOARD_STATE moves all
# but the venv, so tests run a board of their own next to the user's)
STATE = Path(os.environ.get("TOYLAB_BOARD_STATE") or REPO / ".board")
SERVER_VENV = REPO / ".board" / "venv"
OMNIBOARD_JS = BOARD / "node_modules" / "omniboard" / "dist" / "start.js"
HOST = "127.0.0.1"
DB_NAME = "sacred"


class BoardError(RuntimeError):
    """Something the board needs is missing or did not start; the message says what to do."""


# ------------------------------------------------------------------ prerequisites
def find_python313() -> Optional[str]:
    """A Python >= 3.13 on this machine: python3.13/python3.14 on PATH, or pyenv's."""
    for name in ("python3.14", "python3.13"):
        found = shutil.which(name)
        if found and subprocess.run([found, "-c", "import sys; assert sys.version_info >= (3, 13)"],
                                    capture_output=True).returncode == 0:
            return found
    if shutil.which("pyenv"):
        versions = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True).stdout.split()
        for version in sorted((v for v in versions if v.startswith(("3.13", "3.14"))), reverse=True):
            prefix = subprocess.run(["pyenv", "prefix", version], capture_output=True, text=True).stdout.strip()
            if prefix and Path(prefix, "bin", "python").exists():
                return str(Path(prefix, "bin", "python"))
    return None


def server_python() -> str:
    python = SERVER_VENV / "bin" / "python"
    if not python.exists():
        raise BoardError("the local MongoDB server's venv is missing: run 'make board-deps' "
                         "(needs Python >= 3.13: install python3.13 or 'pyenv install 3.13')")
    return str(python)


def missing_prerequisites() -> list[str]:
    """What the server + Omniboard need that is not installed (empty when ready)."""
    missing = []
    if not (SERVER_VENV / "bin" / "python").exists():
        missing.append("the server venv .board/venv (make board-deps; needs Python >= 3.13)")
    if not shutil.which("node"):
        missing.append("node (apt-get install nodejs npm)")
    if not OMNIBOARD_JS.exists():
        missing.append("Omniboard (make board-deps: npm ci in board/)")
    return missing


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


# ------------------------------------------------------------------ credentials
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


def mongo_url(port: int, user: Optional[str] = None, password: Optional[str] = None, db: str = "") -> str:
    """The URL clients use: SCRAM-SHA-256 and directConnection are required by the server."""
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}@" if user else ""
    query = "directConnection=true" + ("&authSource=admin&authMechanism=SCRAM-SHA-256" if user else "")
    return f"mongodb://{auth}{HOST}:{port}/{db}?{query}"


# ------------------------------------------------------------------ processes
def _wait(predicate, timeout: float, what: str, process: Optional[subprocess.Popen] = None, log: Optional[Path] = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-800:] if log and log.exists() else ""
            raise BoardError(f"{what} exited with code {process.returncode}: {tail.strip()}")
        time.sleep(0.1)
    raise BoardError(f"{what} did not come up within {timeout:.0f} s")


class LocalMongo:
    """The local MongoDB-compatible server as a real process on 127.0.0.1."""

    def __init__(self, data: os.PathLike, port: int = 0, user: str = "toylab", password: Optional[str] = None,
                 log: Optional[os.PathLike] = None):
        self.data, self.port = Path(data), port or free_port()
        self.user, self.password = user, password or secrets.token_urlsafe(18)
        self.log = Path(log) if log else self.data.with_suffix(".log")
        self.process: Optional[subprocess.Popen] = None

    def url(self, db: str = "") -> str:
        return mongo_url(self.port, self.user, self.password, db)

    def start(self, timeout: float = 60) -> "LocalMongo":
        env = {**os.environ, "TOYLAB_BOARD_USER": self.user, "TOYLAB_BOARD_PASSWORD": self.password}
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([server_python(), str(BOARD / "server.py"), "--port", str(self.port),
                                             "--data", str(self.data)], env=env, stdout=log, stderr=log,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        _wait(lambda: port_open(self.port), timeout, "the local MongoDB server", self.process, self.log)
        return self

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM: the server closes cleanly."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: the server dies at once, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> "LocalMongo":
        self.stop()
        return self.start()


def _pid_alive(pid_file: Path, marker: str) -> Optional[int]:
    """The pid recorded in ``pid_file`` if that process is alive and is ours (``marker`` in its command line)."""
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return None
    return pid if marker in cmdline else None


def _spawn(argv: list, env: dict, log: Path, pid_file: Path) -> subprocess.Popen:
    STATE.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                   start_new_session=True, cwd=REPO)
    pid_file.write_text(str(process.pid))
    return process


def _stop_pid(pid_file: Path, marker: str, timeout: float = 15) -> bool:
    pid = _pid_alive(pid_file, marker)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid_file, marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(pid_file, marker):
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return pid is not None


def board_ports() -> tuple[int, int]:
    """(Omniboard port, server port)."""
    return int(os.environ.get("TOYLAB_BOARD_PORT") or 9000), int(os.environ.get("TOYLAB_BOARD_MONGO_PORT") or 27018)


def omniboard_ready(port: int) -> bool:
    """Omniboard answers HTTP (its API answers 401 without a login)."""
    try:
        urllib.request.urlopen(f"http://{HOST}:{port}/sacred/api/v1/Runs/count", timeout=2)
        return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def start(sync_runs: bool = True) -> dict:
    """Start the server and Omniboard (or reuse the running ones), then sync the runs."""
    from observers import runs_dir
    from observers.sync import Uploader, connect, default_roots, run_dirs

    missing = missing_prerequisites()
    if missing:
        raise BoardError("make board needs: " + "; ".join(missing))
    user, password = credentials()
    web_port, mongo_port = board_ports()
    data = (runs_dir() / "board" / "mongo.sqlite3").resolve()
    server_pid, web_pid = STATE / "server.pid", STATE / "omniboard.pid"
    env = {**os.environ, "TOYLAB_BOARD_USER": user, "TOYLAB_BOARD_PASSWORD": password}

    server_up = _pid_alive(server_pid, "board/server.py") and port_open(mongo_port)
    if not server_up:
        _stop_pid(web_pid, "omniboard")  # Omniboard does not reconnect to a restarted server
        if port_open(mongo_port):
            raise BoardError(f"port {mongo_port} is taken by another program: set TOYLAB_BOARD_MONGO_PORT")
        log = STATE / "server.log"
        process = _spawn([server_python(), str(BOARD / "server.py"), "--port", str(mongo_port), "--data", str(data)],
                         env, log, server_pid)
        _wait(lambda: port_open(mongo_port), 60, "the local MongoDB server", process, log)
    if not (_pid_alive(web_pid, "omniboard") and omniboard_ready(web_port)):
        if port_open(web_port):
            raise BoardError(f"port {web_port} is taken by another program: set TOYLAB_BOARD_PORT")
        log = STATE / "omniboard.log"
        web_env = {**env, "PORT": str(web_port), "MONGO_URI": mongo_url(mongo_port, user, password, DB_NAME),
                   "TOYLAB_OMNIBOARD_LOGIN": f"{user}:{password}:{secrets.token_urlsafe(24).replace('-', 'x')}"}
        for name in ("OMNIBOARD_CONFIG", "TOYLAB_BOARD_PASSWORD"):
            web_env.pop(name, None)
        process = _spawn(["node", "-r", str(BOARD / "localhost.js"), str(OMNIBOARD_JS)], web_env, log, web_pid)
        _wait(lambda: omniboard_ready(web_port), 90, "Omniboard", process, log)

    report = None
    if sync_runs:
        client, db = connect(mongo_url(mongo_port, user, password), DB_NAME)
        try:
            report = Uploader(db).sync(run_dirs(default_roots()))
        finally:
            client.close()
    return {"url": f"http://{HOST}:{web_port}/sacred", "user": user, "mongo_port": mongo_port,
            "web_port": web_port, "sync": report}


def stop() -> list[str]:
    stopped = []
    if _stop_pid(STATE / "omniboard.pid", "omniboard"):
        stopped.append("Omniboard")
    if _stop_pid(STATE / "server.pid", "board/server.py"):
        stopped.append("the local MongoDB server")
    return stopped


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv == ["start"]:
            up = start()
            from_env = bool(os.environ.get("TOYLAB_BOARD_PASSWORD"))
            where = "TOYLAB_BOARD_PASSWORD" if from_env else f"{STATE / 'credentials'} (readable by you only)"
            for run_dir, reason in up["sync"].skipped:
                print(f"sync: skipped {run_dir}: {reason}", file=sys.stderr)
            print(up["sync"].summary())
            print(f"Omniboard: {up['url']}  (log in as {up['user']}; password in {where})")
            print("Record live to it: TOYLAB_MONGO_URL='" + mongo_url(up['mongo_port'], up['user'], 'PASSWORD') + "'")
            return 0
        if argv == ["stop"]:
            stopped = stop()
            print("stopped " + " and ".join(stopped) if stopped else "board was not running")
            return 0
    except BoardError as error:
        print(f"board: {error}", file=sys.stderr)
        return 1
    print("usage: python -m observers board start|stop", file=sys.stderr)
    return 2
