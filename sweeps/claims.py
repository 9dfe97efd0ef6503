"""Where a sweep's runs are recorded and how a point is claimed, exactly once.

A point runs only under a claim: an fcntl lock on a file per point in
``<runs dir>/.sweep_claims/`` (released by the kernel when its process dies), or a document
in MongoDB's ``sweep_claims`` collection (unique _id, kept alive by a heartbeat; an expired
lease can be taken over). Under the claim a worker first looks for a COMPLETED run of the
point in this sweep and skips it when there is one.

A store travels to the workers inside Dask's task graph, so it carries only plain data: the
MongoDB client is made in the process that uses it (and never pickled), and the URL, which
may hold a password, is read from that process's environment.
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

CLAIM_LEASE = 60.0  # seconds a MongoDB claim survives without a heartbeat from its worker
CLAIM_HEARTBEAT = 10.0  # seconds between a claim's heartbeats


class FileStore:
    """Sacred file storage under ``root``; claims are fcntl locks on files in ``root/.sweep_claims``."""

    _held: set = set()  # POSIX locks belong to the process: threads of one worker must also exclude each other
    _held_lock = threading.Lock()

    def __init__(self, root: str):
        self.root = Path(root)

    def environment(self) -> dict:
        return {"TOYLAB_RUNS_DIR": str(self.root), "TOYLAB_MONGO_URL": None}

    def completed(self, sweep: str) -> dict:
        """point key -> run id of the COMPLETED runs of ``sweep``."""
        found = {}
        if not self.root.is_dir():
            return found
        for run_dir in self.root.iterdir():
            if not run_dir.name.isdigit():
                continue
            try:
                data = json.loads((run_dir / "run.json").read_text())
            except (OSError, ValueError):
                continue  # being written or broken: not a completed run
            meta = data.get("meta") or {}
            if data.get("status") == "COMPLETED" and meta.get("sweep") == sweep:
                found[meta.get("sweep_point")] = int(run_dir.name)
        return found

    @contextlib.contextmanager
    def claim(self, sweep: str, key: str):
        """Yields True while this process holds the point's claim, False when someone else does."""
        import fcntl

        directory = self.root / ".sweep_claims" / _safe(sweep)
        directory.mkdir(parents=True, exist_ok=True)
        name = str(directory / f"{key}.lock")
        with self._held_lock:
            if name in self._held:
                yield False
                return
            self._held.add(name)
        handle = open(name, "a+")
        try:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
            try:
                handle.seek(0)
                handle.truncate()
                handle.write(f"{os.uname().nodename} pid {os.getpid()} since {time.time():.0f}\n")
                handle.flush()
                yield True
            finally:
                fcntl.lockf(handle, fcntl.LOCK_UN)
        finally:
            handle.close()
            with self._held_lock:
                self._held.discard(name)

    def tag(self, run_id, sweep: str) -> None:
        """File storage has no tags beyond meta.sweep."""


class MongoStore:
    """MongoDB (TOYLAB_MONGO_URL of this process); claims are ``sweep_claims`` documents with a lease."""

    def __init__(self, db_name: str, url: Optional[str] = None):
        self.db_name = db_name
        self.url = url
        self._db = None

    def environment(self) -> dict:
        return {}

    def __getstate__(self):
        # a live MongoClient holds locks and sockets: Dask could not ship the store ('cannot
        # pickle _thread.lock'); each process connects on first use instead
        return {**self.__dict__, "_db": None}

    @property
    def db(self):
        if self._db is None:
            import pymongo

            url = self.url or os.environ.get("TOYLAB_MONGO_URL")
            if not url:
                raise RuntimeError("this worker has no TOYLAB_MONGO_URL: start it with the sweep's environment")
            self._db = pymongo.MongoClient(url, serverSelectionTimeoutMS=10000)[self.db_name]
        return self._db

    def completed(self, sweep: str) -> dict:
        cursor = self.db.runs.find({"meta.sweep": sweep, "status": "COMPLETED"}, {"meta.sweep_point": 1})
        return {doc["meta"].get("sweep_point"): doc["_id"] for doc in cursor}

    @contextlib.contextmanager
    def claim(self, sweep: str, key: str):
        import pymongo.errors

        claims = self.db.sweep_claims
        claim_id, owner = f"{sweep}/{key}", uuid.uuid4().hex
        now = time.time()
        try:
            claims.insert_one({"_id": claim_id, "owner": owner, "heartbeat": now})
        except pymongo.errors.DuplicateKeyError:
            # held: take it over only if its lease expired (its worker died), atomically
            taken = claims.find_one_and_update({"_id": claim_id, "heartbeat": {"$lt": now - CLAIM_LEASE}},
                                               {"$set": {"owner": owner, "heartbeat": now}})
            if taken is None:
                yield False
                return
        stop = threading.Event()

        def beat():
            while not stop.wait(CLAIM_HEARTBEAT):
                with contextlib.suppress(Exception):  # a missed beat only shortens the lease
                    claims.update_one({"_id": claim_id, "owner": owner}, {"$set": {"heartbeat": time.time()}})

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield True
        finally:
            stop.set()
            thread.join()
            claims.delete_one({"_id": claim_id, "owner": owner})

    def tag(self, run_id, sweep: str) -> None:
        """Omniboard's tag column shows the sweep."""
        with contextlib.suppress(Exception):  # the run is recorded either way; a tag is a convenience
            self.db.runs.update_one({"_id": run_id}, {"$addToSet": {"omniboard.tags": sweep}})


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def default_store():
    """Where this process records runs (observers.default_observer's choice)."""
    import observers

    mongo = observers.mongo_settings()
    return MongoStore(mongo[1]) if mongo else FileStore(str(observers.runs_dir().resolve()))
