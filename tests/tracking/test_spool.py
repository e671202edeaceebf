"""The spool: runs kept on disk while the tracking server is unreachable, replayed later.

These replay into a SQLite store; tests/tracking/test_unreachable_server.py does
it end to end against a real `mlflow server`.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from cfexp.cli import main as cli_main
from cfexp.tracking.spool import (
    SPOOLED_TAG,
    SpoolTracker,
    open_tracker,
    pending,
    reachable,
    upload_spool,
)
from cfexp.tracking.store import MlflowTracker, Tracker
from tests.together import run_together


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def store(tmp_path: Path) -> Tracker:
    return MlflowTracker(f"sqlite:///{tmp_path}/store.db", tmp_path / "store-artifacts")


def _spool_a_sweep(spool: SpoolTracker, tmp_path: Path) -> tuple[str, str]:
    parent = spool.start_run("exp", "sweep", {"cfexp.sweep": "parent"}, start_time_ms=1_000)
    child = spool.start_run("exp", "temperature=0.6", {"overrides": "temperature=0.6"}, parent)
    spool.log_batch(child, params={"temperature": 0.6}, tags={"provenance": "simulated"})
    spool.log_batch(child, metrics={"ttft_ms": 12.5, "calls_total": 2.0, "missing": None}, timestamp_ms=5_000)
    (tmp_path / "staged" / "texts").mkdir(parents=True)
    (tmp_path / "staged" / "records.jsonl").write_text('{"kind": "call"}\n')
    (tmp_path / "staged" / "texts" / "a_0_report.md").write_text("report")
    spool.log_artifact(child, tmp_path / "staged")
    spool.end_run(child, "FINISHED", end_time_ms=9_000)
    spool.log_text(parent, "2 jobs, 0 failed", "sweep_summary.txt")
    spool.end_run(parent, "FAILED")
    return parent, child


def test_a_spooled_sweep_is_replayed_with_its_parent_link_and_removed(store: Tracker, tmp_path: Path) -> None:
    root = tmp_path / "mlruns" / "spool"
    spool = SpoolTracker(store.uri, root)
    _spool_a_sweep(spool, tmp_path)
    assert len(pending(root, store.uri)) == 2

    result = upload_spool(store, root)
    assert len(result.uploaded) == 2 and not result.failed and not result.busy
    assert pending(root) == []
    runs = store.search_runs("exp")
    parent = next(r for r in runs if r.data.tags.get("cfexp.sweep") == "parent")
    child = next(r for r in runs if r.data.tags.get("mlflow.parentRunId"))
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.info.status == "FAILED" and child.info.status == "FINISHED"
    assert child.info.start_time > 0 and child.info.end_time == 9_000 and parent.info.start_time == 1_000
    assert child.data.params == {"temperature": "0.6"}
    assert child.data.metrics == {"ttft_ms": 12.5, "calls_total": 2.0}
    assert child.data.tags["provenance"] == "simulated" and child.data.tags[SPOOLED_TAG] == "true"
    client = store._client
    assert {a.path for a in client.list_artifacts(child.info.run_id)} == {"records.jsonl", "texts"}
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["sweep_summary.txt"]
    (history,) = client.get_metric_history(child.info.run_id, "ttft_ms")
    assert history.timestamp == 5_000


def test_a_run_still_being_written_waits_and_its_children_wait_with_it(store: Tracker, tmp_path: Path) -> None:
    root = tmp_path / "spool"
    spool = SpoolTracker(store.uri, root)
    parent = spool.start_run("exp", "sweep", {})  # open: its folder stays locked
    child = spool.start_run("exp", "job", {}, parent)
    spool.end_run(child, "FINISHED")
    result = upload_spool(store, root)
    assert result.uploaded == [] and sorted(result.busy) == sorted([parent, child])
    spool.end_run(parent, "FINISHED")
    assert sorted(upload_spool(store, root).uploaded) == sorted([parent, child])
    (uploaded_child,) = [r for r in store.search_runs("exp") if r.data.tags.get("mlflow.parentRunId")]
    assert uploaded_child.data.tags["mlflow.parentRunId"] != parent  # the store's id, not the local one


def test_a_run_whose_writer_died_is_uploaded_as_killed(store: Tracker, tmp_path: Path) -> None:
    root = tmp_path / "spool"
    writer = SpoolTracker(store.uri, root)
    run_id = writer.start_run("exp", "job", {})
    writer.log_batch(run_id, metrics={"ttft_ms": 3.0})
    writer._locks.pop(run_id).release()  # what the kernel does when the writing process dies
    assert len(upload_spool(store, root).uploaded) == 1
    (run,) = store.search_runs("exp")
    assert run.info.status == "KILLED" and run.data.metrics == {"ttft_ms": 3.0}


def test_an_upload_that_stopped_halfway_is_not_duplicated(store: Tracker, tmp_path: Path) -> None:
    root = tmp_path / "spool"
    spool = SpoolTracker(store.uri, root)
    run_id = spool.start_run("exp", "job", {})
    spool.end_run(run_id, "FINISHED")

    class Broken(MlflowTracker):
        def end_run(self, run_id: str, status: str, end_time_ms: int | None = None) -> None:
            raise OSError("connection reset")

    broken = Broken(store.uri, tmp_path / "store-artifacts")
    assert run_id in upload_spool(broken, root).failed
    assert pending(root) == [run_id]
    assert upload_spool(store, root).uploaded == [run_id]
    assert [r.info.status for r in store.search_runs("exp")] == ["FINISHED"]  # the partial one deleted


def test_an_unreachable_server_is_detected_quickly_and_gives_a_spool(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Whatever level an earlier in-process Hydra run left on the root logger (tests/conftest.py).
    caplog.set_level(logging.WARNING, logger="cfexp.tracking.spool")
    uri = f"http://127.0.0.1:{closed_port()}"
    assert not reachable(uri)
    assert reachable(f"sqlite:///{tmp_path}/x.db")
    tracker = open_tracker(uri, tmp_path / "mlruns")
    assert isinstance(tracker, SpoolTracker) and tracker.root == tmp_path / "mlruns" / "spool"
    assert "cannot be reached" in caplog.text
    assert tracker.search_runs("exp") == []


def test_a_reachable_store_receives_the_spool_when_opened(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/store.db"
    spool = SpoolTracker(uri, tmp_path / "mlruns" / "spool")
    run_id = spool.start_run("exp", "job", {})
    spool.end_run(run_id, "FINISHED")
    tracker = open_tracker(uri, tmp_path / "mlruns")
    assert not isinstance(tracker, SpoolTracker)
    assert [r.info.status for r in tracker.search_runs("exp")] == ["FINISHED"]
    assert pending(tmp_path / "mlruns" / "spool") == []


def test_cfexp_sync_uploads_to_another_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spool = SpoolTracker("http://127.0.0.1:1", tmp_path / "mlruns" / "spool")
    run_id = spool.start_run("exp", "job", {})
    spool.end_run(run_id, "FINISHED")
    with pytest.raises(SystemExit) as unreachable:
        cli_main(["sync", "--mlruns", str(tmp_path / "mlruns")])
    assert unreachable.value.code == 1 and "cannot be reached" in capsys.readouterr().err
    uri = f"sqlite:///{tmp_path}/other.db"
    with pytest.raises(SystemExit) as done:
        cli_main(["sync", "--mlruns", str(tmp_path / "mlruns"), "--tracking-uri", uri])
    assert done.value.code == 0 and "uploaded 1 run(s)" in capsys.readouterr().out
    assert pending(tmp_path / "mlruns" / "spool") == []


def test_writes_after_a_spooled_run_ended_still_reach_it(store: Tracker, tmp_path: Path) -> None:
    root = tmp_path / "spool"
    spool = SpoolTracker(store.uri, root)
    parent = spool.start_run("exp", "sweep", {"cfexp.sweep": "parent"})
    spool.end_run(parent, "FINISHED")
    assert upload_spool(store, root).uploaded == [parent]
    spool.set_tags(parent, {"optuna.study": "s"})  # e.g. the sweeper annotating it afterwards
    spool.end_run(parent, "FINISHED")
    assert upload_spool(store, root).uploaded == [parent]
    (run,) = store.search_runs("exp")
    assert run.data.tags["optuna.study"] == "s" and run.info.status == "FINISHED"


# Opens the store at argv[1] when released, as each command does at its start (uploading the spool).
OPEN_THE_STORE = """
from pathlib import Path
from cfexp.tracking.spool import open_tracker
go()
open_tracker(sys.argv[1], Path(sys.argv[2]))
"""


def test_commands_that_start_together_upload_the_spool_once(store: Tracker, tmp_path: Path) -> None:
    mlruns = tmp_path / "mlruns"
    spool = SpoolTracker(store.uri, mlruns / "spool")
    parent, child = _spool_a_sweep(spool, tmp_path)
    single = spool.start_run("exp", "job", {})
    spool.end_run(single, "FINISHED")

    results = run_together(OPEN_THE_STORE, [[store.uri, str(mlruns)]] * 3)
    assert [r.returncode for r in results] == [0, 0, 0], "\n".join(r.stderr[-2000:] for r in results)
    assert "Traceback" not in "".join(r.stderr for r in results)
    assert pending(mlruns / "spool") == []
    runs = store.search_runs("exp")
    assert len(runs) == 3 and all(r.data.tags.get(SPOOLED_TAG) == "true" for r in runs)  # once each
    (uploaded_parent,) = [r for r in runs if r.data.tags.get("cfexp.sweep") == "parent"]
    (uploaded_child,) = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert uploaded_child.data.tags["mlflow.parentRunId"] == uploaded_parent.info.run_id
