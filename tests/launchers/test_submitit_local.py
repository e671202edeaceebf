"""`hydra/launcher=submitit_local`: every job in its own process, one sweep.

The stand-in for a cluster here: jobs run in processes other than the one
that launched the sweep, so the parent run, the status files, the exit code,
per_sweep servers and the host lock must all work across processes.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil
import pytest
from omegaconf import OmegaConf

from tests.app.test_e2e_sim import client_for
from tests.app.test_kills import SLOW_SIM, assert_all_stopped, cmdline, started_cfexp
from tests.launchers.helpers import job_dirs, job_status, run_sweep, survivors, sweep_runs

pytestmark = pytest.mark.slow

LOCAL = "hydra/launcher=submitit_local"
PER_JOB_NOTE = "this job runs in its own process (hydra/launcher=submitit_local)"


def _server_window(job_dir: Path) -> tuple[str, str]:
    """When the job's server started serving and when it stopped (its own log's clock)."""
    lines = (job_dir / "servers" / "server0.log").read_text().splitlines()
    started = next(line for line in lines if "serving sim on" in line)
    stopped = next(line for line in lines if line.endswith(": stopped"))
    return started[:23], stopped[:23]  # "YYYY-MM-DD HH:MM:SS,mmm" sorts as time


def test_a_sweep_runs_each_job_in_its_own_process_under_one_parent_run(tmp_path: Path) -> None:
    done = run_sweep(tmp_path, LOCAL, "temperature=0.6,0.7,0.8")
    assert done.returncode == 0, done.stderr[-3000:]

    parent, children = sweep_runs(tmp_path)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["jobs"] == "3" and parent.data.tags["failed_jobs"] == "0"
    assert len(children) == 3
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.info.status for c in children} == {"FINISHED"}
    assert sorted(c.data.params["temperature"] for c in children) == ["0.6", "0.7", "0.8"]
    summary = client_for(tmp_path).download_artifacts(parent.info.run_id, "sweep_summary.txt", str(tmp_path))
    assert Path(summary).read_text().startswith("3 jobs, 0 failed")

    sweep_dir = tmp_path / "multirun"
    # One submitit job (a controller process, named by its pid) per Hydra job,
    # and each Hydra job ran as one of them.
    controllers = sorted(int(p.name) for p in (sweep_dir / ".submitit").iterdir() if p.name.isdigit())
    assert len(controllers) == 3
    job_ids = [OmegaConf.load(d / ".hydra" / "hydra.yaml").hydra.job.id for d in job_dirs(sweep_dir)]
    assert sorted(int(job_id) for job_id in job_ids) == controllers
    for job_dir in job_dirs(sweep_dir):
        assert job_status(job_dir) == "FINISHED"
        # per_sweep cannot span processes: the job said so and used servers of its own,
        # which it stopped itself (the server logged its SIGTERM).
        assert PER_JOB_NOTE in (job_dir / "__main__.log").read_text()
        assert "received SIGTERM" in (job_dir / "servers" / "server0.log").read_text()
    assert not (sweep_dir / "servers").exists()
    assert not [pid for pid in controllers if psutil.pid_exists(pid)]
    assert survivors(tmp_path) == []


def test_a_failed_job_in_another_process_makes_the_command_exit_1(tmp_path: Path) -> None:
    # Job 0's simulator rejects its setting: its server does not start. Job 1 is fine.
    done = run_sweep(tmp_path, LOCAL, "backend.settings.jitter_cv=-1,0")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "1 of 2 job(s) failed" in done.stderr and "Traceback" not in done.stderr

    parent, children = sweep_runs(tmp_path)
    assert parent.info.status == "FAILED" and parent.data.tags["failed_jobs"] == "1"
    by_setting = {c.data.params["backend.settings.jitter_cv"]: c for c in children}
    assert by_setting["-1"].info.status == "FAILED" and by_setting["0"].info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert [job_status(d) for d in job_dirs(tmp_path / "multirun")] == ["FAILED", "FINISHED"]
    assert survivors(tmp_path) == []


def test_parallel_jobs_on_one_host_take_turns_with_the_host_lock(tmp_path: Path) -> None:
    """Invariant: a job starts its managed servers only after the other job's
    servers stopped, so their serving windows never overlap."""
    locks = tmp_path / "locks"
    done = run_sweep(
        tmp_path, LOCAL, "topology.host_lock=always", "temperature=0.6,0.8", env={"CFEXP_LOCK_DIR": str(locks)}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    windows = sorted(_server_window(d) for d in job_dirs(tmp_path / "multirun"))
    assert len(windows) == 2
    (_, first_stopped), (second_started, _) = windows
    assert first_stopped <= second_started, windows
    assert (locks / "managed-servers.lock").exists()
    assert survivors(tmp_path) == []


def wait_until_both_jobs_stream(main: psutil.Process, sweep_dir: Path) -> None:
    """Both jobs run at once (submitit_local starts a batch together): wait until both stream."""
    deadline = time.monotonic() + 120
    while len([p for p in sweep_dir.glob("*/records.raw.jsonl") if '"kind":"ready"' in p.read_text()]) < 2:
        assert main.is_running() and time.monotonic() < deadline, "the jobs never started streaming"
        time.sleep(0.1)


def test_sigterm_to_the_sweep_stops_the_jobs_in_other_processes(tmp_path: Path) -> None:
    # submitit's jobs ignore SIGTERM (SLURM's pre-emption warning): cfexp passes its
    # own SIGTERM on to the launched jobs, and each marks its run KILLED.
    with started_cfexp(tmp_path, "-m", LOCAL, *SLOW_SIM, "temperature=0.6,0.8") as cfexp:
        main = psutil.Process(cfexp.pid)
        wait_until_both_jobs_stream(main, tmp_path / "multirun")
        tree = [main, *main.children(recursive=True)]
        assert sum("cfexp.serving" in cmdline(p) for p in tree) == 2  # a server per job
        cfexp.send_signal(signal.SIGTERM)
        _, stderr = cfexp.communicate(timeout=120)
    assert cfexp.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert_all_stopped(tree)
    assert survivors(tmp_path) == []
    parent, children = sweep_runs(tmp_path)
    assert parent.info.status == "KILLED"
    assert sorted(c.info.status for c in children) == ["KILLED", "KILLED"]
    assert [job_status(d) for d in job_dirs(tmp_path / "multirun")] == ["KILLED", "KILLED"]


def test_a_job_process_that_dies_fails_its_run_and_the_sweep_ends_cleanly(tmp_path: Path) -> None:
    # A job's process SIGKILLed (as by the OOM killer) leaves no result: submitit's
    # launcher raises. cfexp still lets the other job finish, ends the dead job's run
    # and the parent FAILED, and leaves no process behind.
    with started_cfexp(tmp_path, "-m", LOCAL, *SLOW_SIM, "temperature=0.6,0.8") as cfexp:
        main = psutil.Process(cfexp.pid)
        wait_until_both_jobs_stream(main, tmp_path / "multirun")
        tree = [main, *main.children(recursive=True)]
        job_processes = [p for p in tree if "submitit.core._submit" in cmdline(p)]
        assert len(job_processes) == 2
        job_processes[0].kill()
        _, stderr = cfexp.communicate(timeout=180)
    assert cfexp.returncode == 1, stderr[-3000:]
    assert "without a result" in stderr
    assert_all_stopped(tree)
    assert survivors(tmp_path) == []
    parent, children = sweep_runs(tmp_path)
    assert parent.info.status == "FAILED"
    assert sorted(c.info.status for c in children) == ["FAILED", "FINISHED"]
