"""A MongoDB observer that never loses a run.

Sacred's stock ``MongoObserver`` stops recording after one transient error and keeps at
best a run document without metrics when the server is down at the end. This observer
keeps every event of the run in memory, in order, and writes them to MongoDB whenever
it is reachable:

- **Start**: one ping with a short server-selection timeout (``TOYLAB_MONGO_TIMEOUT_MS``,
  default 2000). Unreachable: the whole run is recorded in Sacred file storage under
  ``TOYLAB_FALLBACK_DIR`` (default ``./runs/fallback``, or ``$TOYLAB_RUNS_DIR/fallback``)
  and one warning line names the directory.
- **During the run**: run-document fields, metric points, artifacts and the status are
  queued and flushed at every heartbeat. A failed write stays queued and is retried at
  the next flush; nothing is dropped. Every write is idempotent (metric pushes are
  guarded by the number of points already stored, artifacts carry an id chosen here,
  run fields are ``$set``), so a write whose reply was lost is never applied twice.
- **End**: the final flush is retried for at most ``TOYLAB_MONGO_END_TIMEOUT`` seconds
  (default 10). If MongoDB is still unreachable, the complete run (config, every metric
  point, artifacts, captured output, result, final status) is written to the fallback
  directory as a plain Sacred file-storage run. Its ``run.json`` ``meta.toylab_fallback``
  records the intended database and the MongoDB run id that was left incomplete, so
  ``python -m observers sync`` can upload it later.
- **Metric volume**: a MongoDB document holds at most 16 MiB (about 400k points of one
  metric). The first ``MAX_POINTS_PER_DOCUMENT`` points of a metric live in the usual
  ``metrics`` document (what Omniboard and Incense read); later points go, in chunks of
  the same size, to ``metric_chunks`` documents ``{run_id, name, chunk, steps, values,
  timestamps}`` (the format is observers/metric_documents.py's, which sync writes too).
  ``analysis.metrics_table`` joins them back, so the series is whole.

The URL may contain credentials: it is read from the environment, never stored, and
redacted from every message this module prints.
"""
from __future__ import annotations

import copy
import mimetypes
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

from sacred.observers.base import RunObserver
from sacred.observers.file_storage import FileStorageObserver
from sacred.serializer import flatten

import observers
from observers import metric_documents

DEFAULT_TIMEOUT_MS = 2000
DEFAULT_END_TIMEOUT = 10.0


