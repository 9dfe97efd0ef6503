"""Upload Sacred file-storage runs to MongoDB, each exactly once.

    python -m observers sync                 # ./runs (or TOYLAB_RUNS_DIR) and the fallback dir
    python -m observers sync DIR [DIR ...]   # those as well

A run directory (one with a ``run.json``) becomes a MongoDB run like any other: the run
document with config, info, result, captured output and status; one ``metrics`` document
per metric (a metric past ``MAX_POINTS_PER_DOCUMENT`` points continues in ``metric_chunks``
documents, as the live observer writes it: observers/metric_documents.py); artifacts and
sources in GridFS. Omniboard and ``analysis.runs_table(url)`` then show it next to the
runs that recorded live.

Exactly once, even if a sync is interrupted: every uploaded run document carries
``toylab_sync.origin`` (host, absolute path of the run directory, its start time) and
``toylab_sync.complete``. The run document is written first (incomplete), then its metrics
and artifacts, then it is marked complete. A run found complete is skipped; one found
incomplete (a sync that died half-way) has its metrics and artifacts removed and is
uploaded again under the same id (artifact uploads it began are noted in
``toylab_sync.gridfs_ids`` first, so even the chunks of one cut off half-way are removed).
File-storage ids are local: the MongoDB run gets the next free id, and the original id is
kept in ``toylab_sync.file_run_id``. A sync that stops half-way (MongoDB gone, its disk
full) says so in one line naming the cause and the run left incomplete, and exits 1.

A fallback run (``meta.toylab_fallback``, written by the robust observer when MongoDB was
unreachable) replaces the incomplete MongoDB run it names, when that run is still there
and was not uploaded by a sync.

A run that changed since it was uploaded (a run uploaded while RUNNING that wrote more
metrics, a heartbeat, or ended; a fallback run rewritten) is updated in place, under the
same id: every uploaded run records ``toylab_sync.files`` (name, size, mtime and inode of
each file sync reads, its artifacts too) and ``toylab_sync.metrics`` (the points uploaded per
metric). A sync that finds the files as recorded does nothing more for that run; one that
finds them changed marks the run incomplete, appends only the metric points past the
recorded counts (``metric_documents.append_series``), uploads new or rewritten artifacts,
sets the run document's fields (status, heartbeat, result, info, captured output, ...) and
marks it complete again. An update cut off half-way leaves the run incomplete, so the next
sync uploads it again whole, as above: no point is ever stored twice. A file that cannot
be read (half-written, gone) skips that run until a later sync, having written nothing.

``python -m observers sync`` leaves runs still RUNNING with a recent heartbeat for a later
sync; ``Uploader(db).sync(dirs, running=True)`` (the board's watcher, localboard/watcher.py)
uploads them too and keeps them up to date. The MongoDB URL comes from
``TOYLAB_MONGO_URL`` only and is never printed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import mimetypes
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from observers import metric_documents

STILL_ALIVE = dt.timedelta(minutes=2)  # a RUNNING run with a newer heartbeat is still being written
# What Sacred's file storage writes while a run goes on (adding an artifact rewrites run.json too)
RUN_FILES = ("run.json", "config.json", "info.json", "metrics.json", "cout.txt")


def default_roots() -> list[Path]:
    from observers import fallback_dir, runs_dir

    return [runs_dir(), fallback_dir()]


def run_dirs(roots: Iterable[Path]) -> list[Path]:
    """Every Sacred file-storage run directory directly under ``roots``, each once."""
    seen, found = set(), []
    for root in roots:
        root = Path(root)
        if (root / "run.json").is_file():  # a run directory given directly
            candidates = [root]
        elif root.is_dir():
            candidates = sorted((d for d in root.iterdir() if (d / "run.json").is_file()),
                                key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))
        else:
            continue
        for run_dir in candidates:
            key = run_dir.resolve()
            if key not in seen:
                seen.add(key)
                found.append(run_dir)
    return found


def file_state(run_dir: Path, names: Iterable[str] = RUN_FILES) -> list:
    """``[name, size, mtime_ns, inode]`` of each of ``names`` in ``run_dir`` that exists: what
    changes when the run writes more (a file replaced by a rename gets a new inode even
    within one mtime tick; cout.txt, appended to, grows)."""
    state = []
    for name in names:
        try:
            st = os.stat(Path(run_dir) / name)
        except OSError:
            continue
        state.append([name, st.st_size, st.st_mtime_ns, st.st_ino])
    return state


def _unique(names: Iterable[str]) -> list:
    """Each name once, in first-seen order (Sacred lists an artifact again each time it is saved)."""
    return list(dict.fromkeys(names))


@dataclass
class SyncReport:
    uploaded: list = field(default_factory=list)  # (run dir, mongo id)
    updated: list = field(default_factory=list)  # (run dir, mongo id): uploaded before, changed since
    already: int = 0  # found complete in MongoDB, unchanged
    skipped: list = field(default_factory=list)  # (run dir, reason)
    current: Optional[Path] = None  # the run dir being uploaded (when a sync stops half-way: that one)

    def summary(self) -> str:
        text = f"sync: {len(self.uploaded)} uploaded, {self.already} already in MongoDB"
        if self.updated:
            text += f", {len(self.updated)} updated"
        if self.skipped:
            text += f", {len(self.skipped)} skipped"
        return text


def origin_of(run_dir: Path, run: dict) -> str:
    """Identifies a file-storage run across syncs: host, absolute path, start time."""
    return f"{socket.gethostname()}:{run_dir.resolve()}@{run.get('start_time')}"


def _read_json(path: Path, default):
    if not path.is_file():
        return default
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _time(value):
    """File storage writes ISO strings where MongoDB keeps datetimes."""
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def _still_running(run: dict) -> bool:
    if run.get("status") == "QUEUED":
        return True
    if run.get("status") != "RUNNING":
        return False
    beat = _time(run.get("heartbeat") or run.get("start_time"))
    if not isinstance(beat, dt.datetime):
        return False
    now = dt.datetime.now(beat.tzinfo) if beat.tzinfo else dt.datetime.utcnow()
    return now - beat < STILL_ALIVE


class Uploader:
    """Writes file-storage runs into one MongoDB database (runs, metrics, GridFS)."""

    MAX_POINTS_PER_DOCUMENT = metric_documents.MAX_POINTS_PER_DOCUMENT  # a class attribute: tests lower it

    def __init__(self, db):
        import gridfs

        self.db = db
        self.runs = db["runs"]
        self.fs = gridfs.GridFS(db)

    def sync(self, dirs: Iterable[Path], report: Optional[SyncReport] = None, running: bool = False) -> SyncReport:
        """Upload the runs of ``dirs`` MongoDB does not have, update those that changed since
        (into ``report``). ``running``: runs still RUNNING too (otherwise left for later)."""
        report = report or SyncReport()
        for run_dir in dirs:
            files = file_state(run_dir)  # before reading: a write after this is seen by the next sync
            try:
                run = _read_json(run_dir / "run.json", None)
                if not isinstance(run, dict):
                    raise ValueError("not a run record" if run is not None else "gone")
            except (OSError, ValueError) as error:
                report.skipped.append((run_dir, f"unreadable run.json: {error}"))
                continue
            if run.get("status") == "QUEUED" or (not running and _still_running(run)):
                report.skipped.append((run_dir, "still running"))
                continue
            origin = origin_of(run_dir, run)
            files += file_state(run_dir, _unique(run.get("artifacts") or []))
            existing = self.runs.find_one({"toylab_sync.origin": origin}, {"_id": 1, "toylab_sync": 1})
            complete = existing is not None and existing["toylab_sync"].get("complete")
            recorded = existing["toylab_sync"].get("files") if complete else None
            if complete and recorded in (None, files):  # None: uploaded before sync recorded files
                report.already += 1
                continue
            report.current = run_dir
            try:
                if complete:
                    self.update(run_dir, run, existing, files)
                    report.updated.append((run_dir, existing["_id"]))
                else:
                    report.uploaded.append((run_dir, self.upload(run_dir, run, origin, existing, files)))
            except (OSError, ValueError) as error:  # half-written or gone: a later sync reads it again
                report.skipped.append((run_dir, f"unreadable: {error}"))
            report.current = None
        return report

    # ------------------------------------------------------------------ one run
    def upload(self, run_dir: Path, run: dict, origin: str, existing: Optional[dict] = None,
               files: Optional[list] = None) -> int:
        metrics = _read_json(run_dir / "metrics.json", {})  # every file read before the first write
        doc = self._run_document(run_dir, run, origin)
        if existing is not None:  # an interrupted sync of this run: start it over
            doc["_id"] = existing["_id"]
            self._remove_parts(doc["_id"])
            self.runs.replace_one({"_id": doc["_id"]}, doc)
        else:
            doc["_id"] = self._replaced_fallback_id(run)
            if doc["_id"] is not None:
                self._remove_parts(doc["_id"])
                self.runs.replace_one({"_id": doc["_id"]}, doc)
            else:
                self._insert_with_next_id(doc)
        run_id = doc["_id"]
        metric_refs = self._upload_metrics(run_id, metrics)
        artifacts = self._upload_artifacts(run_id, run_dir, run.get("artifacts") or [])
        self.runs.update_one({"_id": run_id}, {"$set": {
            "artifacts": artifacts, "info.metrics": metric_refs, "toylab_sync.complete": True,
            "toylab_sync.files": files if files is not None else file_state(run_dir),
            "toylab_sync.metrics": _point_counts(metrics)}})
        return run_id

    UPDATED_FIELDS = ("command", "host", "start_time", "config", "meta", "status", "resources", "captured_out",
                      "heartbeat", "result", "stop_time", "fail_trace")

    def update(self, run_dir: Path, run: dict, existing: dict, files: list) -> None:
        """Bring a run uploaded before up to date in place: the new metric points appended,
        new or rewritten artifacts uploaded, the run document's fields set. Marked incomplete
        while it happens, so an update cut off half-way is redone whole by the next sync."""
        run_id, recorded = existing["_id"], existing["toylab_sync"]
        metrics = _read_json(run_dir / "metrics.json", {})  # every file read before the first write
        fresh = self._run_document(run_dir, run, recorded["origin"], sources=False)
        stored = self.runs.find_one({"_id": run_id}, {"artifacts": 1, "info.metrics": 1}) or {}
        self.runs.update_one({"_id": run_id}, {"$set": {"toylab_sync.complete": False}})
        counts = dict(recorded.get("metrics") or [])
        refs = {ref["name"]: ref for ref in (stored.get("info") or {}).get("metrics") or []}
        for name, series in metrics.items():
            steps, n = series.get("steps", []), counts.get(name)
            if n is None or name not in refs or n > len(steps):  # a new metric (or one rewritten shorter)
                metric_documents.delete_metrics(self.db, run_id, name)
                refs[name] = {"name": name, "id": str(self._upload_series(run_id, name, series))}
            elif n < len(steps):
                metric_documents.append_series(
                    self.db, run_id, name, n, steps[n:], series.get("values", [])[n:],
                    [_time(t) for t in series.get("timestamps", [])[n:]], size=self.MAX_POINTS_PER_DOCUMENT)
        artifacts, replaced = self._update_artifacts(run_id, run_dir, run.get("artifacts") or [],
                                                     stored.get("artifacts") or [], recorded.get("files") or [], files)
        for file_id in replaced:  # before the run is complete again: a cut-off here is redone whole
            self.fs.delete(file_id)
        fields = {key: fresh[key] for key in self.UPDATED_FIELDS if key in fresh}
        fields.update({"info": {**fresh["info"], "metrics": list(refs.values())}, "artifacts": artifacts,
                       "toylab_sync.complete": True, "toylab_sync.files": files,
                       "toylab_sync.metrics": _point_counts(metrics)})
        self.runs.update_one({"_id": run_id}, {"$set": fields})

    def _run_document(self, run_dir: Path, run: dict, origin: str, sources: bool = True) -> dict:
        experiment = dict(run.get("experiment") or {})
        info = _read_json(run_dir / "info.json", {})
        info.pop("metrics", None)  # rebuilt from the uploaded metric documents
        cout = run_dir / "cout.txt"
        doc = {
            "experiment": experiment, "format": "MongoObserver-0.7.0", "command": run.get("command"),
            "host": run.get("host") or {}, "start_time": _time(run.get("start_time")),
            "config": _read_json(run_dir / "config.json", {}), "meta": run.get("meta") or {},
            "status": run.get("status"), "resources": run.get("resources") or [], "artifacts": [],
            "captured_out": cout.read_text(encoding="utf-8", errors="replace") if cout.is_file() else "",
            "info": info, "heartbeat": _time(run.get("heartbeat")), "result": run.get("result"),
            "toylab_sync": {"origin": origin, "file_run_id": run_dir.name, "complete": False},
        }
        for key in ("stop_time", "fail_trace"):
            if key in run:
                doc[key] = _time(run[key])
        if sources:  # after every read: GridFS is written only once the run's files were readable
            experiment["sources"] = self._upload_sources(run_dir.parent, experiment.get("sources") or [])
        return doc

    def _replaced_fallback_id(self, run: dict):
        """The incomplete MongoDB run a fallback run completes, if it is still there."""
        fallback = (run.get("meta") or {}).get("toylab_fallback") or {}
        mongo_id = fallback.get("mongo_run_id")
        if mongo_id is None or fallback.get("db_name") not in (None, self.db.name):
            return None
        target = self.runs.find_one({"_id": mongo_id}, {"toylab_sync": 1})
        return mongo_id if target is not None and "toylab_sync" not in target else None

    def _insert_with_next_id(self, doc: dict) -> None:
        import pymongo
        import pymongo.errors

        while True:
            last = list(self.runs.find({}, {"_id": 1}).sort("_id", pymongo.DESCENDING).limit(1))
            doc["_id"] = last[0]["_id"] + 1 if last else 1
            try:
                self.runs.insert_one(doc)
                return
            except pymongo.errors.DuplicateKeyError:
                continue  # another writer took that id

    def _remove_parts(self, run_id) -> None:
        metric_documents.delete_metrics(self.db, run_id)  # metrics and metric_chunks
        doc = self.runs.find_one({"_id": run_id}, {"artifacts": 1, "toylab_sync": 1}) or {}
        for artifact in doc.get("artifacts") or []:
            self.fs.delete(artifact["file_id"])
        # the artifacts an interrupted sync began, down to the chunks of one cut off before its
        # fs.files document (GridFS writes that last: a full disk leaves chunks nothing refers to)
        begun = (doc.get("toylab_sync") or {}).get("gridfs_ids") or []
        if begun:
            self.db["fs.chunks"].delete_many({"files_id": {"$in": begun}})
            self.db["fs.files"].delete_many({"_id": {"$in": begun}})
        strays = {"$or": [{"metadata.toylab_run_id": run_id},  # put by an interrupted sync, not yet referenced
                          {"filename": {"$regex": f"^artifact://runs/{run_id}/"}}]}  # or by the live observer
        for stray in self.db["fs.files"].find(strays, {"_id": 1}):
            self.fs.delete(stray["_id"])

    def _upload_series(self, run_id, name: str, series: dict):
        return metric_documents.insert_series(
            self.db, run_id, name, series.get("steps", []), series.get("values", []),
            [_time(t) for t in series.get("timestamps", [])], size=self.MAX_POINTS_PER_DOCUMENT)

    def _upload_metrics(self, run_id, metrics: dict) -> list:
        return [{"name": name, "id": str(self._upload_series(run_id, name, series))} for name, series in metrics.items()]

    def _upload_artifacts(self, run_id, run_dir: Path, names: list) -> list:
        stored = []
        for name in _unique(names):
            artifact = self._put_artifact(run_id, run_dir, name)
            if artifact is not None:
                stored.append(artifact)
        return stored

    def _update_artifacts(self, run_id, run_dir: Path, names: list, stored: list, recorded: list, files: list):
        """(the run's artifacts now, the GridFS ids of the ones replaced): an artifact whose
        file is as recorded at the last upload is kept, a new or rewritten one uploaded."""
        old = {artifact["name"]: artifact for artifact in stored}
        before = {entry[0]: entry for entry in recorded}
        now = {entry[0]: entry for entry in files}
        artifacts, replaced = [], []
        for name in _unique(names):
            if name in old and name in now and before.get(name) == now[name]:
                artifacts.append(old[name])
                continue
            artifact = self._put_artifact(run_id, run_dir, name)
            if artifact is not None:
                artifacts.append(artifact)
            if name in old:
                replaced.append(old[name]["file_id"])
        return artifacts, replaced

    def _put_artifact(self, run_id, run_dir: Path, name: str) -> Optional[dict]:
        path = run_dir / name
        if not path.is_file():
            return None
        from bson import ObjectId

        file_id = ObjectId()  # noted in the run first, so a later sync can remove what a cut-off upload left
        self.runs.update_one({"_id": run_id}, {"$push": {"toylab_sync.gridfs_ids": file_id}})
        with open(path, "rb") as f:
            self.fs.put(f, _id=file_id, filename=f"artifact://runs/{run_id}/{name}",
                        metadata={"toylab_run_id": run_id}, content_type=mimetypes.guess_type(name)[0])
        return {"name": name, "file_id": file_id}

    def _upload_sources(self, root: Path, sources: list) -> list:
        """File storage keeps sources once per runs root under ``_sources``; MongoDB in GridFS."""
        stored = []
        for name, stored_path in sources:
            path = root / stored_path
            if not path.is_file():
                continue
            data = path.read_bytes()
            md5 = hashlib.md5(data).hexdigest()
            found = self.db["fs.files"].find_one({"filename": name, "md5": md5}, {"_id": 1})
            file_id = found["_id"] if found else self.fs.put(data, filename=name, md5=md5)
            stored.append([name, file_id])
        return stored


def _point_counts(metrics: dict) -> list:
    """``[name, number of points]`` of each metric: what an update appends after."""
    return [[name, len(series.get("steps", []))] for name, series in metrics.items()]


def connect(url: Optional[str] = None, db_name: Optional[str] = None):
    """The MongoDB database named by the environment (or the arguments)."""
    import pymongo

    import observers

    settings = observers.mongo_settings()
    url = url or (settings and settings[0])
    if not url:
        raise SystemExit("sync: set TOYLAB_MONGO_URL to the MongoDB to upload to (e.g. the one 'make board' prints)")
    db_name = db_name or (settings[1] if settings else "sacred")
    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
    return client, client[db_name]


def sync(dirs: Iterable[os.PathLike] = (), url: Optional[str] = None, db_name: Optional[str] = None,
         report: Optional[SyncReport] = None) -> SyncReport:
    """Upload every run under the default roots and ``dirs`` that MongoDB does not have yet
    (into ``report``, which keeps what was done when the sync stops half-way)."""
    client, db = connect(url, db_name)
    try:
        return Uploader(db).sync(run_dirs([*default_roots(), *map(Path, dirs)]), report)
    finally:
        client.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m observers sync", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="*", help="more file-storage directories (or run directories) to upload")
    args = parser.parse_args(argv)
    missing = [d for d in args.dirs if not Path(d).is_dir()]
    if missing:  # before connecting: nothing to upload from there, nothing written
        print(f"sync: no runs directory at {', '.join(missing)}: give file-storage directories (such as runs, "
              "runs/fallback) or run directories", file=sys.stderr)
        return 2
    import pymongo.errors

    from observers.mongo import disk_full

    report = SyncReport()
    try:
        sync(args.dirs, report=report)
    except pymongo.errors.PyMongoError as error:
        done = f"{len(report.uploaded)} uploaded before; " if report.uploaded else ""
        if report.current is not None:
            done += f"{report.current} was not uploaded completely (the next sync uploads it again, once); "
        if disk_full(error):
            # the server's own words ("database or disk is full"): no URL, no credentials in them
            reason = error.details.get("errmsg") if isinstance(error.details, dict) else None
            print(f"sync: MongoDB's disk is full ({reason or error.code}); {done}nothing lost: free space on the "
                  "server, then run sync again", file=sys.stderr)
        else:
            print(f"sync: MongoDB not reachable or refused the upload ({type(error).__name__}); {done}nothing lost, "
                  "run sync again when it is back", file=sys.stderr)
        return 1
    for run_dir, reason in report.skipped:
        print(f"sync: skipped {run_dir}: {reason}", file=sys.stderr)
    print(report.summary())
    return 0
