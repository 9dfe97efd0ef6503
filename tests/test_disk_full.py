"""A disk that fills up while runs are recorded (issue 17, scenario 3): real tmpfs mounts.

Injected: a small tmpfs, pre-filled with a file so that a known margin is left, under
file storage (``TOYLAB_RUNS_DIR``), under the local MongoDB-compatible server's SQLite
file, and under it again while ``python -m observers sync`` uploads.

Asserted: file storage stops the run with one line naming the file, the run directory
and the cause, exit code 74; every JSON file of every run directory parses, no artifact or
checkpoint is left truncated (an earlier checkpoint stays whole), no temporary file is
left, the earlier runs are untouched and load; a run that cannot even start leaves no
directory; a sweep point whose disk fills is a FAILED point, the worker goes on. The
board's database full: the run keeps going, falls back to file storage at once (no wait
for a server that cannot take it) with every point, says so in one line, and a later
sync completes the MongoDB run it started. A sync that fills the server's disk: one line
naming the cause, exit 1, and once there is room the next sync uploads every run exactly
once, leaving nothing of the cut-off upload behind.

Mounting needs root: skipped otherwise, except in CI (which runs as root), where it fails.
"""
import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch

import analysis
from conftest import REPO, require_board, run_script

NO_SPACE = os.strerror(28)  # "No space left on device"


@pytest.fixture(autouse=True)
def mounting_allowed():
    if os.geteuid() != 0:
        message = "mounting a small tmpfs (a disk that fills up) needs root"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI runs as root")
        pytest.skip(message)


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)]).returncode != 0:
            subprocess.run(["umount", "-l", str(path)])  # still busy (a server that would not stop): detach


def leave_free(mount: Path, kib: int) -> Path:
    """Fill ``mount`` with one file so that ``kib`` KiB stay free."""
    stat = os.statvfs(mount)
    filler = mount / "filler"
    with open(filler, "ab") as f:
        f.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - kib * 1024))
    return filler


def grokking(runs: Path, *config, env=None, beat=0.2):
    return run_script(["experiments/grokking.py", "with", *config, f"--beat-interval={beat}"],
                      env={"TOYLAB_RUNS_DIR": str(runs), **(env or {})}, timeout=300)


def disk_full_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if "disk full" in line or "disk is full" in line]


def assert_every_record_whole(root: Path) -> None:
    """Every JSON file of every run directory parses; no temporary file of a write is left."""
    for run_dir in [d for d in root.iterdir() if d.is_dir()]:
        for path in run_dir.iterdir():
            assert not path.name.startswith("."), f"a write's temporary file was left: {path}"
            if path.suffix == ".json":
                json.loads(path.read_text())  # raises on a half-written file


def files_of(run_dir: Path) -> dict:
    return {p.name: p.read_bytes() for p in run_dir.iterdir()}


