"""The tracking writer process: the same store contract as an MLflow client in the
harness, errors and log records carried back, and a lifetime tied to the harness."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psutil
import pytest
from mlflow.exceptions import MlflowException

from cfexp.errors import TrackingError
from cfexp.tracking import writer as tracking_writer
from cfexp.tracking.jobs import tracker_for
from cfexp.tracking.store import MlflowTracker, RunRecord, Tracker
from cfexp.tracking.writer import TrackingWriter, WriterTracker

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def writer() -> Iterator[TrackingWriter]:
    started = TrackingWriter()
    yield started
    started.close()


def store_uri(folder: Path) -> str:
    return f"sqlite:///{folder}/mlruns/mlflow.db"


def record_a_sweep(tracker: Tracker, folder: Path) -> tuple[str, str]:
    """A parent and a child run with everything a job writes; their ids."""
    (folder / "job").mkdir(parents=True)
    (folder / "job" / "records.jsonl").write_text('{"kind": "ready"}\n')
    (folder / "config.yaml").write_text("a: 1\n")
    parent = tracker.start_run("exp", "sweep", {"cfexp.sweep": "parent"})
    child = tracker.start_run("exp", "temperature=0.6", {"overrides": "temperature=0.6"}, parent)
    tracker.log_batch(child, params={f"p{i}": i for i in range(150)}, metrics={"ttft_ms": 1.5, "none": None},
                      tags={"backend": "sim"})
    tracker.log_artifact(child, folder / "job")
    tracker.log_artifact(child, folder / "config.yaml", "hydra")
    tracker.log_text(child, "why it failed", "error.txt")
    tracker.end_run(child, "FAILED")
    tracker.end_run(parent, "FINISHED")
    tracker.reopen_run(parent)
    doomed = tracker.start_run("exp", "deleted", {})
    tracker.delete_run(doomed)
    return parent, child


def comparable(record: RunRecord) -> tuple[Any, ...]:
    """What must be the same whichever process wrote the run (ids and times differ)."""
    tags = {k: v for k, v in record.data.tags.items() if k not in ("mlflow.parentRunId", "mlflow.runName")}
    return (record.info.run_name, record.info.status, record.info.lifecycle_stage,
            record.data.params, record.data.metrics, tags)


def artifacts_of(record: RunRecord) -> list[str]:
    root = Path(record.info.artifact_uri.removeprefix("file://"))
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def test_a_store_written_through_the_writer_holds_what_an_in_process_client_writes(
    tmp_path: Path, writer: TrackingWriter
) -> None:
    local = MlflowTracker(store_uri(tmp_path / "local"), tmp_path / "local" / "mlruns" / "artifacts")
    remote = WriterTracker(writer, store_uri(tmp_path / "writer"), tmp_path / "writer" / "mlruns")
    written = {}
    for name, tracker in (("local", local), ("writer", remote)):
        parent, child = record_a_sweep(tracker, tmp_path / name)
        runs = tracker.search_runs("exp", "attributes.status = 'FAILED'")
        assert [run.info.run_id for run in runs] == [child]
        everything = tracker.search_runs("exp")
        assert {run.info.run_id for run in everything} == {parent, child}  # the deleted run is not listed
        child_record = tracker.get_run(child)
        assert child_record.data.tags["mlflow.parentRunId"] == parent
        assert tracker.get_run(parent).info.status == "RUNNING"  # reopened
        assert tracker.experiment_id("exp") == child_record.info.experiment_id
        written[name] = (comparable(child_record), comparable(tracker.get_run(parent)), artifacts_of(child_record))
    assert written["writer"] == written["local"]
    assert written["writer"][2] == ["error.txt", "hydra/config.yaml", "records.jsonl"]
    assert isinstance(remote.get_run(child), RunRecord)  # plain values: MLflow stays out of the harness


def test_an_error_in_the_writer_is_raised_again_in_the_harness(tmp_path: Path, writer: TrackingWriter) -> None:
    local = MlflowTracker(store_uri(tmp_path / "local"), tmp_path / "local" / "artifacts")
    remote = WriterTracker(writer, store_uri(tmp_path / "writer"), tmp_path / "writer" / "mlruns")
    with pytest.raises(MlflowException) as in_process:
        local.get_run("0" * 32)
    with pytest.raises(MlflowException) as through_writer:
        remote.get_run("0" * 32)
    assert str(through_writer.value) == str(in_process.value)
    assert f"tracking writer process, pid {writer.pid}" in " ".join(through_writer.value.__notes__)
    # The writer goes on after an error.
    assert remote.start_run("exp", "after the error", {})


def test_a_store_that_cannot_be_opened_is_a_tracking_error_in_the_harness(
    tmp_path: Path, writer: TrackingWriter
) -> None:
    (tmp_path / "mlflow.db").write_text("this is not a database, and it is long enough to look like one" * 20)
    with pytest.raises(TrackingError, match="cannot read the tracking store"):
        WriterTracker(writer, f"sqlite:///{tmp_path}/mlflow.db", tmp_path)


def test_the_writers_log_records_go_through_the_harnesss_logging(
    tmp_path: Path, writer: TrackingWriter, caplog: pytest.LogCaptureFixture
) -> None:
    # A store whose creation stopped halfway and that holds nothing: set aside with a warning.
    path = tmp_path / "mlruns" / "mlflow.db"
    path.parent.mkdir(parents=True)
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE _alembic_tmp_runs (run_uuid TEXT)")
    caplog.set_level(logging.INFO, logger="cfexp.tracking.store_setup")
    WriterTracker(writer, f"sqlite:///{path}", tmp_path / "mlruns")
    (warning,) = [r for r in caplog.records if "could not be used as it was" in r.getMessage()]
    assert warning.name == "cfexp.tracking.store_setup" and warning.levelno == logging.WARNING
    assert warning.process == writer.pid


def test_a_writer_that_died_fails_one_call_saying_so_and_the_harness_goes_on_without_it(
    tmp_path: Path, writer: TrackingWriter, caplog: pytest.LogCaptureFixture
) -> None:
    remote = WriterTracker(writer, store_uri(tmp_path), tmp_path / "mlruns")
    run_id = remote.start_run("exp", "job", {})
    writer.process.kill()
    with pytest.raises(TrackingError, match=rf"pid {writer.pid}\) was killed by SIGKILL: log_batch may not have reached"):
        remote.log_batch(run_id, metrics={"ttft_ms": 1.0})
    assert "writes to the store itself from now on" in caplog.text
    # The job records its failure, and the next job its run, through a client of the harness's own.
    remote.log_text(run_id, "the tracking writer died", "error.txt")
    remote.end_run(run_id, "FAILED")
    next_job = remote.start_run("exp", "next job", {})
    remote.end_run(next_job, "FINISHED")
    statuses = {run.info.run_name: run.info.status for run in remote.search_runs("exp")}
    assert statuses == {"job": "FAILED", "next job": "FINISHED"}


def test_ctrl_c_reaches_the_writer_and_it_goes_on(tmp_path: Path, writer: TrackingWriter) -> None:
    remote = WriterTracker(writer, store_uri(tmp_path), tmp_path / "mlruns")
    os.kill(writer.pid, signal.SIGINT)
    os.kill(writer.pid, signal.SIGTERM)
    run_id = remote.start_run("exp", "job", {})
    remote.end_run(run_id, "KILLED")
    assert remote.get_run(run_id).info.status == "KILLED"


def test_a_call_cut_short_in_the_harness_leaves_no_answer_behind(tmp_path: Path, writer: TrackingWriter) -> None:
    """Ctrl-C while the harness waits for an answer: the next call gets its own answer, not that one."""
    remote = WriterTracker(writer, store_uri(tmp_path), tmp_path / "mlruns")
    connection = writer._connection
    real_recv = connection.recv

    def interrupted_recv() -> Any:
        connection.recv = real_recv  # type: ignore[method-assign]
        raise KeyboardInterrupt

    connection.recv = interrupted_recv  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        remote.start_run("exp", "cut short", {})
    second = remote.start_run("exp", "second", {})
    assert remote.get_run(second).info.run_name == "second"
    names = sorted(run.info.run_name for run in remote.search_runs("exp"))
    assert names == ["cut short", "second"]  # the writer finished the call the harness gave up on


def test_closing_a_used_writer_lets_it_exit_and_an_unused_one_is_stopped(tmp_path: Path) -> None:
    used = TrackingWriter()
    WriterTracker(used, store_uri(tmp_path), tmp_path / "mlruns").start_run("exp", "job", {})
    used.close()
    assert used.process.returncode == 0
    unused = TrackingWriter()
    unused.close()
    assert unused.process.returncode == -signal.SIGKILL  # it only ever imported MLflow
    used.close()  # again: nothing to do


# A harness whose end of the connection outlives it (a child of its inherited it): the writer
# sees no end of input, only the kernel's parent-death signal can stop it.
KILLED_HARNESS = textwrap.dedent("""
    import os, signal, subprocess, sys
    from pathlib import Path
    from cfexp.tracking.writer import TrackingWriter, WriterTracker
    writer = TrackingWriter()
    WriterTracker(writer, f"sqlite:///{sys.argv[1]}/mlflow.db", Path(sys.argv[1]))  # it is up and idle
    keeper = subprocess.Popen(["sleep", "120"], pass_fds=[writer._connection.fileno()])
    print(writer.pid, keeper.pid, flush=True)
    sys.stdin.readline()
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_the_writer_dies_with_its_harness(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", KILLED_HARNESS, str(tmp_path)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as harness:
        assert harness.stdout is not None and harness.stdin is not None
        writer_pid, keeper_pid = map(int, harness.stdout.readline().split())
        writer = psutil.Process(writer_pid)
        assert "cfexp.tracking.writer" in " ".join(writer.cmdline())
        harness.stdin.write("go\n")
        harness.stdin.flush()
        assert harness.wait(timeout=30) == -signal.SIGKILL
    try:
        wait_until_gone(writer)
    finally:
        os.kill(keeper_pid, signal.SIGKILL)


def wait_until_gone(process: psutil.Process) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    raise AssertionError(f"the writer {process.pid} outlived its harness")


@pytest.fixture
def launch_writer(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """start_at_launch's writer, closed afterwards (it is this module's global)."""
    monkeypatch.setattr(tracking_writer, "_WRITER", None)
    yield
    started = tracking_writer._WRITER
    if started is not None:
        started.close()
        assert started.process.returncode is not None


@pytest.mark.parametrize(
    ("argv", "switch", "started"),
    [
        (["-m", "temperature=0.6,0.8"], None, True),
        (["--help"], None, False),
        (["--cfg", "job"], None, False),
        (["-c", "job"], None, False),
        (["--info"], None, False),
        (["--shell-completion", "install=bash"], None, False),
        (["-m", "temperature=0.6,0.8"], "0", False),
    ],
    ids=["sweep", "help", "cfg", "c", "info", "completion", "switched_off"],
)
def test_a_launch_starts_a_writer_only_when_it_may_run_jobs(
    monkeypatch: pytest.MonkeyPatch, launch_writer: None, argv: list[str], switch: str | None, started: bool
) -> None:
    if switch is None:
        monkeypatch.delenv(tracking_writer.ENV_SWITCH, raising=False)
    else:
        monkeypatch.setenv(tracking_writer.ENV_SWITCH, switch)
    tracking_writer.start_at_launch(argv)
    assert (tracking_writer.current() is not None) == started


def test_a_launchs_local_store_is_held_by_its_writer_and_a_forked_child_opens_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, launch_writer: None
) -> None:
    monkeypatch.delenv(tracking_writer.ENV_SWITCH, raising=False)
    tracking_writer.start_at_launch([])
    writer = tracking_writer.current()
    assert writer is not None
    tracker = tracker_for(None, tmp_path / "mlruns")
    assert isinstance(tracker, WriterTracker)
    assert tracker_for(None, tmp_path / "mlruns") is tracker  # one per store and process
    owner, writer.owner_pid = writer.owner_pid, -1  # as a process forked from this one sees it
    try:
        assert tracking_writer.current() is None
        assert isinstance(tracker_for(f"sqlite:///{tmp_path}/other.db", tmp_path / "mlruns"), MlflowTracker)
    finally:
        writer.owner_pid = owner  # so that it is closed
