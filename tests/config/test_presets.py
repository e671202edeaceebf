"""Every preset (conf/experiment/) composes into the sweep docs/reproduce-tr.md describes.

The jobs are made as the sweeper makes them (Hydra's Cartesian product of
``hydra.sweeper.params``), then every distinct config is composed and
validated as its job would be.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, open_dict

from cfexp.app.agent_spec import agent_options, instance_launch_options
from cfexp.app.hydra_job import grid_size
from cfexp.config.schema import CfexpConfig, register_configs
from cfexp.config.validate import to_settings
from hydra_plugins.cfexp_basic_sweeper._order import config_of
from tests.conftest import CONF_DIR

Compose = Callable[..., DictConfig]

# preset: (jobs, distinct configs)
PRESETS = {
    "tr108": (108, 36),
    "tr109": (108, 36),
    "tr110": (130, 26),
    "tr111": (108, 36),
    "tr112": (216, 72),
    "tr113": (54, 18),
    "tr114": (130, 26),
    "tr115": (150, 30),
    "smoke": (27, 9),
}


@pytest.fixture
def compose_hydra() -> Iterator[Compose]:
    """The composed config with its hydra node (the sweeper's settings)."""
    register_configs()
    GlobalHydra.instance().clear()

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=list(overrides), return_hydra_config=True)

    yield _compose
    GlobalHydra.instance().clear()


def jobs_of(cfg: DictConfig, *arguments: str) -> list[list[str]]:
    """The jobs of a sweep: the preset's params, then the command line's (as BasicSweeper)."""
    params = cfg.hydra.sweeper.params or {}
    given = [f"{key}={value}" for key, value in params.items()] + list(arguments)
    parsed = OverridesParser.create().parse_overrides(given)
    (jobs,) = BasicSweeper.split_arguments(parsed, None)
    return jobs


def settings_of(compose_hydra: Compose, preset: str, config: tuple[str, ...]) -> CfexpConfig:
    cfg = compose_hydra(f"+experiment={preset}", *config, "paths.root_dir=/tmp")
    with open_dict(cfg):  # a task function never sees the hydra node
        del cfg["hydra"]
    return to_settings(cfg)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_composes_into_its_jobs_in_blocked_order(compose_hydra: Compose, preset: str) -> None:
    cfg = compose_hydra(f"+experiment={preset}")
    assert cfg.hydra.sweeper._target_.endswith("CfexpBasicSweeper")
    assert cfg.hydra.sweeper.order == "blocked"
    assert cfg.tracking.experiment == preset
    jobs = jobs_of(cfg)
    assert (len(jobs), len({config_of(job, "repetition") for job in jobs})) == PRESETS[preset]


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_config_of_every_preset_composes_validates_and_is_distinct(compose_hydra: Compose, preset: str) -> None:
    configs = sorted({config_of(job, "repetition") for job in jobs_of(compose_hydra(f"+experiment={preset}"))})
    identities = set()
    for config in configs:  # as its job composes it
        settings = settings_of(compose_hydra, preset, config)
        identities.add(repr({k: v for k, v in vars(settings).items() if k not in ("paths", "tracking")}))
    # No two configs of a preset are the same measurement (the report would pool them).
    assert len(identities) == len(configs)


def test_tr110_runs_the_originals_three_phases(compose_hydra: Compose) -> None:
    jobs = jobs_of(compose_hydra("+experiment=tr110"))
    names = {o.split("=", 1)[1] for job in jobs for o in job if o.startswith("ma_config=")}
    # Phase 3 (gpu 80, ctx 512, 0.8): bvc and homo are phase 1's, hetero pairs ctx 512 with 1024.
    assert {"bvc_g80_c512", "homo_g80_c512", "hetero_g80_c512-1024"} <= names
    hetero = settings_of(compose_hydra, "tr110", ("ma_config=hetero_g80_c512-1024",))
    assert [(o or {}).get("num_ctx") for o in (agent_options(hetero, 0), agent_options(hetero, 1))] == [512, 1024]
    assert {(o or {}).get("num_gpu") for o in (agent_options(hetero, 0), agent_options(hetero, 1))} == {80}
    # Phase 2: gpu 80 x ctx {512,1024,2048} x temperature {0.6,0.8,1.0}, all chimera_homo.
    phase2 = set()
    for name in names:
        settings = settings_of(compose_hydra, "tr110", (f"ma_config={name}",))
        if settings.scenario.mode == "chimera_homo" and settings.gpu_layers == 80:
            phase2.add((settings.ctx, settings.temperature))
    assert phase2 == {(c, t) for c in (512, 1024, 2048) for t in (0.6, 0.8, 1.0)}


def test_tr113s_configs_vary_the_temperature_per_agent(compose_hydra: Compose) -> None:
    swapped = [
        settings_of(compose_hydra, "tr113", (f"ma_config=hetero_g60-120_c512-1024_t{t}",)) for t in ("06-08", "08-06")
    ]
    temperatures = [[(agent_options(s, i) or {})["temperature"] for i in (0, 1)] for s in swapped]
    assert temperatures == [[0.6, 0.8], [0.8, 0.6]]
    assert [(agent_options(swapped[0], i) or {})["num_ctx"] for i in (0, 1)] == [512, 1024]
    bvc = settings_of(compose_hydra, "tr113", ("ma_config=bvc_g120_c1024_t06",))
    assert agent_options(bvc, 0) is None  # server defaults
    assert (agent_options(bvc, 1) or {})["temperature"] == 0.6
    assert bvc.topology.instances == 1 and instance_launch_options(bvc) == [(None, None)]


def test_tr115_sends_temperature_1_and_no_other_sampling_option(compose_hydra: Compose) -> None:
    settings = settings_of(compose_hydra, "tr115", ("ma_config=homo_g80_c1024", "runtime=smol"))
    for agent in (0, 1):
        assert agent_options(settings, agent) == {"num_gpu": 80, "num_ctx": 1024, "temperature": 1.0, "seed": agent}


def test_tr108_sweeps_the_model_list_of_the_preset(compose_hydra: Compose) -> None:
    cfg = compose_hydra("+experiment=tr108")
    assert cfg.hydra.sweeper.params.model == "gemma3_270m"
    # `python -m cfexp -m +experiment=tr108 model=gemma3_270m,gemma3_4b`: the command line wins.
    assert len(jobs_of(cfg, "model=gemma3_270m,gemma3_4b")) == 216


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_fits_under_its_sweep_size_guard(compose_hydra: Compose, preset: str) -> None:
    """grid_size counts what BasicSweeper makes, and no preset is refused by hydra.sweeper.max_jobs."""
    cfg = compose_hydra(f"+experiment={preset}")
    size = grid_size(cfg.hydra.sweeper.params, [])
    assert size.jobs == len(jobs_of(cfg)) == PRESETS[preset][0]
    assert size.jobs <= cfg.hydra.sweeper.max_jobs
    doubled = grid_size(cfg.hydra.sweeper.params, ["repetition=0,1,2,3,4,5"])  # the command line wins
    assert doubled.levels["repetition"] == 6 and doubled.jobs == len(jobs_of(cfg, "repetition=0,1,2,3,4,5"))