def regular_steps(run_dir: Path, every: int) -> list:
    """The steps of train.loss, every series checked whole: as many values as steps, and all
    series of the same length but the last step's. The heartbeat thread writes what the run
    has logged so far, and it can land between two metrics of one step (a race seen in CI)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    lengths = {name: len(series["steps"]) for name, series in metrics.items()}
    assert all(len(series["steps"]) == len(series["values"]) for series in metrics.values())
    assert max(lengths.values()) - min(lengths.values()) <= 1, lengths
    steps = metrics["train.loss"]["steps"]
    return [s for s in steps if s % every == 0]


# ------------------------------------------------------------------ file storage
def test_file_storage_full_mid_run_stops_in_one_line_and_leaves_every_record_whole(tmp_path):
    with tmpfs(tmp_path / "disk", "1024k") as runs:
        first = grokking(runs, "train_steps=200", "log_every=1", "checkpoint_every=0")
        assert first.returncode == 0, first.stderr
        before = files_of(runs / "1")

        leave_free(runs, 500)  # room for ~1000 steps of metrics: a budget of 1e5 steps outgrows it early on
        full = grokking(runs, "train_steps=100000", "log_every=1", "checkpoint_every=0")
        assert full.returncode == 74, full.stderr
        assert "Traceback" not in full.stderr and "An error ocurred" not in full.stderr  # Sacred's swallowed error
        assert disk_full_lines(full.stderr) == [
            f"disk full: could not write {runs / '2' / 'metrics.json'} ({NO_SPACE}); run stopped and recorded as "
            f"FAILED in file storage {runs / '2'}, with what was written before the disk filled"], full.stderr
        record = json.loads((runs / "2" / "run.json").read_text())
        assert record["status"] == "FAILED" and "StorageFull: disk full" in record["fail_trace"][-1]
        steps = regular_steps(runs / "2", 1)
        assert steps == list(range(len(steps))) and 0 < len(steps) < 5000  # the points up to the last write
        seconds = (dt.datetime.fromisoformat(record["stop_time"]) - dt.datetime.fromisoformat(record["start_time"]))
        assert seconds.total_seconds() < 30, "the run trained on after its storage was full (1e5 steps: ~100 s)"

        (runs / "filler").unlink()
        leave_free(runs, 0)
        unstarted = grokking(runs, "train_steps=200", "log_every=1", "checkpoint_every=0")
        assert unstarted.returncode == 74, unstarted.stderr
        [line] = disk_full_lines(unstarted.stderr)
        assert line.endswith(f"run stopped before it was recorded (nothing left in {runs / '3'})"), line
        assert not (runs / "3").exists()

        assert_every_record_whole(runs)
        assert files_of(runs / "1") == before  # the earlier run, byte for byte
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # a half-written run directory would warn
            table = analysis.runs_table(str(runs))
        assert table.set_index("run")["status"].to_dict() == {1: "COMPLETED", 2: "FAILED"}
        points = analysis.metrics_table(str(runs), metric="train.loss")
        assert len(points[points.run == 1]) == len(json.loads(before["metrics.json"])["train.loss"]["steps"])


def test_artifacts_that_do_not_fit_are_not_left_truncated_and_an_earlier_checkpoint_stays_whole(tmp_path):
    """Run 1: its metrics and figures fit, model.pt (190 kB) does not. Run 2: its first
    checkpoint.pt (563 kB) fits; replacing it (the new one is written beside the old, so
    room for both) does not."""
    with tmpfs(tmp_path / "disk", "2048k") as runs:
        filler = leave_free(runs, 110)
        full = grokking(runs, "train_steps=500", "log_every=50", "checkpoint_every=0")
        assert full.returncode == 74, full.stderr
        [line] = disk_full_lines(full.stderr)
        assert line.startswith(f"disk full: could not write {runs / '1' / 'model.pt'} ({NO_SPACE}); "), line
        assert not (runs / "1" / "model.pt").exists()  # not a truncated one
        record = json.loads((runs / "1" / "run.json").read_text())
        assert record["status"] == "FAILED" and record["artifacts"] == ["training_curves.png", "representation.png"]
        assert_every_record_whole(runs)

        filler.unlink()
        leave_free(runs, 900)
        full = grokking(runs, "train_steps=1500", "log_every=100", "checkpoint_every=500")
        assert full.returncode == 74, full.stderr
        [line] = disk_full_lines(full.stderr)
        assert line.startswith(f"disk full: could not write {runs / '2' / 'checkpoint.pt'} ({NO_SPACE}); "), line
        checkpoint = torch.load(runs / "2" / "checkpoint.pt", weights_only=True)  # whole, not cut off
        assert checkpoint["next_step"] == 500
        record = json.loads((runs / "2" / "run.json").read_text())
        assert record["status"] == "FAILED" and record["artifacts"] == ["checkpoint.pt"]
        assert_every_record_whole(runs)


def test_captured_output_and_sources_that_do_not_fit_leave_no_partial_file(tmp_path):
    """The observer itself: a source copy that does not fit leaves no truncated copy (later
    runs would take it for the file) and no run directory; captured output that does not fit
    is cut back to its last complete append; after that nothing more is written, except the
    final status."""
    import observers

    now = dt.datetime.utcnow()
    (tmp_path / "big_source.py").write_bytes(b"#" * 400_000)
    (tmp_path / "small_source.py").write_bytes(b"# small\n")

    def ex_info(source):
        return {"name": "disk_full", "base_dir": str(tmp_path), "sources": [[source, "md5"]], "dependencies": [],
                "repositories": [], "mainfile": source}

    with tmpfs(tmp_path / "disk", "256k") as root:
        observer = observers.AtomicFileStorageObserver(str(root))
        with pytest.raises(observers.StorageFull) as full:
            observer.started_event(ex_info("big_source.py"), "main", {}, now, {}, {}, None)
        assert full.value.removed and "big_source" in full.value.path
        assert sorted(p.name for p in root.iterdir()) == ["_sources"] and list((root / "_sources").iterdir()) == []

        observer = observers.AtomicFileStorageObserver(str(root))
        observer.started_event(ex_info("small_source.py"), "main", {}, now, {}, {}, None)
        run_dir = Path(observer.dir)
        observer.heartbeat_event({}, "a" * 1000, now, None)
        leave_free(root, 8)
        with pytest.raises(observers.StorageFull) as full:
            observer.heartbeat_event({}, "a" * 1000 + "b" * 100_000, now, None)
        assert full.value.path == str(run_dir / "cout.txt")
        assert (run_dir / "cout.txt").read_text() == "a" * 1000  # not a half-written tail
        heartbeat = threading.Thread(target=observer.heartbeat_event, args=({}, "c" * 50, now, None))
        heartbeat.start()  # Sacred's heartbeat thread: no exception there (it would only kill that thread)
        heartbeat.join()
        assert (run_dir / "cout.txt").read_text() == "a" * 1000  # and nothing more is written
        observer.failed_event(now, ["observers.StorageFull: disk full"])
        assert json.loads((run_dir / "run.json").read_text())["status"] == "FAILED"
        assert full.value.report().endswith(f"run stopped and recorded as FAILED in file storage {run_dir}, "
                                            "with what was written before the disk filled")
        assert_every_record_whole(root)


def test_a_sweep_point_whose_disk_fills_is_failed_and_the_worker_goes_on(tmp_path, monkeypatch):
    """In a worker (here: a thread, as Dask's task threads) the run's last heartbeat finds
    the disk full; the point is FAILED with the cause, instead of the worker dying or the
    point counting as COMPLETED without its metrics."""
    from sweeps.points import Point, load_experiment
    from sweeps.worker import _record

    class Store:  # what _record asks of a sweep's store; tagging is for COMPLETED points only
        tagged = []

        def tag(self, run_id, sweep):
            self.tagged.append(run_id)

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    module = load_experiment(str(REPO / "experiments" / "grokking.py"))
    with tmpfs(tmp_path / "disk", "1024k") as runs:
        monkeypatch.setenv("TOYLAB_RUNS_DIR", str(runs))
        leave_free(runs, 300)
        outcomes = []
        point = Point((), {"train_steps": 3000, "log_every": 1, "checkpoint_every": 0}, "full-disk-point")
        worker = threading.Thread(target=lambda: outcomes.append(_record(module, "s", point, None, Store())))
        worker.start()
        worker.join(120)
        [outcome] = outcomes  # returned: the worker's thread did not die
        assert outcome["status"] == "FAILED" and Store.tagged == [], outcome
        assert outcome["error"].startswith(f"StorageFull: disk full: could not write {runs / '1'}"), outcome
        assert json.loads((runs / "1" / "run.json").read_text())["status"] == "FAILED"
        assert_every_record_whole(runs)


# ------------------------------------------------------------------ the board's database
def sync(env):
    return run_script(["-m", "observers", "sync"], env=env, timeout=120)


def test_board_database_full_during_a_live_run_falls_back_whole_and_sync_completes_it(tmp_path):
    require_board("the local MongoDB-compatible server")
    import pymongo

    from localboard.server import LocalMongo

    runs = tmp_path / "runs"
    with tmpfs(tmp_path / "disk", "16m") as disk:
        server = LocalMongo(disk / "db.sqlite3", password="full-" + os.urandom(8).hex(), log=tmp_path / "server.log")
        server.start()
        try:
            env = {"TOYLAB_MONGO_URL": server.url(), "TOYLAB_RUNS_DIR": str(runs)}
            with pymongo.MongoClient(server.url()) as client:
                client.sacred.command("ping")
                filler = leave_free(disk, 400)  # the run document fits, its metrics do not
                started = time.monotonic()
                live = grokking(runs, "train_steps=2000", "log_every=1", "checkpoint_every=0", env=env)
                took = time.monotonic() - started
                assert live.returncode == 0, live.stderr  # the run is recorded, in full, in the fallback
                fallback = runs / "fallback" / "1"
                assert disk_full_lines(live.stderr)[-1].startswith(
                    f"WARNING toylab observer: MongoDB's disk is full at the end of the run: the complete run is in "
                    f"fallback file storage {fallback} (MongoDB run 1 is incomplete; "), live.stderr
                assert "waiting up to" not in live.stderr and took < 60  # no wait for a server that cannot take it
                assert_every_record_whole(runs / "fallback")
                record = json.loads((fallback / "run.json").read_text())
                assert record["status"] == "COMPLETED" and record["meta"]["toylab_fallback"]["mongo_run_id"] == 1
                assert set(record["artifacts"]) == {"training_curves.png", "representation.png", "model.pt"}
                assert regular_steps(fallback, 1) == list(range(2000))
                assert client.sacred.runs.find_one({"_id": 1})["status"] == "RUNNING"  # what got in: incomplete

                filler.unlink()
                uploaded = sync(env)
                assert uploaded.returncode == 0 and "1 uploaded" in uploaded.stdout, uploaded.stderr
                assert client.sacred.runs.count_documents({}) == 1
                doc = client.sacred.runs.find_one({"_id": 1})
                assert doc["status"] == "COMPLETED" and doc["toylab_sync"]["complete"]
                stored = client.sacred.metrics.find_one({"run_id": 1, "name": "train.loss"})
                logged = json.loads((fallback / "metrics.json").read_text())["train.loss"]
                assert stored["steps"] == logged["steps"] and stored["values"] == logged["values"]
        finally:
            server.stop()


def test_board_database_and_its_fallback_both_full_is_one_failed_run_in_one_line(tmp_path):
    """Nowhere to put the run: it ends FAILED in one fallback directory (not a second one
    left RUNNING), with the one-line report and exit code of a full file storage."""
    require_board("the local MongoDB-compatible server")
    import pymongo

    from localboard.server import LocalMongo

    with tmpfs(tmp_path / "disk", "16m") as disk, tmpfs(tmp_path / "runs", "1024k") as runs:
        server = LocalMongo(disk / "db.sqlite3", password="full-" + os.urandom(8).hex(), log=tmp_path / "server.log")
        server.start()
        try:
            with pymongo.MongoClient(server.url()) as client:
                client.sacred.command("ping")
            leave_free(disk, 400)
            leave_free(runs, 300)
            env = {"TOYLAB_MONGO_URL": server.url()}
            live = grokking(runs, "train_steps=2000", "log_every=1", "checkpoint_every=0", env=env)
        finally:
            server.stop()
        assert live.returncode == 74, live.stderr
        assert "Traceback" not in live.stderr
        fallback = runs / "fallback" / "1"
        assert disk_full_lines(live.stderr)[-1].startswith(f"disk full: could not write {fallback}"), live.stderr
        assert sorted(p.name for p in (runs / "fallback").iterdir()) == ["1", "_sources"]
        assert json.loads((fallback / "run.json").read_text())["status"] == "FAILED"
        assert_every_record_whole(runs / "fallback")


@pytest.fixture(scope="module")
def two_finished_runs(tmp_path_factory):
    """Two real finished grokking runs in file storage, with a checkpoint (563 kB) each."""
    root = tmp_path_factory.mktemp("made")
    made = grokking(root, "train_steps=1500", "log_every=100", "checkpoint_every=500")
    assert made.returncode == 0, made.stderr
    shutil.copytree(root / "1", root / "2")  # another directory: another run for sync
    return root


def test_sync_that_fills_the_server_disk_says_so_and_the_next_sync_uploads_each_run_once(two_finished_runs, tmp_path):
    require_board("the local MongoDB-compatible server")
    import gridfs
    import pymongo

    from localboard.server import LocalMongo

    runs = tmp_path / "runs"
    shutil.copytree(two_finished_runs, runs)
    with tmpfs(tmp_path / "disk", "16m") as disk:
        server = LocalMongo(disk / "db.sqlite3", password="full-" + os.urandom(8).hex(), log=tmp_path / "server.log")
        server.start()
        try:
            env = {"TOYLAB_MONGO_URL": server.url(), "TOYLAB_RUNS_DIR": str(runs),
                   "TOYLAB_FALLBACK_DIR": str(tmp_path / "no-fallback")}
            with pymongo.MongoClient(server.url()) as client:
                db = client.sacred
                db.command("ping")
                filler = leave_free(disk, 1400)  # run 1's documents fit; its checkpoint is cut off half-way
                failed = sync(env)
                assert failed.returncode == 1, failed.stdout + failed.stderr
                assert "Traceback" not in failed.stderr
                assert [line for line in failed.stderr.splitlines() if line.strip()] == [
                    f"sync: MongoDB's disk is full (database or disk is full); {runs / '1'} was not uploaded "
                    "completely (the next sync uploads it again, once); nothing lost: free space on the server, "
                    "then run sync again"], failed.stderr
                assert server.password not in failed.stderr + failed.stdout

                def orphan_chunks():  # GridFS chunks of no file: what a cut-off upload leaves
                    return set(db["fs.chunks"].distinct("files_id")) - set(db["fs.files"].distinct("_id"))

                assert db.runs.find_one({"toylab_sync.complete": False}) is not None
                assert orphan_chunks(), "the full disk should cut an artifact off half-way (retune the margin)"

                filler.unlink()
                again = sync(env)
                assert again.returncode == 0 and "sync: 2 uploaded, 0 already in MongoDB" in again.stdout, again.stderr
                assert db.runs.count_documents({}) == 2 and db.runs.count_documents({"toylab_sync.complete": True}) == 2
                n_metrics = len(json.loads((runs / "1" / "metrics.json").read_text()))
                assert db.metrics.count_documents({}) == 2 * n_metrics
                artifacts = json.loads((runs / "1" / "run.json").read_text())["artifacts"]
                uploads = db["fs.files"].count_documents({"metadata.toylab_run_id": {"$exists": True}})
                assert uploads == 2 * len(set(artifacts))  # a file saved twice (checkpoint.pt) is on disk once
                assert orphan_chunks() == set()  # the cut-off upload's chunks are gone too
                fs = gridfs.GridFS(db)
                for doc in db.runs.find():
                    stored = {a["name"]: fs.get(a["file_id"]).read() for a in doc["artifacts"]}
                    on_disk = runs / doc["toylab_sync"]["file_run_id"] / "checkpoint.pt"
                    assert stored["checkpoint.pt"] == on_disk.read_bytes()

                third = sync(env)
                assert third.returncode == 0 and "sync: 0 uploaded, 2 already in MongoDB" in third.stdout
        finally:
            server.stop()
