"""The sweeper class Hydra discovers: Hydra's BasicSweeper, jobs reordered.

A thin facade: Hydra imports every public module of ``hydra_plugins`` at
start-up, so this one imports nothing heavy; the order, the announcement and
cfexp's tracking are imported from the private modules when a sweep starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.types import Override
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

# Imported for its side effect: the config is registered whenever the sweeper is.
from hydra_plugins.cfexp_basic_sweeper import config as _config  # noqa: F401


class CfexpBasicSweeper(BasicSweeper):
    """The Cartesian product of the sweep, run in the order ``order`` gives.

    Keyword arguments are the fields of
    :class:`~hydra_plugins.cfexp_basic_sweeper.config.CfexpBasicSweeperConf`.
    Hydra numbers jobs in launch order, so a job's number (its folder under
    the sweep folder) is its position in the new order.
    """

    def __init__(
        self,
        max_batch_size: int | None = None,
        params: dict[str, str] | None = None,
        order: Any = "grid",
        seed: int | None = None,
        repetition_key: str = "repetition",
        max_jobs: int | None = 200,
    ) -> None:
        from cfexp.vocab import SweepOrder

        super().__init__(max_batch_size=max_batch_size, params=params)
        # By value: Hydra's discovery may hand over an enum of another import of the config.
        self.order = SweepOrder(str(getattr(order, "value", order)))
        self.seed = seed
        self.repetition_key = repetition_key
        # Enforced before the sweep starts, by cfexp's callback (cfexp.app.callback), which
        # runs before any sweeper: a refused sweep leaves no parent run behind.
        self.max_jobs = max_jobs

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra_plugins.cfexp_basic_sweeper._compose import ReusingConfigLoader

        # Before the launcher is made: it shares this context, so its loader reuses the compositions too.
        ReusingConfigLoader.adopt(hydra_context.config_loader)
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Hydra's check that every job of the batch composes, before the first one runs.

        The same check, made cheap (``_compose``): the defaults are merged once
        per set of group overrides, and the first jobs' configs are kept for
        the launcher.
        """
        from hydra_plugins.cfexp_basic_sweeper._compose import ReusingConfigLoader

        assert self.hydra_context is not None and self.config is not None
        loader = self.hydra_context.config_loader
        if isinstance(loader, ReusingConfigLoader):
            loader.check_batch(self.config, batch)
        else:
            super().validate_batch_is_legal(batch)

    def split_arguments(  # type: ignore[override]  # Hydra's is a staticmethod; called on self
        self, overrides: list[Override], max_batch_size: int | None
    ) -> list[list[list[str]]]:
        """All the jobs, reordered, then cut into the launcher's batches.

        BasicSweeper.sweep calls this once, before it launches anything: the
        point where the order is fixed and the sweep announced.
        """
        from hydra_plugins.cfexp_basic_sweeper._impl import plan_sweep

        assert self.config is not None
        (grid,) = BasicSweeper.split_arguments(overrides, None)
        ordered = plan_sweep(grid, self.config, self.order, self.seed, self.repetition_key)
        if max_batch_size is None:
            return [ordered]
        return list(BasicSweeper.split_overrides_to_chunks(ordered, max_batch_size))
