"""Sweeps at sweep scale under faults, each through the sweep command on a real local Dask
cluster recording to the real MongoDB-compatible server process (or the real MongoDB of
TOYLAB_TEST_MONGO_URL is not used here: these tests kill and restart the server).

1. The server is SIGKILLed mid-sweep and restarted 20 s later (longer than a run's own
   10 s wait for MongoDB at its end, so the sweep's patience is what keeps the runs), a worker process is
   SIGKILLed, the sweep command gets Ctrl-C and is run again: every point ends with exactly
   one COMPLETED run, every metric point is stored exactly once, no claim is left held, and
   the summary says what was redone.
2. The server is killed and never comes back: the runs land in the fallback directory, the
   sweep reports them, sync uploads them once the server is back, and a re-run of the sweep
   skips every point.
3. Bad input to the sweep command: one line naming what is wrong, a non-zero exit, nothing
   written.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import REPO, run_script

GROKKING = str(REPO / "experiments" / "grokking.py")
LEARNING_RATES = "1e-4,3e-4,1e-3,3e-3,1e-2"
SEEDS = 4  # 5 x 4 = 20 points, in blocks of up to 4 on 2 workers
STEPS, LOG_EVERY = 3000, 10
GONE_STEPS = 1500  # the server-gone test needs no time to inject more faults: a smaller budget


def sweep_command(name: str, steps: int = STEPS) -> list[str]:
    return ["-m", "sweeps", GROKKING, "--name", name, "--grid", f"decoder_lr={LEARNING_RATES}", "--seeds",
            str(SEEDS), "--workers", "2", "--block-size", "4", "with", "paper", f"train_steps={steps}",
            f"log_every={LOG_EVERY}"]


def sweep_env(server, db_name: str, tmp_path: Path, **extra) -> dict:
    return {"TOYLAB_MONGO_URL": server.url(), "TOYLAB_MONGO_DB": db_name, "TOYLAB_RUNS_DIR": str(tmp_path / "runs"),
            # a killed worker's claims are taken over after 15 s without a heartbeat (60 s by default)
            "TOYLAB_SWEEP_CLAIM_LEASE": "15", **extra}


def database(server, db_name: str):
    import pymongo

    return pymongo.MongoClient(server.url(), serverSelectionTimeoutMS=3000)[db_name]


def count_completed(server, db_name: str, sweep: str) -> int:
    try:
        return database(server, db_name).runs.count_documents({"meta.sweep": sweep, "status": "COMPLETED"})
    except Exception:  # noqa: BLE001 - the server is down right now
        return 0


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


def dask_workers(sweep_process: subprocess.Popen) -> list:
    """The worker processes of the sweep's local cluster (spawned children of the command)."""
    workers = []
    for child in psutil.Process(sweep_process.pid).children(recursive=True):
        try:
            command = " ".join(child.cmdline())
        except psutil.NoSuchProcess:  # exited (or a zombie) since it was listed; which child it was is not known
            continue
        if "spawn_main" in command and "resource_tracker" not in command:
            workers.append(child)
    return workers


def point_keys(name: str, steps: int = STEPS) -> set:
    command = sweep_command(name, steps)
    listed = run_script(command[:-4] + ["--list"] + command[-4:])
    assert listed.returncode == 0, listed.stderr
    return {line.split()[0] for line in listed.stdout.splitlines()}


def check_every_point_once(db, sweep: str, keys: set, steps: int = STEPS) -> tuple[int, int]:
    """Exactly one COMPLETED run per point; its metrics hold every logged point exactly once.
    The points a run logs are known from its result: every LOG_EVERY steps, the last step,
    and each first threshold crossing. Returns (points logged, points stored) over the sweep."""
    from observers.metric_documents import read_metrics

    completed = list(db.runs.find({"meta.sweep": sweep, "status": "COMPLETED"}))
    assert sorted(doc["meta"]["sweep_point"] for doc in completed) == sorted(keys)  # one each, none missing
    logged = stored = 0
    for doc in completed:
        crossings = {doc["result"][name] for name in ("t_train", "t_test", "t_rqi")} - {None}
        expected = sorted(set(range(0, steps, LOG_EVERY)) | {steps - 1} | crossings)
        metrics = read_metrics(db, doc["_id"])
        assert set(metrics) == {"train.loss", "train.acc", "test.loss", "test.acc", "rqi"}, doc["_id"]
        for name, series in metrics.items():
            assert series["steps"] == expected, f"run {doc['_id']} {name}: a point lost, stored twice or out of order"
            assert len(series["values"]) == len(expected)
            logged += len(expected)
            stored += len(series["steps"])
    print(f"sweep {sweep}: {len(completed)} COMPLETED runs, {logged} metric points logged, {stored} stored")
    return logged, stored


