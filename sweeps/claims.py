"""Where a sweep's runs are recorded and how a point is claimed, exactly once.

A point runs only under a claim: an fcntl lock on a file per point in
``<runs dir>/.sweep_claims/`` (released by the kernel when its process dies), or a document
in MongoDB's ``sweep_claims`` collection (unique _id, kept alive by a heartbeat; an expired
lease can be taken over). Under the claim a worker first looks for a COMPLETED run of the
point in this sweep and skips it when there is one (and the run's config has what the point's
named configs set now: ``counted``).

A store travels to the workers inside Dask's task graph, so it carries only plain data: the
MongoDB client is made in the process that uses it (and never pickled), and the URL, which
may hold a password, is read from that process's environment.

MongoDB outages. Every MongoDB call of the store is retried for up to
``TOYLAB_SWEEP_OUTAGE_PATIENCE`` seconds (300): a server that is restarted within that time
costs the sweep a pause, nothing else (the runs' own observer queues their events meanwhile).
A server that stays away longer: the worker claims points with file locks in the fallback
directory (``observers.fallback_dir()``), its runs are recorded there by the observer's own
fallback, and ``completed`` counts the fallback directory's runs too, so a re-run of the sweep
skips them before and after ``python -m observers sync`` uploads them.
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

CLAIM_LEASE = float(os.environ.get("TOYLAB_SWEEP_CLAIM_LEASE") or 60)  # s a claim survives without a heartbeat
CLAIM_HEARTBEAT = CLAIM_LEASE / 6  # seconds between a claim's heartbeats
OUTAGE_PATIENCE = float(os.environ.get("TOYLAB_SWEEP_OUTAGE_PATIENCE") or 300)  # s to wait for MongoDB
GIVEN_UP_RETRY = 10.0  # once the patience ran out, seconds before the next call tries MongoDB again


class StoreUnreachable(RuntimeError):
    """MongoDB did not answer within the outage patience."""


class FileStore:
    """Sacred file storage under ``root``; claims are fcntl locks on files in ``root/.sweep_claims``."""

    _held: set = set()  # POSIX locks belong to the process: threads of one worker must also exclude each other
    _held_lock = threading.Lock()

    def __init__(self, root: str):
        self.root = Path(root)

    def environment(self) -> dict:
        return {"TOYLAB_RUNS_DIR": str(self.root), "TOYLAB_MONGO_URL": None}

    def check(self) -> None:
        """Nothing to check before a sweep: the directory is made by the first run."""

    def wait_until_reachable(self) -> None:
        """File storage is always there."""

    def runs(self, sweep: str) -> list[tuple]:
        """(point key, run id, status) of every run of ``sweep`` recorded here."""
        found = []
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
            if meta.get("sweep") == sweep:
                found.append((meta.get("sweep_point"), int(run_dir.name), data.get("status")))
        return found

    def completed_runs(self, sweep: str) -> list[tuple]:
        """(point key, run id, recorded config) of every COMPLETED run of ``sweep``."""
        found = []
        for key, run, status in self.runs(sweep):
            if status == "COMPLETED":
                try:
                    config = json.loads((self.root / str(run) / "config.json").read_text())
                except (OSError, ValueError):
                    config = {}
                found.append((key, run, config))
        return found

    def completed(self, sweep: str, points=()) -> dict:
        return counted(self.completed_runs(sweep), points)[0]

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

    def drop_expired_claims(self, sweep: str) -> int:
        """A file claim is a lock the kernel releases with its process: none can expire."""
        return 0

    def tag(self, run_id, sweep: str) -> None:
        """File storage has no tags beyond meta.sweep."""


class MongoStore:
    """MongoDB (TOYLAB_MONGO_URL of this process); claims are ``sweep_claims`` documents with a
    lease; during an outage longer than the patience, the fallback directory (module docstring)."""

    def __init__(self, db_name: str, url: Optional[str] = None, patience: Optional[float] = None):
        self.db_name = db_name
        self.url = url
        self.patience = OUTAGE_PATIENCE if patience is None else patience
        self._db = None
        self._given_up = 0.0  # when the patience last ran out (0: it did not; see _patiently)

    def environment(self) -> dict:
        # a run that starts or ends during an outage waits as long as the sweep does before its
        # observer records it in the fallback directory (a user's own setting wins)
        return {name: os.environ.get(name) or str(self.patience)
                for name in ("TOYLAB_MONGO_END_TIMEOUT", "TOYLAB_MONGO_START_PATIENCE")}

    def __getstate__(self):
        # a live MongoClient holds locks and sockets: Dask could not ship the store ('cannot
        # pickle _thread.lock'); each process connects on first use instead
        return {**self.__dict__, "_db": None, "_given_up": 0.0}

    def _url(self) -> str:
        url = self.url or os.environ.get("TOYLAB_MONGO_URL")
        if not url:
            raise RuntimeError("this worker has no TOYLAB_MONGO_URL: start it with the sweep's environment")
        return url

    @property
    def db(self):
        if self._db is None:
            import pymongo

            # short timeouts: an outage is waited out by _patiently, one short attempt at a time
            self._db = pymongo.MongoClient(self._url(), serverSelectionTimeoutMS=2000, connectTimeoutMS=2000,
                                           socketTimeoutMS=10000, retryWrites=False)[self.db_name]
        return self._db

    @property
    def fallback(self) -> FileStore:
        """Where this process's runs go when MongoDB is away (the observer's fallback directory)."""
        import observers

        return FileStore(str(observers.fallback_dir().resolve()))

    def _patiently(self, operation, patience: Optional[float] = None):
        """``operation()``, retried through connection errors for up to the patience. Once the
        patience has run out, later calls try once (and not at all for GIVEN_UP_RETRY seconds)
        until one succeeds: a block of 16 points must not wait 16 patiences before its runs go
        to the fallback directory."""
        import pymongo.errors

        patience = self.patience if patience is None else patience
        if self._given_up and time.time() - self._given_up < GIVEN_UP_RETRY:
            raise StoreUnreachable(f"MongoDB database {self.db_name} unreachable (given up "
                                   f"{time.time() - self._given_up:.0f} s ago)")
        deadline = time.time() + (0 if self._given_up else patience)
        while True:
            try:
                result = operation()
                self._given_up = 0.0
                return result
            except (pymongo.errors.ConnectionFailure, pymongo.errors.OperationFailure) as error:
                if isinstance(error, pymongo.errors.OperationFailure) and not _is_transient(error):
                    raise
                if time.time() >= deadline:
                    self._given_up = time.time()
                    raise StoreUnreachable(f"MongoDB database {self.db_name} unreachable "
                                           f"({type(error).__name__})") from None
                time.sleep(1.0)

    def check(self) -> None:
        """Refuse to start a sweep on a MongoDB that cannot be used: one line, no traceback."""
        import pymongo.errors

        from observers.mongo import redact

        url = self._url()
        try:
            self.db.command("ping")
            self.db.sweep_claims.find_one({})  # authentication and authorisation, not only the ping
        except pymongo.errors.OperationFailure as error:
            raise SystemExit(f"TOYLAB_MONGO_URL: MongoDB refused access to database {self.db_name} "
                             f"({redact(str(error).splitlines()[0], url)}): check the user and password") from None
        except pymongo.errors.ConnectionFailure as error:
            raise SystemExit(f"TOYLAB_MONGO_URL: no MongoDB reachable at {redact(url, url)} "
                             f"({type(error).__name__}): start it, or unset TOYLAB_MONGO_URL to record to "
                             "file storage") from None

    def wait_until_reachable(self) -> None:
        """Wait (up to the patience) for MongoDB before a run starts, so that a short outage
        does not send the run to the fallback directory."""
        with contextlib.suppress(StoreUnreachable):
            self._patiently(lambda: self.db.command("ping"))

    def runs(self, sweep: str) -> list[tuple]:
        """(point key, run id, status) of every run of ``sweep``: in MongoDB, then in the fallback
        directory (runs recorded there during an outage, uploaded by sync or not)."""
        try:
            docs = self._patiently(lambda: list(self.db.runs.find({"meta.sweep": sweep},
                                                                  {"meta.sweep_point": 1, "status": 1})))
        except StoreUnreachable:
            docs = []
        return ([(doc["meta"].get("sweep_point"), doc["_id"], doc.get("status")) for doc in docs]
                + [(key, f"fallback {run}", status) for key, run, status in self.fallback.runs(sweep)])

    def completed_runs(self, sweep: str) -> list[tuple]:
        try:
            docs = self._patiently(lambda: list(self.db.runs.find({"meta.sweep": sweep, "status": "COMPLETED"},
                                                                  {"meta.sweep_point": 1, "config": 1})))
        except StoreUnreachable:
            docs = []
        return ([(doc["meta"].get("sweep_point"), doc["_id"], doc.get("config") or {}) for doc in docs]
                + [(key, f"fallback {run}", config) for key, run, config in self.fallback.completed_runs(sweep)])

    def completed(self, sweep: str, points=()) -> dict:
        return counted(self.completed_runs(sweep), points)[0]

    @contextlib.contextmanager
    def claim(self, sweep: str, key: str):
        import pymongo.errors

        claims = self.db.sweep_claims
        claim_id, owner = f"{sweep}/{key}", uuid.uuid4().hex

        def take() -> bool:
            now = time.time()
            try:
                claims.insert_one({"_id": claim_id, "sweep": sweep, "owner": owner, "heartbeat": now})
                return True
            except pymongo.errors.DuplicateKeyError:
                # held (or our own insert whose reply was lost): take it over only if its lease
                # expired (its worker died), atomically
                taken = claims.find_one_and_update({"_id": claim_id, "$or": [
                    {"owner": owner}, {"heartbeat": {"$lt": now - CLAIM_LEASE}}]},
                    {"$set": {"owner": owner, "heartbeat": now}})
                return taken is not None

        try:
            held = self._patiently(take)
        except StoreUnreachable:  # MongoDB stays away: claim where the runs now go
            with self.fallback.claim(sweep, key) as held:
                yield held
            return
        if not held:
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
            with contextlib.suppress(StoreUnreachable):  # else the lease expires on its own
                self._patiently(lambda: claims.delete_one({"_id": claim_id, "owner": owner}), CLAIM_LEASE)

    def drop_expired_claims(self, sweep: str) -> int:
        """Delete the claims of ``sweep`` whose lease ran out: left by a worker that died, or
        that could not release them while the server was away. How many there were."""
        def drop():
            return self.db.sweep_claims.delete_many({"sweep": sweep,
                                                     "heartbeat": {"$lt": time.time() - CLAIM_LEASE}}).deleted_count
        try:
            return self._patiently(drop, 30)
        except StoreUnreachable:
            return 0

    def tag(self, run_id, sweep: str) -> None:
        """Omniboard's tag column shows the sweep."""
        if not isinstance(run_id, int):
            return  # a fallback run: sync uploads it
        with contextlib.suppress(Exception):  # the run is recorded either way; a tag is a convenience
            self._patiently(lambda: self.db.runs.update_one({"_id": run_id},
                                                            {"$addToSet": {"omniboard.tags": sweep}}), 30)


