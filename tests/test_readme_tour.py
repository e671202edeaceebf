"""The README's quick tour is true (issue 13, item 7).

Every `python -m cfexp` line of the tour puts `-m` first (Hydra's argparse
refuses overrides on both sides of it) and composes into a valid config (the
first job of a sweep, as the sweeper would make it); the lines that need no
model, server or network beyond the simulator run as written, with only their
output folders moved under the test's temp folder.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import open_dict

from cfexp.config.schema import register_configs
from cfexp.config.validate import to_settings
from tests.app.test_e2e_sim import REPO, client_for, run_cfexp

README = REPO / "README.md"


def tour_commands() -> list[list[str]]:
    """The arguments after `python -m cfexp` of each quick-tour line (comments dropped)."""
    tour = README.read_text(encoding="utf-8").split("## Quick tour", 1)[1].split("```", 2)[1]
    commands = []
    for line in tour.splitlines():
        if line.startswith("python -m cfexp"):
            commands.append(shlex.split(line.split("#", 1)[0])[3:])
    return commands


COMMANDS = tour_commands()
SIMULATED = [args for args in COMMANDS if "backend=sim" in args or "+experiment=smoke" in args]


def first_job(arguments: list[str]) -> list[str]:
    """The overrides of the sweep's first job (BasicSweeper's product), flags dropped."""
    overrides = [a for a in arguments if not a.startswith("-") and a != "job"]
    (jobs,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)
    return jobs[0] if jobs else []


@pytest.fixture
def hydra_conf() -> Iterator[None]:
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


def test_the_tour_is_found() -> None:
    assert len(COMMANDS) >= 15 and ["-m", "backend=sim", "ctx=512,1024"] in COMMANDS
    assert len(SIMULATED) == 2


@pytest.mark.parametrize("arguments", COMMANDS, ids=lambda a: " ".join(a) or "(none)")
def test_every_tour_line_puts_m_first_and_composes(hydra_conf: None, tmp_path: Path, arguments: list[str]) -> None:
    if "-m" in arguments:
        assert arguments[0] == "-m", "argparse refuses overrides before -m"
    assert not [a for a in arguments if re.fullmatch(r"-\w+", a) and a not in ("-m",)]
    # paths.root_dir: its default needs Hydra's runtime, which compose() does not set.
    cfg = compose("config", overrides=[*first_job(arguments), f"paths.root_dir={tmp_path}"], return_hydra_config=True)
    with open_dict(cfg):
        del cfg["hydra"]
    to_settings(cfg)  # every key known, every value in range


@pytest.mark.slow
@pytest.mark.parametrize("arguments", SIMULATED, ids=" ".join)
def test_the_simulator_lines_run_as_written(tmp_path: Path, arguments: list[str]) -> None:
    done = run_cfexp(tmp_path, *arguments, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    client = client_for(tmp_path)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert children and all(r.info.status == "FINISHED" for r in children)
    assert {r.data.tags["provenance"] for r in children} == {"simulated"}
