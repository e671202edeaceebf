"""Runs kept on disk while the tracking server cannot be reached, uploaded later.

When ``tracking.uri`` is an ``http(s)://`` server that does not answer a quick
probe, jobs still run: :class:`SpoolTracker` takes every write a
:class:`~cfexp.tracking.store.Tracker` would make and keeps it under
``<mlruns_dir>/spool/<local id>/``:

- ``run.json``: experiment, run name, tags, parent id, start time, target URI;
- ``ops.jsonl``: params, metrics (with their timestamps), tags and the end
  status, one write per line, in order;
- ``artifacts/``: the run's artifacts, as they would be uploaded.

:func:`upload_spool` replays them into a reachable store (parents first, so a
spooled child links to its uploaded parent) and deletes each folder only after
its run is fully uploaded. It runs at the start of the next cfexp run on the
same URI and with ``cfexp sync``. A run still being written holds a lock on its
folder and is left for later; one whose writer died is uploaded as KILLED.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfexp.errors import TrackingError
from cfexp.filelock import FileLock
from cfexp.tracking.store import MAX_RUNS, MlflowTracker, RunRecord, Tracker

log = logging.getLogger(__name__)

SPOOL_DIR = "spool"
SPOOL_PREFIX = "spool-"
# Tag of every run replayed from the spool.
SPOOLED_TAG = "cfexp.spooled"
# Seconds the probe waits for the tracking server (MLflow's own client would
# retry for minutes before failing).
PROBE_TIMEOUT_S = 3.0
_MAP_FILE = "uploaded.json"
_RUN_FILE, _OPS_FILE, _ARTIFACTS, _LOCK = "run.json", "ops.jsonl", "artifacts", ".lock"


def is_spooled(run_id: str) -> bool:
    return run_id.startswith(SPOOL_PREFIX)


def spool_root(mlruns_dir: Path) -> Path:
    return mlruns_dir / SPOOL_DIR


def reachable(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether an ``http(s)://`` tracking server answers at all (any HTTP status
    counts); other URIs (SQLite, files) are local and always "reachable"."""
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except (urllib.error.URLError, OSError, TimeoutError):
        return False


def open_tracker(uri: str, mlruns_dir: Path) -> Tracker:
    """The store at ``uri``, or a :class:`SpoolTracker` when it cannot be reached.

    A reachable store first receives the runs spooled for it earlier.
    """
    root = spool_root(mlruns_dir)
    if not reachable(uri):
        log.warning(
            "the tracking server <tracking.uri=%s> cannot be reached: runs are kept in %s and uploaded "
            "on the next run (or with `cfexp sync --mlruns %s`)",
            uri, root, mlruns_dir,
        )
        return SpoolTracker(uri, root)
    remote = uri.startswith(("http://", "https://"))
    tracker = FallbackTracker(uri, mlruns_dir) if remote else MlflowTracker(uri, mlruns_dir / "artifacts")
    if pending(root, uri):
        try:
            result = upload_spool(tracker, root)
            log.info("uploaded %d spooled run(s) to %s", len(result.uploaded), uri)
        except Exception as exc:  # never stops the run: the spool stays for next time
            log.warning("could not upload the spooled runs in %s: %s", root, exc)
    return tracker


