"""The sweeper class Hydra discovers: a thin facade over :mod:`._impl`.

Hydra imports every public module of ``hydra_plugins`` at start-up to find
plugins, so this one imports nothing heavy: Optuna (and cfexp's tracking) are
imported by :mod:`._impl` only when a sweep with this sweeper starts.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

# Imported for its side effect: the config is registered whenever the sweeper is.
from hydra_plugins.cfexp_sweeper import config as _config  # noqa: F401


class CfexpOptunaSweeper(Sweeper):
    """Optuna (current releases) behind Hydra's sweeper interface.

    Keyword arguments are the fields of
    :class:`~hydra_plugins.cfexp_sweeper.config.CfexpOptunaSweeperConf`.
    """

    def __init__(self, **settings: Any) -> None:
        from hydra_plugins.cfexp_sweeper._impl import CfexpOptunaSweeperImpl

        self.sweeper = CfexpOptunaSweeperImpl.from_settings(settings)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.sweeper.sweep(arguments)
