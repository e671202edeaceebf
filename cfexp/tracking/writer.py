"""The tracking writer: a launch's MLflow client, in a process of its own.

``import mlflow`` costs about 1.2 s of one core (its GenAI, FastAPI and pandas
modules come with it) and opening a store more; a sweep's first job cannot
start before the sweep's parent run exists in the store. So ``python -m
cfexp`` starts this process first thing, before it imports Hydra
(:func:`start_at_launch`): the writer imports MLflow on the second core while
the harness imports Hydra and composes the sweep, then holds the launch's
tracking stores. The harness's :class:`WriterTracker` sends it each call and
waits for the answer:

- **writes stay synchronous and in order**: when a call returns, the store
  has it, exactly as with an MLflow client in the harness (docs/tracking.md's
  guarantees do not change), and MLflow still assigns the run ids;
- **reads answer plain records** (:class:`~cfexp.tracking.store.RunRecord`),
  so the harness never imports MLflow;
- **an error raised in the writer is raised again in the harness**, the same
  exception (a :class:`~cfexp.errors.TrackingError` when it cannot be sent);
- **the writer's log records go through the harness's logging** (Hydra's job
  log, the terminal), as if the harness had logged them.

Lifetime. The writer runs in a process group of its own and ignores SIGINT
and SIGTERM: after Ctrl-C the harness still has runs to close through it. It
ends when the harness closes the connection (at exit) and dies with it (the
kernel's parent-death signal): never an orphan. If the writer dies mid-sweep,
the call that finds out raises :class:`WriterLost` (a ``TrackingError`` with
its exit status: that job fails, saying so) and the harness opens the store
itself for every later call (docs/fault-model.md).

Stores on an ``http(s)://`` tracking server stay in the harness, where their
probe and spool decide per job (:mod:`cfexp.tracking.spool`). Jobs run in
other processes (Ray, submitit) open their own clients. ``CFEXP_TRACKING_WRITER=0``
keeps every client in the harness.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cfexp.errors import TrackingError
from cfexp.tracking.store import MAX_RUNS, RunRecord, Tracker

log = logging.getLogger(__name__)

ENV_SWITCH = "CFEXP_TRACKING_WRITER"
# Hydra's flags that print and exit without running a job: no store is opened.
_NO_JOB_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc",
                 "--version")
# How long the writer may take to finish its last call and exit once the harness closes it.
_CLOSE_TIMEOUT_S = 30.0

_WRITER: TrackingWriter | None = None


def start_at_launch(argv: Sequence[str]) -> None:
    """Start the launch's writer, unless the command runs no job or it is switched off."""
    global _WRITER
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return
    if any(arg.split("=", 1)[0] in _NO_JOB_FLAGS for arg in argv):
        return
    try:
        _WRITER = TrackingWriter()
    except OSError as exc:  # no process can be started: the client lives in the harness, as before
        log.debug("no tracking writer process (%s): MLflow runs in this process", exc)


def current() -> TrackingWriter | None:
    """This process's writer, if it started one (a forked child does not share its parent's)."""
    return _WRITER if _WRITER is not None and _WRITER.owner_pid == os.getpid() else None


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


class WriterLost(TrackingError):
    """The writer process died, or stopped answering: the call's write may be missing."""