class SpoolTracker(Tracker):
    """A :class:`Tracker` that writes to the spool folder instead of a store (no MLflow client)."""

    def __init__(self, uri: str, root: Path) -> None:  # no MLflow client: nothing to reach
        self.uri = uri
        self.root = root
        self._locks: dict[str, FileLock] = {}

    def experiment_id(self, name: str) -> str:
        return name

    def start_run(
        self,
        experiment: str,
        run_name: str,
        tags: Mapping[str, str],
        parent_run_id: str | None = None,
        start_time_ms: int | None = None,
    ) -> str:
        run_id = f"{SPOOL_PREFIX}{uuid.uuid4().hex}"
        folder = self.root / run_id
        (folder / _ARTIFACTS).mkdir(parents=True)
        self._locks[run_id] = _lock(folder, blocking=True)  # held until the run ends
        meta = {
            "experiment": experiment,
            "run_name": run_name,
            "tags": dict(tags),
            "parent_run_id": parent_run_id,
            "start_time_ms": start_time_ms or _now_ms(),
            "tracking_uri": self.uri,
        }
        _write_json(folder / _RUN_FILE, meta)
        log.warning("tracking server unreachable: run %s kept in %s", run_id, folder)
        return run_id

    def log_batch(
        self,
        run_id: str,
        params: Mapping[str, object] | None = None,
        metrics: Mapping[str, float | None] | None = None,
        tags: Mapping[str, str] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        self._append(run_id, {
            "op": "batch",
            "params": {k: str(v) for k, v in (params or {}).items()},
            "metrics": {k: float(v) for k, v in (metrics or {}).items() if v is not None},
            "tags": {k: str(v) for k, v in (tags or {}).items()},
            "timestamp_ms": timestamp_ms or _now_ms(),
        })

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        target = self._folder(run_id) / _ARTIFACTS / (artifact_path or "")
        if path.is_dir():
            shutil.copytree(path, target, dirs_exist_ok=True)
        elif path.exists():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.name)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        target = self._folder(run_id) / _ARTIFACTS / artifact_file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def reopen_run(self, run_id: str) -> None:
        self._append(run_id, {"op": "reopen"})

    def end_run(self, run_id: str, status: str, end_time_ms: int | None = None) -> None:
        self._append(run_id, {"op": "end", "status": status, "end_time_ms": end_time_ms or _now_ms()})
        lock = self._locks.pop(run_id, None)
        if lock is not None:
            lock.release()  # the run may now be uploaded

    def delete_run(self, run_id: str) -> None:
        raise TrackingError(f"cannot delete run {run_id}: <tracking.uri={self.uri}> is unreachable")

    def get_run(self, run_id: str) -> RunRecord:
        raise TrackingError(f"cannot read run {run_id}: <tracking.uri={self.uri}> is unreachable")

    def search_runs(self, experiment: str, filter_string: str = "", latest: int = MAX_RUNS) -> list[RunRecord]:
        log.warning("tracking server unreachable: no earlier runs of %s can be searched", experiment)
        return []

    def _folder(self, run_id: str) -> Path:
        """A spooled run's folder; writes to a run already in the store (a parent
        created while the server answered) get a folder that replays onto it."""
        folder = self.root / run_id
        if not folder.exists():
            (folder / _ARTIFACTS).mkdir(parents=True)
            self._locks[run_id] = _lock(folder, blocking=True)
            _write_json(folder / _RUN_FILE, {"existing_run_id": run_id, "tracking_uri": self.uri})
        return folder

    def _append(self, run_id: str, op: dict[str, Any]) -> None:
        with (self._folder(run_id) / _OPS_FILE).open("a", encoding="utf-8") as out:
            out.write(json.dumps(op) + "\n")


