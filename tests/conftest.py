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
