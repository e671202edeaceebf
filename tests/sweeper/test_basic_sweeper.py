"""cfexp's grid sweeper (hydra/sweeper=cfexp_basic) inside one process, on a toy task.

The toy task writes its job number and overrides into its folder, so these
sweeps check in milliseconds what the real ones rely on: the jobs run in the
planned order, each folder holds the job its number says, and the sweep is
announced before the first job. The sweep of the real cfexp task on the
simulator is in tests/app/test_sweep_order_e2e.py.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hydra import version
from hydra._internal.hydra import Hydra
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig

from cfexp.vocab import SweepOrder
from hydra_plugins.cfexp_basic_sweeper._impl import PLAN_FILE
from hydra_plugins.cfexp_basic_sweeper._order import order_jobs
from hydra_plugins.cfexp_basic_sweeper.cfexp_basic_sweeper import CfexpBasicSweeper


@dataclass
class ToyGridSchema:
    x: int = 0
    y: int = 0
    repetition: int = 0


ConfigStore.instance().store(name="toy_grid_schema", node=ToyGridSchema)


def grid_task(cfg: DictConfig) -> dict[str, float]:
    hydra_cfg = HydraConfig.get()
    out = Path(hydra_cfg.runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ran = {"num": hydra_cfg.job.num, "overrides": list(hydra_cfg.overrides.task), "x": cfg.x, "y": cfg.y}
    (out / "ran.json").write_text(json.dumps(ran))
    print(f"TOY JOB {hydra_cfg.job.num}")
    return {"x": float(cfg.x)}


Sweep = Callable[..., None]


@pytest.fixture
def sweep(tmp_path: Path) -> Iterator[Sweep]:
    """sweep("x=0,1", ...): a multirun of the toy task with cfexp's grid sweeper."""
    version.setbase("1.3")

    def run(*overrides: str) -> None:
        GlobalHydra.instance().clear()
        hydra_ = Hydra.create_main_hydra_file_or_module(
            calling_file=__file__, calling_module=None, config_path="conf", job_name="toy_grid"
        )
        try:
            hydra_.multirun(
                config_name="toy_grid",
                task_function=grid_task,
                overrides=[f"hydra.sweep.dir={tmp_path}/multirun", *overrides],
                with_log_configuration=False,
            )
        finally:
            GlobalHydra.instance().clear()

    yield run


SWEEP = ("x=0,1,2", "y=0,1", "repetition=0,1")
GRID = [[f"x={x}", f"y={y}", f"repetition={r}"] for x, y, r in itertools.product((0, 1, 2), (0, 1), (0, 1))]


def ran(tmp_path: Path) -> list[dict[str, Any]]:
    """What each job folder says it ran, by folder number."""
    folders = sorted((p for p in (tmp_path / "multirun").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return [json.loads((folder / "ran.json").read_text()) | {"folder": int(folder.name)} for folder in folders]


def test_hydra_discovers_the_sweeper_and_its_config() -> None:
    found = {f"{p.__module__}.{p.__name__}" for p in Plugins.instance().discover(Sweeper)}
    assert f"{CfexpBasicSweeper.__module__}.CfexpBasicSweeper" in found
    node = ConfigStore.instance().load("hydra/sweeper/cfexp_basic.yaml").node
    assert node.order == SweepOrder.grid and node.seed is None and node.repetition_key == "repetition"


def test_discovery_imports_nothing_heavy() -> None:
    code = (
        "import sys, hydra_plugins.cfexp_basic_sweeper.cfexp_basic_sweeper, hydra_plugins.cfexp_basic_sweeper.config;"
        "print(sorted(m for m in ('mlflow', 'cfexp.tracking', 'optuna') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_grid_order_is_hydras(sweep: Sweep, tmp_path: Path) -> None:
    sweep(*SWEEP)
    assert [job["overrides"] for job in ran(tmp_path)] == GRID


@pytest.mark.parametrize("batch", [None, 5])
def test_blocked_jobs_run_in_the_planned_order_each_in_the_folder_of_its_position(
    sweep: Sweep, tmp_path: Path, capsys: pytest.CaptureFixture[str], batch: int | None
) -> None:
    sweep(*SWEEP, "hydra.sweeper.order=blocked", "hydra.sweeper.seed=5",
          *([f"hydra.sweeper.max_batch_size={batch}"] if batch else []))
    planned = order_jobs(GRID, SweepOrder.blocked, seed=5)
    jobs = ran(tmp_path)
    assert [job["overrides"] for job in jobs] == planned
    for job in jobs:  # folder N = Hydra's job number N = position N; its config is its overrides'
        assert job["folder"] == job["num"]
        assert [f"x={job['x']}", f"y={job['y']}"] == job["overrides"][:2]
    # The plan file lists the same order.
    listed = (tmp_path / "multirun" / PLAN_FILE).read_text().split("overrides):\n")[1].splitlines()
    assert [line.split(None, 1)[1].split() for line in listed] == planned
    # The announcement is printed before the first job.
    out = capsys.readouterr().out
    assert out.index("cfexp sweep of experiment toy_grid: 12 job(s) = 6 config(s) x 2 repetition(s)") < out.index(
        "TOY JOB 0"
    )
    assert "order: blocked, seed 5: 2 blocks" in out


def test_the_same_seed_gives_the_same_order_and_no_seed_a_fresh_one(sweep: Sweep, tmp_path: Path) -> None:
    orders = []
    for seed in ("hydra.sweeper.seed=9", "hydra.sweeper.seed=9", "hydra.sweeper.seed=null"):
        sweep(*SWEEP, "hydra.sweeper.order=shuffled", seed)
        orders.append([job["overrides"] for job in ran(tmp_path)])
    assert orders[0] == orders[1] == order_jobs(GRID, SweepOrder.shuffled, seed=9)
    assert sorted(orders[2]) == sorted(GRID)
