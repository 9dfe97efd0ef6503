"""Fault injection through the real observer: MongoDB down at start, mid-run, at the end.

Every scenario runs a real Sacred experiment that logs N points of two metrics, adds two
artifacts and finishes; the backend fails on command at a chosen step. Each test states
what it injects and asserts that nothing was lost: metric counts, steps, values (in
order, no duplicates), artifact bytes and the final status, in MongoDB or, when MongoDB
is still down at the end, in the fallback file storage. The scenarios run on mongomock
(always) and on a real server behind a TCP proxy that the test cuts (when
TOYLAB_TEST_MONGO_URL is set; skipped with the reason otherwise).
"""
import json
import time
from pathlib import Path

import pytest
from sacred import Experiment

import analysis
from faults import MongomockBackend, ServerBackend, run_grokking, server_url
from observers.mongo import ResilientMongoObserver

N = 60  # points per metric
METRICS = ("train.loss", "test.acc")


def value(name, step):
    return (1.0 / (step + 1)) if name == "train.loss" else step / N


@pytest.fixture(params=["mongomock", "server"])
def backend(request, monkeypatch, tmp_path):
    if request.param == "mongomock":
        made = MongomockBackend(monkeypatch, tmp_path / "fallback")
    else:
        url = server_url()
        if not url:
            pytest.skip("TOYLAB_TEST_MONGO_URL is not set: no real MongoDB server to cut off")
        made = ServerBackend(url, tmp_path / "fallback")
    yield made
    made.close()


def run_experiment(observer, events=None, fail=False):
    """A real Sacred run: N steps, metrics every step, artifacts at steps 10 and 35.
    ``events[step]()`` runs before that step (the fault injection)."""
    ex = Experiment("faulty", save_git_info=False)
    ex.observers.append(observer)
    events = events or {}

    @ex.main
    def main(_run):
        for step in range(N):
            if step in events:
                events[step]()
            for name in METRICS:
                _run.log_scalar(name, value(name, step), step)
            if step in (10, 35):
                path = Path(_run.config["tmp"]) / f"a{step}.txt"
                path.write_text(f"artifact at step {step}")
                _run.add_artifact(str(path), f"a{step}.txt")
            time.sleep(0.01)
        if fail:
            raise RuntimeError("the experiment itself failed")
        return {"done": N}

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ex.add_config(tmp=tmp)
        try:
            return ex.run(options={"--beat-interval": 0.05, "--loglevel": "ERROR"})
        except RuntimeError:
            if not fail:
                raise
            return None


def assert_complete_in_mongo(db, run_id, status="COMPLETED"):
    run = db.runs.find_one({"_id": run_id})
    assert run["status"] == status
    for name in METRICS:
        [doc] = list(db.metrics.find({"run_id": run_id, "name": name}))
        assert doc["steps"] == list(range(N)), f"{name}: steps lost, duplicated or out of order"
        assert doc["values"] == [value(name, s) for s in range(N)]
        assert len(doc["timestamps"]) == N
    assert sorted(m["name"] for m in run["info"]["metrics"]) == sorted(METRICS)  # what Omniboard reads
    import gridfs

    fs = gridfs.GridFS(db)
    artifacts = {a["name"]: fs.get(a["file_id"]).read() for a in run["artifacts"]}
    assert artifacts == {"a10.txt": b"artifact at step 10", "a35.txt": b"artifact at step 35"}
    return run


def assert_complete_in_files(run_dir, status="COMPLETED"):
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == status
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for name in METRICS:
        assert metrics[name]["steps"] == list(range(N))
        assert metrics[name]["values"] == [value(name, s) for s in range(N)]
    assert (run_dir / "a10.txt").read_text() == "artifact at step 10"
    assert (run_dir / "a35.txt").read_text() == "artifact at step 35"
    assert json.loads((run_dir / "config.json").read_text())["tmp"]
    return run


