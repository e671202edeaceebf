"""Opening a local SQLite tracking store: created, upgraded and checked once, under a lock.

MLflow creates its tables (and runs its ~60 schema migrations) the first time
a client opens a new SQLite store, and it does not guard that against other
processes: two cfexp commands started together on a new store both migrate
it, one fails (``table experiment_tags already exists``) and the store can
be left half-migrated (a leftover ``_alembic_tmp_<table>``), unusable.

:func:`open_client` therefore looks at a ``sqlite:///`` store under a
:class:`~cfexp.filelock.FileLock` on ``<store>.lock`` beside it: the first
process creates (or upgrades) the store, every other one waits (saying so if
that takes a while), then opens the finished store. What it finds:

- a **ready** store (the schema this MLflow expects): opened, outside the
  lock (the lock is held for a few milliseconds);
- **no store**: created by MLflow, under the lock;
- an **older schema** (MLflow was upgraded) with data: backed up beside the
  store (``<store>.backup-<version>-<time>``), then upgraded with ``mlflow db
  upgrade``, as MLflow documents; if the upgrade fails, the backup is put
  back and the error says what to do;
- a store **left half-migrated** (a leftover ``_alembic_tmp_<table>``, or
  tables without a schema version) that holds data: nothing is changed, and
  :class:`~cfexp.errors.TrackingError` names the table, says that no run data
  is lost and how to recover;
- a half-migrated or old store that holds **no data at all** (no run, no
  experiment but MLflow's Default, nothing else): moved aside
  (``<store>.half-migrated-<time>-<pid>`` or ``.old-schema-…``, never
  deleted) and created anew;
- a schema from a **newer MLflow**: left alone, with a message.

A store on a local file system is kept in SQLite's write-ahead-log mode
(``journal_mode=WAL``, set once, in the file): each commit then waits for one
``fsync`` of the log instead of three or four of the rollback journal and the
database (about 10 ms instead of 45 on this project's 2-core machine, and a job
commits five times), and is just as durable — SQLite's default
``synchronous=FULL`` syncs the log at every commit, so a run written is kept
through a crash of cfexp or of the machine. On a network file system (NFS,
SMB, Lustre, …), where WAL's shared memory does not work, the store keeps
SQLite's default rollback journal.

Other URIs (an MLflow server, PostgreSQL) are opened as they are: a server
migrates its own store once, at its start.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfexp.errors import TrackingError
from cfexp.filelock import FileLock
from cfexp.locations import cache_dir

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
# What Alembic names the copy of a table it rebuilds (SQLite has no ALTER COLUMN).
ALEMBIC_TMP_PREFIX = "_alembic_tmp_"
# Rows a new store holds by itself (MLflow's Default experiment, its default workspace).
_SEEDED_ROWS = {"experiments": "experiment_id != 0", "workspaces": "name != 'default'"}
_NOT_DATA = ("alembic_version",)
# `mlflow db upgrade` of a big store takes a while; beyond this something is wrong.
_UPGRADE_TIMEOUT_S = 1800


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working folder when
    relative, as SQLAlchemy reads it); None for any other URI or an in-memory store."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def store_lock(path: Path) -> FileLock:
    """The lock that guards creating and upgrading the store at ``path``."""
    return FileLock(
        path.with_name(path.name + LOCK_SUFFIX),
        "tracking store lock",
        reason="another cfexp command is creating or upgrading this store; this one goes on when it is done",
    )


def open_client(uri: str) -> Any:  # mlflow's MlflowClient
    """An ``MlflowClient`` for ``uri``; a local SQLite store is made ready first, under its lock.

    The lock is held only to look at the store (a few milliseconds) and, when
    it is not ready, to create, upgrade or recover it: opening a ready store,
    which takes MLflow a second or more, happens outside it, in parallel.
    """
    path = sqlite_path(uri)
    if path is None:
        return _client(uri)
    fold_at_exit(path)
    head = _head_revision()  # imports MLflow: before the lock, not inside it
    lock = store_lock(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(holder=f"opening the tracking store {path}")
    except OSError as exc:  # a read-only folder: nobody can create the store there anyway
        log.debug("no lock for the tracking store %s (%s): opened without", path, exc)
        return _ready_client(uri, path, head)
    try:
        state = inspect_store(path, count_data=False)
        if not state.tables:  # a new store: MLflow creates its tables in WAL mode already
            use_write_ahead_log(path)
        if not (head is not None and state.version == head and not state.leftovers):
            return _ready_client(uri, path, head)
        use_write_ahead_log(path)
    except sqlite3.Error as exc:
        raise TrackingError(
            f"cannot read the tracking store <tracking.uri={uri}>: {exc}. Is {path} an MLflow SQLite store? "
            "Point tracking.uri (or paths.mlruns_dir) to another one, or move this file away."
        ) from exc
    finally:
        lock.release()
    return _client(uri)  # a ready store: MLflow neither creates nor migrates anything


# File systems where SQLite's WAL mode must not be used (its index lives in shared memory).
_NETWORK_FILE_SYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "ceph", "glusterfs", "9p", "afs")


def use_write_ahead_log(path: Path) -> None:
    """Put the store at ``path`` (a new one too) in WAL mode, on a local file system; never raises.

    Called under the store's lock. Another process that has the store open
    keeps it in its mode (SQLite refuses the change then): this one tries
    again on the next command.
    """
    if not _on_local_file_system(path.parent):
        return
    try:
        with closing(sqlite3.connect(path, timeout=1)) as db:
            if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:
        log.debug("the tracking store %s stays in its journal mode: %s", path, exc)


# The local stores this process opened: their write-ahead logs are folded in when it exits.
_OPENED: set[Path] = set()


def fold_at_exit(path: Path) -> None:
    """Fold the store's write-ahead log into it when this process exits (:func:`fold_opened_stores`)."""
    if not _OPENED:
        atexit.register(fold_opened_stores)
    _OPENED.add(path)


