"""End to end: `python -m cfexp` multiruns on the simulator, checked in MLflow.

These start the real command as a subprocess (Hydra, servers, agent process,
SQLite MLflow store in a temporary folder) and look at what it recorded.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


# The simulator at 1/50 of real time: the same code path, quickly.
FAST_SIM = ("backend=sim", "backend.settings.time_scale=0.02")


def run_cfexp(
    tmp_path: Path,
    *args: str,
    timeout: float = 300,
    env: dict[str, str] | None = None,
    flags: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """`python -m cfexp ARGS` with every output (MLflow store included) under tmp_path."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | (env or {})
    command = [
        sys.executable, "-m", "cfexp", *args,
        f"paths.root_dir={tmp_path}",
        f"hydra.sweep.dir={tmp_path}/multirun",
        f"hydra.run.dir={tmp_path}/run",
        *flags,  # Hydra's own flags go after the overrides
    ]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def client_for(tmp_path: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")


def runs_of(tmp_path: Path) -> list:  # type: ignore[type-arg]
    client = client_for(tmp_path)
    experiment = client.get_experiment_by_name("cfexp")
    assert experiment is not None, "no experiment was created"
    return list(client.search_runs([experiment.experiment_id]))


def leftover_processes(tmp_path: Path) -> list[str]:
    """Processes whose command line mentions this test's folder (servers, agents)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(tmp_path) in cmdline and proc.pid != os.getpid():
            found.append(f"{proc.pid}: {cmdline}")
    return found


def test_multirun_on_sim_makes_a_parent_run_with_one_child_per_job(tmp_path: Path) -> None:
    done = run_cfexp(
        tmp_path, "-m", *FAST_SIM, "scenario=single_agent", "num_predict=12", "temperature=0.6,0.8"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = runs_of(tmp_path)
    parents = [r for r in runs if r.data.tags.get("cfexp.sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.data.params["temperature"] for c in children) == ["0.6", "0.8"]
    assert sorted(c.info.run_name for c in children) == ["temperature=0.6", "temperature=0.8"]

    client = client_for(tmp_path)
    for child in children:
        assert child.info.status == "FINISHED"
        tags, metrics = child.data.tags, child.data.metrics
        assert tags["provenance"] == "simulated"
        assert tags["backend"] == "sim" and tags["language"] == "python"
        assert tags["code_version"] and tags["host"] and tags["model_digest"].startswith("sha256:")  # the simulator's own, as it reports it
        for name in (
            "ttft_ms", "tpot_ms", "e2e_ms", "throughput_tok_s", "server_throughput_tok_s",
            "output_tokens", "agent_startup_ms", "agent_peak_rss_mb", "agent_cpu_ms",
            "ttft_ms_p50", "ttft_ms_p95", "ingest_files", "report_quality_overall",
            "connect_ms", "first_call_ttft_ms", "warm_ttft_ms",
        ):
            assert name in metrics, f"missing metric {name}"
        # Two calls: the first (cold) one on its own, the other as the warm mean.
        assert metrics["ttft_ms"] == pytest.approx((metrics["first_call_ttft_ms"] + metrics["warm_ttft_ms"]) / 2)
        assert metrics["calls_total"] == 2 and metrics["calls_failed"] == 0
        assert metrics["output_tokens"] == 12
        assert metrics["ttft_ms"] > 0 and metrics["agent_peak_rss_mb"] > 1
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"records.jsonl", "records.raw.jsonl", "config.yaml", "texts", ".hydra"} <= artifacts
        assert "agent.stderr.log" in artifacts
    assert leftover_processes(tmp_path) == []


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    # Job 0 gives the simulator a setting it rejects: its server does not
    # start. Job 1 is fine.
    done = run_cfexp(
        tmp_path, "-m", *FAST_SIM, "scenario=single_inference", "num_predict=4",
        "backend.settings.jitter_cv=-1,0",
    )
    assert done.returncode == 1
    assert "1 of 2 job(s) failed" in done.stderr
    assert "Traceback" not in done.stderr
    runs = runs_of(tmp_path)
    children = {r.data.params["backend.settings.jitter_cv"]: r for r in runs if r.data.tags.get("mlflow.parentRunId")}
    assert children["-1"].info.status == "FAILED"
    assert children["0"].info.status == "FINISHED"
    client = client_for(tmp_path)
    error_text = client.download_artifacts(children["-1"].info.run_id, "error.txt", str(tmp_path))
    assert "jitter_cv" in Path(error_text).read_text()
    parent = next(r for r in runs if r.data.tags.get("cfexp.sweep") == "parent")
    assert parent.info.status == "FAILED" and parent.data.tags["failed_jobs"] == "1"
    assert leftover_processes(tmp_path) == []


def test_an_invalid_value_in_a_sweep_is_reported_without_traceback(tmp_path: Path) -> None:
    done = run_cfexp(tmp_path, "-m", *FAST_SIM, "scenario=single_inference", "num_predict=4", "ctx=0,256")
    assert done.returncode == 1
    assert "<ctx=0> must be" in done.stderr
    assert "Traceback" not in done.stderr
    finished = [r for r in runs_of(tmp_path) if r.data.tags.get("mlflow.parentRunId")]
    assert [r.data.params["ctx"] for r in finished] == ["256"]


def test_a_single_invalid_run_exits_2_with_one_message(tmp_path: Path) -> None:
    done = run_cfexp(tmp_path, *FAST_SIM, "temperature=-3")
    assert done.returncode == 2
    assert "<temperature=-3.0> must be a number from 0 to 2" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unreachable_server_url_fails_clearly(tmp_path: Path) -> None:
    done = run_cfexp(tmp_path, "backend=ollama", "backend.url=http://127.0.0.1:9", "backend.start_if_absent=false")
    assert done.returncode == 1
    assert "no server answers" in done.stderr and "Traceback" not in done.stderr
    (run,) = runs_of(tmp_path)
    assert run.info.status == "FAILED"


def test_hydra_standard_flags_keep_working(tmp_path: Path) -> None:
    shown = run_cfexp(tmp_path, "backend=sim", "ctx=1024", flags=("--cfg", "job"))
    assert shown.returncode == 0 and "ctx: 1024" in shown.stdout and "name: sim" in shown.stdout
    info = run_cfexp(tmp_path, flags=("--info", "defaults"))
    assert info.returncode == 0 and "backend/llamacpp" in info.stdout
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()  # nothing ran


@pytest.mark.parametrize("writer", ["writer process", "in the harness"])
def test_the_store_file_alone_holds_every_run_once_the_command_ended(tmp_path: Path, writer: str) -> None:
    """WAL mode keeps the last commits in mlflow.db-wal until a checkpoint: the command folds them
    into mlflow.db as it exits, so a copy of the store file alone (published, sent on) misses none."""
    env = {"CFEXP_TRACKING_WRITER": "1" if writer == "writer process" else "0"}
    done = run_cfexp(tmp_path, "-m", *FAST_SIM, "scenario=single_inference", "runtime=tokio", "repetition=0,1,2",
                     env=env)
    assert done.returncode == 0, done.stderr
    store = tmp_path / "mlruns" / "mlflow.db"
    log_file = store.with_name("mlflow.db-wal")
    assert not log_file.exists() or log_file.stat().st_size == 0
    alone = tmp_path / "copy" / "mlflow.db"
    alone.parent.mkdir()
    alone.write_bytes(store.read_bytes())  # the file only, as a careless copy takes it
    with closing(sqlite3.connect(alone)) as db:
        statuses = sorted(status for (status,) in db.execute("SELECT status FROM runs"))
    assert statuses == ["FINISHED"] * 4  # the sweep's parent and its three jobs
