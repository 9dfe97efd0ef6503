"""The MongoDB password never appears in anything a run writes.

Each test runs with a URL holding a password, provokes errors whose messages contain
that URL (the worst case for a log line), then scans everything the run wrote: every
document of every collection in MongoDB (GridFS chunks included), every file in file
storage and the fallback directory, captured stdout/stderr and log records.
"""
import subprocess
import sys
import time
from pathlib import Path

import bson
import pymongo
import pytest

import observers
from conftest import REPO
from faults import MongomockBackend, run_grokking
from test_observer_faults import backend, run_experiment  # noqa: F401 - the backend fixture

PASSWORD = "Pw-never-4-logs-91"
USER = "toylab-secret-user"
SECRET_URL = f"mongodb://{USER}:{PASSWORD}@127.0.0.1:27017/?authSource=admin"


def everything_in(db) -> bytes:
    return b"".join(bson.encode(doc) for name in db.list_collection_names() for doc in db[name].find())


def files_under(*roots) -> bytes:
    return b"".join(p.read_bytes() for root in roots if Path(root).exists()
                    for p in sorted(Path(root).rglob("*")) if p.is_file())


def assert_clean(blob: bytes, where: str):
    for secret in (PASSWORD, USER):
        assert secret.encode() not in blob, f"{secret!r} found in {where}"


def test_default_observer_with_password_in_url_never_records_it(monkeypatch, tmp_path, capfd, caplog):
    """Injected: the real grokking experiment through observers.attach with
    TOYLAB_MONGO_URL holding a password (pymongo's client replaced by mongomock), errors
    whose message is that URL from step 0 on, MongoDB still down at the end."""
    faults = MongomockBackend(monkeypatch, tmp_path / "fallback")
    faults.error_message = f"cannot reach {SECRET_URL}"
    monkeypatch.setattr(pymongo, "MongoClient", lambda url, **kwargs: faults.client)
    monkeypatch.setenv("TOYLAB_MONGO_URL", SECRET_URL)
    monkeypatch.setenv("TOYLAB_FALLBACK_DIR", str(tmp_path / "fallback"))
    monkeypatch.setenv("TOYLAB_MONGO_END_TIMEOUT", "0.5")
    run = run_grokking({"train_steps": 600, "checkpoint_every": 500, "log_every": 50},
                       lambda: faults.down("refuse"))
    assert faults.injected >= 1
    assert run.status == "COMPLETED"
    [observer] = [o for o in run.observers if hasattr(o, "fallback_run_dir")]
    assert observer.fallback_run_dir is not None and (observer.fallback_run_dir / "model.pt").exists()
    faults.up()
    out, err = capfd.readouterr()
    assert "fallback file storage" in err and "***" in err  # the error was reported, redacted
    assert_clean(everything_in(faults.db), "MongoDB")
    assert_clean(files_under(tmp_path), "file storage / fallback")
    assert_clean((out + err + caplog.text).encode(), "stdout / stderr / log")
    assert_clean(str(run.meta_info).encode() + str(run.host_info).encode(), "meta / host info")


def test_real_server_run_with_an_outage_stores_no_credentials(backend, tmp_path, capfd):  # noqa: F811
    """Injected: an outage from step 15 to 45 on the backend; the URL the observer uses
    carries a password (on the real server, the server's own credentials)."""
    secret_url = getattr(backend, "url", SECRET_URL)
    observer = backend.observer()
    observer.url = secret_url
    run_experiment(observer, {15: lambda: backend.down("refuse"), 45: backend.up})
    assert backend.injected >= 1
    out, err = capfd.readouterr()
    blob = everything_in(backend.db) + files_under(tmp_path) + (out + err).encode()
    password = pymongo.uri_parser.parse_uri(secret_url).get("password") or PASSWORD
    assert password.encode() not in blob


def test_unreachable_url_with_password_fails_fast_and_records_locally(tmp_path):
    """Injected: TOYLAB_MONGO_URL with a password pointing at a closed port, in a real
    subprocess of the grokking experiment."""
    env = {"PATH": "/usr/bin:/bin", "TOYLAB_RUNS_DIR": str(tmp_path / "runs"),
           "TOYLAB_MONGO_URL": f"mongodb://{USER}:{PASSWORD}@127.0.0.1:9/?serverSelectionTimeoutMS=60000"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "experiments/grokking.py", "with", "train_steps=300"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "MongoDB unreachable at start" in line]
    assert len(warnings) == 1 and str(tmp_path / "runs" / "fallback") in warnings[0]
    run_dirs = [p for p in (tmp_path / "runs" / "fallback").iterdir() if p.name.isdigit()]
    assert len(run_dirs) == 1 and (run_dirs[0] / "metrics.json").exists()
    assert elapsed < 40, f"{elapsed:.0f} s: the start stalled on the unreachable server"
    assert_clean(files_under(tmp_path) + (result.stdout + result.stderr).encode(), "subprocess run")
    assert observers.mongo.redact(env["TOYLAB_MONGO_URL"], env["TOYLAB_MONGO_URL"]).count(PASSWORD) == 0
