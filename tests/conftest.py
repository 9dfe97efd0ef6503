"""Shared fixtures: every test records into its own temporary directory, never ./runs."""
import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)  # CI has 2 cores; the toy models are overhead-bound anyway


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path, monkeypatch):
    """No test sees the user's MongoDB or writes to the repository's ./runs."""
    for name in ("TOYLAB_MONGO_URL", "TOYLAB_MONGO_DB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TOYLAB_RUNS_DIR", str(tmp_path / "runs"))
    yield


def run_script(args, env=None, timeout=300, **kwargs):
    """Run a Python script of the repository in a real subprocess."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def require_board(what: str) -> None:
    """Skip (outside CI only) when the local server / Omniboard prerequisites are missing."""
    from localboard.board import missing_prerequisites

    missing = missing_prerequisites()
    if missing:
        message = f"{what} needs: {'; '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must install them: make test-deps)")
        pytest.skip(message)


@pytest.fixture(scope="session", autouse=True)
def real_mongo_url(tmp_path_factory):
    """TOYLAB_TEST_MONGO_URL for the tests that need a real server: the user's when set,
    otherwise one local MongoDB-compatible server process for the whole session (when its
    prerequisites are installed, as `make test` does), so those tests run, not skip."""
    if os.environ.get("TOYLAB_TEST_MONGO_URL"):
        yield os.environ["TOYLAB_TEST_MONGO_URL"]
        return
    from localboard.board import missing_prerequisites
    from localboard.server import LocalMongo

    if missing_prerequisites():
        yield None
        return
    server = LocalMongo(tmp_path_factory.mktemp("session-mongo") / "db.sqlite3",
                        password="session-" + os.urandom(8).hex()).start()
    os.environ["TOYLAB_TEST_MONGO_URL"] = server.url()
    try:
        yield server.url()
    finally:
        del os.environ["TOYLAB_TEST_MONGO_URL"]
        server.stop()


@pytest.fixture
def local_mongo(tmp_path):
    """The local MongoDB-compatible server as a real process: free port, temporary SQLite file.
    ``local_mongo.kill()`` / ``.start()`` / ``.restart()`` keep the port and the file."""
    require_board("the local MongoDB-compatible server")
    from localboard.server import LocalMongo

    server = LocalMongo(tmp_path / "mongo" / "db.sqlite3", password="wire-" + os.urandom(8).hex()).start()
    yield server
    server.stop()
