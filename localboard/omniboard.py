"""Omniboard, the web board: ``board/package.json`` + ``package-lock.json`` (``npm ci``),
run by node with ``board/localhost.js`` preloaded, which binds it to 127.0.0.1 and hands
it its login from the environment (never the command line)."""
from __future__ import annotations

import base64
import os
import secrets
import shutil
import urllib.error
import urllib.request

from localboard.processes import BOARD, HOST
from localboard.server import DB_NAME, mongo_url

OMNIBOARD_JS = BOARD / "node_modules" / "omniboard" / "dist" / "start.js"
OMNIBOARD_MARKER = "omniboard"  # on Omniboard's command line: how a pid file is known to be it


def omniboard_missing() -> list[str]:
    """What Omniboard needs that is not installed (empty when ready)."""
    missing = []
    if not shutil.which("node"):
        missing.append("node (apt-get install nodejs npm)")
    if not OMNIBOARD_JS.exists():
        missing.append("Omniboard (make board-deps: npm ci in board/)")
    return missing


def omniboard_argv() -> list[str]:
    return ["node", "-r", str(BOARD / "localhost.js"), str(OMNIBOARD_JS)]


def omniboard_env(web_port: int, mongo_port: int, user: str, password: str) -> dict:
    """Omniboard's environment: its port, the server's URL (with the login, as Omniboard
    needs it) and its own login for localhost.js; no other secret."""
    env = {**os.environ, "TOYLAB_BOARD_USER": user, "PORT": str(web_port),
           "MONGO_URI": mongo_url(mongo_port, user, password, DB_NAME),
           "TOYLAB_OMNIBOARD_LOGIN": f"{user}:{password}:{secrets.token_urlsafe(24).replace('-', 'x')}"}
    for name in ("OMNIBOARD_CONFIG", "TOYLAB_BOARD_PASSWORD"):
        env.pop(name, None)
    return env


def omniboard_status(port: int, user: str, password: str, timeout: float = 5) -> str:
    """"ok" if Omniboard's API answers a logged-in query of the runs, else what it says
    instead. Omniboard's pool to the server never recovers once it has given up on it (a
    server down for ~30 s, or restarted: 'pool is draining' / 'pool destroyed', HTTP 500),
    while its page still loads: only this query tells a working Omniboard from a broken one."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(f"http://{HOST}:{port}/sacred/api/v1/Runs/count",
                                     headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
        return "ok"
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code}: {error.read()[:200].decode(errors='replace')}"
    except (urllib.error.URLError, OSError) as error:
        return f"no answer ({error})"
