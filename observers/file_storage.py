"""Sacred's file storage, written so that no kill and no full disk leaves a broken record.

Every file of a run is written beside its target and renamed over it (JSON files, artifacts,
sources, resources; captured output is appended and cut back when the append fails), so a
SIGKILL mid-write or a full disk leaves each file as of its last complete write. A full disk
raises ``StorageFull``, which stops the run (see ``observers.attach``).
"""
from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Optional

from sacred.observers import FileStorageObserver


# Why a write failed when the disk (or the user's quota) is full.
_FULL_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e is not None)
_UMASK = os.umask(0o022)  # read once, at import (os.umask has no read-only form): new files get 0o666 & ~umask
os.umask(_UMASK)


def _is_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in _FULL_ERRNOS


class StorageFull(BaseException):
    """A run's file storage is full (ENOSPC, or EDQUOT: over quota): the run stops.

    Not an ``Exception``: Sacred guards every observer call with ``except Exception`` and then
    lets the run go on unrecorded (and record itself COMPLETED with whatever fitted). Not a
    KeyboardInterrupt either: the run ends FAILED, its trace naming the file that did not fit,
    and a sweep worker reports the point FAILED and goes on with the next one. The run's
    files stay as of their last complete write (every write goes to a temporary file first);
    ``report()`` is the one line the command prints, then it exits ``EXIT_CODE``."""

    EXIT_CODE = 74  # EX_IOERR of sysexits.h: an input/output error on a file

    def __init__(self, path, error: OSError, run_dir=None, recorded_status=None):
        self.path, self.run_dir = str(path), str(run_dir or path)
        self.reason = error.strerror or str(error)
        self.recorded_status = recorded_status  # the status in the run's run.json (None: no run.json)
        self.removed = False  # the run directory was removed: nothing of the run had been recorded
        super().__init__(f"disk full: could not write {self.path} ({self.reason})")

    def report(self) -> str:
        if self.removed or self.recorded_status is None:
            outcome = f"run stopped before it was recorded (nothing left in {self.run_dir})"
        elif self.recorded_status in ("FAILED", "INTERRUPTED"):
            outcome = (f"run stopped and recorded as {self.recorded_status} in file storage {self.run_dir}, "
                       "with what was written before the disk filled")
        else:
            outcome = (f"run stopped; its record in file storage {self.run_dir} is as of the last complete write "
                       f"(status still {self.recorded_status})")
        return f"{self}; {outcome}"


def _stops_when_full(event):
    """An observer event during the run: once the storage is full, it writes nothing more, and
    in the run's own thread it raises StorageFull (through Sacred's ``except Exception``). In
    Sacred's heartbeat thread it returns instead: raising there would only end that thread,
    with a traceback; the run's next metric (observers.attach) or artifact stops the run."""

    @functools.wraps(event)
    def guarded(self, *args, **kwargs):
        if self.storage_full is None:
            try:
                return event(self, *args, **kwargs)
            except StorageFull:
                pass
        if threading.get_ident() == self._run_thread:
            raise self.storage_full

    return guarded