class TrackingWriter:
    """The harness's end of the writer process: one call at a time, in order."""

    def __init__(self) -> None:
        harness_end, writer_end = socket.socketpair()
        with writer_end:
            self.process = subprocess.Popen(  # a Python of its own: no fork of a threaded process
                [sys.executable, "-m", "cfexp.tracking.writer", str(writer_end.fileno()), str(os.getpid())],
                pass_fds=[writer_end.fileno()],
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C at the terminal is the harness's to handle
            )
        from multiprocessing.connection import Connection

        from cfexp.signals import not_a_launched_job

        not_a_launched_job(self.process.pid)  # a stop's clean-up still writes through it
        self.owner_pid = os.getpid()
        self._connection = Connection(harness_end.detach())
        self._lock = threading.Lock()
        self._used = False
        self._awaiting_answer = False
        self.lost: str | None = None  # why the writer is gone, once a call found out
        atexit.register(self.close)

    @property
    def pid(self) -> int:
        return self.process.pid

    def call(self, operation: str, uri: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``operation`` on the writer's tracker for ``uri``; its answer, or its exception."""
        with self._lock:
            self._used = True
            if self.lost is not None:
                raise WriterLost(self.lost)
            try:
                if self._awaiting_answer:
                    # An earlier call was cut short here (Ctrl-C): the writer still answered it.
                    self._connection.recv()
                    self._awaiting_answer = False
                self._connection.send((operation, uri, args, kwargs))
                self._awaiting_answer = True
                outcome, value, records = self._connection.recv()
                self._awaiting_answer = False
            except (EOFError, OSError) as exc:
                self.lost = self._lost(operation, uri)
                raise WriterLost(self.lost) from exc
        _log_in_harness(records)
        if outcome == "error":
            raise value
        return value

    def close(self) -> None:
        """Let the writer finish and exit (at the harness's exit; idempotent)."""
        if self.process.returncode is not None or os.getpid() != self.owner_pid:
            return
        if not self._used:
            # Only ever imported MLflow (a command that opened no store): nothing to finish.
            self.process.kill()
        self._connection.close()  # the writer reads the end of its input and exits
        try:
            self.process.wait(timeout=_CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("the tracking writer process %d did not exit: killed", self.pid)
            self.process.kill()
            self.process.wait()

    def _lost(self, operation: str, uri: str) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            how = "stopped answering"
        elif code < 0:
            how = f"was killed by {_signal_name(-code)}"
        else:
            how = f"exited with status {code}"
        return (
            f"the tracking writer process (pid {self.pid}) {how}: {operation} may not have reached the "
            f"tracking store <tracking.uri={uri}>; every write before it did"
        )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class WriterTracker(Tracker):
    """A :class:`~cfexp.tracking.store.Tracker` whose store is held by the tracking writer.

    If the writer dies, the call that found out raises :class:`WriterLost` (its
    write may be missing: the job records that it failed, and why), and every
    later call opens the store in this process instead: the rest of the sweep
    goes on, as it would have without a writer.
    """

    def __init__(self, writer: TrackingWriter, uri: str, mlruns_dir: Path) -> None:
        self.uri = uri
        self._writer = writer
        self._mlruns_dir = mlruns_dir
        self._in_harness: Tracker | None = None
        writer.call("open", uri, mlruns_dir)

    def _call(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        if self._writer.lost is not None:
            if self._in_harness is None:
                from cfexp.tracking.spool import open_tracker

                self._in_harness = open_tracker(self.uri, self._mlruns_dir)
            return getattr(self._in_harness, operation)(*args, **kwargs)
        try:
            return self._writer.call(operation, self.uri, *args, **kwargs)
        except WriterLost as exc:
            log.warning("%s; this process writes to the store itself from now on", exc)
            raise

    def experiment_id(self, name: str) -> str:
        return str(self._call("experiment_id", name))

    def start_run(
        self,
        experiment: str,
        run_name: str,
        tags: Mapping[str, str],
        parent_run_id: str | None = None,
        start_time_ms: int | None = None,
    ) -> str:
        return str(self._call("start_run", experiment, run_name, dict(tags), parent_run_id, start_time_ms))

    def log_batch(
        self,
        run_id: str,
        params: Mapping[str, object] | None = None,
        metrics: Mapping[str, float | None] | None = None,
        tags: Mapping[str, str] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        self._call(
            "log_batch", run_id,
            dict(params) if params else None, dict(metrics) if metrics else None, dict(tags) if tags else None,
            timestamp_ms,
        )

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self._call("log_artifact", run_id, path, artifact_path)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._call("log_text", run_id, text, artifact_file)

    def reopen_run(self, run_id: str) -> None:
        self._call("reopen_run", run_id)

    def end_run(self, run_id: str, status: str, end_time_ms: int | None = None) -> None:
        self._call("end_run", run_id, status, end_time_ms)

    def delete_run(self, run_id: str) -> None:
        self._call("delete_run", run_id)

    def get_run(self, run_id: str) -> RunRecord:
        record: RunRecord = self._call("get_run", run_id)
        return record

    def search_runs(self, experiment: str, filter_string: str = "", latest: int = MAX_RUNS) -> list[RunRecord]:
        records: list[RunRecord] = self._call("search_runs", experiment, filter_string, latest)
        return records


# --- the writer process ---------------------------------------------------------------------------

_OPERATIONS = frozenset({
    "experiment_id", "start_run", "log_batch", "log_artifact", "log_text", "reopen_run", "end_run",
    "delete_run", "get_run", "search_runs",
})


def _serve(fd: int, harness_pid: int) -> None:
    """Answer the harness's calls until it closes the connection."""
    from multiprocessing.connection import Connection

    connection = Connection(fd)
    # Ctrl-C and SIGTERM are the harness's to handle: it still has runs to close through this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_the_harness(harness_pid)
    records = _Collector()
    root = logging.getLogger()
    root.addHandler(records)
    root.setLevel(logging.INFO)
    # MLflow's import makes ~265,000 objects that live as long as this process. The collector is
    # off while they are made (its collections walked them again and again: 1.77 -> 1.46 s), then
    # they are frozen out of its sight (a full collection took ~0.15 s, and fell inside the sweep's
    # first calls). The import leaves a few thousand objects of garbage: kept, RSS is the same.
    gc.disable()
    try:
        _import_mlflow()
    finally:
        gc.freeze()
        gc.enable()
    trackers: dict[str, Tracker] = {}
    while True:
        try:
            operation, uri, args, kwargs = connection.recv()
        except EOFError:  # the harness closed its end, or exited
            return
        try:
            if operation == "open":
                trackers[uri] = _open(uri, *args)
                answer: tuple[str, Any] = ("ok", None)
            elif operation in _OPERATIONS:
                answer = ("ok", getattr(trackers[uri], operation)(*args, **kwargs))
            else:
                raise TrackingError(f"the tracking writer has no operation {operation!r}")
        except Exception as exc:
            answer = ("error", _sendable(exc))
        connection.send((*answer, records.drain()))


def _open(uri: str, mlruns_dir: Path) -> Tracker:
    from cfexp.tracking.spool import open_tracker

    return open_tracker(uri, mlruns_dir)


def _import_mlflow() -> None:
    """What opening a store imports, before the harness asks (a failure shows when it does)."""
    try:
        from cfexp.tracking.store_setup import import_mlflow

        import_mlflow()
    except Exception as exc:
        log.debug("MLflow not imported ahead: %s", exc)


def _die_with_the_harness(harness_pid: int) -> None:
    """SIGKILL (SIGTERM is ignored here) when the harness dies, however it dies."""
    from cfexp.signals import die_with_parent

    die_with_parent(signal.SIGKILL)  # without prctl (not Linux), the closed connection still ends it
    if os.getppid() != harness_pid:  # the harness died before the signal was asked for
        os._exit(0)


def _sendable(exc: Exception) -> Exception:
    """``exc`` if it survives pickling (it is raised again in the harness), else a TrackingError saying it."""
    exc.add_note(f"(raised in the tracking writer process, pid {os.getpid()})")
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return TrackingError(f"{type(exc).__name__}: {exc}")


class _Collector(logging.Handler):
    """The log records of one call, made picklable, for the harness to log."""

    def __init__(self) -> None:
        super().__init__()
        self._records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        state = dict(record.__dict__)
        state["msg"], state["args"] = record.getMessage(), None
        if record.exc_info:
            state["exc_text"] = logging.Formatter().formatException(record.exc_info)
        state["exc_info"] = None
        self._records.append(state)

    def drain(self) -> list[dict[str, Any]]:
        records, self._records = self._records, []
        return records


def _log_in_harness(records: list[dict[str, Any]]) -> None:
    for state in records:
        record = logging.makeLogRecord(state)
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
    from cfexp.tracking.store_setup import fold_opened_stores

    fold_opened_stores()  # atexit handlers do not run after os._exit
    # Every call was answered, so every write is in the store: exit without the interpreter's
    # last garbage collections, which walk every object MLflow made (~0.8 s on 2 cores).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
