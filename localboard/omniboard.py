"""Omniboard, the web board: ``board/package.json`` + ``package-lock.json`` (``npm ci``),
run by node with ``board/localhost.js`` preloaded, which binds it to 127.0.0.1 and hands
it its login from the environment (never the command line)."""
from __future__ import annotations

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


def omniboard_ready(port: int) -> bool:
    """Omniboard answers HTTP (its API answers 401 without a login)."""
    try:
        urllib.request.urlopen(f"http://{HOST}:{port}/sacred/api/v1/Runs/count", timeout=2)
        return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False