def test_unreachable_at_start_records_the_whole_run_in_the_fallback_dir(backend, capfd):
    """Injected: MongoDB down before the run starts and for its whole length."""
    backend.down("refuse")
    observer = backend.observer()
    started = time.monotonic()
    run = run_experiment(observer)
    elapsed = time.monotonic() - started
    assert backend.injected >= 1
    assert run.status == "COMPLETED"
    assert elapsed < 10, f"the run stalled {elapsed:.1f} s on an unreachable MongoDB"
    warning = [line for line in capfd.readouterr().err.splitlines() if "unreachable at start" in line]
    assert len(warning) == 1 and str(backend.fallback) in warning[0]
    run_json = assert_complete_in_files(observer.fallback_run_dir)
    assert run_json["meta"]["toylab_fallback"]["db_name"] == backend.db_name
    backend.up()
    assert backend.db.runs.count_documents({}) == 0


def up_once_hit(backend, timeout: float = 10.0) -> None:
    """End the outage, but only after it has hit a write: the observer writes from its
    heartbeat thread, which a loaded machine can hold back for the whole outage (a fresh-clone
    check on 2 busy cores saw none in steps 15-45). Bounded: past ``timeout`` the test fails as before."""
    deadline = time.monotonic() + timeout
    while backend.injected < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    backend.up()


@pytest.mark.parametrize("mode", ["refuse", "lost_reply"])
def test_outage_mid_run_loses_nothing_once_mongodb_returns(backend, mode):
    """Injected: MongoDB down from step 15 to step 45 (through an artifact at step 35), and
    until a write has met it; "refuse": writes fail; "lost_reply": writes are applied but
    their replies lost."""
    observer = backend.observer()
    run = run_experiment(observer, {15: lambda: backend.down(mode), 45: lambda: up_once_hit(backend)})
    assert backend.injected >= 1, "the outage never hit a write: the test proved nothing"
    assert run.status == "COMPLETED"
    assert observer.fallback_run_dir is None and observer.pending() == 0
    stored = assert_complete_in_mongo(backend.db, observer.run_id)
    assert stored["result"] == {"done": N}


def test_an_artifact_whose_chunk_write_lost_its_reply_is_stored_whole(monkeypatch, tmp_path):
    """Injected (mongomock): the first write of an artifact's chunks is applied and its reply
    lost. GridFS writes the chunks before the fs.files document, so the retry finds chunks
    under the artifact's id and no file, and a second put of them is refused (FileExists;
    a CI run on a real server lost a run to its fallback this way). The observer must write
    the artifact whole and keep the run in MongoDB."""
    import mongomock
    import pymongo.errors

    backend = MongomockBackend(monkeypatch, tmp_path / "fallback")
    backend.db["fs.chunks"].create_index([("files_id", 1), ("n", 1)], unique=True)  # as GridFS makes it
    insert_many = mongomock.collection.Collection.insert_many
    armed, lost = [], []

    def losing_reply(self, documents, *args, **kwargs):
        result = insert_many(self, documents, *args, **kwargs)
        if armed and not lost and self.name == "fs.chunks":
            lost.append(documents[0]["files_id"])
            raise pymongo.errors.AutoReconnect("injected: reply lost after an artifact's chunks were written")
        return result

    monkeypatch.setattr(mongomock.collection.Collection, "insert_many", losing_reply)
    observer = backend.observer()
    run = run_experiment(observer, {5: lambda: armed.append(True)})
    assert lost, "no artifact chunk write was hit: the test proved nothing"
    assert run.status == "COMPLETED"
    assert observer.fallback_run_dir is None and observer.pending() == 0
    assert_complete_in_mongo(backend.db, observer.run_id)
    assert backend.db["fs.chunks"].count_documents({"files_id": lost[0]}) == 1, "stray chunks left behind"


