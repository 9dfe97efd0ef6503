"""The live board (issue 16): while `make board` is up, new and running file-storage runs
reach Omniboard within seconds, RUNNING ones shown as RUNNING and kept up to date, each run
one document and each metric point stored once; `make board-stop` stops the watcher too.

- The watcher's logic (localboard/watcher.py + the in-place update of observers/sync.py),
  in-process against the real local MongoDB-compatible server: runs written event by event
  by the project's own file-storage observer, polled as the watcher polls them.
- The watcher as a process: a server killed and restarted under it, its log.
- The board end to end: `make board`, then a real grokking run started after it, seen
  RUNNING in the database and in Omniboard (Playwright driving Debian's Chromium, a
  screenshot kept in test-output/), then COMPLETED, without `make board` again; `python -m
  localboard stop` leaves no watcher; after a recovery (server SIGKILLed, watcher
  SIGKILLed, `make board` again) there is one watcher, and stop stops it.
"""
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pymongo
import pymongo.errors
import pytest
from sacred import Experiment

from localboard.processes import port_open
from localboard.watcher import WATCHER_MARKER, Watcher
from observers import metric_documents
from observers.file_storage import AtomicFileStorageObserver
from observers.metric_documents import CHUNKS, METRICS, read_metrics, split_series
from observers.sync import Uploader
from tests.conftest import REPO, require_board
from tests.test_board import (OUTPUT, UNSET, logged_in_page, make, own_board_env, require_chromium,
                              stored_login)

# A run's document is written before its metrics and artifacts; only this marks one uploaded
# whole. Waiting on the status alone, a test that then kills the watcher or the server cuts
# an upload off half-way, and the next sync rightly uploads the run again.
FULLY_SYNCED = {"status": "COMPLETED", "toylab_sync.complete": True}


# ------------------------------------------------------------------ runs written as a run writes them
class FileRun:
    """A run recorded by the project's file-storage observer, event by event (as Sacred calls
    it during a run: started, metrics + heartbeat, ..., completed), in ``root``."""

    def __init__(self, root: Path):
        ex = Experiment("live", save_git_info=False)
        ex.main(lambda: None)
        run = ex._create_run(options={"--loglevel": "ERROR"})
        self.observer = AtomicFileStorageObserver(str(root))
        run_id = self.observer.started_event(run.experiment_info, "main", run.host_info, datetime.datetime.utcnow(),
                                             {"lr": 0.1, "seed": len(list(root.iterdir()))}, run.meta_info, None)
        self.dir = root / str(run_id)
        self.points = 0
        self.cout = ""

    def log(self, n: int, name: str = "train.loss") -> None:
        steps = list(range(self.points, self.points + n))
        self.points += n
        now = datetime.datetime.utcnow()
        self.observer.log_metrics({name: {"steps": steps, "values": [s / 7 for s in steps],
                                          "timestamps": [now] * n}}, {})

    def beat(self) -> None:
        self.cout += f"step {self.points}\n"
        self.observer.heartbeat_event({"progress": self.points}, self.cout, datetime.datetime.utcnow(), None)

    def complete(self, result) -> None:
        self.observer.completed_event(datetime.datetime.utcnow(), result)


