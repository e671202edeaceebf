"""The Optuna side: storage, study (created or resumed), sampler.

- Storage: any SQLAlchemy URL Optuna's ``RDBStorage`` takes (``sqlite:///…``,
  ``postgresql://…``, ``mysql://…``) or ``journal:<file>`` (Optuna's
  ``JournalStorage`` on a file, safe for several workers on one machine or an
  NFS share). Default: ``sqlite:///<paths.root_dir>/multirun/optuna/optuna.db``.
- Study name: given, or derived from what makes two sweeps the same
  experiment (search space, fixed overrides, objectives, constraints), so
  the same command resumes the same study.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import os
import random
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import distribution_to_json
from optuna.exceptions import ExperimentalWarning
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from cfexp.filelock import FileLock
from hydra_plugins.cfexp_sweeper._errors import SweepError
from hydra_plugins.cfexp_sweeper._objectives import Constraint, Objective
from hydra_plugins.cfexp_sweeper._space import SearchSpace

JOURNAL_PREFIX = "journal:"
# Overrides that say where results go, not what is measured: not part of the study's identity.
_NOT_IDENTITY = ("paths.", "tracking.", "hydra.")
# Samplers that ignore constraints (Optuna would warn at every trial).
UNCONSTRAINED_SAMPLERS = ("cmaes",)
# Samplers that need an optional package: (module, what it is, how to install it).
_NEEDS = {
    "gp": ("torch", "PyTorch", "`pip install torch`; the CPU build is enough"),
    "cmaes": ("cmaes", "the CMA-ES library", "`pip install cmaes`"),
}
# Study user attribute naming the objectives (Optuna keeps directions, not metrics).
OBJECTIVES_ATTR = "cfexp.objectives"


def default_storage(config: DictConfig) -> str:
    """``sqlite:///<paths.root_dir>/multirun/optuna/optuna.db`` (the folder is created)."""
    root: Any = None
    try:
        root = OmegaConf.select(config, "paths.root_dir", default=None)
    except Exception:  # its interpolation needs Hydra's runtime: use the launch folder
        root = None
    if not root:
        root = OmegaConf.select(config, "hydra.runtime.cwd", default=None) or os.getcwd()
    folder = Path(str(root)) / "multirun" / "optuna"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'optuna.db'}"


def describe_storage(url: str) -> str:
    """The URL with any password hidden (for logs, tags and messages)."""
    if url.startswith(JOURNAL_PREFIX):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def open_storage(url: str) -> BaseStorage:
    """An Optuna storage for ``url``; SweepError saying why when it cannot be opened."""
    shown = describe_storage(url)
    hint = "use sqlite:///<file>, postgresql://…, mysql://… or journal:<file> (docs/optuna.md)"
    try:
        if url.startswith(JOURNAL_PREFIX):
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            path = Path(url[len(JOURNAL_PREFIX) :]).expanduser()
            if not path.parent.is_dir():
                raise SweepError(
                    f"cannot open the Optuna storage <storage={shown}>: the folder {path.parent} "
                    "does not exist; create it or give another path"
                )
            return JournalStorage(JournalFileBackend(str(path)))
        return _rdb_storage(url)
    except SweepError:
        raise
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SweepError(f"cannot open the Optuna storage <storage={shown}>: {reason}; {hint}") from exc


def _rdb_storage(url: str, attempts: int = 5) -> BaseStorage:
    """``RDBStorage(url)``: its tables created once however many workers start together.

    Optuna creates its tables on first use. On a SQLite file, two processes
    doing that at once fail (``table … already exists``, ``database is
    locked``): they take turns under a lock beside the file. On an empty
    PostgreSQL database they collide (a unique violation in the catalog), and
    the loser finds the tables made on its next try.
    """
    path = _sqlite_file(url)
    if path is None or not path.parent.is_dir():  # a missing folder: SQLite says so, as for anyone
        return _rdb_storage_retried(url, attempts)
    lock = FileLock(
        path.with_name(path.name + ".lock"), "Optuna storage lock",
        reason="another cfexp command is creating Optuna's tables in it",
    )
    with lock:
        return _rdb_storage_retried(url, attempts)


def _sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (None for other URLs and in-memory SQLite)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _rdb_storage_retried(url: str, attempts: int) -> BaseStorage:
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    url = _with_installed_driver(url)
    for attempt in range(1, attempts + 1):
        try:
            return optuna.storages.RDBStorage(url)
        except (IntegrityError, ProgrammingError):
            if attempt == attempts:
                raise
            time.sleep(0.2 + random.random())
    raise AssertionError("unreachable")


def _with_installed_driver(url: str) -> str:
    """``postgresql://`` with the driver cfexp installs (psycopg2) when psycopg 3 is absent.

    SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3; cfexp depends
    on ``psycopg2-binary``. An explicit driver (``postgresql+…://``) is kept.
    """
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
        if importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url


