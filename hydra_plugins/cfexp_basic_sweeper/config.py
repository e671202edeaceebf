"""The sweeper's configuration: ``hydra/sweeper=cfexp_basic``.

Registered in Hydra's ConfigStore when Hydra's plugin discovery imports this
module. Hydra's BasicSweeper keys (``max_batch_size``, ``params``) keep their
meaning; ``order``, ``seed`` and ``repetition_key`` choose the order the jobs
run in (docs/methodology.md, "Run order"; docs/configuration.md).
"""

# OmegaConf's structured configs need typing.Optional, not `X | None`.
# ruff: noqa: UP045

# No `from __future__ import annotations`: Hydra's plugin discovery may execute this
# module twice, and string annotations would then resolve against the second run.
from dataclasses import dataclass
from typing import Optional

from hydra.core.config_store import ConfigStore

from cfexp.vocab import SweepOrder


@dataclass
class CfexpBasicSweeperConf:
    _target_: str = "hydra_plugins.cfexp_basic_sweeper.cfexp_basic_sweeper.CfexpBasicSweeper"

    # Jobs handed to the launcher at once (null = all of them), as in Hydra's basic sweeper.
    max_batch_size: Optional[int] = None
    # The sweep, key: values, e.g. ctx: 512,1024 (command-line sweeps add to and override it).
    params: Optional[dict[str, str]] = None
    # The order the jobs run in: grid (Hydra's: the last key varies fastest), shuffled
    # (one seeded random permutation of all jobs), blocked (for each repetition, every
    # config once, in a fresh seeded random order).
    order: SweepOrder = SweepOrder.grid
    # Seed of shuffled/blocked; null = drawn afresh (a resumed sweep reuses the one its
    # parent run recorded). Recorded on the parent run as the tag sweep.seed.
    seed: Optional[int] = None
    # The swept key whose values are the repetition blocks of order=blocked; a config
    # is a job's overrides without it.
    repetition_key: str = "repetition"
    # A sweep with more jobs than this is refused before anything starts (exit 2),
    # with its size; raise it for a sweep that big on purpose (null = no limit).
    max_jobs: Optional[int] = 200


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="cfexp_basic",
    node=CfexpBasicSweeperConf,
    provider="cfexp",
)