def logged(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def stored_documents(db, run_id, name):
    found = [doc for collection in (METRICS, CHUNKS)
             for doc in db[collection].find({"run_id": run_id, "name": name}, {"_id": 0, "steps": 1, "chunk": 1})]
    return sorted(found, key=lambda d: d.get("chunk", 0))


def assert_metrics_as_logged(db, run_id, run_dir: Path) -> None:
    """Every metric point of metrics.json in the database once, cut into documents exactly as
    one upload of the whole series cuts them (the documents an append builds are the same)."""
    on_disk = logged(run_dir)
    in_db = read_metrics(db, run_id, timestamps=False)
    assert set(in_db) == set(on_disk)
    for name, series in on_disk.items():
        assert in_db[name]["steps"] == series["steps"] and in_db[name]["values"] == series["values"], name
        expected = [doc["steps"] for _, doc in split_series(run_id, name, series["steps"], series["values"],
                                                            size=Uploader.MAX_POINTS_PER_DOCUMENT)]
        assert [doc["steps"] for doc in stored_documents(db, run_id, name)] == expected, name
    refs = {ref["name"] for ref in db.runs.find_one({"_id": run_id})["info"]["metrics"]}
    assert refs == set(on_disk)  # what Omniboard reads


@pytest.fixture
def board_db(local_mongo):
    client = pymongo.MongoClient(local_mongo.url(), serverSelectionTimeoutMS=10_000)
    yield client["sacred"]
    client.close()


@pytest.fixture
def small_documents(monkeypatch):
    """A cap of 25 points a document, so that appends cross document boundaries."""
    monkeypatch.setattr(Uploader, "MAX_POINTS_PER_DOCUMENT", 25)


# ------------------------------------------------------------------ the watcher's logic, in-process
def test_a_running_run_is_one_document_updated_in_place_until_completed(board_db, small_documents, tmp_path):
    db, root = board_db, tmp_path / "runs"
    watcher = Watcher([root], db)
    assert watcher.poll().uploaded == [] and db.runs.count_documents({}) == 0  # no runs directory yet: nothing

    root.mkdir()
    run = FileRun(root)
    run.log(10)
    run.beat()
    report = watcher.poll()
    [(_, run_id)] = report.uploaded
    doc = db.runs.find_one({"_id": run_id})
    assert doc["status"] == "RUNNING" and doc["heartbeat"] is not None and doc["captured_out"] == "step 10\n"
    assert doc["toylab_sync"]["complete"] is True
    assert_metrics_as_logged(db, run_id, run.dir)
    for _ in range(3):  # nothing changed: nothing read, nothing asked of the server
        assert watcher.changed() == []
        report = watcher.poll()
        assert (report.uploaded, report.updated, report.already, report.skipped) == ([], [], 0, [])

    for n in (7, 30, 8):  # 17, 47, 55 points: across the 25-point documents, and a metric that starts later
        run.log(n)
        run.log(n, name="test.acc")
        run.beat()
        report = watcher.poll()
        assert report.updated == [(run.dir, run_id)] and report.uploaded == []
        assert db.runs.count_documents({}) == 1
        assert db.runs.find_one({"_id": run_id})["status"] == "RUNNING"
        assert_metrics_as_logged(db, run_id, run.dir)
    assert db.runs.find_one({"_id": run_id})["info"]["progress"] == run.points

    run.complete({"final": 0.5})
    assert watcher.poll().updated == [(run.dir, run_id)]
    for _ in range(3):
        report = watcher.poll()
        assert (report.uploaded, report.updated) == ([], [])
    doc = db.runs.find_one({"_id": run_id})
    assert doc["status"] == "COMPLETED" and doc["result"] == {"final": 0.5} and doc["stop_time"] is not None
    assert db.runs.count_documents({}) == 1 and db.runs.count_documents({"toylab_sync.complete": False}) == 0
    assert_metrics_as_logged(db, run_id, run.dir)
    assert db[METRICS].count_documents({}) == 2  # train.loss, test.acc: one metrics document each
    assert db[CHUNKS].count_documents({}) == 2 + 1  # the rest of train.loss (55 points) and of test.acc (45)
    # the board's columns followed the runs: config.seed does not vary with one run; the result does
    assert {c["name"] for c in db["omniboard.custom.columns"].find({"toylab": True})} == {"final"}

    # a later `python -m observers sync` (the command line: runs still running left alone) finds it up to date
    assert Uploader(db).sync([run.dir]).already == 1


def test_half_written_files_wait_and_an_update_cut_off_is_redone_whole(board_db, small_documents, tmp_path,
                                                                        monkeypatch):
    db, root = board_db, tmp_path / "runs"
    root.mkdir()
    watcher = Watcher([root], db)
    run = FileRun(root)
    run.log(20)
    run.beat()
    [(_, run_id)] = watcher.poll().uploaded

    # a run directory whose run.json is half-written (not how the observer writes it: it renames)
    half = root / "2"
    half.mkdir()
    (half / "run.json").write_text('{"status": "RUNN')
    report = watcher.poll()
    assert [d for d, _ in report.skipped] == [half] and db.runs.count_documents({}) == 1
    assert watcher.poll().skipped == report.skipped  # tried again at every poll, nothing written
    (half / "run.json").write_text((run.dir / "run.json").read_text())
    (half / "metrics.json").write_text('{"train.loss": {"steps": [1, 2')  # now its metrics are half-written
    assert [d for d, _ in watcher.poll().skipped] == [half] and db.runs.count_documents({}) == 1
    (half / "metrics.json").write_text(json.dumps({"train.loss": {"steps": [1, 2], "values": [0.5, 0.25],
                                                                  "timestamps": []}}))
    [(_, half_id)] = watcher.poll().uploaded
    assert db.runs.count_documents({}) == 2 and half_id != run_id
    assert read_metrics(db, half_id)["train.loss"]["steps"] == [1, 2]

    # a run whose upload fails otherwise (a bug, a document the server refuses) holds up no other run
    said = []
    watcher.log = said.append
    third, real_upload = FileRun(root), Uploader.upload
    third.log(4)
    third.complete(None)
    fourth = FileRun(root)
    fourth.complete(None)

    def refused(self, run_dir, *args, **kwargs):
        if run_dir == third.dir:
            raise RuntimeError("refused (injected)")
        return real_upload(self, run_dir, *args, **kwargs)

    monkeypatch.setattr(Uploader, "upload", refused)
    for _ in range(3):
        report = watcher.poll()
    assert [d for d, _ in report.skipped] == [third.dir] and len(said) == 1 and "refused (injected)" in said[0]
    assert db.runs.count_documents({}) == 3  # the fourth run got through
    monkeypatch.setattr(Uploader, "upload", real_upload)
    assert [d for d, _ in watcher.poll().uploaded] == [third.dir] and db.runs.count_documents({}) == 4
    assert_metrics_as_logged(db, db.runs.find_one({"toylab_sync.file_run_id": third.dir.name})["_id"], third.dir)

    # the server goes away in the middle of an update, just after a write it applied (its reply lost)
    run.log(40)
    run.beat()
    real_append = metric_documents.append_series

    def applied_then_lost(*args, **kwargs):
        real_append(*args, **kwargs)
        raise pymongo.errors.AutoReconnect("connection closed (injected)")

    monkeypatch.setattr(metric_documents, "append_series", applied_then_lost)
    with pytest.raises(pymongo.errors.AutoReconnect):
        watcher.poll()
    assert db.runs.find_one({"_id": run_id})["toylab_sync"]["complete"] is False
    monkeypatch.setattr(metric_documents, "append_series", real_append)
    report = watcher.poll()  # the next poll: the run is uploaded again whole, under its id
    assert report.uploaded == [(run.dir, run_id)] and db.runs.count_documents({}) == 4
    assert_metrics_as_logged(db, run_id, run.dir)
    run.complete(None)
    assert watcher.poll().updated == [(run.dir, run_id)]
    assert db.runs.find_one({"_id": run_id})["status"] == "COMPLETED"
    assert_metrics_as_logged(db, run_id, run.dir)


# ------------------------------------------------------------------ the watcher as a process
def wait_for(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped yet counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_the_watcher_process_follows_a_server_restart_quietly_and_logs_no_password(local_mongo, board_db, tmp_path):
    root, state = tmp_path / "runs", tmp_path / "state"
    root.mkdir()
    state.mkdir()
    pid_file, log = state / "watcher.pid", state / "watcher.log"
    env = {**{k: v for k, v in os.environ.items() if k not in UNSET}, "TOYLAB_BOARD_USER": local_mongo.user,
           "TOYLAB_BOARD_PASSWORD": local_mongo.password, "TOYLAB_BOARD_MONGO_PORT": str(local_mongo.port)}
    with open(log, "wb") as out:
        watcher = subprocess.Popen([sys.executable, "-m", WATCHER_MARKER, "--pid-file", str(pid_file), "--interval",
                                    "0.5", str(root)], cwd=REPO, env=env, stdout=out, stderr=out,
                                   start_new_session=True)
    pid_file.write_text(str(watcher.pid))
    try:
        first = FileRun(root)
        first.log(5)
        first.beat()
        wait_for(lambda: board_db.runs.find_one({"status": "RUNNING"}), 15, "the running run in the database")
        first.complete(None)
        wait_for(lambda: board_db.runs.find_one(FULLY_SYNCED), 10, "the run COMPLETED in the database, all uploaded")

        local_mongo.kill()  # the server dies; runs go on being written
        second = FileRun(root)
        second.log(5)
        second.complete(None)
        time.sleep(3)  # a few failed polls
        assert watcher.poll() is None, "the watcher died with the server"
        local_mongo.start()  # same port, same file
        client = pymongo.MongoClient(local_mongo.url(), serverSelectionTimeoutMS=10_000)
        try:
            db = client["sacred"]
            wait_for(lambda: db.runs.count_documents(FULLY_SYNCED) == 2, 20,
                     "the run written while the server was down, in the database once it is back")
            assert db.runs.count_documents({}) == 2
            for run in (first, second):
                doc = db.runs.find_one({"toylab_sync.file_run_id": run.dir.name})
                assert_metrics_as_logged(db, doc["_id"], run.dir)
        finally:
            client.close()

        pid_file.write_text("1")  # another watcher took over this board: this one goes by itself
        watcher.wait(10)
        assert watcher.returncode == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    text = log.read_text()
    assert local_mongo.password not in text
    lines = text.splitlines()
    assert len(lines) == 2, text  # quiet: one line when the server went, one when it was back
    assert "does not answer" in lines[0] and "answers again" in lines[1]


# ------------------------------------------------------------------ the board end to end
def watcher_processes(env: dict) -> list[int]:
    """Every watcher process of this board (its TOYLAB_BOARD_STATE in their environment). A
    child of a watcher is not a second watcher: the watcher runs ``file -b <python>`` once
    (``platform.architecture()``, for the database driver's handshake), and between fork and
    exec that child shows the watcher's command line, a window seen under load (a fresh-clone
    run beside a sweep, 2026-12-07: [24047, 24057])."""
    mine = f"TOYLAB_BOARD_STATE={env['TOYLAB_BOARD_STATE']}".encode()
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes().split(b"\0")
            status = (proc / "status").read_text()
        except OSError:
            continue
        if WATCHER_MARKER.encode() in cmdline and mine in environ:
            parent = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:"))
            found[int(proc.name)] = int(parent)
    return sorted(pid for pid, parent in found.items() if parent not in found)


def localboard(args: list, env: dict) -> subprocess.CompletedProcess:
    full_env = {**{k: v for k, v in os.environ.items() if k not in UNSET}, **env}
    return subprocess.run([sys.executable, "-m", "localboard", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=300)


def board_client(env: dict):
    from localboard.server import mongo_url

    user, password = stored_login(env["TOYLAB_BOARD_STATE"])
    return pymongo.MongoClient(mongo_url(int(env["TOYLAB_BOARD_MONGO_PORT"]), user, password),
                               serverSelectionTimeoutMS=10_000)


def watcher_pid(env: dict) -> int:
    return int((Path(env["TOYLAB_BOARD_STATE"]) / "watcher.pid").read_text())


@pytest.fixture
def live_env(tmp_path):
    """A board of its own (state directory, free ports, an empty runs directory), not started;
    stopped afterwards, whatever the test did, and then no watcher of it is left."""
    require_board("make board")
    (tmp_path / "runs").mkdir()
    env = own_board_env(tmp_path)
    yield env
    stopped = make("board-stop", env)
    assert stopped.returncode == 0, stopped.stderr
    assert wait_for(lambda: not watcher_processes(env), 5, "no watcher left after make board-stop", 0.1)


def test_a_run_started_after_make_board_appears_in_omniboard_running_then_completed(live_env):
    require_chromium()
    from playwright.sync_api import expect

    env, runs = live_env, Path(live_env["TOYLAB_RUNS_DIR"])
    started = make("board", env)
    assert started.returncode == 0, started.stdout + started.stderr
    assert "sync: 0 uploaded, 0 already in MongoDB" in started.stdout and "Following" in started.stdout
    user, password = stored_login(env["TOYLAB_BOARD_STATE"])
    pid = watcher_pid(env)
    assert watcher_processes(env) == [pid]
    assert password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()

    client = board_client(env)
    db = client["sacred"]
    experiment = None
    with logged_in_page(user, password) as (_, page):
        try:
            page.goto(f"http://127.0.0.1:{env['TOYLAB_BOARD_PORT']}/sacred")
            expect(page.get_by_text("Loading app...")).to_have_count(0, timeout=60_000)
            row = page.get_by_role("row").filter(has_text="grokking")
            assert row.count() == 0

            # a real run, started after the board is up, into the board's runs directory
            run_env = {**{k: v for k, v in os.environ.items() if k not in UNSET}, "TOYLAB_RUNS_DIR": str(runs)}
            experiment = subprocess.Popen([sys.executable, "experiments/grokking.py", "with", "train_steps=15000"],
                                          cwd=REPO, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            run_json = runs / "1" / "run.json"
            wait_for(run_json.exists, 60, "the run's run.json", 0.1)
            appeared = time.monotonic()
            doc = wait_for(lambda: db.runs.find_one({}), 10, "the new run in the database within 10 s of its start")
            assert doc["status"] == "RUNNING" and experiment.poll() is None, doc["status"]
            seen_running = time.monotonic() - appeared

            def browser_shows(status: str, within: float, screenshot: str) -> None:
                deadline = time.monotonic() + within
                while True:  # the run list is what Omniboard fetched when the page loaded: load it again
                    page.reload()
                    try:
                        expect(row).to_have_count(1, timeout=4_000)
                        expect(row).to_contain_text(status, timeout=2_000)
                        break
                    except AssertionError:
                        if time.monotonic() > deadline:
                            page.screenshot(path=str(OUTPUT / screenshot))
                            raise
                page.screenshot(path=str(OUTPUT / screenshot))

            browser_shows("RUNNING", 15 - (time.monotonic() - appeared), "board-live-running.png")
            browser_running = time.monotonic() - appeared
            assert experiment.poll() is None, "the run ended before the browser saw it RUNNING: make it longer"
            # kept up to date while it runs: heartbeats (every 10 s) bring its metric points
            wait_for(lambda: (db.runs.find_one({"_id": doc["_id"]}) or {}).get("heartbeat") is not None
                     and db[METRICS].count_documents({"run_id": doc["_id"], "steps.0": {"$exists": True}}) > 0,
                     25, "a heartbeat with metrics of the running run in the database")

            out, _ = experiment.communicate(timeout=300)
            ended = time.monotonic()
            assert experiment.returncode == 0, out[-3000:]
            wait_for(lambda: db.runs.find_one({"_id": doc["_id"], "status": "COMPLETED"}), 10,
                     "the run COMPLETED in the database within 10 s of its end")
            completed = time.monotonic() - ended
            browser_shows("COMPLETED", 15 - (time.monotonic() - ended), "board-live-completed.png")
            browser_completed = time.monotonic() - ended
        finally:
            if experiment is not None and experiment.poll() is None:
                experiment.kill()
                experiment.wait()

    try:
        time.sleep(5)  # a few more polls: nothing changes any more
        assert db.runs.count_documents({}) == 1
        final = db.runs.find_one({"_id": doc["_id"]})
        on_disk = json.loads(run_json.read_text())
        assert final["result"] == on_disk["result"] and final["toylab_sync"]["complete"] is True
        assert_metrics_as_logged(db, doc["_id"], runs / "1")
        assert len(final["artifacts"]) == len(set(on_disk["artifacts"]))
    finally:
        client.close()
    print(f"\nRUNNING: in the database {seen_running:.1f} s, in the browser {browser_running:.1f} s after run.json "
          f"appeared; COMPLETED: in the database {completed:.1f} s, in the browser {browser_completed:.1f} s after "
          "the run's process ended")
    assert (Path(env["TOYLAB_BOARD_STATE"]) / "watcher.log").read_text() == ""  # quiet: nothing went wrong

    stopped = localboard(["stop"], env)
    assert stopped.returncode == 0 and "the runs watcher" in stopped.stdout, stopped.stdout + stopped.stderr
    assert wait_for(lambda: gone(pid), 5, "the watcher gone after python -m localboard stop", 0.1)
    assert watcher_processes(env) == []
    assert not port_open(int(env["TOYLAB_BOARD_PORT"])) and not port_open(int(env["TOYLAB_BOARD_MONGO_PORT"]))


def test_after_a_recovery_one_watcher_follows_the_runs_and_stop_stops_it(live_env):
    env, runs = live_env, Path(live_env["TOYLAB_RUNS_DIR"])
    first = localboard(["start"], env)
    assert first.returncode == 0, first.stdout + first.stderr
    state = Path(env["TOYLAB_BOARD_STATE"])
    server, watcher = int((state / "server.pid").read_text()), watcher_pid(env)
    assert watcher_processes(env) == [watcher]

    os.kill(server, signal.SIGKILL)  # the board's server dies; its watcher goes on, retrying quietly
    time.sleep(3)
    assert not gone(watcher)
    again = localboard(["start"], env)  # the recovery
    assert again.returncode == 0, again.stdout + again.stderr
    assert watcher_pid(env) != watcher and gone(watcher) and watcher_processes(env) == [watcher_pid(env)]

    client = board_client(env)
    try:
        db = client["sacred"]
        run = FileRun(runs)
        run.log(30)
        run.complete(None)
        wait_for(lambda: db.runs.find_one(FULLY_SYNCED), 10, "a run in the recovered board within 10 s")

        os.kill(watcher_pid(env), signal.SIGKILL)  # the watcher itself dies: make board starts one again
        assert wait_for(lambda: gone(watcher_pid(env)), 5, "the killed watcher gone", 0.1)
        third = localboard(["start"], env)
        assert third.returncode == 0, third.stdout + third.stderr
        assert "sync: 0 uploaded, 1 already in MongoDB" in third.stdout
        assert watcher_processes(env) == [watcher_pid(env)]
        later = FileRun(runs)
        later.log(3)
        later.beat()
        wait_for(lambda: db.runs.find_one({"status": "RUNNING"}), 10, "a running run within 10 s")
        assert db.runs.count_documents({}) == 2
    finally:
        client.close()

    last = watcher_pid(env)
    stopped = localboard(["stop"], env)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == "stopped the runs watcher, Omniboard and the local MongoDB server"
    assert wait_for(lambda: gone(last), 5, "the watcher gone after stop", 0.1) and watcher_processes(env) == []
    assert not (state / "watcher.pid").exists()
    assert stored_login(env["TOYLAB_BOARD_STATE"])[1] not in (state / "watcher.log").read_text()
