"""The tracking store: the only module that talks to MLflow.

In ``python -m cfexp`` it runs in the tracking writer process, which imports
MLflow beside Hydra's start (:mod:`cfexp.tracking.writer`); the harness
talks to it through the same :class:`Tracker` protocol.

cfexp uses ``MlflowClient`` directly rather than MLflow's fluent API: there is
no hidden "active run" per process, so a sweep's parent run can be created in
the launching process and its children in any other process (the parent id
travels in a file in the sweep folder).

Default store: SQLite at ``<mlruns_dir>/mlflow.db`` with artifacts under
``<mlruns_dir>/artifacts`` (MLflow 3 refuses its old file store by default).
``tracking.uri`` or ``$MLFLOW_TRACKING_URI`` override it. A local store is
created, upgraded and checked once, under a lock beside it
(:mod:`cfexp.tracking.store_setup`), so commands started together never
migrate it at the same time.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cfexp.errors import TrackingError
from cfexp.tracking.tags import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, VIEW_TAG

log = logging.getLogger(__name__)

# MLflow's own limits (mlflow.utils.validation): longer values are cut, not refused.
_MAX_PARAM_VALUE = 6000
_MAX_TAG_VALUE = 5000
# The runs table's name column (String(250)): SQLite ignores the limit, PostgreSQL refuses the run.
_MAX_RUN_NAME = 250
_BATCH = 100
# Runs one search answers at most (MLflow's own limit per page of a search).
MAX_RUNS = 10000


def resolve_uri(configured: str | None, mlruns_dir: Path) -> str:
    """tracking.uri, else $MLFLOW_TRACKING_URI, else SQLite under mlruns_dir."""
    if configured:
        return configured
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        return from_env
    mlruns_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(mlruns_dir / 'mlflow.db').resolve()}"


def ui_tags() -> dict[str, str]:
    """The experiment tags that make MLflow's UI show cfexp's runs table (docs/getting-started.md).

    The experiment kind says "machine learning", not "GenAI": runs with params
    and metrics, not traces. The view (a "shared view" of MLflow's runs table,
    opened by ``cfexp ui``'s link) shows the key metrics, those the report
    plots, as columns.
    """
    # Imported here: the tracking writer process imports this module first thing at every launch.
    from cfexp.metrics.catalog import plotted

    view = {"selectedColumns": [f"metrics.`{name}`" for name in plotted()]}
    return {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, VIEW_TAG: json.dumps(view)}


@dataclass(frozen=True)
class RunInfo:
    """What cfexp reads of an MLflow run's info (times in ms since the epoch)."""

    run_id: str
    run_name: str
    experiment_id: str
    status: str
    start_time: int | None
    end_time: int | None
    lifecycle_stage: str
    artifact_uri: str


@dataclass(frozen=True)
class RunData:
    params: dict[str, str]
    metrics: dict[str, float]  # the latest value of each
    tags: dict[str, str]


@dataclass(frozen=True)
class RunRecord:
    """A run as :meth:`Tracker.get_run` and :meth:`Tracker.search_runs` answer it: plain
    values, shaped like MLflow's ``Run`` (``run.info.status``, ``run.data.tags``), that
    cross a process boundary without importing MLflow (:mod:`cfexp.tracking.writer`)."""

    info: RunInfo
    data: RunData

    @classmethod
    def of(cls, run: Any) -> RunRecord:
        """From MLflow's ``Run``."""
        info = run.info
        return cls(
            RunInfo(
                run_id=str(info.run_id),
                run_name=str(info.run_name or ""),
                experiment_id=str(info.experiment_id),
                status=str(info.status),
                start_time=info.start_time,
                end_time=info.end_time,
                lifecycle_stage=str(info.lifecycle_stage),
                artifact_uri=str(info.artifact_uri or ""),
            ),
            RunData(dict(run.data.params), dict(run.data.metrics), dict(run.data.tags)),
        )


class Tracker(Protocol):
    """What cfexp writes and reads in a tracking store, whatever holds it.

    :class:`MlflowTracker` is a store itself; ``cfexp.tracking.spool`` has one
    that keeps runs on disk while a tracking server cannot be reached, and one
    that switches to it mid-run. ``log_params``, ``log_metrics`` and
    ``set_tags`` are :meth:`log_batch` for every implementation.
    """

    uri: str

    def experiment_id(self, name: str) -> str: ...

    def start_run(
        self,
        experiment: str,
        run_name: str,
        tags: Mapping[str, str],
        parent_run_id: str | None = None,
        start_time_ms: int | None = None,
    ) -> str: ...

    def log_batch(
        self,
        run_id: str,
        params: Mapping[str, object] | None = None,
        metrics: Mapping[str, float | None] | None = None,
        tags: Mapping[str, str] | None = None,
        timestamp_ms: int | None = None,
    ) -> None: ...

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        self.log_batch(run_id, params=params)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float]) -> None:
        self.log_batch(run_id, metrics=metrics)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self.log_batch(run_id, tags=tags)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None: ...

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None: ...

    def reopen_run(self, run_id: str) -> None: ...

    def end_run(self, run_id: str, status: str, end_time_ms: int | None = None) -> None: ...

    def delete_run(self, run_id: str) -> None: ...

    def get_run(self, run_id: str) -> RunRecord: ...

    def search_runs(self, experiment: str, filter_string: str = "", latest: int = MAX_RUNS) -> list[RunRecord]:
        """The ``latest`` runs (by start time, newest first) of ``experiment`` that match ``filter_string``."""
        ...