def fold_opened_stores() -> None:
    """Copy every commit still in the write-ahead log of each store this process opened into the
    store file, and empty the log. In WAL mode a commit is durable once it is in ``<store>-wal``
    (a crash loses nothing) but the store file alone lacks it until a checkpoint, which SQLite
    runs only every ~4 MB and when the last connection closes: a command ends with its pooled
    connections open, so a copy of ``mlflow.db`` without its ``-wal`` (a store published or sent
    on) missed the last runs. Best effort: it never waits (another command writing now folds the
    log when it ends) and never raises. The tracking writer calls it before it exits, the harness
    at exit."""
    for path in sorted(_OPENED):
        log_file = path.with_name(path.name + "-wal")
        try:
            if not log_file.exists() or log_file.stat().st_size == 0:
                continue
            with closing(sqlite3.connect(path, timeout=0)) as db:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except (OSError, sqlite3.Error) as exc:
            log.debug("the write-ahead log of %s is left for a later command to fold: %s", path, exc)


def _on_local_file_system(folder: Path) -> bool:
    """Whether ``folder`` is on a local file system (its mount's type, from /proc/mounts)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return False  # not Linux, or no /proc: keep SQLite's default
    resolved = str(folder.resolve())
    best, kind = "", ""
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = fields[1].replace("\\040", " ")
        inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) > len(best):
            best, kind = mount_point, fields[2]
    return bool(kind) and kind not in _NETWORK_FILE_SYSTEMS and not kind.startswith("fuse")


def import_mlflow() -> None:
    """Import what opening a store needs, the schema version looked up (the tracking writer
    does this before it is asked to open one: :mod:`cfexp.tracking.writer`)."""
    _head_revision()
    import mlflow.store.tracking.sqlalchemy_store  # the SQLite and PostgreSQL stores
    import mlflow.tracking  # noqa: F401


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


@dataclass
class StoreState:
    """What a SQLite store file holds, read without MLflow."""

    tables: set[str] = field(default_factory=set)
    version: str | None = None  # alembic_version.version_num
    leftovers: list[str] = field(default_factory=list)  # _alembic_tmp_* tables
    data: dict[str, int] = field(default_factory=dict)  # table -> rows a new store would not have

    @property
    def runs(self) -> int:
        return self.data.get("runs", 0) + self.data.get(ALEMBIC_TMP_PREFIX + "runs", 0)

    @property
    def holds_data(self) -> bool:
        return bool(self.data)

    @property
    def half_created(self) -> bool:
        """MLflow's tables without a schema version: a creation that stopped halfway."""
        return self.version is None and bool(self.tables - {"alembic_version"})