class AtomicFileStorageObserver(FileStorageObserver):
    """Sacred's file storage, but no file of a run is ever left half-written.

    Every JSON file, artifact and stored source is written beside its place, then renamed
    over it: Sacred rewrites metrics.json whole at every heartbeat, and a run killed (SIGKILL,
    a pre-empted node) in the middle of that write lost every metric point. Captured output,
    appended to cout.txt, is cut back to its last complete append when an append fails.

    A full disk (ENOSPC, EDQUOT) stops the run with ``StorageFull`` instead of Sacred's
    warning and a run that goes on unrecorded: after the first failed write nothing big is
    attempted; only the final status (run.json, small, and the failed write's temporary
    file is gone by then) is still tried."""

    storage_full: Optional[StorageFull] = None  # set at the first write the disk refused
    _run_thread: Optional[int] = None  # the thread the run (its main function) runs in
    _recorded_status: Optional[str] = None  # the status in run.json as last written
    _recording = False  # the run's start was recorded

    # ----------------------------------------------------------------- writing
    def _full(self, path, error: OSError) -> StorageFull:
        if self.storage_full is None:
            self.storage_full = StorageFull(path, error, self.dir or self.basedir, self._recorded_status)
        return self.storage_full

    def _write_atomically(self, target, write, mode="w") -> None:
        """``write(f)`` into a temporary file beside ``target``, then renamed to ``target``."""
        directory, name = os.path.split(str(target))
        temporary = None
        try:
            handle, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=directory or ".")
            os.fchmod(handle, 0o666 & ~_UMASK)
            with os.fdopen(handle, mode) as f:
                write(f)
            os.replace(temporary, target)
        except BaseException as error:
            if temporary is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
            if _is_full(error):
                raise self._full(target, error) from None
            raise

    def _copy_atomically(self, source, target) -> None:
        with open(source, "rb") as src:
            self._write_atomically(target, lambda f: shutil.copyfileobj(src, f), mode="wb")

    def save_json(self, obj, filename):
        from sacred.serializer import flatten

        self._write_atomically(os.path.join(self.dir, filename),
                               lambda f: json.dump(flatten(obj), f, sort_keys=True, indent=2))
        if filename == "run.json":
            self._recorded_status = obj.get("status")
            if self.storage_full is not None:
                self.storage_full.recorded_status = self._recorded_status

    def save_file(self, filename, target_name=None):
        """An artifact: copied whole or not at all (a previous version of it stays)."""
        target_name = target_name or os.path.basename(filename)
        target = os.path.join(self.dir, target_name)
        if target in [os.path.join(self.dir, x) for x in ("run.json", "config.json", "cout.txt", "metrics.json")]:
            raise FileExistsError(f"You are trying to overwrite a file necessary for the FileStorageObserver: {target}")
        if os.path.exists(target) and os.path.samefile(filename, target):
            return
        self._copy_atomically(filename, target)

    def find_or_save(self, filename, store_dir: Path):
        """A source or resource, stored once per runs directory: whole or not at all (a
        truncated copy would be taken for the file by every later run with its md5)."""
        try:
            Path(filename).resolve().relative_to(Path(self.basedir).resolve())
            inside = True
        except ValueError:
            inside = False
        if inside and not self.copy_artifacts:
            return filename
        from sacred.dependencies import get_digest

        store_dir = Path(store_dir)
        try:
            store_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            if _is_full(error):
                raise self._full(store_dir, error) from None
            raise
        stem, ext = os.path.splitext(os.path.basename(filename))
        store_path = store_dir / f"{stem}_{get_digest(filename)}{ext}"
        if not store_path.exists():
            self._copy_atomically(filename, store_path)
        return store_path

    def save_cout(self):
        path = os.path.join(self.dir, "cout.txt")
        data = memoryview(self.cout[self.cout_write_cursor:].encode("utf-8"))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as error:
            if _is_full(error):
                raise self._full(path, error) from None
            raise
        try:
            size = os.fstat(fd).st_size
            try:
                while data:
                    data = data[os.write(fd, data):]
            except BaseException as error:
                os.ftruncate(fd, size)  # the output as of its last complete append, not half a line
                if _is_full(error):
                    raise self._full(path, error) from None
                raise
        finally:
            os.close(fd)
        self.cout_write_cursor = len(self.cout)

    def render_template(self):
        from sacred import optional as opt

        if opt.has_mako and self.template:
            from mako.template import Template

            report = Template(filename=self.template).render(run=self.run_entry, config=self.config, info=self.info,
                                                             cout=self.cout, savedir=self.dir)
            self._write_atomically(os.path.join(self.dir, "report" + Path(self.template).suffix),
                                   lambda f: f.write(report))

    def _make_run_dir(self, _id):
        try:
            super()._make_run_dir(_id)
        except OSError as error:
            if _is_full(error):
                raise self._full(self.basedir, error) from None
            raise

    # ------------------------------------------------------------------ events
    def started_event(self, ex_info, command, host_info, start_time, config, meta_info, _id):
        self.storage_full, self._recorded_status, self._recording = None, None, False
        self._run_thread = threading.get_ident()
        try:
            run_id = super().started_event(ex_info, command, host_info, start_time, config, meta_info, _id)
        except StorageFull as full:
            # nothing usable was recorded: leave no half-made run directory behind
            if self.dir is not None and os.path.isdir(self.dir):
                shutil.rmtree(self.dir, ignore_errors=True)
            full.removed = True
            raise
        self._recording = True
        return run_id

    heartbeat_event = _stops_when_full(FileStorageObserver.heartbeat_event)
    log_metrics = _stops_when_full(FileStorageObserver.log_metrics)
    artifact_event = _stops_when_full(FileStorageObserver.artifact_event)
    resource_event = _stops_when_full(FileStorageObserver.resource_event)

    def completed_event(self, stop_time, result):
        if self.storage_full is None:
            try:
                return super().completed_event(stop_time, result)
            except StorageFull:
                pass
        # part of the run is not recorded: not COMPLETED; Sacred then ends it FAILED
        raise self.storage_full

    def failed_event(self, fail_time, fail_trace):
        self._final_status(super().failed_event, fail_time, fail_trace)

    def interrupted_event(self, interrupt_time, status):
        self._final_status(super().interrupted_event, interrupt_time, status)

    def _final_status(self, write, *args) -> None:
        """Still tried when the disk is full (run.json is small); a failure leaves it as it was."""
        if not self._recording:
            return  # the start was never recorded
        try:
            write(*args)
        except StorageFull:
            pass  # the storage_full the run stops with says where the record stands
