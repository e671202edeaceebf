"""Read-only queries of the tracking store, as plain pandas DataFrames.

The report layer (:mod:`cfexp.report`) reads runs only through this module, so
mlflow stays imported in ``cfexp/tracking/`` alone. One row per run; columns:

- ``run_id``, ``run_name``, ``status`` (FINISHED, FAILED, KILLED, RUNNING),
  ``start_time``/``end_time`` (ms since the epoch), ``parent_run_id``
  (empty for a sweep's parent and for single runs), ``is_parent``;
- ``params.<key>`` (strings, as logged), ``metrics.<key>`` (floats, the latest
  value), ``tags.<key>`` (strings) — MLflow's own ``search_runs`` naming.

Rows are sorted by ``run_id`` so that the same store gives the same frame.

Two paths give the same frame: MLflow's client (any store, any filter
string), and, for a SQLite store without a filter string, a read-only SQL
query of MLflow's tables (``runs``, ``params``, ``tags``, ``latest_metrics``):
10,000 runs in about a second instead of a minute, and no mlflow import
(docs/benchmarks.md). ``tests/report/`` checks that both paths agree.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd

from cfexp.errors import TrackingError
from cfexp.tracking.sqlite_read import open_read_only
from cfexp.tracking.tags import PARENT_TAG

# MLflow's SQL store serves at most 50,000 runs per page.
_PAGE = 50_000


def default_uri(cwd: Path | None = None) -> str:
    """$MLFLOW_TRACKING_URI, else the SQLite store runs use: ``<cwd>/mlruns/mlflow.db``."""
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        return from_env
    return f"sqlite:///{((cwd or Path.cwd()) / 'mlruns' / 'mlflow.db').resolve()}"


def _client(uri: str):  # type: ignore[no-untyped-def] # mlflow's MlflowClient
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_file():
            # MlflowClient would create an empty store: a typo must not do that.
            raise TrackingError(
                f"no tracking store at <tracking-uri={uri}>: run an experiment first, or pass "
                "--tracking-uri (or set $MLFLOW_TRACKING_URI) to the store that holds the runs"
            )
    from cfexp.tracking.store_setup import open_client

    try:
        return open_client(uri)  # an old or half-migrated local store: upgraded, or explained
    except TrackingError:
        raise
    except Exception as exc:  # MLflow raises many kinds; translate at the boundary
        raise TrackingError(f"cannot open the tracking store <tracking-uri={uri}>: {exc}") from exc


def experiment_names(uri: str) -> list[str]:
    """Every experiment in the store, sorted."""
    client = _client(uri)
    return sorted(e.name for e in client.search_experiments())


def search_runs(
    uri: str,
    experiment: str,
    filter_string: str = "",
    parent_run_id: str | None = None,
) -> pd.DataFrame:
    """Runs of ``experiment`` matching an MLflow filter string; with ``parent_run_id``,
    that sweep's parent and its children only."""
    if uri.startswith("sqlite:///") and not filter_string and not os.environ.get("CFEXP_QUERY_VIA_MLFLOW"):
        frame = _search_sqlite(uri, experiment)
    else:
        frame = _search_client(uri, experiment, filter_string)
    if frame.empty:
        return frame
    if parent_run_id:
        keep = (frame["run_id"] == parent_run_id) | (frame["parent_run_id"] == parent_run_id)
        frame = frame[keep]
    return frame.sort_values("run_id", kind="stable").reset_index(drop=True)


def _search_client(uri: str, experiment: str, filter_string: str) -> pd.DataFrame:
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise _no_experiment(uri, experiment, experiment_names(uri))
    rows: list[dict[str, Any]] = []
    token: str | None = None
    try:
        while True:
            page = client.search_runs(
                [found.experiment_id], filter_string=filter_string, max_results=_PAGE, page_token=token
            )
            rows.extend(_row(run) for run in page)
            token = page.token
            if not token:
                break
    except MlflowException as exc:
        raise TrackingError(f"cannot search runs <filter={filter_string!r}>: {exc}") from exc
    return pd.DataFrame(rows)


def _no_experiment(uri: str, experiment: str, known: list[str]) -> TrackingError:
    return TrackingError(
        f"no experiment <experiment={experiment}> in <tracking-uri={uri}> (experiments there: "
        f"{', '.join(known) or 'none'}); pass --experiment with one of them"
    )


def _search_sqlite(uri: str, experiment: str) -> pd.DataFrame:
    """The active runs of one experiment, read straight from MLflow's SQLite tables."""
    db = Path(uri.removeprefix("sqlite:///"))
    if not db.is_file():
        _client(uri)  # raises the "no tracking store" error
    connection = open_read_only(db, uri)
    try:
        found = connection.execute(
            "SELECT experiment_id FROM experiments WHERE name = ? AND lifecycle_stage = 'active'", (experiment,)
        ).fetchone()
        if found is None:
            known = [r[0] for r in connection.execute(
                "SELECT name FROM experiments WHERE lifecycle_stage = 'active' ORDER BY name")]
            raise _no_experiment(uri, experiment, known)
        selected = "SELECT run_uuid FROM runs WHERE experiment_id = ? AND lifecycle_stage = 'active'"
        runs = pd.read_sql_query(
            "SELECT run_uuid AS run_id, name AS run_name, status, start_time, end_time FROM runs "
            "WHERE experiment_id = ? AND lifecycle_stage = 'active'", connection, params=(found[0],))
        parts = {
            kind: pd.read_sql_query(
                f"SELECT run_uuid, key, {value} AS value FROM {table} WHERE run_uuid IN ({selected})",
                connection, params=(found[0],))
            for kind, table, value in (
                ("params", "params", "value"),
                ("tags", "tags", "value"),
                ("metrics", "latest_metrics", "CASE WHEN is_nan THEN NULL ELSE value END"),
            )
        }
    except sqlite3.Error as exc:
        raise TrackingError(f"cannot read the tracking store <tracking-uri={uri}>: {exc}") from exc
    finally:
        connection.close()
    if runs.empty:
        return pd.DataFrame()
    runs["run_name"] = runs["run_name"].fillna("")
    tags = parts["tags"]
    parent = tags[tags["key"] == "mlflow.parentRunId"].set_index("run_uuid")["value"]
    sweep = tags[tags["key"] == PARENT_TAG].set_index("run_uuid")["value"]
    runs["parent_run_id"] = runs["run_id"].map(parent).fillna("")
    runs["is_parent"] = runs["run_id"].map(sweep).eq("parent")
    parts["tags"] = tags[~tags["key"].str.startswith("mlflow.")]
    wide = [runs.set_index("run_id")]
    for kind, long in parts.items():
        if long.empty:
            continue
        table = long.pivot(index="run_uuid", columns="key", values="value")
        table.columns = [f"{kind}.{c}" for c in table.columns]
        if kind == "metrics":
            table = table.astype(float)
        wide.append(table)
    frame = pd.concat(wide, axis=1, join="outer").loc[runs["run_id"]]
    frame.index.name = "run_id"
    return frame.reset_index()


def _row(run: Any) -> dict[str, Any]:
    tags: dict[str, str] = dict(run.data.tags)
    row: dict[str, Any] = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name or "",
        "status": run.info.status,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        "parent_run_id": tags.get("mlflow.parentRunId", ""),
        "is_parent": tags.get(PARENT_TAG) == "parent",
    }
    row.update({f"params.{k}": v for k, v in run.data.params.items()})
    row.update({f"metrics.{k}": float(v) for k, v in run.data.metrics.items()})
    row.update({f"tags.{k}": v for k, v in tags.items() if not k.startswith("mlflow.")})
    return row