def redact(text: str, url: Optional[str]) -> str:
    """``text`` without the credentials of ``url`` (user, password, the whole userinfo)."""
    text = str(text)
    match = re.match(r"^mongodb(?:\+srv)?://([^@/]*)@", url or "")
    if match:
        userinfo = match.group(1)
        secrets = [userinfo] + [part for part in re.split(r"[:]", userinfo) if len(part) >= 3]
        for secret in sorted(secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
    return re.sub(r"(mongodb(?:\+srv)?://)[^@/\s]*@", r"\1***@", text)


def disk_full(error: BaseException) -> bool:
    """Whether MongoDB refused a write because its disk is full: the local server (SQLite)
    answers ``database or disk is full``; MongoDB's own code for it is 14031 (OutOfDiskSpace)."""
    import pymongo.errors

    if not isinstance(error, pymongo.errors.OperationFailure):
        return False
    return error.code == 14031 or bool(re.search(r"disk is full|no space left|out of disk space", str(error), re.I))


class _Metric:
    """All points of one metric, and how many of them MongoDB holds, per chunk."""

    def __init__(self, name: str):
        self.name = name
        self.steps: list = []
        self.values: list = []
        self.timestamps: list = []
        self.chunk_ids: list = []  # ObjectId of chunk k's document
        self.stored: list = []  # points stored in chunk k's document (None: document not created yet)


class ResilientMongoObserver(RunObserver):
    """Records a run in MongoDB without ever dropping an event; see the module docstring.

    Args:
        url: MongoDB URL (may hold credentials; never stored). Ignored when ``client`` is given.
        db_name: database name.
        client: an existing (pymongo or mongomock) client, for tests.
        fallback: directory for file-storage fallback runs (default ``fallback_dir()``).
        timeout_ms: server-selection / connect timeout of every operation.
        end_timeout: seconds the end of the run may wait for MongoDB before falling back.
    """

    MAX_POINTS_PER_DOCUMENT = metric_documents.MAX_POINTS_PER_DOCUMENT  # a class attribute: tests lower it
    priority = 20

    def __init__(self, url: Optional[str] = None, db_name: str = "sacred", client=None,
                 fallback: Optional[os.PathLike] = None, timeout_ms: Optional[int] = None,
                 end_timeout: Optional[float] = None):
        self.url = url
        self.db_name = db_name
        self.timeout_ms = int(timeout_ms or os.environ.get("TOYLAB_MONGO_TIMEOUT_MS") or DEFAULT_TIMEOUT_MS)
        self.end_timeout = float(end_timeout if end_timeout is not None
                                 else os.environ.get("TOYLAB_MONGO_END_TIMEOUT") or DEFAULT_END_TIMEOUT)
        self.fallback_root = Path(fallback) if fallback is not None else observers.fallback_dir()
        # seconds to wait for MongoDB at the start before recording in the fallback (0: one try)
        self.start_patience = float(os.environ.get("TOYLAB_MONGO_START_PATIENCE") or 0)
        self._client = client
        self.run_id = None  # the run's id in MongoDB (None when it never got one)
        self.fallback_run_dir: Optional[Path] = None  # set when the run went to file storage
        self.last_error: Optional[str] = None
        self.server_full = False  # MongoDB's last answer: its disk is full (no point waiting for it at the end)
        self.waiting_to_end = False  # True during the bounded wait for MongoDB at the end of the run
        self.stop_waiting = False  # set by the SIGTERM handler: end that wait at the next check
        self._file: Optional[FileStorageObserver] = None  # the fallback, once in use
        self._state_lock = threading.Lock()  # guards the queues (held briefly)
        self._flush_lock = threading.Lock()  # one flush at a time (held during network calls)

    # ------------------------------------------------------------------ connection
    def _connect(self):
        if self._client is None:
            import pymongo

            self._client = pymongo.MongoClient(self.url, serverSelectionTimeoutMS=self.timeout_ms,
                                               connectTimeoutMS=self.timeout_ms,
                                               socketTimeoutMS=max(5000, 2 * self.timeout_ms),
                                               retryWrites=False)
        import gridfs

        db = self._client[self.db_name]
        self.db = db
        self.runs = db["runs"]
        self.fs = gridfs.GridFS(db)

    def _warn(self, message: str) -> None:
        print(f"WARNING toylab observer: {redact(message, self.url)}", file=sys.stderr, flush=True)

    @staticmethod
    def _transient_errors():
        import pymongo.errors

        return (pymongo.errors.ConnectionFailure, pymongo.errors.ServerSelectionTimeoutError,
                pymongo.errors.NetworkTimeout, pymongo.errors.AutoReconnect, pymongo.errors.ExecutionTimeout,
                pymongo.errors.WTimeoutError, OSError)

    # ---------------------------------------------------------------------- events
    def started_event(self, ex_info, command, host_info, start_time, config, meta_info, _id):
        self._start = dict(ex_info=copy.deepcopy(ex_info), command=command, host_info=dict(host_info),
                           start_time=start_time, config=copy.deepcopy(config), meta_info=copy.deepcopy(meta_info))
        self._metrics: dict[str, _Metric] = {}
        self._artifacts: dict[str, dict] = {}  # name -> {file_id, data, metadata, content_type}
        self._resources: list = []
        self._queue: list = []  # pending run-document operations, in order
        self._last_beat = dict(info={}, captured_out="", beat_time=None, result=None)
        self._final: Optional[tuple] = None
        try:
            self._connect()
            deadline = time.monotonic() + self.start_patience
            while True:  # a sweep waits out a short outage rather than start its runs in the fallback
                try:
                    self.db.command("ping")
                    break
                except self._transient_errors():
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(1.0)
            entry = self._run_entry(_id)
            self._insert(entry)
            self.run_id = entry["_id"]
            return self.run_id
        except Exception as error:  # noqa: BLE001 - any failure here means: record locally
            self.last_error = f"{type(error).__name__}: {error}"
            what = "disk full at start" if disk_full(error) else "unreachable at start"
            self._file = observers.AtomicFileStorageObserver(str(self.fallback_root))
            run_id = self._file.started_event(ex_info, command, host_info, start_time, config,
                                              self._fallback_meta(meta_info, what), None)
            self.fallback_run_dir = Path(self._file.dir)
            self._warn(f"MongoDB {what} ({self.last_error}); recording run in fallback file "
                       f"storage {self.fallback_run_dir} (upload later with: python -m observers sync)")
            return run_id

    def _run_entry(self, _id) -> dict:
        s = self._start
        experiment = dict(s["ex_info"])
        experiment["sources"] = self._save_sources(experiment)
        return {"_id": _id, "experiment": experiment, "format": "MongoObserver-0.7.0", "command": s["command"],
                "host": s["host_info"], "start_time": s["start_time"], "config": flatten(s["config"]),
                "meta": s["meta_info"], "status": "RUNNING", "resources": [], "artifacts": [],
                "captured_out": "", "info": {}, "heartbeat": None}

    def _save_sources(self, ex_info) -> list:
        sources = []
        for source_name, md5 in ex_info["sources"]:
            path = os.path.join(ex_info["base_dir"], source_name)
            found = self.fs.find_one({"filename": path, "md5": md5})
            if found is not None:
                sources.append([source_name, found._id])
            else:
                with open(path, "rb") as f:
                    sources.append([source_name, self.fs.put(f, filename=path, md5=md5)])
        return sources

    def _insert(self, entry: dict) -> None:
        import pymongo.errors

        automatic = entry["_id"] is None
        while True:
            if automatic:
                last = list(self.runs.find({}, {"_id": 1}).sort("_id", -1).limit(1))
                entry["_id"] = last[0]["_id"] + 1 if last else 1
            try:
                self.runs.insert_one(entry)
                return
            except pymongo.errors.DuplicateKeyError:
                if not automatic:
                    raise

    @property
    def storage_full(self):
        """The fallback file storage's StorageFull, when its disk is full too (observers.attach stops the run)."""
        return getattr(self._file, "storage_full", None)

    def heartbeat_event(self, info, captured_out, beat_time, result):
        if self._file is not None:
            return self._file.heartbeat_event(info, captured_out, beat_time, result)
        with self._state_lock:
            self._last_beat = dict(info=copy.deepcopy(info), captured_out=captured_out, beat_time=beat_time,
                                   result=copy.deepcopy(result))
            fields = {"info": flatten(info), "captured_out": captured_out, "heartbeat": beat_time}
            if self._final is None:  # a late last beat (slow network) must not undo the final result
                fields["result"] = flatten(result)
            self._queue.append(("set", fields))
        self._flush()

    def log_metrics(self, metrics_by_name, info):
        if self._file is not None:
            return self._file.log_metrics(metrics_by_name, info)
        with self._state_lock:
            for name, points in metrics_by_name.items():
                metric = self._metrics.get(name)
                if metric is None:
                    metric = self._metrics[name] = _Metric(name)
                metric.steps.extend(points["steps"])
                metric.values.extend(points["values"])
                metric.timestamps.extend(points["timestamps"])
        # written by the heartbeat that follows (Sacred calls heartbeat_event right after)

    def artifact_event(self, name, filename, metadata=None, content_type=None):
        if self._file is not None:
            return self._file.artifact_event(name, filename, metadata, content_type)
        from bson import ObjectId

        data = Path(filename).read_bytes()  # the file may be temporary: keep its bytes
        content_type = content_type or mimetypes.guess_type(str(filename))[0]
        with self._state_lock:
            old = self._artifacts.get(name)  # the same name again (a checkpoint): replace it
            self._artifacts[name] = dict(file_id=ObjectId(), data=data, metadata=metadata,
                                         content_type=content_type, stored=False, tried=False,
                                         replaces=old["file_id"] if old and old["stored"] else None)
            self._queue.append(("artifact", name))
        self._flush(wait=False)

    def resource_event(self, filename):
        if self._file is not None:
            return self._file.resource_event(filename)
        from sacred.dependencies import get_digest

        with self._state_lock:
            self._resources.append([str(filename), get_digest(filename)])
            self._queue.append(("set", {"resources": list(self._resources)}))

    def completed_event(self, stop_time, result):
        self._end(("completed_event", dict(stop_time=stop_time, result=result)),
                  {"stop_time": stop_time, "result": flatten(result), "status": "COMPLETED"})

    def interrupted_event(self, interrupt_time, status):
        self._end(("interrupted_event", dict(interrupt_time=interrupt_time, status=status)),
                  {"stop_time": interrupt_time, "status": status})

    def failed_event(self, fail_time, fail_trace):
        self._end(("failed_event", dict(fail_time=fail_time, fail_trace=fail_trace)),
                  {"stop_time": fail_time, "status": "FAILED", "fail_trace": fail_trace})

    # ------------------------------------------------------------------- flushing
    def _end(self, final: tuple, fields: dict) -> None:
        if self._file is not None:
            getattr(self._file, final[0])(**final[1])
            return
        with self._state_lock:
            self._final = final
            self._queue.append(("set", fields))
        started = time.monotonic()
        deadline = started + self.end_timeout
        self.waiting_to_end = True  # observers.attach's SIGTERM handler interrupts this wait
        try:
            if not self._flush() and not self.server_full:  # a full disk does not empty itself in seconds
                self._warn(f"MongoDB not reachable at the end of the run; waiting up to {self.end_timeout:g} s "
                           "(Ctrl-C or SIGTERM stops waiting and keeps the run in fallback file storage)")
                while not self.stop_waiting and not self._flush() and time.monotonic() < deadline:
                    time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        except KeyboardInterrupt:  # Ctrl-C while waiting: stop waiting, keep the run (SIGTERM sets stop_waiting)
            pass
        finally:
            self.waiting_to_end = False
        if self.pending():
            self._write_fallback(waited=time.monotonic() - started)

    def pending(self) -> int:
        """Events not yet in MongoDB (queued operations + unstored metric points)."""
        with self._state_lock:
            points = sum(len(m.steps) - sum(s or 0 for s in m.stored) for m in self._metrics.values())
            return len(self._queue) + points

    def _flush(self, wait: bool = True) -> bool:
        """Write everything pending, in order; True when nothing is left. Never raises."""
        if not self._flush_lock.acquire(blocking=wait):
            return False
        try:
            self._write_metrics()  # metric points first: a final status is never ahead of them
            while True:
                with self._state_lock:
                    if not self._queue:
                        self.server_full = False
                        return True
                    operation = self._queue[0]
                    if operation[0] == "set":  # merge consecutive $sets: only the latest values matter
                        fields = {}
                        count = 0
                        for op in self._queue:
                            if op[0] != "set":
                                break
                            fields.update(op[1])
                            count += 1
                        operation = ("set", fields)
                    else:
                        count = 1
                self._apply(operation)
                with self._state_lock:
                    del self._queue[:count]
        except self._transient_errors() + (_Retry,) as error:
            if self.last_error is None:
                self._warn(f"MongoDB write failed ({type(error).__name__}: {error}); keeping the run's events "
                           "in memory and retrying at the next heartbeat")
            self.last_error = f"{type(error).__name__}: {error}"
            self.server_full = False
            return False
        except Exception as error:  # noqa: BLE001 - e.g. an unencodable info: never kill the run
            message = f"{type(error).__name__}: {error}"
            if message != self.last_error:
                if disk_full(error):
                    self._warn(f"MongoDB's disk is full ({message}); keeping the run's events in memory: unless "
                               "space is freed, the complete run goes to fallback file storage at its end")
                else:
                    self._warn(f"MongoDB write refused ({message}); the run will be kept in fallback file storage")
            self.last_error = message
            self.server_full = disk_full(error)
            return False
        finally:
            self._flush_lock.release()

    def _apply(self, operation: tuple) -> None:
        kind = operation[0]
        if kind == "set":
            fields = dict(operation[1])
            if "info" in fields:  # the metric index Omniboard reads (info.metrics)
                fields["info"] = dict(fields["info"] or {}, metrics=self._metric_index())
            self.runs.update_one({"_id": self.run_id}, {"$set": fields})
        elif kind == "artifact":
            name = operation[1]
            artifact = self._artifacts[name]
            if not self.fs.exists(artifact["file_id"]):
                if artifact["tried"]:
                    # GridFS writes the chunks before the fs.files document: an earlier put
                    # whose reply was lost can leave chunks under this id, and a second put
                    # of them is refused (FileExists). Remove them and write the file whole.
                    self.fs.delete(artifact["file_id"])
                artifact["tried"] = True
                self.fs.put(artifact["data"], _id=artifact["file_id"],
                            filename=f"artifact://runs/{self.run_id}/{name}", metadata=artifact["metadata"],
                            content_type=artifact["content_type"])
            artifact["stored"] = True
            stored = [{"name": n, "file_id": a["file_id"]} for n, a in self._artifacts.items() if a["stored"]]
            self.runs.update_one({"_id": self.run_id}, {"$set": {"artifacts": stored}})
            replaced = artifact.pop("replaces", None)
            if replaced is not None:
                self.fs.delete(replaced)

    def _metric_index(self) -> list:
        with self._state_lock:
            return [{"name": m.name, "id": str(m.chunk_ids[0])} for m in self._metrics.values()
                    if m.stored and m.stored[0] is not None]

    def _write_metrics(self) -> None:
        from bson import ObjectId

        size = self.MAX_POINTS_PER_DOCUMENT
        with self._state_lock:
            work = [(m, len(m.steps)) for m in self._metrics.values()]
        for metric, available in work:
            spans = metric_documents.chunk_spans(available, size)
            while len(metric.chunk_ids) < len(spans):
                metric.chunk_ids.append(ObjectId())
                metric.stored.append(None)
            for k, (begin, end) in enumerate(spans):
                collection = self.db[metric_documents.collection_name(k)]
                if metric.stored[k] is None:
                    self._create_metric_document(collection, metric, k)
                stored = metric.stored[k]
                if begin + stored >= end:
                    continue
                window = slice(begin + stored, end)
                result = collection.update_one(
                    {"_id": metric.chunk_ids[k], "steps": {"$size": stored}},
                    {"$push": {"steps": {"$each": metric.steps[window]}, "values": {"$each": metric.values[window]},
                               "timestamps": {"$each": metric.timestamps[window]}}})
                if result.matched_count == 1:
                    metric.stored[k] = end - begin
                else:  # an earlier push was applied but its reply lost: count what is there
                    document = collection.find_one({"_id": metric.chunk_ids[k]}, {"steps": 1})
                    metric.stored[k] = len(document["steps"])
                    if begin + metric.stored[k] < end:
                        raise _Retry(f"metric {metric.name} chunk {k}: recounted, pushing the rest next")

    def _create_metric_document(self, collection, metric: _Metric, k: int) -> None:
        import pymongo.errors

        document = metric_documents.metric_document(self.run_id, metric.name, k, _id=metric.chunk_ids[k])
        try:
            collection.insert_one(document)
        except pymongo.errors.DuplicateKeyError:
            pass  # created by an insert whose reply was lost
        metric.stored[k] = 0

    # ------------------------------------------------------------------- fallback
    def _fallback_meta(self, meta_info, reason: str) -> dict:
        meta = copy.deepcopy(meta_info)
        meta["toylab_fallback"] = {"db_name": self.db_name, "mongo_run_id": self.run_id, "reason": reason,
                                   "error": redact(self.last_error or "", self.url)}
        return meta

    def _write_fallback(self, waited: float) -> None:
        """The complete run as a Sacred file-storage run dir under the fallback root."""
        s = self._start
        if self.server_full:
            reason = "MongoDB's disk is full at the end of the run"
        else:
            reason = f"MongoDB unreachable at the end of the run (waited {waited:.1f} s)"
        observer = observers.AtomicFileStorageObserver(str(self.fallback_root))
        # from here on the run is this file-storage run: if its disk is full too (StorageFull),
        # Sacred's failed_event records FAILED there rather than starting a second fallback run
        self._file = observer
        observer.started_event(copy.deepcopy(s["ex_info"]), s["command"], s["host_info"], s["start_time"],
                               s["config"], self._fallback_meta(s["meta_info"], reason), None)
        self.fallback_run_dir = Path(observer.dir)
        with self._state_lock:
            metrics = {m.name: {"steps": list(m.steps), "values": list(m.values),
                                "timestamps": list(m.timestamps)} for m in self._metrics.values()}
            artifacts = {name: dict(a) for name, a in self._artifacts.items()}
            beat = dict(self._last_beat)
        if metrics:
            observer.log_metrics(metrics, {})
        with tempfile.TemporaryDirectory() as tmp:
            for name, artifact in artifacts.items():
                path = Path(tmp) / Path(name).name
                path.write_bytes(artifact["data"])
                observer.artifact_event(name, str(path), artifact["metadata"], artifact["content_type"])
        for filename, _ in self._resources:
            if os.path.exists(filename):
                observer.resource_event(filename)
        observer.heartbeat_event(beat["info"], beat["captured_out"], beat["beat_time"], beat["result"])
        getattr(observer, self._final[0])(**self._final[1])
        where = f"MongoDB run {self.run_id} is incomplete" if self.run_id is not None else "nothing in MongoDB"
        when = " once it has space" if self.server_full else ""
        self._warn(f"{reason}: the complete run is in fallback file storage {self.fallback_run_dir} ({where}; "
                   f"upload with: python -m observers sync{when}); last error: {self.last_error}")

    def describe(self) -> str:
        if self.fallback_run_dir is not None:
            why = "MongoDB's disk is full" if self.server_full else "MongoDB unreachable"
            return f"fallback file storage {self.fallback_run_dir} ({why})"
        return f"MongoDB database {self.db_name}, run {self.run_id}"


class _Retry(Exception):
    """A recount showed points still missing; the next flush pushes them."""
