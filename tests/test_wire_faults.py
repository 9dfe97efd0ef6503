"""Faults injected with the real server process: the grokking experiment must lose no point.

Each test names what it injects, runs the experiment as a real subprocess recording through
TOYLAB_MONGO_URL, and compares the points logged (the same config in file storage) with the
points stored. Runs that could not reach the server end in the fallback directory and
`python -m observers sync` uploads them once the server is back, exactly once.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pymongo
import pytest

from tests.conftest import REPO, run_script

SHORT = ["train_steps=300", "log_every=3", "seed=3"]  # ~1 s of training, 100 points per metric
LONG = ["train_steps=12000", "log_every=12", "seed=3"]  # ~10 s of training, 1000 points per metric

@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """Points each config logs: the same runs in file storage."""
    tmp = tmp_path_factory.mktemp("reference")
    points = {}
    for name, config in (("short", SHORT), ("long", LONG)):
        out = run_script(["experiments/grokking.py", "-F", str(tmp / name), "with", *config])
        assert out.returncode == 0, out.stderr[-2000:]
        points[name] = json.loads((tmp / name / "1" / "metrics.json").read_text())
    return points


def recording_env(server, tmp_path) -> dict:
    return {"TOYLAB_MONGO_URL": server.url() + "&serverSelectionTimeoutMS=2000&connectTimeoutMS=2000",
            "TOYLAB_MONGO_DB": "sacred", "TOYLAB_MONGO_TIMEOUT_MS": "1000", "TOYLAB_MONGO_END_TIMEOUT": "3",
            "TOYLAB_FALLBACK_DIR": str(tmp_path / "fallback"), "TOYLAB_RUNS_DIR": str(tmp_path / "runs")}


def start_long_run(env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "experiments/grokking.py", "-b", "1", "with", *LONG], cwd=REPO,
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_long_and_kill_server(server, env, restart: bool) -> float:
    """Run the LONG config; SIGKILL the server once points are flowing, then restart it on the
    same port and file (``restart``) or leave it down. Returns seconds from the kill to the exit."""
    experiment = start_long_run(env)
    try:
        wait_for_points(server)
        server.kill()
        killed = time.monotonic()
        if restart:
            time.sleep(1.5)
            server.start()
        _, err = experiment.communicate(timeout=180)
    finally:
        experiment.kill()
    assert experiment.returncode == 0, err[-2000:]
    return time.monotonic() - killed


def stored_points(server, run_id=None) -> dict:
    client = pymongo.MongoClient(server.url(), serverSelectionTimeoutMS=5000)
    try:
        [doc] = list(client["sacred"]["runs"].find({} if run_id is None else {"_id": run_id}))
        metrics = {m["name"]: m for m in client["sacred"]["metrics"].find({"run_id": doc["_id"]})}
        return {"status": doc["status"], "metrics": metrics}
    finally:
        client.close()


def assert_same_points(logged: dict, stored: dict) -> None:
    assert set(stored) == set(logged)
    for name, series in logged.items():  # every point, in order, no duplicates
        assert stored[name]["steps"] == series["steps"], name
        assert stored[name]["values"] == series["values"], name


def fallback_runs(tmp_path) -> list:
    return sorted(p.parent for p in (tmp_path / "fallback").glob("*/run.json"))


def sync(server, env) -> str:
    out = run_script(["-m", "observers", "sync"], env={**env, "TOYLAB_MONGO_URL": server.url()}, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def wait_for_points(server, timeout=30) -> None:
    """Until the running experiment has flushed some metric points to the server."""
    client = pymongo.MongoClient(server.url(), serverSelectionTimeoutMS=5000)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if client["sacred"]["metrics"].find_one({"steps.3": {"$exists": True}}):
                return
            time.sleep(0.2)
    finally:
        client.close()
    raise AssertionError("the experiment stored no metric points")


def test_server_down_before_start_falls_back_then_sync_uploads_once(local_mongo, logged, tmp_path):
    """Injected: the server is stopped before the run starts and stays down until it ends."""
    env = recording_env(local_mongo, tmp_path)
    local_mongo.stop()
    began = time.monotonic()
    out = run_script(["experiments/grokking.py", "with", *SHORT], env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert time.monotonic() - began < 45  # bounded: a short timeout, then file storage
    [run_dir] = fallback_runs(tmp_path)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "COMPLETED"
    assert_same_points(logged["short"], json.loads((run_dir / "metrics.json").read_text()))

    local_mongo.start()
    assert "1 uploaded" in sync(local_mongo, env)
    stored = stored_points(local_mongo)
    assert stored["status"] == "COMPLETED"
    assert_same_points(logged["short"], stored["metrics"])
    assert "0 uploaded" in sync(local_mongo, env)


def test_server_killed_mid_run_and_restarted_every_point_arrives_once(local_mongo, logged, tmp_path):
    """Injected: SIGKILL to the server once points are flowing; restarted on the same port and file."""
    run_long_and_kill_server(local_mongo, recording_env(local_mongo, tmp_path), restart=True)
    stored = stored_points(local_mongo)
    assert stored["status"] == "COMPLETED"
    assert_same_points(logged["long"], stored["metrics"])
    assert fallback_runs(tmp_path) == []


def test_server_down_at_the_end_bounded_exit_complete_fallback_then_sync(local_mongo, logged, tmp_path):
    """Injected: SIGKILL to the server once points are flowing; it stays down past the end of the run."""
    env = recording_env(local_mongo, tmp_path)
    assert run_long_and_kill_server(local_mongo, env, restart=False) < 60  # ~10 s training + 3 s end wait + slack
    [run_dir] = fallback_runs(tmp_path)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "COMPLETED"
    assert_same_points(logged["long"], json.loads((run_dir / "metrics.json").read_text()))

    local_mongo.start()
    assert "1 uploaded" in sync(local_mongo, env)
    stored = stored_points(local_mongo)  # the incomplete run, completed by the fallback: still one run
    assert stored["status"] == "COMPLETED"
    assert_same_points(logged["long"], stored["metrics"])
    assert "0 uploaded" in sync(local_mongo, env)


def test_sigterm_during_the_end_wait_stops_waiting_and_keeps_the_complete_run(local_mongo, logged, tmp_path):
    """Injected: the server is killed mid-run and stays down; the run waits for it at the end
    (up to 120 s here) and a SIGTERM then arrives: the wait stops and the run is in the fallback."""
    env = {**recording_env(local_mongo, tmp_path), "TOYLAB_MONGO_END_TIMEOUT": "120"}
    experiment = start_long_run(env)
    try:
        wait_for_points(local_mongo)
        local_mongo.kill()
        for line in experiment.stderr:  # the observer says when it starts waiting
            if "waiting up to 120 s" in line:
                break
        else:
            raise AssertionError("the observer never announced its end wait")
        experiment.send_signal(signal.SIGTERM)
        terminated = time.monotonic()
        _, err = experiment.communicate(timeout=60)
    finally:
        experiment.kill()
    assert time.monotonic() - terminated < 20, "the end wait was not interrupted"
    assert experiment.returncode == 0, err[-2000:]
    [run_dir] = fallback_runs(tmp_path)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "COMPLETED"
    assert_same_points(logged["long"], json.loads((run_dir / "metrics.json").read_text()))
