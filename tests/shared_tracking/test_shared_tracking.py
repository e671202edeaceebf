"""Shared tracking, for real: several cfexp processes logging to one MLflow server on PostgreSQL.

The fixtures (conftest.py) start a throwaway PostgreSQL cluster and
``mlflow server`` on it with artifacts proxied through the server. The
tests start real ``python -m cfexp -m …`` sweeps at the same time, each in
its own process (and, with ``hydra/launcher=submitit_local``, each job in
a process of its own), then ask the server what it holds: every job a
FINISHED child run of its sweep's parent, with its metrics and artifacts,
none lost and none twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.app.test_e2e_sim import FAST_SIM, leftover_processes
from tests.shared_tracking.services import MlflowServer

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

JOB = (*FAST_SIM, "scenario=single_inference", "num_predict=8")
# What every job's run must hold on the server (a few of each kind).
METRICS = ("ttft_ms", "e2e_ms", "output_tokens", "calls_total", "agent_startup_ms")
ARTIFACTS = {"config.yaml", "records.jsonl", "records.raw.jsonl", "texts", ".hydra"}


def start_cfexp(root: Path, *args: str) -> subprocess.Popen[str]:
    """`python -m cfexp ARGS` in the background, its outputs (not its runs) under root."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    command = [
        sys.executable, "-m", "cfexp", *args,
        f"paths.root_dir={root}", f"hydra.sweep.dir={root}/multirun", f"hydra.run.dir={root}/run",
    ]
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_all(processes: Sequence[subprocess.Popen[str]], timeout: float = 600) -> list[str]:
    """Wait for every process; their stderr. Kills the rest if one hangs."""
    errors = []
    try:
        for process in processes:
            _, stderr = process.communicate(timeout=timeout)
            errors.append(stderr)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    for process, stderr in zip(processes, errors, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    return errors


def runs_in(server: MlflowServer, experiment: str) -> list:  # type: ignore[type-arg]
    client = MlflowClient(tracking_uri=server.url)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment} on the server"
    return list(client.search_runs([found.experiment_id], max_results=10000))


def describe(runs: list) -> str:  # type: ignore[type-arg]
    return "\n".join(
        f"{r.info.run_id} {r.info.status} parent={r.data.tags.get('mlflow.parentRunId')} "
        f"dir={r.data.tags.get('hydra.output_dir') or r.data.tags.get('sweep_dir')}"
        for r in runs
    )


def check_sweep(
    server: MlflowServer, runs: list, root: Path, keys: tuple[str, ...], expected: set[tuple[str, ...]]  # type: ignore[type-arg]
) -> None:
    """The sweep run from root: one FINISHED parent, and one FINISHED child per expected job.

    keys: the swept params; expected: their values, one tuple per job.
    """
    parents = [r for r in runs if r.data.tags.get("sweep_dir") == f"{root}/multirun"]
    assert len(parents) == 1, describe(runs)
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(expected), "a job's run is lost or duplicated:\n" + describe(runs)
    assert {tuple(c.data.params[key] for key in keys) for c in children} == expected
    assert {c.data.tags["hydra.job_num"] for c in children} == {str(n) for n in range(len(expected))}
    assert parent.data.tags["jobs"] == str(len(expected)) and parent.data.tags["failed_jobs"] == "0"
    client = MlflowClient(tracking_uri=server.url)
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["provenance"] == "simulated"
        for metric in METRICS:
            assert metric in child.data.metrics, f"run {child.info.run_id} has no {metric}"
        assert child.data.metrics["calls_failed"] == 0
        # Uploaded through the server (mlflow-artifacts:), stored in its folder.
        assert child.info.artifact_uri.startswith("mlflow-artifacts:")
        assert {a.path for a in client.list_artifacts(child.info.run_id)} >= ARTIFACTS
        assert list(server.artifacts.rglob(f"{child.info.run_id}/artifacts/records.jsonl"))
    # Nothing fell back to a local store.
    assert not (root / "mlruns" / "mlflow.db").exists()


