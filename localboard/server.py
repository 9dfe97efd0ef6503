"""The local MongoDB-compatible server: mongoeco's wire-protocol server (``board/server.py``)
in its own Python >= 3.13 venv ``.board/venv`` (``make board-deps`` builds it), on 127.0.0.1,
behind SCRAM-SHA-256 with the user and password from its environment.

``LocalMongo`` is the server as a process the tests also use: start on a free port with a
temporary SQLite file, stop, kill, restart on the same port and file.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Optional
from urllib.parse import quote

from localboard.processes import BOARD, HOST, REPO, BoardError, free_port, port_open, wait_until

SERVER_VENV = REPO / ".board" / "venv"
SERVER_SCRIPT = BOARD / "server.py"
SERVER_MARKER = "board/server.py"  # on the server's command line: how a pid file is known to be it
DB_NAME = "sacred"


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


def server_installed() -> bool:
    return (SERVER_VENV / "bin" / "python").exists()


def server_python() -> str:
    if not server_installed():
        raise BoardError("the local MongoDB server's venv is missing: run 'make board-deps' "
                         "(needs Python >= 3.13: install python3.13 or 'pyenv install 3.13')")
    return str(SERVER_VENV / "bin" / "python")


def server_argv(port: int, data: os.PathLike) -> list[str]:
    """The server's command line (no secret on it: the login comes from the environment)."""
    return [server_python(), str(SERVER_SCRIPT), "--port", str(port), "--data", str(data)]


def server_env(user: str, password: str) -> dict:
    return {**os.environ, "TOYLAB_BOARD_USER": user, "TOYLAB_BOARD_PASSWORD": password}


def mongo_url(port: int, user: Optional[str] = None, password: Optional[str] = None, db: str = "") -> str:
    """The URL clients use: SCRAM-SHA-256 and directConnection are required by the server."""
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}@" if user else ""
    query = "directConnection=true" + ("&authSource=admin&authMechanism=SCRAM-SHA-256" if user else "")
    return f"mongodb://{auth}{HOST}:{port}/{db}?{query}"


def server_problem(port: int, user: str, password: str, timeout: float = 10) -> Optional[str]:
    """None if the server on ``port`` answers a ping with this login within ``timeout`` s,
    else what is wrong (it hangs, or it refuses the login)."""
    import pymongo
    import pymongo.errors

    client = pymongo.MongoClient(mongo_url(port, user, password), serverSelectionTimeoutMS=int(timeout * 1000),
                                 connectTimeoutMS=int(timeout * 1000), socketTimeoutMS=int(timeout * 1000))
    try:
        client.admin.command("ping")
        return None
    except pymongo.errors.OperationFailure as error:
        return f"it refuses the login ({error.details.get('errmsg', error) if error.details else error})"
    except pymongo.errors.PyMongoError:
        return f"it does not answer within {timeout:.0f} s"
    finally:
        client.close()


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
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(server_argv(self.port, self.data), env=server_env(self.user, self.password),
                                            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        wait_until(lambda: port_open(self.port), timeout, "the local MongoDB server", self.process, self.log)
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
