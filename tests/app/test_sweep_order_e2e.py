"""End to end: a randomised sweep on the simulator, and its resumption, checked in MLflow.

`python -m cfexp -m … hydra.sweeper.order=blocked` as a subprocess: the parent
run records the order and its seed, every job run its position; folder N,
its status file and its run are the job planned at position N; the paired
baselines ran against servers started with their own defaults. Then the same
command with resume=true re-derives the same order from the recorded seed.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from cfexp.tracking.jobs import POSITION_TAG
from cfexp.vocab import SweepOrder
from hydra_plugins.cfexp_basic_sweeper._order import order_jobs
from tests.app.test_e2e_sim import client_for, leftover_processes, run_cfexp, runs_of

pytestmark = pytest.mark.slow

SWEEP = (
    "-m", "backend=sim", "backend.settings.time_scale=0.02", "scenario=single_inference", "num_predict=4",
    "temperature=0.6,0.8", "options_mode=configured,server_defaults", "repetition=0,1",
    "hydra.sweeper.order=blocked",
)


def grid(tmp_path: Path) -> list[list[str]]:
    """Hydra's grid of that command (run_cfexp adds paths.root_dir): the last key fastest."""
    return [
        ["backend=sim", "backend.settings.time_scale=0.02", "scenario=single_inference", "num_predict=4",
         f"temperature={t}", f"options_mode={m}", f"repetition={r}", f"paths.root_dir={tmp_path}"]
        for t, m, r in itertools.product(("0.6", "0.8"), ("configured", "server_defaults"), ("0", "1"))
    ]


def plan_lines(sweep_dir: Path) -> list[str]:
    text = (sweep_dir / "sweep_plan.txt").read_text()
    return [line.split(None, 1)[1] for line in text.split("overrides):\n")[1].splitlines()]


def test_a_blocked_sweep_records_its_order_and_a_resumed_one_keeps_it(tmp_path: Path) -> None:
    done = run_cfexp(tmp_path, *SWEEP)
    assert done.returncode == 0, done.stderr[-3000:]
    # The announcement comes before Hydra launches anything.
    out = done.stdout
    assert out.index("cfexp sweep of experiment cfexp: 8 job(s) = 4 config(s) x 2 repetition(s)") < out.index(
        "Launching 8 jobs locally"
    )
    assert "estimated duration: unknown (no earlier FINISHED run in experiment cfexp)" in done.stdout

    runs = runs_of(tmp_path)
    (parent,) = [r for r in runs if r.data.tags.get("cfexp.sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert parent.data.tags["sweep.order"] == "blocked" and parent.data.tags["sweep.jobs"] == "8"
    seed = int(parent.data.tags["sweep.seed"])  # drawn afresh (none given), recorded
    planned = order_jobs(grid(tmp_path), SweepOrder.blocked, seed)
    artifacts = {a.path for a in client_for(tmp_path).list_artifacts(parent.info.run_id)}
    assert "sweep_plan.txt" in artifacts

    sweep_dir = tmp_path / "multirun"
    by_position = {int(r.data.tags[POSITION_TAG]): r for r in children}
    assert sorted(by_position) == list(range(8))
    starts = [by_position[p].info.start_time for p in range(8)]
    assert starts == sorted(starts)  # position = the order they ran
    for position, run in by_position.items():
        assert run.info.status == "FINISHED"
        assert run.data.tags["overrides"] == " ".join(planned[position])
        assert run.data.tags["hydra.output_dir"] == str(sweep_dir / str(position))
        status = json.loads((sweep_dir / str(position) / "cfexp_status.json").read_text())
        assert status["run_id"] == run.info.run_id and status["overrides"] == planned[position]
        assert "sweep.position" not in run.data.params and "sweep" not in " ".join(run.data.params)
        # The baseline's server ran with its own defaults; the candidate's with ctx 512.
        if run.data.params["options_mode"] == "server_defaults":
            assert run.data.tags["launch.num_ctx"] == "default"
            assert run.data.tags["effective.num_ctx"] == "4096"
        else:
            assert run.data.tags["launch.num_ctx"] == run.data.tags["effective.num_ctx"] == "512"
    assert plan_lines(sweep_dir) == [" ".join(job) for job in planned]
    # Every block (repetition) runs each of the 4 configs once.
    for block in (planned[:4], planned[4:]):
        assert len({tuple(o for o in job if not o.startswith("repetition=")) for job in block}) == 4

    # resume=true: the same order again (the parent's seed), every job skipped, the same parent.
    done = run_cfexp(tmp_path, *SWEEP, "resume=true")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"order: blocked, seed {seed}" in done.stdout
    resumed = [" ".join(o for o in line.split() if not o.startswith("resume=")) for line in plan_lines(sweep_dir)]
    assert resumed == [" ".join(job) for job in planned]
    for position, run in by_position.items():
        status = json.loads((sweep_dir / str(position) / "cfexp_status.json").read_text())
        assert status["status"] == "SKIPPED" and status["run_id"] == run.info.run_id
    parents = [r for r in runs_of(tmp_path) if r.data.tags.get("cfexp.sweep") == "parent"]
    assert [p.info.run_id for p in parents] == [parent.info.run_id]
    assert "estimated duration: about" in done.stdout  # earlier FINISHED runs now exist
    assert leftover_processes(tmp_path) == []


def test_a_failed_job_is_named_by_its_folder_in_the_summary(tmp_path: Path) -> None:
    """Job folders follow the run order: the summary points at the right one."""
    done = run_cfexp(
        tmp_path, "-m", "backend=sim", "backend.settings.time_scale=0.02", "scenario=single_inference",
        "num_predict=4", "backend.settings.jitter_cv=-1,0", "hydra.sweeper.order=shuffled", "hydra.sweeper.seed=1",
    )
    assert done.returncode == 1
    planned = order_jobs(
        [[*("backend=sim", "backend.settings.time_scale=0.02", "scenario=single_inference", "num_predict=4"),
          f"backend.settings.jitter_cv={v}", f"paths.root_dir={tmp_path}"] for v in ("-1", "0")],
        SweepOrder.shuffled, 1,
    )
    bad = next(i for i, job in enumerate(planned) if "backend.settings.jitter_cv=-1" in job)
    assert f"  - [FAILED] #{bad} " in done.stderr
    status = json.loads((tmp_path / "multirun" / str(bad) / "cfexp_status.json").read_text())
    assert status["status"] == "FAILED" and status["overrides"] == planned[bad]
    assert leftover_processes(tmp_path) == []
