"""The Optuna studies behind the selected runs, read (never written) from their storage.

A trial's MLflow run is tagged ``trial.study`` and ``trial.number``; the
sweep's parent run is tagged ``optuna.study`` and ``optuna.storage``
(docs/optuna.md). MLflow holds each trial's parameters and metrics; the
storage adds what it does not: the objectives and their directions, each
trial's search space (its distributions, for parameter importances), which
trials are the baseline, constraint values, and the trials' states.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:  # optuna is imported when a study is read: a report without one never loads it
    import optuna
    from optuna.trial import FrozenTrial

log = logging.getLogger(__name__)

STUDY_TAG = "tags.trial.study"
NUMBER_TAG = "tags.trial.number"
PARENT_STUDY_TAG = "tags.optuna.study"
PARENT_STORAGE_TAG = "tags.optuna.storage"
# The study's user attribute naming its objective metrics (the sweeper's OBJECTIVES_ATTR).
OBJECTIVES_ATTR = "cfexp.objectives"
JOURNAL_PREFIX = "journal:"


@dataclass(frozen=True)
class StoredStudy:
    """One study as its storage holds it; ``error`` says why it could not be read."""

    name: str
    storage: str
    metrics: list[str] = field(default_factory=list)
    directions: list[str] = field(default_factory=list)  # "maximize" | "minimize", one per metric
    trials: list[FrozenTrial] = field(default_factory=list)  # by trial number
    error: str = ""


def study_names(runs: pd.DataFrame) -> list[str]:
    """The studies the runs are trials of, sorted."""
    if STUDY_TAG not in runs.columns:
        return []
    return sorted(str(v) for v in runs[STUDY_TAG].dropna().unique() if str(v))


def storage_of(name: str, parents: pd.DataFrame) -> str | None:
    """The storage URL the sweep's parent run recorded for study ``name`` (None if no parent says)."""
    if PARENT_STUDY_TAG not in parents.columns or PARENT_STORAGE_TAG not in parents.columns:
        return None
    found = parents.loc[parents[PARENT_STUDY_TAG] == name, PARENT_STORAGE_TAG].dropna()
    return str(sorted(found)[0]) if len(found) else None


def read_study(name: str, url: str) -> StoredStudy:
    """Read study ``name`` from ``url``: an RDB URL or ``journal:<file>``."""
    import optuna

    try:
        storage = _open(url)
    except Exception as exc:
        return StoredStudy(name, url, error=f"cannot open <storage={url}>: {_reason(exc)}")
    try:
        with warnings.catch_warnings():  # metric_names is "experimental" in Optuna 3.2-5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study = optuna.load_study(study_name=name, storage=storage)
            metrics = list(study.user_attrs.get(OBJECTIVES_ATTR) or study.metric_names or [])
        directions = [d.name.lower() for d in study.directions]
        if len(metrics) != len(directions):
            return StoredStudy(name, url, error=f"the study does not name its objective metrics <{metrics}>")
        trials = sorted(study.get_trials(deepcopy=True), key=lambda t: t.number)
        return StoredStudy(name, url, metrics, directions, trials)
    except Exception as exc:
        return StoredStudy(name, url, error=f"cannot read <study={name}> from <storage={url}>: {_reason(exc)}")
    finally:
        engine = getattr(storage, "engine", None)
        if engine is not None:
            engine.dispose()  # no pooled SQLite connection outlives the report


def _open(url: str) -> optuna.storages.BaseStorage:
    import optuna

    if url.startswith(JOURNAL_PREFIX):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len(JOURNAL_PREFIX):]).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no journal file {path}")
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():  # RDBStorage would create an empty database
            raise FileNotFoundError(f"no SQLite file {path}")
    if "***" in url:
        raise ValueError("its password is hidden in the parent run's tag; pass the full URL (--study-storage)")
    return optuna.storages.RDBStorage(url, skip_table_creation=True)


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text or type(exc).__name__
