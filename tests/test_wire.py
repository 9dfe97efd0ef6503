"""The grokking experiment recording over the real MongoDB wire protocol to the local server.

The server is a real process (board/server.py, mongoeco, its own Python 3.13 venv) on a free
127.0.0.1 port with a temporary SQLite file; the experiment is a real subprocess that finds
it through TOYLAB_MONGO_URL, as a user's run would.
"""
import json
import os
from pathlib import Path

import bson
import gridfs
import pymongo
import pytest

import analysis
from localboard.processes import listening_addresses
from tests.conftest import require_board, run_script

CONFIG = ["train_steps=300", "log_every=3", "seed=1"]


@pytest.fixture(scope="module")
def wire_run(tmp_path_factory):
    """One grokking run recorded live to the server, and the same config in file storage."""
    require_board("the wire tests")
    from localboard.server import LocalMongo

    tmp = tmp_path_factory.mktemp("wire")
    password = "pw-" + os.urandom(12).hex()  # distinctive, so a scan finds any copy of it
    server = LocalMongo(tmp / "db.sqlite3", password=password).start()
    try:
        runs_dir = tmp / "runs"
        live = run_script(["experiments/grokking.py", "with", *CONFIG],
                          env={"TOYLAB_MONGO_URL": server.url(), "TOYLAB_MONGO_DB": "sacred",
                               "TOYLAB_RUNS_DIR": str(runs_dir)})
        assert live.returncode == 0, live.stderr[-2000:]
        files = run_script(["experiments/grokking.py", "-F", str(tmp / "reference"), "with", *CONFIG])
        assert files.returncode == 0, files.stderr[-2000:]
        yield {"server": server, "password": password, "live": live, "runs_dir": runs_dir, "tmp": tmp,
               "reference": tmp / "reference" / "1"}
    finally:
        server.stop()


def test_run_document_metrics_figures_and_result_round_trip(wire_run):
    client = pymongo.MongoClient(wire_run["server"].url())
    db = client["sacred"]
    [doc] = list(db["runs"].find())
    reference = json.loads((wire_run["reference"] / "run.json").read_text())
    assert doc["status"] == "COMPLETED" and doc["experiment"]["name"] == "grokking"
    assert doc["result"] == reference["result"]
    assert doc["config"]["train_steps"] == 300 and doc["config"]["seed"] == 1

    logged = json.loads((wire_run["reference"] / "metrics.json").read_text())
    stored = {m["name"]: m for m in db["metrics"].find({"run_id": doc["_id"]})}
    assert set(stored) == set(logged) == {"train.loss", "train.acc", "test.loss", "test.acc", "rqi"}
    for name, series in logged.items():  # every point, in order, nothing extra
        assert stored[name]["steps"] == series["steps"], name
        assert stored[name]["values"] == series["values"], name
    assert len(stored["test.acc"]["steps"]) >= 100

    fs = gridfs.GridFS(db)
    artifacts = {a["name"]: fs.get(a["file_id"]).read() for a in doc["artifacts"]}
    for name in ("training_curves.png", "representation.png"):
        assert artifacts[name][:8] == b"\x89PNG\r\n\x1a\n", name
        assert len(artifacts[name]) > 5000, name
    assert "model.pt" in artifacts
    client.close()


def test_analysis_tables_load_the_wire_run_through_incense(wire_run, monkeypatch):
    url = wire_run["server"].url()
    table = analysis.runs_table(url)
    assert list(table["status"]) == ["COMPLETED"] and list(table["seed"]) == [1]
    reference = json.loads((wire_run["reference"] / "run.json").read_text())["result"]
    assert table["final_test_acc"].iloc[0] == reference["final_test_acc"]
    metrics = analysis.metrics_table(url, metric="test.acc")
    logged = json.loads((wire_run["reference"] / "metrics.json").read_text())["test.acc"]
    assert list(metrics["step"]) == logged["steps"] and list(metrics["value"]) == logged["values"]


def test_password_is_required_and_never_stored(wire_run):
    server, password = wire_run["server"], wire_run["password"]
    anonymous = pymongo.MongoClient(f"mongodb://127.0.0.1:{server.port}/?directConnection=true",
                                    serverSelectionTimeoutMS=5000)
    with pytest.raises(pymongo.errors.OperationFailure, match="(?i)auth"):
        anonymous["sacred"]["runs"].insert_one({"_id": "intruder"})
    wrong = pymongo.MongoClient(server.url().replace(password, "not-" + password), serverSelectionTimeoutMS=5000)
    with pytest.raises(pymongo.errors.OperationFailure):
        wrong["sacred"]["runs"].insert_one({"_id": "intruder"})
    anonymous.close(), wrong.close()

    # Everything the run wrote: its output, the runs directory, every document of every database.
    live = wire_run["live"]
    assert password not in live.stdout + live.stderr
    written = [p for p in Path(wire_run["runs_dir"]).rglob("*") if p.is_file()] if wire_run["runs_dir"].exists() else []
    for path in written:
        assert password.encode() not in path.read_bytes(), path
    client = pymongo.MongoClient(server.url())
    n_docs = 0
    for db_name in client.list_database_names():
        for collection in client[db_name].list_collection_names():
            for doc in client[db_name][collection].find():
                n_docs += 1
                assert password.encode() not in bson.encode(doc), (db_name, collection)
    assert n_docs > 5  # the scan saw the run, its metrics and its GridFS files
    client.close()


def test_server_listens_on_loopback_only(local_mongo):
    addresses = listening_addresses(local_mongo.process.pid)
    assert addresses == {("127.0.0.1", local_mongo.port)}


def test_server_keeps_data_across_kill_and_restart_on_the_same_port_and_file(local_mongo):
    client = pymongo.MongoClient(local_mongo.url(), serverSelectionTimeoutMS=5000)
    client["sacred"]["runs"].insert_one({"_id": 1, "status": "COMPLETED"})
    client.close()
    port = local_mongo.port
    local_mongo.kill()
    local_mongo.start()
    assert local_mongo.port == port
    client = pymongo.MongoClient(local_mongo.url(), serverSelectionTimeoutMS=5000)
    assert client["sacred"]["runs"].find_one({"_id": 1})["status"] == "COMPLETED"
    client.close()
