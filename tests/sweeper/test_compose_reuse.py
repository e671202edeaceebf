"""The sweeper's job configs are Hydra's own, composed once per set of group overrides."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import setup_globals
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cfexp.config.schema import register_configs
from hydra_plugins.cfexp_basic_sweeper._compose import ReusingConfigLoader
from tests.conftest import CONF_DIR

COMMAND_LINE = ["backend=sim", "scenario=single_inference", "backend.settings.time_scale=0"]


@pytest.fixture
def loaders(tmp_path: Path) -> Iterator[tuple[ConfigLoaderImpl, ReusingConfigLoader, DictConfig]]:
    """Hydra's loader, one that reuses compositions, and a sweep's master config."""
    register_configs()
    setup_globals()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        hydra_loader = GlobalHydra.instance().config_loader()
        assert type(hydra_loader) is ConfigLoaderImpl
        master = hydra_loader.load_configuration(
            "config", [*COMMAND_LINE, f"hydra.sweep.dir={tmp_path}"], RunMode.MULTIRUN
        )
        reusing = copy.copy(hydra_loader)
        ReusingConfigLoader.adopt(reusing)
        assert isinstance(reusing, ReusingConfigLoader)
        yield hydra_loader, reusing, master
    GlobalHydra.instance().clear()


JOBS = [
    [*COMMAND_LINE, "repetition=0"],
    [*COMMAND_LINE, "repetition=1", "temperature=0.6"],
    [*COMMAND_LINE, "temperature=0.6", "repetition=1"],  # the same values, in another order
    [*COMMAND_LINE, "runtime=tokio", "ctx=1024"],  # another group: another set of merged defaults
    [*COMMAND_LINE, "+backend.settings.faults={fail_status:503}", "backend.settings.seed=3"],
    [*COMMAND_LINE, "backend.settings={time_scale:0.5}", "backend.settings.seed=2"],  # a dict, then a key in it
    ["backend=ollama", "topology=dual", "hydra.job.name=other"],
]


def test_every_job_config_is_the_one_hydra_composes(loaders: tuple[ConfigLoaderImpl, ReusingConfigLoader, DictConfig]) -> None:
    hydra_loader, reusing, master = loaders
    for overrides in JOBS * 2:  # the second time from the kept compositions
        expected = hydra_loader.load_sweep_config(master, list(overrides))
        composed = reusing.load_sweep_config(master, list(overrides))
        assert OmegaConf.to_yaml(composed, resolve=False) == OmegaConf.to_yaml(expected, resolve=False), overrides
        assert composed.hydra.job.override_dirname == expected.hydra.job.override_dirname
    # Two sets of group overrides among the sweep's jobs, plus the last job's: three merges.
    assert len(reusing._bases) == 3


def test_a_job_config_is_never_shared_with_another(loaders: tuple[ConfigLoaderImpl, ReusingConfigLoader, DictConfig]) -> None:
    _, reusing, master = loaders
    first = reusing.load_sweep_config(master, [*COMMAND_LINE, "repetition=0"])
    first.temperature = 0.1  # a launcher sets the job's number in it, for example
    second = reusing.load_sweep_config(master, [*COMMAND_LINE, "repetition=1"])
    assert second.temperature == 0.8


@pytest.mark.parametrize("bad", ["temperature=hot", "no_such_key=1", "backend=no_such_backend"])
def test_a_job_that_does_not_compose_fails_the_check_as_in_hydra(
    loaders: tuple[ConfigLoaderImpl, ReusingConfigLoader, DictConfig], bad: str
) -> None:
    hydra_loader, reusing, master = loaders
    with pytest.raises(Exception) as hydra_error:
        hydra_loader.load_sweep_config(master, [*COMMAND_LINE, bad])
    with pytest.raises(type(hydra_error.value)) as error:
        reusing.check_batch(master, [[*COMMAND_LINE, "repetition=0"], [*COMMAND_LINE, bad]])
    assert str(error.value) == str(hydra_error.value)
    assert isinstance(error.value, (ConfigCompositionException, type(hydra_error.value)))


def test_checked_configs_go_to_the_launcher_once_and_stay_out_of_pickles(
    loaders: tuple[ConfigLoaderImpl, ReusingConfigLoader, DictConfig],
) -> None:
    _, reusing, master = loaders
    batch = [[*COMMAND_LINE, f"repetition={i}"] for i in range(3)]
    reusing.check_batch(master, batch)
    assert len(reusing._checked) == 3
    assert pickle.loads(pickle.dumps(reusing))._checked == {}  # submitit and Ray pickle the launcher
    launched = reusing.load_sweep_config(master, batch[0])
    assert launched.repetition == 0 and len(reusing._checked) == 2
