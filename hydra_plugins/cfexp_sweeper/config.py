"""The sweeper's configuration: ``hydra/sweeper=cfexp_optuna``.

Registered in Hydra's ConfigStore when Hydra's plugin discovery imports this
module, so the option exists before any config is composed. Every key is
typed: a misspelled key or a wrong value (``sampler=tpee``) is refused by
Hydra while composing. docs/optuna.md describes each key.
"""

# OmegaConf's structured configs need typing.Optional, not `X | None`.
# ruff: noqa: UP045

# No `from __future__ import annotations`: Hydra's plugin discovery may execute this
# module twice, and string annotations would then resolve to the second run's enums.
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Direction(Enum):
    minimize = 1
    maximize = 2


class Sampler(Enum):
    # Tree-structured Parzen Estimator: any search space, one or several objectives.
    tpe = 1
    # Uniform random sampling (a baseline for the others).
    random = 2
    # Every point of a discrete search space once (choice/range only).
    grid = 3
    # CMA-ES: one objective, numeric spaces (categoricals fall back to random).
    cmaes = 4
    # Gaussian-process Bayesian optimisation; needs PyTorch installed.
    gp = 5
    # NSGA-II: a genetic algorithm for several objectives.
    nsgaii = 6


@dataclass
class ObjectiveConfig:
    # A metric the task function returns (cfexp: docs/metrics.md), e.g. throughput_tok_s.
    metric: str = MISSING
    # maximize or minimize; null = the metric's direction in cfexp's metric
    # catalogue (docs/metrics.md: ttft_ms is minimised, throughput_tok_s maximised).
    direction: Optional[Direction] = None


@dataclass
class CfexpOptunaSweeperConf:
    _target_: str = "hydra_plugins.cfexp_sweeper.cfexp_sweeper.CfexpOptunaSweeper"

    # Search algorithm: tpe, random, grid, cmaes, gp, nsgaii.
    sampler: Sampler = Sampler.tpe
    # Seed of the sampler; null = a fresh seed each run.
    seed: Optional[int] = None
    # Extra keyword arguments of the Optuna sampler, e.g. {n_startup_trials: 5}.
    sampler_options: dict[str, Any] = field(default_factory=dict)
    # What to optimise: metrics of the task's returned dict, each with a direction.
    # Several objectives make a multi-objective study (a Pareto front).
    objectives: list[ObjectiveConfig] = field(
        default_factory=lambda: [ObjectiveConfig(metric="throughput_tok_s", direction=Direction.maximize)]
    )
    # Constraints on returned metrics, "metric <= value" or "metric >= value": a trial
    # that breaks one is infeasible (tpe, gp, nsgaii avoid such regions; not with cmaes).
    constraints: list[str] = field(default_factory=list)
    # New trials this run adds to the study (a resumed study keeps its old ones).
    n_trials: int = 20
    # Trials asked for together and handed to Hydra's launcher as one batch.
    n_jobs: int = 1
    # Stop the sweep when more than this fraction of this run's trials failed
    # (checked after every batch, once at least n_jobs trials have ended).
    max_failure_rate: float = 0.5
    # Optuna storage: an RDB URL (sqlite:///…, postgresql://…) or journal:<file>;
    # null = sqlite:///<paths.root_dir>/multirun/optuna/optuna.db.
    storage: Optional[str] = None
    # Study name; null = derived from the search space, fixed overrides and objectives,
    # so re-running the same command continues the same study.
    study_name: Optional[str] = None
    # Continue an existing study of that name (false: refuse to reuse it).
    load_if_exists: bool = True
    # In a new study, run the composed config's own values of the searched keys
    # first (trial 0), when they lie in the search space. Not with sampler=grid.
    baseline: bool = True
    # How many times the baseline runs (trials 0 … n-1, before any searched trial): its
    # repetitions give the run-to-run spread that `cfexp report` tests trials against
    # (at least 3 for its significance-gated success rate). They count in n_trials.
    baseline_repetitions: int = 3
    # Config key receiving each baseline repetition's index (0, 1, …), so its runs are
    # told apart; null, or a key the config lacks or the search sets, = not passed.
    repetition_key: Optional[str] = "repetition"
    # Config node that receives each job's study name and trial number
    # (<trial_key>.study, <trial_key>.number); null = do not pass them.
    trial_key: Optional[str] = "trial"
    # The search space, key: sweep expression, e.g. ctx: choice(512,1024) or
    # temperature: interval(0.2,1.2). Command-line sweeps add to (and override) it.
    params: dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="cfexp_optuna",
    node=CfexpOptunaSweeperConf,
    provider="cfexp",
)