def test_server_killed_worker_killed_and_ctrl_c_then_rerun_gives_every_point_once(local_mongo, tmp_path):
    db_name, sweep = "faults", "faults"
    env = {**os.environ, **sweep_env(local_mongo, db_name, tmp_path)}
    keys = point_keys(sweep)
    assert len(keys) == 20
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, *sweep_command(sweep)], cwd=REPO, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: count_completed(local_mongo, db_name, sweep) >= 2, 180, "two COMPLETED runs")
        local_mongo.kill()  # SIGKILL mid-sweep
        time.sleep(20)
        local_mongo.start()
        before = count_completed(local_mongo, db_name, sweep)
        wait_for(lambda: count_completed(local_mongo, db_name, sweep) > before, 120, "a run after the restart")
        wait_for(lambda: dask_workers(process), 30, "the Dask workers")
        dask_workers(process)[0].kill()  # SIGKILL one worker mid-block
        time.sleep(5)
        assert process.poll() is None, "the sweep ended before the Ctrl-C: too small to test the faults"
        process.send_signal(signal.SIGINT)  # Ctrl-C of the sweep command
        try:  # up to the stop grace (60 s) for runs to reach a metric, then the cluster closes
            code = process.wait(90)
        except subprocess.TimeoutExpired:
            pytest.fail("the sweep did not end within 90 s of the Ctrl-C:\n" + log.read_text())
        assert code == 130, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
    assert "interrupted: run the same command again" in log.read_text()
    assert count_completed(local_mongo, db_name, sweep) < len(keys)  # the Ctrl-C did leave work to redo

    again = run_script(sweep_command(sweep), env=sweep_env(local_mongo, db_name, tmp_path), timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already COMPLETED (skipped)" in again.stdout
    # a run that started the instant the server died is recorded in fallback file storage: it
    # counts as done, the re-run says where it is, and the user's sync uploads it
    fallback = tmp_path / "runs" / "fallback"
    if fallback.is_dir() and any(d.name.isdigit() for d in fallback.iterdir()):
        assert f"python -m observers sync {fallback}" in again.stderr, again.stderr
        synced = run_script(["-m", "observers", "sync", str(fallback)], env=sweep_env(local_mongo, db_name, tmp_path))
        assert synced.returncode == 0, synced.stdout + synced.stderr
    db = database(local_mongo, db_name)
    check_every_point_once(db, sweep, keys)
    assert db.sweep_claims.count_documents({}) == 0  # no claim left held
    leftovers = list(db.runs.find({"meta.sweep": sweep, "status": {"$ne": "COMPLETED"}}, {"_id": 1, "status": 1}))
    # the killed worker's run (RUNNING, shown DEAD) and those the Ctrl-C interrupted stay as they were, and the
    # summary names each; there are none when both faults landed in a block's training, before its runs exist
    assert {doc["status"] for doc in leftovers} <= {"RUNNING", "INTERRUPTED"}
    if leftovers:
        assert "redone: " in again.stdout  # their points ran again, and it says so
    for doc in leftovers:
        assert f"run {doc['_id']} {doc['status']}" in again.stdout


def test_server_that_never_comes_back_sends_runs_to_the_fallback_then_sync_and_rerun_skip(local_mongo, tmp_path):
    db_name, sweep = "faults_gone", "gone"
    fallback = tmp_path / "runs" / "fallback"
    env = sweep_env(local_mongo, db_name, tmp_path, TOYLAB_SWEEP_OUTAGE_PATIENCE="3", TOYLAB_MONGO_END_TIMEOUT="2",
                    TOYLAB_MONGO_TIMEOUT_MS="1000")
    keys = point_keys(sweep, GONE_STEPS)
    log = tmp_path / "gone.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, *sweep_command(sweep, GONE_STEPS)], cwd=REPO, env={**os.environ, **env},
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: count_completed(local_mongo, db_name, sweep) >= 2, 180, "two COMPLETED runs")
        local_mongo.kill()  # and it stays down
        assert process.wait(600) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
    output = log.read_text()
    fallback_runs = [d for d in fallback.iterdir() if d.name.isdigit()]
    assert fallback_runs, output
    assert f"runs recorded in fallback file storage {fallback}" in output  # the sweep reports them
    assert f"python -m observers sync {fallback}" in output
    assert all(json.loads((d / "run.json").read_text())["status"] == "COMPLETED" for d in fallback_runs)

    local_mongo.start()
    before_sync = run_script(sweep_command(sweep, GONE_STEPS), env=env, timeout=300)  # the runs in the fallback count
    assert before_sync.returncode == 0, before_sync.stdout + before_sync.stderr
    assert f"{len(keys)} points: 0 run now, {len(keys)} already COMPLETED (skipped)" in before_sync.stdout
    runs_are = "run is" if len(fallback_runs) == 1 else "runs are"
    assert (f"{len(fallback_runs)} COMPLETED {runs_are} in fallback file storage {fallback}, not in MongoDB "
            f"(they count as done): upload them with: python -m observers sync {fallback}") in before_sync.stderr
    synced = run_script(["-m", "observers", "sync", str(fallback)], env=env, timeout=600)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    again = run_script(sweep_command(sweep, GONE_STEPS), env=env, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{len(keys)} points: 0 run now, {len(keys)} already COMPLETED (skipped)" in again.stdout
    assert "fallback file storage" not in again.stdout + again.stderr  # uploaded: nothing waits any more
    db = database(local_mongo, db_name)
    check_every_point_once(db, sweep, keys, GONE_STEPS)
    assert db.sweep_claims.count_documents({}) == 0


@pytest.mark.parametrize("arguments, expected", [
    (["--sweep", "nope"], "--sweep 'nope': "),
    (["--grid", "decoder_lr"], "--grid decoder_lr: expected KEY=V1,V2,..."),
    (["--grid", "decoder_lrr=1,2"], "ConfigAddedError: Added new config entry that is not used anywhere (decoder_lrr=1)"),
    (["--seeds", "0"], "--seeds: 0 is not allowed: give N >= 1 (seeds 0..N-1), S1,S2,... (those seeds) or S, "
                       "(seed S alone)"),
    (["--seeds", "1,x"], "--seeds: 1,x is not allowed: give N >= 1"),
    (["--seeds", ","], "--seeds: , is not allowed: give N >= 1"),
    (["--seeds", "1,1"], "--seeds: 1,1 is not allowed: seeds are distinct integers >= 0"),
    (["--seeds", "2", "with", "nope"], 'NamedConfigNotFoundError: Named config not found: "nope"'),
    (["--grid", "decoder_lr=-1"], "harness.ConfigError: decoder_lr=-1 is not allowed: decoder_lr must be > 0"),
])
def test_bad_sweep_input_is_one_line_and_writes_nothing(tmp_path, arguments, expected):
    result = run_script(["-m", "sweeps", GROKKING, *arguments], env={"TOYLAB_RUNS_DIR": str(tmp_path / "runs")})
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr  # one line
    assert expected in result.stderr
    assert not (tmp_path / "runs").exists()


def test_missing_experiment_file_and_unusable_mongodb_are_one_line(tmp_path, local_mongo):
    env = {"TOYLAB_RUNS_DIR": str(tmp_path / "runs")}
    result = run_script(["-m", "sweeps", str(tmp_path / "nope.py"), "--seeds", "2"], env=env)
    assert result.returncode != 0 and result.stderr.strip() == f"{tmp_path / 'nope.py'}: no such experiment file"
    wrong = local_mongo.url().replace(local_mongo.password, "wrong-password")
    result = run_script(["-m", "sweeps", GROKKING, "--seeds", "2"], env={**env, "TOYLAB_MONGO_URL": wrong})
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "refused access" in result.stderr and "wrong-password" not in result.stderr
    unreachable = "mongodb://127.0.0.1:1/?directConnection=true&serverSelectionTimeoutMS=1000"
    result = run_script(["-m", "sweeps", GROKKING, "--seeds", "2"], env={**env, "TOYLAB_MONGO_URL": unreachable})
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "no MongoDB reachable" in result.stderr
    assert not (tmp_path / "runs").exists()
    assert not list(database(local_mongo, "sacred").runs.find({}))


def test_claim_waits_out_a_short_outage_and_falls_back_to_a_file_lock_after_the_patience(local_mongo, tmp_path,
                                                                                          monkeypatch):
    """The store under the sweep: a claim taken while the server restarts waits for it (and is
    a MongoDB claim); one taken while it stays away becomes a lock in the fallback directory."""
    import threading

    from sweeps.claims import MongoStore

    monkeypatch.setenv("TOYLAB_MONGO_URL", local_mongo.url())
    monkeypatch.setenv("TOYLAB_FALLBACK_DIR", str(tmp_path / "fallback"))
    local_mongo.kill()
    threading.Timer(4, local_mongo.start).start()
    store = MongoStore("claims", patience=60)
    started = time.time()
    with store.claim("s", "k") as held:
        assert held and time.time() - started >= 3  # it waited for the server
        assert database(local_mongo, "claims").sweep_claims.count_documents({"_id": "s/k"}) == 1
    assert database(local_mongo, "claims").sweep_claims.count_documents({}) == 0  # released
    assert not (tmp_path / "fallback").exists()

    local_mongo.kill()
    gone = MongoStore("claims", patience=2)
    with gone.claim("s", "k") as held:
        assert held and (tmp_path / "fallback" / ".sweep_claims" / "s" / "k.lock").exists()
        with gone.fallback.claim("s", "k") as again:  # and it excludes as the file claims do
            assert not again
    assert gone.completed("s") == {}  # MongoDB away: only the fallback directory's runs count
