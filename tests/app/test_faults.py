"""Fault survival, end to end: each injected server fault fails its job, and the sweep goes on.

Every test runs the real `python -m cfexp -m` on the simulator with fault
injection (docs/serving.md, "Fault settings"): the faulty job ends as a FAILED
MLflow run whose error names the error kind (docs/record-schema.md), the next
job of the sweep runs and finishes, the parent run is FAILED, and no server or
agent process is left. docs/fault-model.md maps each fault to these tests.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from tests.app.test_e2e_sim import FAST_SIM, REPO, client_for, leftover_processes, run_cfexp, runs_of

pytestmark = pytest.mark.slow

# One sweep over the faults (each job gets a fresh server, so each fault hits
# the job's first call), then a job without faults.
FAULTS = {
    "{fail_status:500}": "error_kind=http_status",
    "{fail_status:503}": "error_kind=http_status",
    "{drop_after_tokens:3}": "error_kind=incomplete_stream",
    "{malformed_after_tokens:2}": "error_kind=malformed_stream",
    "{hang_after_tokens:2}": "error_kind=timeout",
}


def error_text(tmp_path: Path, run_id: str) -> str:
    path = client_for(tmp_path).download_artifacts(run_id, "error.txt", str(tmp_path / "dl" / run_id))
    return Path(path).read_text()


def test_each_server_fault_fails_its_job_and_the_sweep_goes_on(tmp_path: Path) -> None:
    sweep = ",".join([*FAULTS, "{}"])
    done = run_cfexp(
        tmp_path, "-m", *FAST_SIM, "scenario=single_inference", "num_predict=16", "timeouts.call_s=3",
        f"+backend.settings.faults={sweep}",
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert f"{len(FAULTS)} of {len(FAULTS) + 1} job(s) failed" in done.stderr
    assert "Traceback" not in done.stderr
    runs = runs_of(tmp_path)
    children = sorted(
        (r for r in runs if r.data.tags.get("mlflow.parentRunId")), key=lambda r: int(r.data.tags["hydra.job_num"])
    )
    assert len(children) == len(FAULTS) + 1
    for run, (fault, kind) in zip(children, FAULTS.items(), strict=False):
        assert run.info.status == "FAILED", fault
        assert run.data.metrics["calls_failed"] == 1, fault
        assert kind in error_text(tmp_path, run.info.run_id), fault
    assert children[-1].info.status == "FINISHED"  # the job after the faults ran and finished
    assert children[-1].data.metrics["calls_failed"] == 0
    (parent,) = [r for r in runs if r.data.tags.get("cfexp.sweep") == "parent"]
    assert parent.info.status == "FAILED"
    statuses = [
        json.loads((tmp_path / "multirun" / str(i) / "cfexp_status.json").read_text())["status"]
        for i in range(len(children))
    ]
    assert statuses == ["FAILED"] * len(FAULTS) + ["FINISHED"]
    assert leftover_processes(tmp_path) == []


def test_a_server_that_never_answers_is_stopped_by_the_run_timeout(tmp_path: Path) -> None:
    # The call timeout is longer than the run's: the run timeout fires first and stops the agent.
    done = run_cfexp(
        tmp_path, "-m", *FAST_SIM, "scenario=single_inference", "num_predict=8",
        "timeouts.call_s=600", "timeouts.run_s=4", "+backend.settings.faults={hang_after_tokens:0},{}",
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "exceeded timeouts.run_s" in done.stderr and "Traceback" not in done.stderr
    children = sorted(
        (r for r in runs_of(tmp_path) if r.data.tags.get("mlflow.parentRunId")),
        key=lambda r: int(r.data.tags["hydra.job_num"]),
    )
    assert [r.info.status for r in children] == ["FAILED", "FINISHED"]
    assert "timeouts.run_s" in error_text(tmp_path, children[0].info.run_id)
    assert leftover_processes(tmp_path) == []


def test_a_failed_warm_up_is_a_warning_and_the_measured_calls_record_the_fault(tmp_path: Path) -> None:
    """The warm-up is the job's first generation request: a server that fails it is measured anyway
    (the measured calls meet the same server), and the run says its warm-up failed."""
    done = run_cfexp(
        tmp_path, *FAST_SIM, "scenario=single_inference", "num_predict=8", "+backend.settings.faults={fail_status:503}",
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    (run,) = runs_of(tmp_path)
    assert run.info.status == "FAILED"
    assert "error_kind=http_status" in error_text(tmp_path, run.info.run_id)  # the measured call's own failure
    assert run.data.metrics["calls_failed"] == 1
    warning = run.data.tags["measurement_warnings"]
    assert "a warm-up call to <instance=0" in warning and "503" in warning, warning
    assert run.data.metrics["measurement_warnings"] >= 1


@pytest.mark.parametrize(
    "args, key",
    [
        (["hydra.run.dir={blocked}/run"], "hydra.run.dir"),
        (["-m", "hydra.sweep.dir={blocked}/sweep", "temperature=0.6,0.8"], "hydra.sweep.dir"),
        (["paths.mlruns_dir={blocked}/mlruns"], "paths.mlruns_dir"),
    ],
    ids=["run_dir", "sweep_dir", "mlruns_dir"],
)
def test_an_output_folder_that_cannot_be_written_stops_before_any_job(
    tmp_path: Path, args: list[str], key: str
) -> None:
    # Below a regular file: no one can create it, root included (tests run as root).
    blocked = tmp_path / "a-file.txt"
    blocked.write_text("not a folder\n")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    defaults = [f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/multirun"]
    given = [a.format(blocked=blocked) for a in args]
    overrides = [d for d in defaults if d.split("=")[0] not in {g.split("=")[0] for g in given}]
    done = subprocess.run(
        [sys.executable, "-m", "cfexp", *given, *FAST_SIM, "scenario=single_inference", *overrides],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    message = done.stderr.strip()
    assert message.startswith(f"cfexp: cannot write the output folder <{key}={blocked}/")
    assert "Not a directory" in message and "No job was started" in message
    assert "\n" not in message and "Traceback" not in message  # one paragraph, nothing else
    # No job ran and no server started: no status file, no server log, no MLflow store.
    written = {p.name for p in tmp_path.rglob("*")}
    assert not written & {"cfexp_status.json", "servers", "mlflow.db", "records.raw.jsonl"}, written
    assert leftover_processes(tmp_path) == []


def test_a_parent_run_that_cannot_be_created_stops_the_sweep(tmp_path: Path) -> None:
    # MLflow refuses new runs in a deleted experiment: the parent run cannot be
    # created. Hydra would only warn about the callback's error and run every job
    # unlinked; cfexp stops before any job instead.
    (tmp_path / "mlruns").mkdir()
    client = client_for(tmp_path)
    client.delete_experiment(client.create_experiment("cfexp"))

    done = run_cfexp(tmp_path, "-m", *FAST_SIM, "scenario=single_inference", "temperature=0.6,0.8")

    assert done.returncode == 1, done.stderr[-3000:]
    assert "cfexp: could not create the sweep's parent run" in done.stderr
    assert "No job was started" in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.rglob("cfexp_status.json"))  # no job ran
    assert leftover_processes(tmp_path) == []


@pytest.mark.parametrize("args", [[], ["-m", "temperature=0.6,0.8"]], ids=["run", "sweep"])
def test_a_half_migrated_store_stops_the_command_with_what_to_do(tmp_path: Path, args: list[str]) -> None:
    # A store with a run, left half-migrated as two processes migrating it at once left it.
    (tmp_path / "mlruns").mkdir()
    client = client_for(tmp_path)
    client.set_terminated(client.create_run(client.create_experiment("cfexp")).info.run_id)
    store = tmp_path / "mlruns" / "mlflow.db"
    with closing(sqlite3.connect(store)) as db:
        db.execute("CREATE TABLE _alembic_tmp_latest_metrics AS SELECT * FROM latest_metrics")
        db.commit()
    before = store.read_bytes()

    done = run_cfexp(tmp_path, *args, *FAST_SIM, "scenario=single_inference")

    assert done.returncode == 1, done.stderr[-3000:]
    assert f"cfexp: the tracking store <tracking.uri=sqlite:///{store}> was left half-migrated" in done.stderr
    assert "table _alembic_tmp_latest_metrics is left over" in done.stderr
    assert "No run data is lost" in done.stderr and "mlflow db upgrade" in done.stderr
    assert "No job was started" in done.stderr and "Traceback" not in done.stderr
    assert store.read_bytes() == before  # cfexp changed nothing
    assert not list(tmp_path.rglob("cfexp_status.json"))  # no job ran
    assert leftover_processes(tmp_path) == []