class MlflowTracker(Tracker):
    """Runs, params, metrics, tags and artifacts in one MLflow store."""

    def __init__(self, uri: str, artifact_root: Path) -> None:
        # Imported here: mlflow takes a second to import and only this layer needs it.
        from cfexp.tracking.store_setup import open_client

        self.uri = uri
        self._artifact_root = artifact_root
        self._experiment_ids: dict[str, str] = {}
        try:
            # A local SQLite store is created or upgraded once, under a lock (store_setup.py).
            self._client = open_client(uri)
        except TrackingError:
            raise
        except Exception as exc:  # MLflow raises many kinds; translate at the boundary
            raise TrackingError(f"cannot open the tracking store <uri={uri}>: {exc}") from exc

    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created on first use."""
        if name not in self._experiment_ids:
            self._experiment_ids[name] = self._find_or_create_experiment(name)
        return self._experiment_ids[name]

    def _find_or_create_experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        try:
            experiment = self._client.get_experiment_by_name(name)
            if experiment is not None:
                self._add_ui_tags(str(experiment.experiment_id), experiment.tags)
                return str(experiment.experiment_id)
            location = None
            if self.uri.startswith("sqlite:"):
                self._artifact_root.mkdir(parents=True, exist_ok=True)
                location = self._artifact_root.resolve().as_uri()
            return str(self._client.create_experiment(name, artifact_location=location, tags=ui_tags()))
        except MlflowException as exc:
            # Two processes may create it at once: the loser finds it on the retry.
            experiment = self._client.get_experiment_by_name(name)
            if experiment is not None:
                return str(experiment.experiment_id)
            raise TrackingError(f"cannot create experiment <tracking.experiment={name}>: {exc}") from exc

    def _add_ui_tags(self, experiment_id: str, tags: Mapping[str, str]) -> None:
        """An experiment made before cfexp wrote :func:`ui_tags` gets the ones it lacks (once)."""
        for key, value in ui_tags().items():
            if key not in tags:
                self._client.set_experiment_tag(experiment_id, key, value)

    def start_run(
        self,
        experiment: str,
        run_name: str,
        tags: Mapping[str, str],
        parent_run_id: str | None = None,
        start_time_ms: int | None = None,
    ) -> str:
        all_tags = {key: _cut(value, _MAX_TAG_VALUE) for key, value in tags.items()}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self._client.create_run(
            self.experiment_id(experiment),
            run_name=_cut(run_name, _MAX_RUN_NAME),
            tags=all_tags,
            start_time=start_time_ms,
        )
        return str(run.info.run_id)

    def log_batch(
        self,
        run_id: str,
        params: Mapping[str, object] | None = None,
        metrics: Mapping[str, float | None] | None = None,
        tags: Mapping[str, str] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Params, metrics and tags in as few store writes as MLflow's limits allow.

        Each write to the SQLite store is a transaction: batching is most of
        what keeps cfexp's per-job overhead small. ``timestamp_ms`` (default:
        now) is the metrics' time, kept when spooled runs are replayed.
        """
        from mlflow.entities import Metric, Param, RunTag

        now_ms = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        param_items = [Param(k, _cut(str(v), _MAX_PARAM_VALUE)) for k, v in (params or {}).items()]
        metric_items = [Metric(k, float(v), now_ms, 0) for k, v in (metrics or {}).items() if v is not None]
        tag_items = [RunTag(k, _cut(str(v), _MAX_TAG_VALUE)) for k, v in (tags or {}).items()]
        # MLflow accepts at most 100 params, 100 tags and 1000 entries per call.
        while param_items or metric_items or tag_items:
            chunk_params, param_items = param_items[:_BATCH], param_items[_BATCH:]
            chunk_tags, tag_items = tag_items[:_BATCH], tag_items[_BATCH:]
            room = 1000 - len(chunk_params) - len(chunk_tags)
            chunk_metrics, metric_items = metric_items[:room], metric_items[room:]
            self._client.log_batch(run_id, metrics=chunk_metrics, params=chunk_params, tags=chunk_tags)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        if path.is_dir():
            self._client.log_artifacts(run_id, str(path), artifact_path)
        elif path.exists():
            self._client.log_artifact(run_id, str(path), artifact_path)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._client.log_text(run_id, text, artifact_file)

    def reopen_run(self, run_id: str) -> None:
        """Mark an ended run RUNNING again (a resumed sweep's parent)."""
        self._client.update_run(run_id, status="RUNNING")

    def end_run(self, run_id: str, status: str, end_time_ms: int | None = None) -> None:
        """status: FINISHED, FAILED or KILLED."""
        self._client.set_terminated(run_id, status=status, end_time=end_time_ms)

    def delete_run(self, run_id: str) -> None:
        self._client.delete_run(run_id)

    def get_run(self, run_id: str) -> RunRecord:
        return RunRecord.of(self._client.get_run(run_id))

    def search_runs(self, experiment: str, filter_string: str = "", latest: int = MAX_RUNS) -> list[RunRecord]:
        experiment_id = self.experiment_id(experiment)
        runs = self._client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=latest, order_by=["attributes.start_time DESC"]
        )
        return [RunRecord.of(run) for run in runs]


def _cut(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."
