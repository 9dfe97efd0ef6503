"""Fault injection for the observer tests: MongoDB backends that fail on command.

``MongomockBackend``: an in-process mongomock database whose collection methods (and
so GridFS, which goes through them) raise a pymongo connection error while the backend
is down. Two ways down: ``"refuse"`` (the write never happens, like a refused
connection) and ``"lost_reply"`` (the write is applied, then the reply is lost, like a
connection that dropped after the server acted: a retry must not apply it twice).

``ServerBackend``: a real server at ``TOYLAB_TEST_MONGO_URL`` reached through a TCP proxy
that the test cuts and restores: ``"refuse"`` closes every connection and refuses new
ones; ``"lost_reply"`` forwards requests to the server but drops its replies.

Both expose ``observer(**kwargs)`` (a ResilientMongoObserver on that backend), ``down``,
``up``, ``injected`` (failures actually caused) and ``db`` (direct access for checks,
to be used while up).
"""
from __future__ import annotations

import os
import socket
import threading
import uuid
from urllib.parse import urlsplit, urlunsplit

import pymongo.errors

from observers.mongo import ResilientMongoObserver

_COLLECTION_METHODS = ("insert_one", "insert_many", "update_one", "update_many", "replace_one", "find_one",
                       "find", "delete_one", "delete_many", "count_documents", "aggregate", "create_index",
                       "list_indexes", "index_information", "find_one_and_update", "distinct")


class MongomockBackend:
    name = "mongomock"

    def __init__(self, monkeypatch, fallback):
        import mongomock
        import mongomock.gridfs

        mongomock.gridfs.enable_gridfs_integration()
        self.client = mongomock.MongoClient()
        self.db_name = "sacred"
        self.db = self.client[self.db_name]
        self.fallback = fallback
        self.mode = None
        self.injected = 0
        self.error_message = "injected: connection refused"
        backend = self

        def failing(original, name):
            def method(*args, **kwargs):
                if backend.mode == "refuse":
                    backend.injected += 1
                    raise pymongo.errors.AutoReconnect(f"{backend.error_message} ({name})")
                result = original(*args, **kwargs)
                if backend.mode == "lost_reply" and name not in ("find", "find_one", "count_documents"):
                    backend.injected += 1
                    raise pymongo.errors.AutoReconnect(f"injected: reply lost after {name}")
                return result
            return method

        for name in _COLLECTION_METHODS:
            original = getattr(mongomock.collection.Collection, name, None)
            if original is not None:
                monkeypatch.setattr(mongomock.collection.Collection, name, failing(original, name))
        monkeypatch.setattr(mongomock.database.Database, "command",
                            failing(mongomock.database.Database.command, "command"))

    def observer(self, **kwargs) -> ResilientMongoObserver:
        kwargs.setdefault("end_timeout", 1.0)
        return ResilientMongoObserver(db_name=self.db_name, client=self.client, fallback=self.fallback, **kwargs)

    def down(self, mode: str = "refuse") -> None:
        self.mode = mode

    def up(self) -> None:
        self.mode = None

    def close(self) -> None:
        self.up()


class _Proxy:
    """A TCP proxy to (host, port) that can refuse connections or drop the server's replies."""

    def __init__(self, host: str, port: int):
        self.upstream = (host, port)
        self.mode = None
        self.injected = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: set = set()
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.mode == "refuse":
                self.injected += 1
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                self.sockets.update((client, server))
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source, target, is_reply):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if is_reply and self.mode == "lost_reply":
                    self.injected += 1
                    break  # the server acted on the request; the client never hears back
                target.sendall(data)
        except OSError:
            pass
        for s in (source, target):
            self._close(s)

    def _close(self, s):
        with self.lock:
            self.sockets.discard(s)
        try:
            s.close()
        except OSError:
            pass

    def cut(self):
        with self.lock:
            sockets = list(self.sockets)
        self.injected += len(sockets) // 2  # open connections cut under the client's feet
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._close(s)

    def close(self):
        self.closed = True
        self.listener.close()
        self.cut()


class ServerBackend:
    name = "server"

    def __init__(self, url: str, fallback):
        parts = urlsplit(url)
        self.proxy = _Proxy(parts.hostname, parts.port or 27017)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (userinfo + "@" if userinfo else "") + f"127.0.0.1:{self.proxy.port}"
        self.url = urlunsplit(parts._replace(netloc=netloc))
        if "directConnection" not in self.url:
            self.url += ("&" if parts.query else ("?" if parts.path else "/?")) + "directConnection=true"
        self.db_name = f"toylab_test_{uuid.uuid4().hex[:8]}"
        self.client = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
        self.db = self.client[self.db_name]
        self.fallback = fallback

    @property
    def injected(self):
        return self.proxy.injected

    def observer(self, **kwargs) -> ResilientMongoObserver:
        kwargs.setdefault("end_timeout", 1.0)
        kwargs.setdefault("timeout_ms", 500)
        return ResilientMongoObserver(url=self.url, db_name=self.db_name, fallback=self.fallback, **kwargs)

    def down(self, mode: str = "refuse") -> None:
        self.proxy.mode = mode
        if mode == "refuse":
            self.proxy.cut()

    def up(self) -> None:
        self.proxy.mode = None

    def close(self) -> None:
        self.up()
        try:
            self.client.drop_database(self.db_name)
        finally:
            self.client.close()
            self.proxy.close()


def server_url() -> str | None:
    return os.environ.get("TOYLAB_TEST_MONGO_URL")


def run_grokking(config_updates: dict, at_start, observer=None):
    """The real grokking experiment with ``at_start()`` run just after the run started (the
    fault injection) and ``observer`` attached in place of the default one when given."""
    from experiments.grokking import ex

    ex.pre_run_hooks.append(at_start)
    if observer is not None:
        ex.observers.append(observer)
    try:
        return ex.run(config_updates=config_updates, options={"--beat-interval": 0.1})
    finally:
        ex.pre_run_hooks.remove(at_start)
        if observer is not None:
            ex.observers.remove(observer)