def inspect_store(path: Path, count_data: bool = True) -> StoreState:
    """Tables, schema version, leftover migration tables and (``count_data``) data of the store at ``path``."""
    state = StoreState()
    if not path.exists() or path.stat().st_size == 0:
        return state
    # Read only, but on a read-write connection: one that finds the journal of a process
    # killed mid-write rolls it back first, as MLflow's own would.
    with closing(sqlite3.connect(path, timeout=30)) as db:
        state.tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        state.leftovers = sorted(t for t in state.tables if t.startswith(ALEMBIC_TMP_PREFIX))
        if "alembic_version" in state.tables:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
            state.version = str(row[0]) if row else None
        for table in sorted(state.tables) if count_data else []:
            base = table.removeprefix(ALEMBIC_TMP_PREFIX)
            if base in _NOT_DATA or table.startswith("sqlite_"):
                continue
            where = _SEEDED_ROWS.get(base)
            query = f'SELECT count(*) FROM "{table}"' + (f" WHERE {where}" if where else "")
            try:
                rows = int(db.execute(query).fetchone()[0])
            except sqlite3.Error:  # a half-built table without that column: count every row
                rows = int(db.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
            if rows:
                state.data[table] = rows
    return state


def _ready_client(uri: str, path: Path, head: str | None) -> Any:
    """Under the lock: the store created, upgraded or recovered as needed, then opened."""
    state = inspect_store(path)
    older = head is not None and state.version not in (None, head)
    if older:
        assert state.version is not None
        _check_known(uri, state.version)
    if state.leftovers or state.half_created:
        if state.holds_data:
            raise TrackingError(half_migrated_message(uri, path, state))
        _set_aside(uri, path, *_why_broken(state, head))
    elif older and state.holds_data:
        assert state.version is not None
        _upgrade(uri, path, state.version)
    try:
        return _client(uri)  # creates a new store; opens one that was made ready
    except Exception as exc:  # MLflow raises many kinds; diagnose at the boundary
        first_error = exc
    # It did not open: find out why, with the store as it is now.
    _forget_store(uri)
    state = inspect_store(path)
    broken = state.leftovers or state.half_created
    out_of_date = state.version is not None and head is not None and state.version != head
    if (broken or out_of_date) and not state.holds_data:
        _set_aside(uri, path, *_why_broken(state, head))
        return _client(uri)
    if broken:
        raise TrackingError(half_migrated_message(uri, path, state)) from first_error
    raise TrackingError(f"cannot open the tracking store <tracking.uri={uri}>: {first_error}") from first_error


def _check_known(uri: str, version: str) -> None:
    if not _known_revision(version):
        raise TrackingError(
            f"the tracking store <tracking.uri={uri}> has schema version {version}, which this MLflow "
            "does not know: it was written by a newer MLflow. Use that MLflow version, or point "
            "tracking.uri to another store. Nothing was changed."
        )


def half_migrated_message(uri: str, path: Path, state: StoreState) -> str:
    """What was found, that no run data is lost, and how to recover (for a store that holds data)."""
    runs = f"{state.runs} run(s)" if state.runs else "its data"
    if state.leftovers:
        table = state.leftovers[0]
        original = table.removeprefix(ALEMBIC_TMP_PREFIX)
        if original in state.tables:
            found = (
                f"table {table} is left over from a schema migration that was interrupted (MLflow rebuilds "
                f"a table as {table}, then swaps it for {original}). No run data is lost: {original} is "
                f"intact, the leftover is a partial copy of it, and the store still holds {runs}"
            )
            fix = f"sqlite3 {path} 'DROP TABLE {table}'"
        else:
            found = (
                f"table {original} is missing and its rows are in {table}: a schema migration was "
                f"interrupted after copying it and before renaming the copy back. No run data is lost: "
                f"the store still holds {runs}"
            )
            fix = f"sqlite3 {path} 'ALTER TABLE {table} RENAME TO {original}'"
        others = f" (also {', '.join(state.leftovers[1:])}: treat each the same way)" if len(state.leftovers) > 1 else ""
    else:
        found = (
            "MLflow's tables are there without a schema version (alembic_version): the store's creation was "
            f"interrupted. No run data is lost: the store still holds {runs}"
        )
        fix = f"sqlite3 {path} 'DROP TABLE IF EXISTS alembic_version'"
        others = ""
    return (
        f"the tracking store <tracking.uri={uri}> was left half-migrated: {found}{others}. cfexp changed "
        f"nothing. To recover: stop every process using it, back it up (cp {path} {path}.bak), run "
        f"`{fix}` and then `mlflow db upgrade sqlite:///{path}` (MLflow's documented upgrade; restore the "
        f"backup if it fails), and run cfexp again. Or point tracking.uri (or paths.mlruns_dir) to another "
        f"store and keep this one as it is."
    )


def _set_aside(uri: str, path: Path, why: str, label: str) -> None:
    """Move a store that holds no data aside (with its journal files): a new one is created there."""
    aside = path.with_name(f"{path.name}.{label}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    for suffix in ("", "-journal", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.replace(aside.with_name(aside.name + suffix))
    _forget_store(uri)
    log.warning(
        "the tracking store %s could not be used as it was (%s) and held no run, experiment or other "
        "data: it was moved to %s and a new store is created in its place (nothing was lost)", path, why, aside,
    )


def _why_broken(state: StoreState, head: str | None) -> tuple[str, str]:
    """(what is wrong, label of the set-aside file)."""
    if state.leftovers:
        return f"left half-migrated: leftover table {', '.join(state.leftovers)}", "half-migrated"
    if state.half_created:
        return "left half-created: tables without a schema version", "half-migrated"
    return f"schema version {state.version}, this MLflow expects {head}", "old-schema"


def _upgrade(uri: str, path: Path, version: str) -> None:
    """Back the store up, run ``mlflow db upgrade``; put the backup back if that fails."""
    backup = path.with_name(f"{path.name}.backup-{version}-{time.strftime('%Y%m%d-%H%M%S')}")
    _copy_database(path, backup)
    log.warning(
        "the tracking store %s has an older schema (%s) than this MLflow needs: it is upgraded with "
        "`mlflow db upgrade` (a backup is kept at %s)", path, version, backup,
    )
    done = subprocess.run(
        [sys.executable, "-m", "mlflow", "db", "upgrade", uri],
        capture_output=True, text=True, check=False, timeout=_UPGRADE_TIMEOUT_S,
    )
    if done.returncode == 0:
        log.info("tracking store %s upgraded", path)
        return
    _forget_store(uri)
    _copy_database(backup, path)
    last = "\n".join(done.stderr.strip().splitlines()[-5:])
    raise TrackingError(
        f"the tracking store <tracking.uri={uri}> has an older schema (version {version}) and `mlflow db "
        f"upgrade` failed on it (exit {done.returncode}); the store was restored from the backup "
        f"{backup}, so no run data is lost. Run `mlflow db upgrade {uri}` yourself to see why, or use an "
        f"MLflow version that matches the store. Its last lines:\n{last}"
    )


def _copy_database(source: Path, target: Path) -> None:
    """A consistent copy (SQLite's online backup), also while others have the file open."""
    with closing(sqlite3.connect(source, timeout=30)) as src, closing(sqlite3.connect(target, timeout=30)) as dst:
        src.backup(dst)


# The schema version each installed MLflow expects, by the fingerprint of its migration scripts.
HEAD_CACHE_FILE = "mlflow-schema-head.json"


def _head_revision() -> str | None:
    """The schema version this MLflow expects (None if it cannot be read).

    MLflow finds it by importing every one of its ~130 migration scripts, and
    does so again when it opens a store (``_verify_schema``): a second or more
    at every command's start. The answer depends only on those scripts, so it
    is kept in cfexp's cache under a fingerprint of them (names, sizes, times:
    another MLflow, or a changed script, is looked up anew), and MLflow's own
    lookup in this process is given the same answer.
    """
    fingerprint = _migrations_fingerprint()
    head = _cached_head(fingerprint)
    try:
        import mlflow.store.db.utils as mlflow_db

        if head is None:
            head = str(mlflow_db._get_latest_schema_revision())  # type: ignore[no-untyped-call]  # MLflow: unannotated
            _cache_head(fingerprint, head)
        found = head
        mlflow_db._get_latest_schema_revision = lambda: found  # what it would compute, computed once
        return head
    except Exception as exc:  # a private MLflow function: never fail for it
        log.debug("cannot read MLflow's schema version: %s", exc)
        return None


def _migrations_fingerprint() -> str | None:
    """Names, sizes and modification times of MLflow's migration scripts (without importing MLflow)."""
    try:
        import hashlib
        import importlib.util
        from importlib import metadata

        spec = importlib.util.find_spec("mlflow")
        if spec is None or not spec.submodule_search_locations:
            return None
        versions = Path(list(spec.submodule_search_locations)[0]) / "store" / "db_migrations" / "versions"
        digest = hashlib.sha256(metadata.version("mlflow").encode())
        for script in sorted(versions.glob("*.py")):
            info = script.stat()
            digest.update(f"{script.name}:{info.st_size}:{info.st_mtime_ns}\n".encode())
        return digest.hexdigest()
    except (OSError, ImportError, ValueError, metadata.PackageNotFoundError):
        return None


def _cached_head(fingerprint: str | None) -> str | None:
    if fingerprint is None:
        return None
    try:
        return str(json.loads((cache_dir() / HEAD_CACHE_FILE).read_text())[fingerprint])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _cache_head(fingerprint: str | None, head: str) -> None:
    """Best effort (a read-only home only makes the next start slower)."""
    if fingerprint is None:
        return
    path = cache_dir() / HEAD_CACHE_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps({fingerprint: head}))
        temporary.replace(path)  # atomic: a reader never sees half a file
    except OSError as exc:
        log.debug("could not cache MLflow's schema version in %s: %s", path, exc)


def _known_revision(version: str) -> bool:
    try:
        from alembic.script import ScriptDirectory
        from mlflow.store.db.utils import _get_alembic_config

        config = _get_alembic_config(db_url="")  # type: ignore[no-untyped-call]  # MLflow: unannotated
        ScriptDirectory.from_config(config).get_revision(version)
        return True
    except Exception:
        return False


def _forget_store(uri: str) -> None:
    """Drop what MLflow keeps of the store in this process (its store objects, its
    engine's pooled connections): they may point to a file that was moved or replaced."""
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        from mlflow.tracking._tracking_service.registry import TrackingStoreRegistry

        TrackingStoreRegistry._get_store_with_resolved_uri.cache_clear()
        engine = SqlAlchemyStore._engine_map.pop(uri, None)
        if engine is not None:
            engine.dispose()
    except Exception as exc:  # MLflow's private caches: never fail for them
        log.debug("could not drop MLflow's cached store for %s: %s", uri, exc)
