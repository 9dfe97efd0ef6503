"""The grokking experiment end to end: recorded runs, metrics, results, artifacts, loading."""
import json
import os
from pathlib import Path

import gridfs
import mongomock
import mongomock.gridfs
import pytest
from sacred.observers import MongoObserver

import analysis
from experiments.grokking import ex

QUICK = {"train_steps": 2500, "log_every": 50, "train_fraction": 45 / 55, "seed": 2}


def check_consistent(result, metrics):
    """Threshold steps in the result agree with the logged per-step curves."""
    passes = {"t_train": ("train.acc", lambda v: v >= 0.9), "t_test": ("test.acc", lambda v: v >= 0.9),
              "t_rqi": ("rqi", lambda v: v > 0.95)}
    for name, (key, passed) in passes.items():
        steps, values = metrics[key]
        crossed = [s for s, v in zip(steps, values) if passed(v)]
        if result[name] is None:
            assert not crossed, name
        else:  # the crossing step itself is logged, so it is the first logged step past the threshold
            assert crossed[0] == result[name], name
    assert result["final_train_acc"] == metrics["train.acc"][1][-1]
    assert result["final_test_acc"] == metrics["test.acc"][1][-1]
    assert metrics["train.acc"][0][-1] == QUICK["train_steps"] - 1


def test_file_storage_run_is_complete_and_consistent(tmp_path):
    run = ex.run(config_updates=QUICK)
    run_dir = Path(os.environ["TOYLAB_RUNS_DIR"]) / str(run._id)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "COMPLETED"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"train.loss", "train.acc", "test.loss", "test.acc", "rqi"}
    result, info = record["result"], json.loads((run_dir / "info.json").read_text())
    for key in ("t_train", "t_test", "t_rqi", "phase", "final_train_acc", "final_test_acc", "final_rqi"):
        assert result[key] == info[key]
    assert result["t_train"] is not None and result["phase"] in ("comprehension", "grokking")
    check_consistent(result, {k: (v["steps"], v["values"]) for k, v in metrics.items()})
    for name in ("training_curves.png", "representation.png", "model.pt"):
        assert (run_dir / name).stat().st_size > 1000, name
    assert (run_dir / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert len(metrics["test.acc"]["steps"]) <= QUICK["train_steps"] // QUICK["log_every"] + 5

    table = analysis.runs_table(os.environ["TOYLAB_RUNS_DIR"], experiment="grokking", decoder_lr=1e-4)
    assert table.loc[0, "run"] == int(run._id) and table.loc[0, "status"] == "COMPLETED"
    assert table.loc[0, "t_train"] == result["t_train"] and table.loc[0, "p"] == 10
    assert analysis.runs_table(os.environ["TOYLAB_RUNS_DIR"], p=11).empty
    curves = analysis.metrics_table(os.environ["TOYLAB_RUNS_DIR"], metric="test.acc")
    assert list(curves.columns) == ["run", "metric", "step", "value"]
    assert curves["value"].tolist() == metrics["test.acc"]["values"]


def test_named_configs_change_what_they_say():
    paper = ex.run("print_config", named_configs=["paper"]).config
    assert (paper["train_fraction"], paper["train_steps"], paper["decoder_lr"]) == (45 / 55, 5000, 1e-4)
    script = ex.run("print_config", named_configs=["sacred_script"]).config
    assert (script["representation"], script["optimizer"], script["dtype"]) == ("encoder", "adam", "float64")
    # derived values follow overrides, as in any Sacred config scope
    assert ex.run("print_config", config_updates={"train_steps": 100000}).config["log_every"] == 100


def test_encoder_cross_entropy_variant_runs():
    run = ex.run(config_updates={"train_steps": 200, "log_every": 50}, named_configs=["sacred_script", "cross_entropy"])
    assert run.status == "COMPLETED" and run.result["steps"] == 200


# -------------------------------------------------------------------------- MongoDB
@pytest.fixture(params=["mongomock", "server"])
def mongo_database(request):
    """mongomock in-process, and a real server (TOYLAB_TEST_MONGO_URL, see conftest)."""
    url = os.environ.get("TOYLAB_TEST_MONGO_URL") if request.param == "server" else None
    name = f"toylab_test_{os.getpid()}"
    if request.param == "server" and not url:
        pytest.skip("no real MongoDB server: set TOYLAB_TEST_MONGO_URL or install the local one (make test-deps)")
    if url:
        import pymongo

        client = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
        yield url, client[name]
        client.drop_database(name)
    else:
        mongomock.gridfs.enable_gridfs_integration()
        client = mongomock.MongoClient()
        yield None, client[name]


def test_mongo_observer_records_run_and_incense_loads_it(mongo_database, monkeypatch):
    url, db = mongo_database
    observer = MongoObserver.create_from(db.runs, gridfs.GridFS(db), metrics_collection=db.metrics)
    ex.observers.append(observer)
    try:
        run = ex.run(config_updates=QUICK)
    finally:
        ex.observers.remove(observer)
    doc = db.runs.find_one({"_id": run._id})
    assert doc["status"] == "COMPLETED" and doc["result"]["phase"] == run.result["phase"]
    stored = {m["name"]: (m["steps"], m["values"]) for m in db.metrics.find({"run_id": run._id})}
    assert set(stored) == {"train.loss", "train.acc", "test.loss", "test.acc", "rqi"}
    check_consistent(doc["result"], stored)
    assert {a["name"] for a in doc["artifacts"]} == {"training_curves.png", "representation.png", "model.pt"}
    # nothing was written to file storage: the attached observer replaced the default
    assert not Path(os.environ["TOYLAB_RUNS_DIR"]).exists()

    if url is None:  # Incense builds its own MongoClient: give it the same in-process server
        monkeypatch.setattr("incense.experiment_loader.MongoClient", lambda *a, **k: db.client)
        url = "mongodb://mongomock.invalid:27017"
    table = analysis.runs_table(url, db_name=db.name, experiment="grokking")
    assert table.loc[0, "run"] == run._id and table.loc[0, "t_train"] == run.result["t_train"]
    curves = analysis.metrics_table(url, db_name=db.name, metric=["test.acc", "rqi"])
    assert len(curves) == len(stored["test.acc"][0]) + len(stored["rqi"][0])


def test_mongo_url_with_password_never_reaches_the_record(monkeypatch):
    """TOYLAB_MONGO_URL picks MongoDB; its password is nowhere in what the run stores."""
    mongomock.gridfs.enable_gridfs_integration()
    server = mongomock.MongoClient()
    monkeypatch.setattr("pymongo.MongoClient", lambda *a, **k: server)
    password = "s3cret-Pa55word-for-test"
    monkeypatch.setenv("TOYLAB_MONGO_URL", f"mongodb://toylab:{password}@db.example.invalid:27017/?authSource=admin")
    monkeypatch.setenv("TOYLAB_MONGO_DB", "toylab_secret_test")
    run = ex.run(config_updates={"train_steps": 100, "log_every": 10})
    db = server["toylab_secret_test"]
    assert db.runs.count_documents({}) == 1
    dump = json.dumps([list(db[c].find({}, {"_id": 0})) for c in db.list_collection_names()], default=str)
    assert "toylab" in dump and password not in dump and "db.example.invalid" not in dump
    assert password not in run.captured_out