def test_still_down_at_the_end_falls_back_in_bounded_time(backend, capfd):
    """Injected: MongoDB down from step 40 until after the run has ended."""
    observer = backend.observer(end_timeout=1.0)
    started = time.monotonic()
    run = run_experiment(observer, {40: lambda: backend.down("refuse")})
    elapsed = time.monotonic() - started
    assert run.status == "COMPLETED"
    assert elapsed < N * 0.01 + 8, f"the end of the run took {elapsed:.1f} s"
    run_json = assert_complete_in_files(observer.fallback_run_dir)
    assert run_json["meta"]["toylab_fallback"]["mongo_run_id"] == observer.run_id
    assert "fallback file storage" in capfd.readouterr().err
    # the analysis loader reads the fallback directory like any file storage
    points = analysis.metrics_table(str(backend.fallback))
    assert points.groupby("metric").size().to_dict() == {name: N for name in METRICS}
    assert analysis.runs_table(str(backend.fallback))["status"].tolist() == ["COMPLETED"]


def test_failed_run_with_an_outage_keeps_its_trace_and_metrics(backend):
    """Injected: MongoDB down from step 20 to step 30, then the experiment raises."""
    observer = backend.observer()
    run_experiment(observer, {20: lambda: backend.down("refuse"), 30: backend.up}, fail=True)
    assert backend.injected >= 1
    stored = assert_complete_in_mongo(backend.db, observer.run_id, status="FAILED")
    assert "the experiment itself failed" in "".join(stored["fail_trace"])


def test_metric_volume_beyond_one_document_is_chunked_and_loaded_whole(backend, monkeypatch):
    """Injected: a per-document cap of 25 points (instead of ~250k), so the N points of
    each metric need three documents; an outage in the middle as well."""
    monkeypatch.setattr(ResilientMongoObserver, "MAX_POINTS_PER_DOCUMENT", 25)
    observer = backend.observer()
    run_experiment(observer, {30: lambda: backend.down("lost_reply"), 40: backend.up})
    first = backend.db.metrics.find_one({"run_id": observer.run_id, "name": "train.loss"})
    assert first["steps"] == list(range(25))
    chunks = sorted(backend.db.metric_chunks.find({"run_id": observer.run_id, "name": "train.loss"}),
                    key=lambda c: c["chunk"])
    assert [len(c["steps"]) for c in chunks] == [25, 10]
    series = analysis.runs.mongo_metrics(backend.db, observer.run_id)
    assert series["train.loss"].index.tolist() == list(range(N))
    assert series["test.acc"].tolist() == [value("test.acc", s) for s in range(N)]


def test_a_full_default_chunk_fits_in_one_mongodb_document():
    """The default cap leaves room below MongoDB's 16 MiB document limit (large steps,
    float values, timestamps: the worst case of a metric document)."""
    import datetime

    import bson

    size = ResilientMongoObserver.MAX_POINTS_PER_DOCUMENT
    now = datetime.datetime.now(datetime.timezone.utc)
    document = {"_id": bson.ObjectId(), "run_id": 123456, "name": "a.rather.long.metric.name" * 4,
                "steps": [2**40 + i for i in range(size)], "values": [float(i) / 3 for i in range(size)],
                "timestamps": [now] * size, "chunk": 99}
    assert len(bson.encode(document)) < 16 * 1024 * 1024


