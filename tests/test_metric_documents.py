"""One format for metrics in MongoDB (observers/metric_documents.py), written by the live
observer and by sync, read by analysis: a metric past MAX_POINTS_PER_DOCUMENT points is its
``metrics`` document (the first points) plus ``metric_chunks`` documents (the rest).

The unit tests run on mongomock with a lowered cap; the last test syncs a file-storage run
with a 500 000-point metric to the real local server (a MongoDB document holds at most
16 MiB: one document for that metric is refused) and loads every point back.
"""
import datetime
import json
import random

import mongomock
import mongomock.gridfs
import pytest
from sacred import Experiment
from sacred.observers import FileStorageObserver

import analysis
from observers import metric_documents
from observers.metric_documents import (CHUNKS, MAX_POINTS_PER_DOCUMENT, METRICS, chunk_spans, insert_series,
                                        join_documents, read_metrics, split_series)
from observers.mongo import ResilientMongoObserver
from observers.sync import Uploader, run_dirs

START = datetime.datetime(2024, 1, 1, 12, 0, 0)


def series(n: int) -> dict:
    return {"steps": [3 * i for i in range(n)], "values": [i / 7 for i in range(n)],
            "timestamps": [START + datetime.timedelta(milliseconds=i) for i in range(n)]}


@pytest.fixture
def db():
    mongomock.gridfs.enable_gridfs_integration()
    return mongomock.MongoClient()["sacred"]


def file_storage_run(root, metrics: dict):
    """A real finished Sacred file-storage run under ``root`` whose metrics.json is ``metrics``
    (``{name: series}``, timestamps written as file storage writes them: ISO strings)."""
    ex = Experiment("long_metric", save_git_info=False)
    ex.main(lambda: {"done": True})
    ex.observers.append(FileStorageObserver(str(root)))
    ex.run(options={"--loglevel": "ERROR"})
    written = {name: {"steps": s["steps"], "values": s["values"],
                      "timestamps": [t.isoformat() for t in s["timestamps"]]} for name, s in metrics.items()}
    (root / "1" / "metrics.json").write_text(json.dumps(written))
    return root / "1"


