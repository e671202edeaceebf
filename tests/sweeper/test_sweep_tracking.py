"""What cfexp's grid sweeper records on the sweep's MLflow parent run, and reads back from it.

A real (SQLite) MLflow store and a parent run made as cfexp's callback makes
it; the sweeper's planning step alone, without jobs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from cfexp.tracking.jobs import start_parent, tracker_for
from cfexp.vocab import SweepOrder
from hydra_plugins.cfexp_basic_sweeper._impl import PLAN_FILE, plan_sweep
from hydra_plugins.cfexp_basic_sweeper._order import order_jobs

GRID = [[f"x={x}", f"repetition={r}"] for x in range(3) for r in range(2)]


def sweep_config(tmp_path: Path) -> DictConfig:
    return OmegaConf.create({
        "hydra": {"sweep": {"dir": str(tmp_path / "multirun")}, "job": {"name": "app"}},
        "tracking": {"experiment": "exp", "uri": None},
        "paths": {"mlruns_dir": str(tmp_path / "mlruns")},
        "resume": False,
    })


def test_the_parent_records_the_order_and_a_resumed_sweep_reuses_its_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = sweep_config(tmp_path)
    tracker = tracker_for(None, tmp_path / "mlruns")
    sweep_dir = tmp_path / "multirun"
    sweep_dir.mkdir()
    parent = start_parent(tracker, "exp", sweep_dir, ["x=0,1,2", "repetition=0,1"], ["x", "repetition"], resume=False)

    first = plan_sweep(GRID, config, SweepOrder.blocked, None, "repetition")
    tags = tracker.get_run(parent).data.tags
    assert (tags["sweep.order"], tags["sweep.jobs"]) == ("blocked", "6")
    seed = int(tags["sweep.seed"])
    assert first == order_jobs(GRID, SweepOrder.blocked, seed)
    assert (sweep_dir / PLAN_FILE).read_text().startswith("cfexp sweep of experiment exp: 6 job(s)")
    assert "estimated duration: unknown" in capsys.readouterr().out

    # One FINISHED job of 30 s in the experiment (a parent's duration never counts).
    child = tracker.start_run("exp", "x=0", {}, parent, start_time_ms=1_000)
    tracker.end_run(child, "FINISHED", end_time_ms=31_000)
    # The same parent again (resume=true reopens it): no seed given, the recorded one orders the jobs.
    again = plan_sweep(GRID, config, SweepOrder.blocked, None, "repetition")
    assert again == first
    out = capsys.readouterr().out
    assert f"order: blocked, seed {seed}:" in out
    assert "estimated duration: about 3 min (median 30.0 s of 1 earlier FINISHED run(s) of exp x 6 jobs)" in out
    # A seed given on the command line wins, and is recorded.
    plan_sweep(GRID, config, SweepOrder.shuffled, seed + 1, "repetition")
    tags = tracker.get_run(parent).data.tags
    assert (tags["sweep.order"], tags["sweep.seed"]) == ("shuffled", str(seed + 1))


def test_without_a_parent_run_the_sweep_is_still_planned_and_announced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ordered = plan_sweep(GRID, sweep_config(tmp_path), SweepOrder.shuffled, 4, "repetition")
    assert ordered == order_jobs(GRID, SweepOrder.shuffled, 4)
    assert "order: shuffled, seed 4" in capsys.readouterr().out