def counted(completed_runs: list[tuple], points=()) -> tuple[dict, list]:
    """Which COMPLETED runs count for their points: ``{point key: run id}``, and the stale
    ones, ``[(point, run id, {key: (recorded, now)})]``: runs of one of ``points`` made under
    other values of what its named configs set (a named config edited since), which do not
    count, so the point runs again. Without ``points``, every COMPLETED run counts."""
    by_key = {point.key: point for point in points}
    done, stale = {}, []
    for key, run, config in completed_runs:
        point = by_key.get(key)
        differences = point.differences(config) if point is not None else {}
        if differences:
            stale.append((point, run, differences))
        else:
            done.setdefault(key, run)
    return done, [entry for entry in stale if entry[0].key not in done]


def completed_in_table(path, sweep: str) -> list[tuple]:
    """(point key, run label, recorded config) of the COMPLETED runs of ``sweep`` in a runs
    table ``toylab export`` wrote (``--done-in``: results committed from another session's
    store, docs/results), to be ``counted`` beside the store's own. The config is the row's
    config columns, dotted names nested again (lists the file holds as JSON text are read back
    as lists by ``analysis.runs_table``)."""
    from analysis.runs import runs_table

    path = Path(path)
    table = runs_table(str(path))
    if table.empty or "sweep_point" not in table:
        return []
    table = table[(table["sweep"] == sweep) & (table["status"] == "COMPLETED")]
    found = []
    for row in table.to_dict("records"):
        config: dict = {}
        for column in table.attrs["config_columns"]:
            value = row[column]
            node = config
            *parents, leaf = column.split(".")
            for name in parents:
                node = node.setdefault(name, {})
            node[leaf] = None if isinstance(value, float) and value != value else value  # NaN: None
        found.append((row["sweep_point"], f"{path.name} run {row['run']}", config))
    return found


def _is_transient(error) -> bool:
    """An OperationFailure that a restarting server gives (not a refusal such as bad credentials)."""
    return bool(getattr(error, "has_error_label", lambda label: False)("RetryableWriteError")) or \
        getattr(error, "code", None) in (91, 189, 10107, 11600, 11602, 13435, 13436)  # shutdown, not primary


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def default_store():
    """Where this process records runs (observers.default_observer's choice)."""
    import observers

    mongo = observers.mongo_settings()
    return MongoStore(mongo[1]) if mongo else FileStore(str(observers.runs_dir().resolve()))
