"""Shared by the launcher tests: runs of `python -m cfexp` with a launcher,
and the checks that no process outlives them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import psutil

from tests.app.test_e2e_sim import FAST_SIM, leftover_processes, run_cfexp, runs_of

# A short job on the fast simulator: the whole path (server, agent, MLflow), quickly.
QUICK_JOB = (*FAST_SIM, "scenario=single_inference", "num_predict=4")
# Set in the environment of the command under test; every process it starts
# inherits it, including the launchers' own (submitit controllers, Ray workers).
MARK = "CFEXP_LAUNCHER_TEST"


def run_sweep(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m cfexp -m QUICK_JOB ARGS`, marked so that its processes can be found."""
    return run_cfexp(tmp_path, "-m", *QUICK_JOB, *args, timeout=240, env={MARK: str(tmp_path), **(env or {})})


def survivors(tmp_path: Path) -> list[str]:
    """Every process still running that the command started (by PID): those that
    inherited its mark, and those whose command line names the test's folder."""
    found = set(leftover_processes(tmp_path))
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.environ().get(MARK) == str(tmp_path):
                found.add(f"{proc.pid}: {' '.join(proc.info['cmdline'] or [])}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return sorted(found)


def sweep_runs(tmp_path: Path) -> tuple[Any, list[Any]]:
    """The sweep's parent MLflow run and its children."""
    runs = runs_of(tmp_path)
    parents = [r for r in runs if r.data.tags.get("cfexp.sweep") == "parent"]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    return parents[0], children


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def job_status(job_dir: Path) -> str:
    return str(json.loads((job_dir / "cfexp_status.json").read_text())["status"])
