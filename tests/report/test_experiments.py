"""The experiment overlays (conf/experiment/): each composes, its sweep parses; smoke runs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from cfexp.config.validate import to_settings

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
# preset -> (jobs in its sweep, scenario, topology)
EXPECTED = {
    "tr108": (108, "single_inference", "single"),
    "tr109": (108, "single_agent", "single"),
    "tr110": (130, "multi_agent", "dual"),
    "tr111": (108, "single_agent", "single"),
    "tr112": (216, "single_agent", "single"),
    "tr113": (54, "multi_agent", "single"),
    "tr114": (130, "multi_agent", "dual"),
    "tr115": (150, "multi_agent", "dual"),
    "smoke": (27, "single_inference", "single"),
}


def sweep_jobs(cfg: DictConfig, *command_line: str) -> list[list[str]]:
    """The jobs Hydra's basic sweeper runs: hydra.sweeper.params, then the command line's sweeps."""
    parser = OverridesParser.create()
    parsed = parser.parse_overrides([f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()] + list(command_line))
    (batch,) = BasicSweeper.split_arguments(parsed, None)
    return batch


def test_every_preset_is_tested() -> None:
    assert sorted(EXPECTED) == PRESETS


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_and_its_sweep_parses(preset: str, compose_cfg: Callable[..., DictConfig],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra import compose, initialize_config_dir

    jobs_expected, scenario, topology = EXPECTED[preset]
    compose_cfg(f"+experiment={preset}")  # the fixture's checks: composes with the schema
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"+experiment={preset}", "paths.root_dir=/tmp"], return_hydra_config=True)
        assert cfg.tracking.experiment == preset
        assert (cfg.scenario.name, cfg.topology.name) == (scenario, topology)
        jobs = sweep_jobs(cfg)
        assert len(jobs) == jobs_expected
        # every job composes and passes validation: a sample of them, spread over the grid
        for job in jobs[:: max(1, len(jobs) // 7)]:
            job_cfg = compose("config", overrides=[f"+experiment={preset}", "paths.root_dir=/tmp", *job])
            to_settings(job_cfg)


def test_repetitions_are_configurable_on_the_command_line() -> None:
    """`python -m cfexp -m +experiment=tr115 repetition=0,1`: the command line wins over the preset."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=tr115"], return_hydra_config=True)
    assert len(sweep_jobs(cfg, "repetition=range(0,2)")) == 60
    assert len(sweep_jobs(cfg, "repetition=0", "runtime=tokio")) == 6


@pytest.mark.slow
def test_smoke_runs_end_to_end_and_reports(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        [sys.executable, "-m", "cfexp", "-m", "+experiment=smoke", f"paths.root_dir={tmp_path}",
         f"hydra.sweep.dir={tmp_path}/multirun"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run(
        [sys.executable, "-m", "cfexp.cli", "report", "--experiment", "smoke",
         "--tracking-uri", f"sqlite:///{tmp_path}/mlruns/mlflow.db", "--out", str(tmp_path / "report")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "**27 runs**: 27 finished" in text
    for heading in ("### Rust vs Python", "### Optimization success rate", "### Multi-agent contention"):
        assert heading in text