def test_grokking_run_through_an_outage_loads_like_any_run(backend, monkeypatch):
    """Injected: the real grokking experiment, MongoDB losing replies from the start of
    training for one second (several heartbeats, a checkpoint artifact), then back."""
    import threading

    import incense.experiment_loader
    import sacred.run

    logged = {}  # what the experiment logged, counted at Sacred's log_scalar
    original = sacred.run.Run.log_scalar

    def counting(self, name, value, step=None):
        logged.setdefault(name, []).append(step)
        return original(self, name, value, step)

    monkeypatch.setattr(sacred.run.Run, "log_scalar", counting)

    def outage():
        backend.down("lost_reply")
        threading.Timer(1.0, backend.up).start()

    observer = backend.observer()
    try:
        run = run_grokking({"train_steps": 1500, "log_every": 10, "checkpoint_every": 500}, outage, observer)
    finally:
        backend.up()
    assert backend.injected >= 1 and run.status == "COMPLETED" and observer.fallback_run_dir is None
    if backend.name == "mongomock":
        monkeypatch.setattr(incense.experiment_loader, "MongoClient", lambda *a, **k: backend.client)
        url = "mongodb://mongomock"
    else:
        url = server_url()
    table = analysis.runs_table(url, db_name=backend.db_name)
    assert table["status"].tolist() == ["COMPLETED"] and table["t_rqi"].notna().all()
    points = analysis.metrics_table(url, db_name=backend.db_name)
    assert points.groupby("metric").size().to_dict() == {name: len(steps) for name, steps in logged.items()}
    for name, steps in logged.items():
        assert points[points.metric == name]["step"].tolist() == steps, f"{name}: lost, duplicated or reordered"
    run_doc = backend.db.runs.find_one({"_id": observer.run_id})
    assert {a["name"] for a in run_doc["artifacts"]} >= {"model.pt", "training_curves.png", "checkpoint.pt"}


def test_a_run_that_stopped_beating_is_reported_dead_from_mongodb(backend, monkeypatch):
    """Injected: a run whose process vanished (as with SIGKILL): its observer got the start
    and one heartbeat, never an end event."""
    import datetime

    import incense.experiment_loader

    ex = Experiment("vanished", save_git_info=False)
    ex.main(lambda: None)
    observer = backend.observer()
    run = ex._create_run(options={"--loglevel": "ERROR"})
    observer.started_event(run.experiment_info, "main", run.host_info, datetime.datetime.utcnow(), run.config,
                           run.meta_info, None)
    observer.log_metrics({"x": {"steps": [0], "values": [1.0], "timestamps": [datetime.datetime.utcnow()]}}, {})
    observer.heartbeat_event({}, "", datetime.datetime.utcnow() - datetime.timedelta(seconds=5), None)
    if backend.name == "mongomock":
        monkeypatch.setattr(incense.experiment_loader, "MongoClient", lambda *a, **k: backend.client)
    url = server_url() if backend.name == "server" else "mongodb://mongomock"
    assert analysis.runs_table(url, db_name=backend.db_name, dead_after=3600)["status"].tolist() == ["RUNNING"]
    table = analysis.runs_table(url, db_name=backend.db_name, dead_after=2)
    assert table[["status", "recorded_status"]].values.tolist() == [["DEAD", "RUNNING"]]


def test_resume_from_a_mongodb_run_matches_the_run_that_never_stopped(backend, monkeypatch):
    """Injected: nothing; run 1 (recorded in MongoDB through the default observer) trains
    1000 steps and leaves its 500-step checkpoint; run 2 resumes from run 1's checkpoint,
    read back from GridFS, and must end exactly where run 1 ended."""
    import pymongo

    from experiments.grokking import ex

    if backend.name == "mongomock":
        monkeypatch.setattr(pymongo, "MongoClient", lambda *a, **k: backend.client)
        monkeypatch.setenv("TOYLAB_MONGO_URL", "mongodb://mongomock")
    else:
        monkeypatch.setenv("TOYLAB_MONGO_URL", server_url())
    monkeypatch.setenv("TOYLAB_MONGO_DB", backend.db_name)
    config = {"train_steps": 1000, "log_every": 10, "checkpoint_every": 500}
    whole = ex.run(config_updates=config)
    resumed = ex.run(config_updates={**config, "resume_from": whole._id})
    assert resumed.info["resumed_from"] == {"run": whole._id, "step": 500}
    for key in ("t_train", "t_rqi", "final_train_acc", "final_test_acc", "final_rqi"):
        assert resumed.result[key] == whole.result[key], key
    doc = backend.db.metrics.find_one({"run_id": resumed._id, "name": "train.loss"})
    whole_doc = backend.db.metrics.find_one({"run_id": whole._id, "name": "train.loss"})
    assert doc["steps"][0] == 500 and doc["values"] == whole_doc["values"][-len(doc["values"]):]
