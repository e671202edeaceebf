"""Reads of a local SQLite tracking store without MLflow: its tables, read-only.

MLflow's client loads every run it returns whole (each param, metric and tag
through its ORM) and importing it costs a second and more. Two reads must be
cheaper than that: a report over thousands of runs (:mod:`cfexp.tracking.query`)
and, at every sweep's start, the durations of the experiment's latest runs for
the sweep's estimate (:mod:`cfexp.tracking.resume`), which a sweep's first job
waits for. They read MLflow's tables (``experiments``, ``runs``, ``tags``,
``params``, ``latest_metrics``) straight, read-only; each has a test that it
agrees with MLflow's client. Neither MLflow nor pandas is imported here.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

from cfexp.errors import TrackingError
from cfexp.tracking.store_setup import sqlite_path


def local_store(uri: str) -> Path | None:
    """The store file of a ``sqlite:///`` URI, if it is one and the file exists."""
    db = sqlite_path(uri)
    return db if db is not None and db.is_file() else None


def open_read_only(db: Path, uri: str) -> sqlite3.Connection:
    """A read-only connection to a SQLite store, also where its folder cannot be written.

    A store in WAL mode (docs/tracking.md) is read through a shared-memory
    index, ``<store>-shm``, that its first reader creates beside it; in a folder
    nobody may write (a read-only mount, an archived or published copy) SQLite
    refuses to open it. Nothing can be writing such a store, so it is then
    opened as immutable: exact, unless a write-ahead log holds commits not yet
    copied into the store (a copy taken while a command was writing), which
    an immutable reader would miss; that is refused, saying how to recover.
    """
    location = db.resolve().as_uri()
    connection = None
    try:
        connection = sqlite3.connect(f"{location}?mode=ro", uri=True)
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()  # SQLite opens the file here
        return connection
    except sqlite3.Error as exc:
        if connection is not None:
            connection.close()
        if os.access(db.parent, os.W_OK):
            raise TrackingError(f"cannot open the tracking store <tracking-uri={uri}>: {exc}") from exc
        refused = exc
    log_file = db.with_name(db.name + "-wal")
    if log_file.exists() and log_file.stat().st_size > 0:
        raise TrackingError(
            f"cannot read the tracking store <tracking-uri={uri}> ({refused}): its folder cannot be written, "
            f"and its write-ahead log {log_file.name} holds commits not yet in {db.name}. Copy the folder "
            "(the store and its -wal file) somewhere writable and read the copy"
        ) from refused
    try:
        return sqlite3.connect(f"{location}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error as exc:
        raise TrackingError(f"cannot open the tracking store <tracking-uri={uri}>: {exc}") from exc


def latest_runs_timed(db: Path, uri: str, experiment: str, latest: int, tag: str) -> list[tuple[str, int, int, str]]:
    """The ``latest`` active runs of ``experiment``, the newest first (as MLflow's client orders by
    start time): (status, start_time, end_time, the value of ``tag`` or ""); times in ms, 0 if unset."""
    with closing(open_read_only(db, uri)) as connection:
        try:
            rows = connection.execute(
                "SELECT r.status, coalesce(r.start_time, 0), coalesce(r.end_time, 0), "
                "coalesce((SELECT t.value FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = ?), '') "
                "FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
                "WHERE e.name = ? AND e.lifecycle_stage = 'active' AND r.lifecycle_stage = 'active' "
                "ORDER BY r.start_time DESC, r.run_uuid LIMIT ?",
                (tag, experiment, latest),
            ).fetchall()
        except sqlite3.Error as exc:
            raise TrackingError(f"cannot read the tracking store <tracking-uri={uri}>: {exc}") from exc
    return [(str(status), int(start), int(end), str(value)) for status, start, end, value in rows]