def derive_study_name(
    space: SearchSpace, objectives: Sequence[Objective], constraints: Sequence[Constraint]
) -> str:
    """``cfexp-<searched keys>-<hash>``: the same sweep gives the same name."""
    identity = {
        "space": {name: distribution_to_json(dist) for name, dist in sorted(space.distributions.items())},
        "fixed": sorted(o for key, o in space.fixed.items() if not key.lstrip("+~").startswith(_NOT_IDENTITY)),
        "objectives": [[o.metric, o.direction] for o in objectives],
        "constraints": [str(c) for c in constraints],
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    keys = "+".join(sorted(name.lstrip("+~") for name in space.distributions))
    if len(keys) > 60:
        keys = keys[:57] + "..."
    return f"cfexp-{keys}-{digest}"


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler without its study.stop() (Optuna allows that only inside optimize()).

    The sweeper stops by itself: it never asks for more trials than unvisited
    grid points.
    """

    def after_trial(self, study: Any, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        return None


def make_sampler(
    name: str,
    *,
    seed: int | None,
    options: dict[str, Any],
    space: SearchSpace,
    n_objectives: int,
    constrained: bool,
) -> BaseSampler:
    """The Optuna sampler ``name`` (SweepError for a combination it cannot do).

    Constraints need nothing from the sampler: the sweeper sets them on each
    trial (``Trial.set_constraint``); tpe, gp and nsgaii steer away from
    infeasible regions, random and grid only record feasibility (the best
    trials are then chosen among feasible ones).
    """
    if constrained and name in UNCONSTRAINED_SAMPLERS:
        raise SweepError(
            f"<sampler={name}> ignores constraints; use sampler=tpe, gp or nsgaii (or random/grid, "
            "which record them), or drop hydra.sweeper.constraints"
        )
    if name == "cmaes" and n_objectives > 1:
        raise SweepError("<sampler=cmaes> optimises one objective; use tpe, nsgaii or gp for several")
    if name in _NEEDS and importlib.util.find_spec(_NEEDS[name][0]) is None:
        package, what, install = _NEEDS[name]
        raise SweepError(
            f"<sampler={name}> needs {what}: the package `{package}` is not installed. "
            f"Install it ({install}) or choose sampler=tpe"
        )
    kwargs: dict[str, Any] = dict(options)
    cls: Any
    if name == "grid":
        cls, kwargs = _AskTellGridSampler, {"search_space": space.grid(), **kwargs}
    else:
        cls = {
            "tpe": optuna.samplers.TPESampler,
            "random": optuna.samplers.RandomSampler,
            "cmaes": optuna.samplers.CmaEsSampler,
            "gp": optuna.samplers.GPSampler,
            "nsgaii": optuna.samplers.NSGAIISampler,
        }[name]
    try:
        with warnings.catch_warnings():  # experimental options are the user's explicit choice
            warnings.simplefilter("ignore", ExperimentalWarning)
            return cls(seed=seed, **kwargs)  # type: ignore[no-any-return]  # every sampler class is a BaseSampler
    except TypeError as exc:
        allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "seed")]
        raise SweepError(
            f"bad hydra.sweeper.sampler_options for <sampler={name}>: {exc}; "
            f"{cls.__name__} takes {', '.join(allowed)}"
        ) from exc


def open_study(
    storage: BaseStorage,
    storage_shown: str,
    name: str,
    objectives: Sequence[Objective],
    load_if_exists: bool,
) -> tuple[optuna.Study, bool]:
    """The study ``name``, created or resumed; (study, whether it existed).

    A resumed study must optimise the same metrics in the same directions.
    The caller sets ``study.sampler``. Several workers may start at once on
    one storage: the storage's unique study name decides which one created
    the study (``existed`` is False for that one only), so one-off set-up
    such as the baseline trial happens once.
    """
    directions = [o.direction for o in objectives]  # "minimize" | "maximize", as Optuna spells them
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, directions=[StudyDirection[d.upper()] for d in directions]
        )
        existed = False
    except optuna.exceptions.DuplicatedStudyError:
        if not load_if_exists:
            raise SweepError(
                f"the study <study_name={name}> already exists in <storage={storage_shown}> and "
                "hydra.sweeper.load_if_exists=false: give another study_name, or allow resuming it"
            ) from None
        study = optuna.load_study(storage=storage, study_name=name)
        existed = True
    found = [d.name.lower() for d in study.directions]
    metrics = [o.metric for o in objectives]
    stored_metrics = study.user_attrs.get(OBJECTIVES_ATTR)
    if found != directions or (stored_metrics is not None and stored_metrics != metrics):
        was = ", ".join(
            f"{d} {m}" for d, m in zip(found, stored_metrics or ["?"] * len(found), strict=False)
        )
        raise SweepError(
            f"the study <study_name={name}> in <storage={storage_shown}> optimises [{was}], but this "
            f"sweep asks for [{', '.join(str(o) for o in objectives)}]: give another "
            "hydra.sweeper.study_name, or the study's own objectives"
        )
    if stored_metrics is None:
        study.set_user_attr(OBJECTIVES_ATTR, metrics)
        with warnings.catch_warnings():  # set_metric_names is "experimental" since Optuna 3.2
            warnings.simplefilter("ignore", ExperimentalWarning)
            study.set_metric_names(metrics)  # the dashboard then shows metric names
    return study, existed