def test_concurrent_sweeps_in_many_processes_log_every_job_once(
    tracking_server: MlflowServer, experiment: str, tmp_path: Path
) -> None:
    """Two sweeps at once into one experiment: one in-process, one with a process per job."""
    tracking = (f"tracking.uri={tracking_server.url}", f"tracking.experiment={experiment}")
    in_process, per_job = tmp_path / "in_process", tmp_path / "per_job"
    processes = [
        start_cfexp(in_process, "-m", *JOB, *tracking, "repetition=0,1,2,3", "temperature=0.6,0.8"),
        start_cfexp(
            per_job, "-m", *JOB, *tracking, "hydra/launcher=submitit_local",
            "repetition=0,1,2", "temperature=0.7",
        ),
    ]
    wait_all(processes)

    runs = runs_in(tracking_server, experiment)
    assert len({r.info.run_id for r in runs}) == len(runs)
    assert len(runs) == 2 + 8 + 3, describe(runs)
    keys = ("repetition", "temperature")
    check_sweep(tracking_server, runs, in_process, keys, {(r, t) for r in "0123" for t in ("0.6", "0.8")})
    check_sweep(tracking_server, runs, per_job, keys, {(r, "0.7") for r in "012"})
    assert leftover_processes(tmp_path) == []


def test_two_workers_share_one_optuna_study_with_no_trial_lost_or_twice(
    tracking_server: MlflowServer, optuna_url: str, experiment: str, tmp_path: Path
) -> None:
    """Two sweeper processes started at once on one study in PostgreSQL, runs on the shared server.

    The study ends with exactly the trials both asked for, numbered 0…n-1
    once each, each linked to its own FINISHED MLflow run; the baseline is
    enqueued by the worker that created the study only.
    """
    n_trials = {"worker0": 3, "worker1": 4}
    common = (
        "-m", "hydra/sweeper=cfexp_optuna", *JOB, "backend.settings.jitter_cv=0",
        "gpu_layers=choice(0,12,80)", "ctx=choice(512,1024)",
        f"hydra.sweeper.storage={optuna_url}", "hydra.sweeper.study_name=shared",
        f"tracking.uri={tracking_server.url}", f"tracking.experiment={experiment}",
    )
    processes = [
        start_cfexp(tmp_path / name, *common, f"hydra.sweeper.n_trials={count}") for name, count in n_trials.items()
    ]
    wait_all(processes)

    study = optuna.load_study(study_name="shared", storage=optuna_url)
    total = sum(n_trials.values())
    assert sorted(t.number for t in study.trials) == list(range(total))
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    baseline = [t for t in study.trials if t.user_attrs.get("cfexp.baseline")]
    repetitions = [t.user_attrs.get("cfexp.baseline_repetition") for t in baseline]
    assert baseline and len(set(repetitions)) == len(repetitions), "the baseline was enqueued twice"

    runs = {r.info.run_id: r for r in runs_in(tracking_server, experiment)}
    parents = {r.data.tags["sweep_dir"]: r for r in runs.values() if r.data.tags.get("cfexp.sweep") == "parent"}
    assert set(parents) == {f"{tmp_path / name}/multirun" for name in n_trials}
    run_ids = [t.user_attrs["mlflow_run_id"] for t in study.trials]
    assert len(set(run_ids)) == total
    for trial in study.trials:
        run = runs[trial.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["trial.study"] == "shared" and run.data.tags["trial.number"] == str(trial.number)
        assert run.data.params["gpu_layers"] == str(trial.params["gpu_layers"])
        assert run.data.metrics["throughput_tok_s"] == pytest.approx(trial.value)
    for name, count in n_trials.items():  # each worker ran its own n_trials, under its own parent
        parent = parents[f"{tmp_path / name}/multirun"]
        assert parent.info.status == "FINISHED"
        children = [r for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(children) == count
        assert {r.info.run_id for r in children} <= set(run_ids)
    assert leftover_processes(tmp_path) == []
