"""`python -m observers sync`: file-storage runs into MongoDB, each exactly once (mongomock, in-process).

The same sync against the real wire server is in test_wire.py; here only what a process adds
nothing to: ids, idempotence, interrupted syncs, fallback runs that complete a MongoDB run.
"""
import json
import shutil
from pathlib import Path

import mongomock
import mongomock.gridfs
import pytest

from conftest import run_script
from experiments.grokking import ex
from observers import sync as sync_module
from observers.sync import Uploader, run_dirs

TINY = {"train_steps": 60, "log_every": 3}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One real finished grokking run in file storage (made once, copied by the tests)."""
    root = tmp_path_factory.mktemp("made")
    from sacred.observers import FileStorageObserver

    observer = FileStorageObserver(str(root))
    ex.observers.append(observer)
    try:
        ex.run(config_updates=TINY)
    finally:
        ex.observers.remove(observer)
    return root


@pytest.fixture
def db():
    mongomock.gridfs.enable_gridfs_integration()
    return mongomock.MongoClient()["sacred"]


def copy_runs(finished_run, root: Path, n: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(finished_run / "_sources", root / "_sources", dirs_exist_ok=True)
    for i in range(1, n + 1):
        shutil.copytree(finished_run / "1", root / str(i))
    return root


def test_each_run_uploaded_once_with_metrics_artifacts_and_original_id(finished_run, tmp_path, db):
    root = copy_runs(finished_run, tmp_path / "runs", 3)
    db["runs"].insert_one({"_id": 1, "status": "COMPLETED"})  # a run recorded live: ids must not collide
    first = Uploader(db).sync(run_dirs([root]))
    assert [mongo_id for _, mongo_id in first.uploaded] == [2, 3, 4]
    second = Uploader(db).sync(run_dirs([root, root / "1"]))  # the same dirs, twice over
    assert second.uploaded == [] and second.already == 3

    logged = json.loads((root / "2" / "metrics.json").read_text())
    doc = db["runs"].find_one({"toylab_sync.file_run_id": "2"})
    assert doc["status"] == "COMPLETED" and doc["toylab_sync"]["complete"] is True
    assert doc["result"] == json.loads((root / "2" / "run.json").read_text())["result"]
    assert doc["config"]["train_steps"] == TINY["train_steps"]
    assert doc["captured_out"] == (root / "2" / "cout.txt").read_text()
    stored = {m["name"]: m for m in db["metrics"].find({"run_id": doc["_id"]})}
    assert set(stored) == set(logged) == {m["name"] for m in doc["info"]["metrics"]}
    for name, series in logged.items():
        assert stored[name]["steps"] == series["steps"] and stored[name]["values"] == series["values"]
    import gridfs

    fs = gridfs.GridFS(db)
    artifacts = {a["name"]: fs.get(a["file_id"]).read() for a in doc["artifacts"]}
    assert artifacts["training_curves.png"] == (root / "2" / "training_curves.png").read_bytes()
    assert set(artifacts) == {"training_curves.png", "representation.png", "model.pt"}
    assert db["metrics"].count_documents({}) == 3 * len(logged)
    [(name, source_id)] = doc["experiment"]["sources"]
    assert name == "grokking.py" and b"automain" in fs.get(source_id).read()


def test_interrupted_sync_is_redone_not_duplicated(finished_run, tmp_path, db, monkeypatch):
    root = copy_runs(finished_run, tmp_path / "runs", 2)
    uploader = Uploader(db)
    real_put = uploader.fs.put
    calls = []

    def dies_on_second_artifact(*args, **kwargs):  # injected: the sync process dies mid-upload
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_put(*args, **kwargs)

    monkeypatch.setattr(uploader.fs, "put", dies_on_second_artifact)
    with pytest.raises(KeyboardInterrupt):
        uploader.sync(run_dirs([root]))
    assert db["runs"].find_one({"toylab_sync.complete": False}) is not None
    monkeypatch.undo()

    report = Uploader(db).sync(run_dirs([root]))
    assert len(report.uploaded) == 2 and db["runs"].count_documents({}) == 2
    n_metrics = len(json.loads((root / "1" / "metrics.json").read_text()))
    assert db["metrics"].count_documents({}) == 2 * n_metrics
    assert db["fs.files"].count_documents({"metadata.toylab_run_id": {"$exists": True}}) == 2 * 3
    assert Uploader(db).sync(run_dirs([root])).uploaded == []


def test_fallback_run_completes_the_mongodb_run_it_names(finished_run, tmp_path, db):
    root = copy_runs(finished_run, tmp_path / "fallback", 1)
    record = json.loads((root / "1" / "run.json").read_text())
    record["meta"]["toylab_fallback"] = {"db_name": "sacred", "mongo_run_id": 7, "reason": "test"}
    (root / "1" / "run.json").write_text(json.dumps(record))
    db["runs"].insert_one({"_id": 7, "status": "RUNNING"})  # what the observer got in before the outage
    db["metrics"].insert_one({"run_id": 7, "name": "test.acc", "steps": [0], "values": [0.1]})
    [(_, mongo_id)] = Uploader(db).sync(run_dirs([root])).uploaded
    assert mongo_id == 7 and db["runs"].count_documents({}) == 1
    assert db["runs"].find_one({"_id": 7})["status"] == "COMPLETED"
    logged = json.loads((root / "1" / "metrics.json").read_text())
    assert db["metrics"].find_one({"run_id": 7, "name": "test.acc"})["steps"] == logged["test.acc"]["steps"]


def test_live_running_run_waits_and_default_roots_include_fallback(finished_run, tmp_path, db, monkeypatch):
    runs = copy_runs(finished_run, tmp_path / "runs", 1)
    copy_runs(finished_run, tmp_path / "elsewhere-fallback", 1)
    monkeypatch.setenv("TOYLAB_FALLBACK_DIR", str(tmp_path / "elsewhere-fallback"))
    monkeypatch.setenv("TOYLAB_RUNS_DIR", str(runs))
    record = json.loads((runs / "1" / "run.json").read_text())
    record["status"], record["heartbeat"] = "RUNNING", sync_module.dt.datetime.utcnow().isoformat()
    (runs / "1" / "run.json").write_text(json.dumps(record))
    report = Uploader(db).sync(run_dirs(sync_module.default_roots()))
    assert [d.parent.name for d, _ in report.uploaded] == ["elsewhere-fallback"]
    assert report.skipped == [(runs / "1", "still running")]


def test_sync_command_needs_a_url_and_says_so(tmp_path):
    from tests.conftest import run_script

    out = run_script(["-m", "observers", "sync"], env={"TOYLAB_RUNS_DIR": str(tmp_path)}, timeout=60)
    assert out.returncode != 0 and "TOYLAB_MONGO_URL" in out.stderr + out.stdout


def test_sync_bad_input_is_one_line_and_uploads_nothing(tmp_path, local_mongo):
    """A runs directory that does not exist, a wrong password, an unreachable host."""
    import pymongo

    runs = tmp_path / "runs"
    made = run_script(["experiments/grokking.py", "with", "train_steps=20"], env={"TOYLAB_RUNS_DIR": str(runs)})
    assert made.returncode == 0, made.stderr
    cases = {
        "missing": ([str(tmp_path / "nope")], local_mongo.url(), "sync: no runs directory at"),
        "password": ([str(runs)], local_mongo.url().replace(local_mongo.password, "wrong-password-9"),
                     "sync: MongoDB not reachable or refused the upload"),
        "host": ([str(runs)], "mongodb://127.0.0.1:1/?directConnection=true&serverSelectionTimeoutMS=1000",
                 "sync: MongoDB not reachable or refused the upload"),
    }
    for name, (dirs, url, expected) in cases.items():
        out = run_script(["-m", "observers", "sync", *dirs], env={"TOYLAB_MONGO_URL": url}, timeout=120)
        lines = out.stderr.strip().splitlines()
        assert out.returncode != 0 and len(lines) == 1 and lines[0].startswith(expected), (name, out.stderr)
        assert "wrong-password-9" not in out.stderr + out.stdout
    client = pymongo.MongoClient(local_mongo.url(), serverSelectionTimeoutMS=5000)
    assert client["sacred"].runs.count_documents({}) == 0
