"""End to end: a tracking server that cannot be reached loses nothing.

`python -m cfexp` runs against http://127.0.0.1:<closed port>: the jobs still
run and are kept in the spool. Then a real `mlflow server` (SQLite backend in
tmp_path) starts on that very port, and the runs are uploaded: with
`cfexp sync`, or by the next cfexp run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.app.test_e2e_sim import FAST_SIM, leftover_processes, run_cfexp
from tests.tracking.test_spool import closed_port

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2):
            return True
    except (urllib.error.URLError, OSError):
        return False


class MlflowServer:
    """`mlflow server` processes on 127.0.0.1, SQLite store and artifacts in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, port: int) -> str:
        log = (self.folder / "mlflow-server.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{self.folder}/server.db",
             "--artifacts-destination", str(self.folder / "server-artifacts")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.folder,
            # MLflow 3's background job runner: processes cfexp never uses, slow to start.
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        log.close()
        self.running.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120  # a readiness wait, not a measurement
        while not _serving(url):
            assert process.poll() is None, (self.folder / "mlflow-server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)
        return url

    def stop(self) -> None:
        """Stop every server started, with its whole process group (workers too)."""
        while self.running:
            process = self.running.pop()
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=15)
                    break
                except subprocess.TimeoutExpired:
                    continue


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def _spooled(tmp_path: Path) -> list[Path]:
    root = tmp_path / "mlruns" / "spool"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def test_a_sweep_is_kept_locally_and_uploaded_by_cfexp_sync(
    tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    port = closed_port()
    uri = f"http://127.0.0.1:{port}"
    done = run_cfexp(
        tmp_path, "-m", *FAST_SIM, "scenario=single_inference", "num_predict=4", "temperature=0.6,0.8",
        f"tracking.uri={uri}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cannot be reached" in done.stderr + done.stdout
    assert len(_spooled(tmp_path)) == 3  # the parent and two jobs
    assert leftover_processes(tmp_path) == []

    url = mlflow_server.start(port)
    synced = subprocess.run(
        [sys.executable, "-m", "cfexp.cli", "sync", "--mlruns", str(tmp_path / "mlruns")],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert synced.returncode == 0, synced.stderr
    assert "uploaded 3 run(s)" in synced.stdout
    assert _spooled(tmp_path) == []

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("cfexp")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("cfexp.sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert parent.info.status == "FINISHED" and parent.data.tags["jobs"] == "2"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.data.params["temperature"] for c in children) == ["0.6", "0.8"]
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.metrics["calls_total"] == 1 and child.data.metrics["output_tokens"] == 4
        assert child.data.tags["cfexp.config_hash"] and child.data.tags["provenance"] == "simulated"
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"records.jsonl", "config.yaml", "texts", ".hydra"} <= artifacts
        records = client.download_artifacts(child.info.run_id, "records.jsonl", str(tmp_path))
        assert '"kind": "call"' in Path(records).read_text()


def test_the_next_run_uploads_what_was_spooled(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    port = closed_port()
    args = (*FAST_SIM, "scenario=single_inference", "num_predict=4", f"tracking.uri=http://127.0.0.1:{port}")
    first = run_cfexp(tmp_path, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert len(_spooled(tmp_path)) == 1

    url = mlflow_server.start(port)
    second = run_cfexp(tmp_path, *args, "temperature=0.7")
    assert second.returncode == 0, second.stderr[-3000:]
    assert _spooled(tmp_path) == []
    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("cfexp")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.params["temperature"] for r in runs) == ["0.7", "0.8"]
    assert all(r.info.status == "FINISHED" and r.data.metrics["output_tokens"] == 4 for r in runs)
    assert [r.data.tags.get("cfexp.spooled") for r in runs if r.data.params["temperature"] == "0.8"] == ["true"]
    assert [p for p in leftover_processes(tmp_path) if " -m mlflow server " not in p] == []


def test_a_server_lost_in_the_middle_of_a_run_loses_nothing(
    tmp_path: Path, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cfexp.tracking.spool import FallbackTracker, open_tracker, pending

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's retries would take minutes
    port = closed_port()
    url = mlflow_server.start(port)
    tracker = open_tracker(url, tmp_path / "mlruns")
    assert isinstance(tracker, FallbackTracker)
    run_id = tracker.start_run("exp", "job", {"provenance": "simulated"})
    tracker.log_batch(run_id, params={"ctx": 512}, metrics={"ttft_ms": 1.0})

    mlflow_server.stop()
    tracker.log_batch(run_id, metrics={"e2e_ms": 2.0}, tags={"backend": "sim"})
    (tmp_path / "records.jsonl").write_text("{}\n")
    tracker.log_artifact(run_id, tmp_path / "records.jsonl")
    tracker.end_run(run_id, "FINISHED")
    assert pending(tmp_path / "mlruns" / "spool") == [run_id]

    mlflow_server.start(port)
    again = open_tracker(url, tmp_path / "mlruns")  # the next run: uploads the spool first
    assert pending(tmp_path / "mlruns" / "spool") == []
    run = again.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics == {"ttft_ms": 1.0, "e2e_ms": 2.0}
    assert run.data.params == {"ctx": "512"} and run.data.tags["backend"] == "sim"
    assert [a.path for a in MlflowClient(tracking_uri=url).list_artifacts(run_id)] == ["records.jsonl"]
