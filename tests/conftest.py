"""Shared fixtures: the real conf/ tree composed with temporary paths."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from cfexp.config.schema import register_configs

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """compose_cfg("backend=sim", ...) -> the composed config, paths in tmp_path."""
    register_configs()
    GlobalHydra.instance().clear()

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(
                "config",
                overrides=[*overrides, f"paths.root_dir={tmp_path}"],
                return_hydra_config=True,
            )
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):  # a task function never sees the hydra node
            del cfg["hydra"]
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture(autouse=True)
def _cfexp_loggers_enabled() -> None:
    """In-process Hydra runs (tests/sweeper) configure logging anew: the loggers
    that existed then are disabled, and the root logger's level is raised.
    Re-enable cfexp's and bring the root logger back to Python's default
    WARNING (hydra/job_logging=disabled leaves it at ERROR), so that caplog sees
    warnings whatever ran before (a test that needs INFO sets it with caplog.set_level)."""
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith("cfexp") and isinstance(logger, logging.Logger):
            logger.disabled = False
    root = logging.getLogger()
    if root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