class FallbackTracker(MlflowTracker):
    """A tracking server's :class:`Tracker` that, if the server stops answering
    in the middle of a run, keeps every later write in the spool.

    A write that fails is retried into the spool only when the server no
    longer answers the probe; any other error (a bad value) is raised as usual.
    MLflow's client retries first (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``).
    """

    def __init__(self, uri: str, mlruns_dir: Path) -> None:
        super().__init__(uri, mlruns_dir / "artifacts")
        self._root = spool_root(mlruns_dir)
        self._spool: SpoolTracker | None = None

    def _lost(self, exc: Exception) -> SpoolTracker:
        """The spool to use after ``exc``; re-raises it when the server still answers."""
        if self._spool is None:
            if reachable(self.uri):
                raise exc
            log.warning(
                "the tracking server <tracking.uri=%s> stopped answering (%s): the rest of its runs are "
                "kept in %s and uploaded later", self.uri, exc, self._root,
            )
            self._spool = SpoolTracker(self.uri, self._root)
        return self._spool

    def start_run(
        self,
        experiment: str,
        run_name: str,
        tags: Mapping[str, str],
        parent_run_id: str | None = None,
        start_time_ms: int | None = None,
    ) -> str:
        if self._spool is None:
            try:
                return super().start_run(experiment, run_name, tags, parent_run_id, start_time_ms)
            except Exception as exc:
                self._lost(exc)
        assert self._spool is not None
        return self._spool.start_run(experiment, run_name, tags, parent_run_id, start_time_ms)

    def log_batch(
        self,
        run_id: str,
        params: Mapping[str, object] | None = None,
        metrics: Mapping[str, float | None] | None = None,
        tags: Mapping[str, str] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        stamp = timestamp_ms or _now_ms()  # the spool keeps the time of the first attempt
        self._either(run_id, lambda t: t.log_batch(run_id, params, metrics, tags, stamp))

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self._either(run_id, lambda t: t.log_artifact(run_id, path, artifact_path))

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._either(run_id, lambda t: t.log_text(run_id, text, artifact_file))

    def reopen_run(self, run_id: str) -> None:
        self._either(run_id, lambda t: t.reopen_run(run_id))

    def end_run(self, run_id: str, status: str, end_time_ms: int | None = None) -> None:
        stamp = end_time_ms or _now_ms()
        self._either(run_id, lambda t: t.end_run(run_id, status, stamp))

    def get_run(self, run_id: str) -> RunRecord:
        record: RunRecord = self._either(run_id, lambda t: t.get_run(run_id))
        return record

    def search_runs(self, experiment: str, filter_string: str = "", latest: int = MAX_RUNS) -> list[RunRecord]:
        records: list[RunRecord] = self._either("", lambda t: t.search_runs(experiment, filter_string, latest))
        return records

    def _either(self, run_id: str, call: Callable[[Tracker], Any]) -> Any:
        """``call`` on the server; on the spool once the server is lost (and for
        runs that only exist in the spool)."""
        if self._spool is None and not is_spooled(run_id):
            try:
                return call(super())  # type: ignore[arg-type]  # the MlflowTracker methods of self: a Tracker
            except Exception as exc:
                self._lost(exc)
        return call(self._spool or SpoolTracker(self.uri, self._root))


@dataclass
class UploadResult:
    uploaded: list[str] = field(default_factory=list)  # local ids
    busy: list[str] = field(default_factory=list)  # still being written: left for later
    failed: dict[str, str] = field(default_factory=dict)  # local id -> why


def pending(root: Path, uri: str | None = None) -> list[str]:
    """Spooled runs (local ids) waiting for ``uri`` (any URI when None)."""
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(root.iterdir()):
        try:  # another process may be uploading (and deleting) it right now
            meta = json.loads((folder / _RUN_FILE).read_text())
        except (OSError, ValueError):  # gone, not a run folder, or not written yet
            continue
        if uri is None or meta.get("tracking_uri") == uri:
            found.append(folder.name)
    return found


def upload_spool(tracker: Tracker, root: Path, any_uri: bool = False) -> UploadResult:
    """Replay every spooled run meant for ``tracker.uri`` (all with ``any_uri``)."""
    result = UploadResult()
    todo = pending(root, None if any_uri else tracker.uri)
    if not todo:
        return result
    try:  # one uploader at a time (commands, and jobs of one sweep, may start together)
        root_lock = _lock(root, blocking=False)
    except BlockingIOError:
        result.busy.extend(todo)
        return result
    try:
        # Again under the lock: an uploader that just finished has deleted what it uploaded.
        todo = pending(root, None if any_uri else tracker.uri)
        _upload(tracker, root, todo, result)
    finally:
        root_lock.release()
    return result


def _upload(tracker: Tracker, root: Path, todo: list[str], result: UploadResult) -> None:
    ids = _load_map(root)
    metas = {run_id: json.loads((root / run_id / _RUN_FILE).read_text()) for run_id in todo}
    # Parents first: a child's parent id is mapped once its parent is uploaded.
    # Writes made to a run after it ended (folders named after a run's id) come last.
    todo.sort(key=lambda run_id: (
        "existing_run_id" in metas[run_id], bool(metas[run_id].get("parent_run_id") in metas)
    ))
    for run_id in todo:
        folder = root / run_id
        try:
            lock = _lock(folder, blocking=False)
        except BlockingIOError:
            result.busy.append(run_id)
            continue
        try:
            parent = metas[run_id].get("parent_run_id") or metas[run_id].get("existing_run_id")
            if parent and is_spooled(parent) and parent not in ids:
                result.busy.append(run_id)  # after its parent, next time
                continue
            ids[run_id] = _replay(tracker, folder, metas[run_id], ids)
            _save_map(root, ids)
            shutil.rmtree(folder)
            result.uploaded.append(run_id)
        except Exception as exc:  # keep the spool; say why
            result.failed[run_id] = str(exc)
            log.warning("could not upload spooled run %s: %s", run_id, exc)
        finally:
            lock.release()


def _replay(tracker: Tracker, folder: Path, meta: dict[str, Any], ids: dict[str, str]) -> str:
    """Create (or continue) the run in the store; returns its id there."""
    ops = _read_ops(folder / _OPS_FILE)
    if "existing_run_id" in meta:
        remote = str(ids.get(meta["existing_run_id"], meta["existing_run_id"]))
    else:
        if meta.get("remote_run_id"):  # a previous upload stopped halfway: start over
            try:
                tracker.delete_run(meta["remote_run_id"])
            except Exception as exc:
                log.warning("could not delete the partial upload %s: %s", meta["remote_run_id"], exc)
        parent = meta.get("parent_run_id")
        remote = tracker.start_run(
            meta["experiment"],
            meta["run_name"],
            {**meta["tags"], SPOOLED_TAG: "true"},
            ids.get(parent, parent) if parent else None,
            start_time_ms=meta["start_time_ms"],
        )
        _write_json(folder / _RUN_FILE, {**meta, "remote_run_id": remote})
    end: dict[str, Any] | None = None
    for op in ops:
        if op["op"] == "batch":
            tracker.log_batch(remote, op["params"], op["metrics"], op["tags"], timestamp_ms=op["timestamp_ms"])
        elif op["op"] == "reopen":
            tracker.reopen_run(remote)
            end = None
        elif op["op"] == "end":
            end = op
    artifacts = folder / _ARTIFACTS
    if artifacts.is_dir() and any(artifacts.iterdir()):
        tracker.log_artifact(remote, artifacts)
    if end is not None:
        tracker.end_run(remote, end["status"], end_time_ms=end["end_time_ms"])
    elif "existing_run_id" not in meta:  # its process died before the run ended
        tracker.set_tags(remote, {"error": "the process writing this run stopped before it ended"})
        tracker.end_run(remote, "KILLED")
    return remote


def _read_ops(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    ops = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            ops.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a crash: the rest is still good
            log.warning("skipped a truncated line in %s", path)
    return ops


def _lock(folder: Path, blocking: bool) -> FileLock:
    """The spool folder's (or a run folder's) lock; BlockingIOError when busy and not ``blocking``."""
    lock = FileLock(folder / _LOCK, "spool lock", reason="another cfexp process is writing or uploading it")
    if blocking:
        lock.acquire()
    elif not lock.try_acquire():
        raise BlockingIOError(f"{folder} is locked by another process")
    return lock


def _load_map(root: Path) -> dict[str, str]:
    path = root / _MAP_FILE
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _save_map(root: Path, ids: dict[str, str]) -> None:
    """Local id -> store id, kept so a child spooled later still finds its parent."""
    _write_json(root / _MAP_FILE, ids)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{socket.gethostname()}.tmp")
    temporary.write_text(json.dumps(data, indent=2))
    temporary.replace(path)


def _now_ms() -> int:
    return int(time.time() * 1000)