# ------------------------------------------------------------------ the format itself
@pytest.mark.parametrize("n", [0, 1, 24, 25, 26, 50, 61])
def test_split_series_cuts_at_the_cap_and_join_gives_the_series_back(n):
    whole = series(n)
    documents = split_series(7, "train.loss", whole["steps"], whole["values"], whole["timestamps"], size=25)
    assert [collection for collection, _ in documents] == [METRICS] + [CHUNKS] * (len(documents) - 1)
    assert len(documents) == max(1, -(-n // 25))  # no points: one empty metrics document, as Sacred writes it
    assert all(len(doc["steps"]) <= 25 and len(doc["values"]) == len(doc["timestamps"]) == len(doc["steps"])
               for _, doc in documents)
    assert "chunk" not in documents[0][1]
    assert [doc.get("chunk") for _, doc in documents[1:]] == list(range(1, len(documents)))
    assert all(doc["run_id"] == 7 and doc["name"] == "train.loss" for _, doc in documents)
    shuffled = [doc for _, doc in documents]
    random.Random(n).shuffle(shuffled)
    assert join_documents(shuffled) == {"train.loss": whole}


def test_chunk_spans_and_the_default_cap():
    assert chunk_spans(0, 10) == []
    assert chunk_spans(25, 10) == [(0, 10), (10, 20), (20, 25)]
    assert ResilientMongoObserver.MAX_POINTS_PER_DOCUMENT == Uploader.MAX_POINTS_PER_DOCUMENT == MAX_POINTS_PER_DOCUMENT
    with pytest.raises(ValueError):
        chunk_spans(5, 0)


def test_insert_and_read_metrics_round_trip_and_delete_both_collections(db):
    whole = series(60)
    first = insert_series(db, 3, "test.acc", whole["steps"], whole["values"], whole["timestamps"], size=25)
    insert_series(db, 4, "test.acc", [0], [1.0], [START])  # another run: untouched below
    assert db[METRICS].find_one({"_id": first})["steps"] == whole["steps"][:25]
    assert sorted(len(c["steps"]) for c in db[CHUNKS].find({"run_id": 3})) == [10, 25]
    assert read_metrics(db, 3)["test.acc"] == whole
    assert read_metrics(db, 3, timestamps=False)["test.acc"] == {**whole, "timestamps": []}
    assert read_metrics(db, 3, names=["other"]) == {}
    assert analysis.runs.mongo_metrics(db, 3)["test.acc"].index.tolist() == whole["steps"]
    metric_documents.delete_metrics(db, 3)
    assert db[METRICS].count_documents({"run_id": 3}) == db[CHUNKS].count_documents({"run_id": 3}) == 0
    assert read_metrics(db, 4)["test.acc"]["values"] == [1.0]


# ------------------------------------------------------------------ writers: sync and the live observer
def test_sync_chunks_a_long_metric_like_the_live_observer_does(db, tmp_path, monkeypatch):
    """The same 60 points, cap 25: sync and the live observer write the same documents."""
    monkeypatch.setattr(Uploader, "MAX_POINTS_PER_DOCUMENT", 25)
    monkeypatch.setattr(ResilientMongoObserver, "MAX_POINTS_PER_DOCUMENT", 25)
    whole = series(60)
    run_dir = file_storage_run(tmp_path / "runs", {"train.loss": whole, "short": series(3)})
    [(_, synced)] = Uploader(db).sync(run_dirs([run_dir.parent])).uploaded

    ex = Experiment("long_metric", save_git_info=False)
    ex.main(lambda: None)
    run = ex._create_run(options={"--loglevel": "ERROR"})
    observer = ResilientMongoObserver(client=db.client, db_name=db.name, fallback=tmp_path / "fallback")
    live = observer.started_event(run.experiment_info, "main", run.host_info, START, run.config, run.meta_info, None)
    for begin in range(0, 60, 20):  # three heartbeats' worth of points
        observer.log_metrics({"train.loss": {key: values[begin:begin + 20] for key, values in whole.items()}}, {})
        observer.heartbeat_event({}, "", START, None)
    observer.completed_event(START, None)
    assert observer.fallback_run_dir is None and synced != live

    def documents(run_id):
        found = [doc for collection in (METRICS, CHUNKS)
                 for doc in db[collection].find({"run_id": run_id, "name": "train.loss"}, {"_id": 0, "run_id": 0})]
        return sorted(found, key=lambda d: d.get("chunk", 0))

    assert [len(d["steps"]) for d in documents(synced)] == [25, 25, 10]
    assert documents(synced) == documents(live)
    assert read_metrics(db, synced)["train.loss"] == whole
    info_ids = {m["name"]: m["id"] for m in db.runs.find_one({"_id": synced})["info"]["metrics"]}
    assert set(info_ids) == {"train.loss", "short"}  # what Omniboard reads: the metrics documents
    assert info_ids["train.loss"] == str(db[METRICS].find_one({"run_id": synced, "name": "train.loss"})["_id"])


def test_resync_of_an_interrupted_upload_leaves_no_stray_chunks(db, tmp_path, monkeypatch):
    monkeypatch.setattr(Uploader, "MAX_POINTS_PER_DOCUMENT", 25)
    whole = series(80)
    run_dir = file_storage_run(tmp_path / "runs", {"train.loss": whole})
    uploader = Uploader(db)

    def dies_after_the_metrics(*args, **kwargs):  # injected: the sync dies after writing the chunks
        raise KeyboardInterrupt

    monkeypatch.setattr(uploader, "_upload_artifacts", dies_after_the_metrics)
    with pytest.raises(KeyboardInterrupt):
        uploader.sync(run_dirs([run_dir.parent]))
    assert db[CHUNKS].count_documents({}) == 3
    [(_, run_id)] = Uploader(db).sync(run_dirs([run_dir.parent])).uploaded
    assert db[METRICS].count_documents({}) == 1 and db[CHUNKS].count_documents({}) == 3
    assert read_metrics(db, run_id)["train.loss"] == whole


# ------------------------------------------------------------------ the real server
def test_sync_of_a_500k_point_metric_to_the_local_server_loads_back_whole(local_mongo, tmp_path):
    """Injected: nothing. A file-storage run (a fallback run, say) with a metric of 500 000
    points: one document would be ~21 MiB, which the server refuses (DocumentTooLarge);
    synced as a metrics document + a metric_chunks document, every point loads back."""
    n = 500_000
    big = {"steps": list(range(n)), "values": [i / 7 for i in range(n)],
           "timestamps": [START + datetime.timedelta(microseconds=i) for i in range(n)]}
    run_dir = file_storage_run(tmp_path / "fallback", {"train.loss": big, "test.acc": series(5)})

    from observers.sync import sync

    report = sync([run_dir.parent], url=local_mongo.url(), db_name="sacred")
    assert len(report.uploaded) == 1 and not report.skipped
    [(_, run_id)] = report.uploaded

    import pymongo

    client = pymongo.MongoClient(local_mongo.url(), serverSelectionTimeoutMS=5000)
    try:
        db = client["sacred"]
        first = db[METRICS].find_one({"run_id": run_id, "name": "train.loss"}, {"steps": 1})
        assert first["steps"] == big["steps"][:MAX_POINTS_PER_DOCUMENT]  # what Omniboard shows
        [chunk] = db[CHUNKS].find({"run_id": run_id, "name": "train.loss"}, {"chunk": 1, "steps": 1})
        assert chunk["chunk"] == 1 and chunk["steps"] == big["steps"][MAX_POINTS_PER_DOCUMENT:]
        run_doc = db.runs.find_one({"_id": run_id})
        assert run_doc["toylab_sync"]["complete"] is True
        assert {m["name"]: m["id"] for m in run_doc["info"]["metrics"]}["train.loss"] == str(first["_id"])
    finally:
        client.close()

    points = analysis.metrics_table(local_mongo.url(), db_name="sacred")
    loss = points[points.metric == "train.loss"]
    assert loss["step"].tolist() == big["steps"]  # every step, in order, nothing extra
    assert loss["value"].tolist() == big["values"]
    assert points[points.metric == "test.acc"]["value"].tolist() == series(5)["values"]
    assert points["run"].unique().tolist() == [run_id]
