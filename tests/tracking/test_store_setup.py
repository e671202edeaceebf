"""A local tracking store: created once under a lock, upgraded with a backup,
and a half-migrated one reported (or, when it holds nothing, set aside)."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from cfexp.errors import TrackingError
from cfexp.tracking import store_setup
from cfexp.tracking.store import MlflowTracker
from tests.together import run_together

# Opens the store at argv[1] when released, and records one run in it.
OPEN_AND_RECORD = """
from pathlib import Path
from cfexp.tracking.store import MlflowTracker, Tracker
uri, artifacts = sys.argv[1], Path(sys.argv[2])
go()
tracker = MlflowTracker(uri, artifacts)
run_id = tracker.start_run("exp", "job", {"who": sys.argv[3]})
tracker.log_batch(run_id, params={"who": sys.argv[3]}, metrics={"m": 1.0})
tracker.end_run(run_id, "FINISHED")
print(run_id)
"""


def sql(path: Path, *statements: str) -> None:
    with closing(sqlite3.connect(path)) as db:
        for statement in statements:
            db.execute(statement)
        db.commit()


def tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def version(path: Path) -> str:
    with closing(sqlite3.connect(path)) as db:
        return str(db.execute("SELECT version_num FROM alembic_version").fetchone()[0])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dump(path: Path) -> str:
    """The store's content as SQL (equal for two files that hold the same)."""
    with closing(sqlite3.connect(path)) as db:
        return "\n".join(db.iterdump())


def head() -> str:
    found = store_setup._head_revision()
    assert found is not None
    return found


def store_with_a_run(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "mlflow.db"
    tracker = MlflowTracker(f"sqlite:///{path}", tmp_path / "artifacts")
    run_id = tracker.start_run("exp", "job", {})
    tracker.log_batch(run_id, metrics={"ttft_ms": 3.0})
    tracker.end_run(run_id, "FINISHED")
    store_setup._forget_store(f"sqlite:///{path}")  # the tests change the file behind MLflow's back
    return path, run_id


def test_processes_opening_a_new_store_together_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / "new" / "mlflow.db"  # not even its folder exists
    uri = f"sqlite:///{path}"
    results = run_together(OPEN_AND_RECORD, [[uri, str(tmp_path / "artifacts"), str(i)] for i in range(3)])
    assert [r.returncode for r in results] == [0, 0, 0], "\n".join(r.stderr[-2000:] for r in results)
    assert "Traceback" not in "".join(r.stderr for r in results)
    # The store was created once: one process ran MLflow's migrations, the others waited.
    assert sum("Creating initial MLflow database tables" in r.stderr for r in results) == 1
    assert not [t for t in tables(path) if t.startswith("_alembic_tmp_")] and version(path) == head()
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("exp")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.params["who"] for r in runs) == ["0", "1", "2"]
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_a_half_migrated_store_with_runs_is_reported_and_left_as_it_is(tmp_path: Path) -> None:
    path, _ = store_with_a_run(tmp_path)
    sql(path, "CREATE TABLE _alembic_tmp_latest_metrics AS SELECT * FROM latest_metrics")
    before = digest(path)
    with pytest.raises(TrackingError) as error:
        MlflowTracker(f"sqlite:///{path}", tmp_path / "artifacts")
    message = str(error.value)
    assert "half-migrated" in message and "table _alembic_tmp_latest_metrics is left over" in message
    assert "No run data is lost" in message and "1 run(s)" in message
    assert f"sqlite3 {path} 'DROP TABLE _alembic_tmp_latest_metrics'" in message
    assert f"mlflow db upgrade sqlite:///{path}" in message and "back it up" in message
    assert digest(path) == before  # nothing changed


def test_following_the_message_recovers_the_store(tmp_path: Path) -> None:
    path, run_id = store_with_a_run(tmp_path)
    sql(path, "CREATE TABLE _alembic_tmp_latest_metrics AS SELECT * FROM latest_metrics")
    with pytest.raises(TrackingError):
        MlflowTracker(f"sqlite:///{path}", tmp_path / "artifacts")
    sql(path, "DROP TABLE _alembic_tmp_latest_metrics")
    done = subprocess.run(
        [sys.executable, "-m", "mlflow", "db", "upgrade", f"sqlite:///{path}"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    run = MlflowTracker(f"sqlite:///{path}", tmp_path / "artifacts").get_run(run_id)
    assert run.data.metrics == {"ttft_ms": 3.0}


def test_a_table_only_left_in_its_copy_is_reported_with_the_rename(tmp_path: Path) -> None:
    path, _ = store_with_a_run(tmp_path)
    sql(path, "ALTER TABLE runs RENAME TO _alembic_tmp_runs")
    with pytest.raises(TrackingError) as error:
        MlflowTracker(f"sqlite:///{path}", tmp_path / "artifacts")
    message = str(error.value)
    assert "table runs is missing and its rows are in _alembic_tmp_runs" in message
    assert "No run data is lost" in message and "1 run(s)" in message
    assert "ALTER TABLE _alembic_tmp_runs RENAME TO runs" in message


@pytest.mark.parametrize(
    "break_it",
    [
        "CREATE TABLE _alembic_tmp_latest_metrics AS SELECT * FROM latest_metrics",  # the store
        "DELETE FROM alembic_version",  # tables without a schema version
    ],
    ids=["leftover_table", "no_version"],
)
def test_a_broken_store_that_holds_nothing_is_set_aside_and_made_anew(
    tmp_path: Path, break_it: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cfexp.tracking.store_setup")
    path = tmp_path / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}")  # a new store: MLflow's Default experiment only
    store_setup._forget_store(f"sqlite:///{path}")
    sql(path, break_it)
    tracker = MlflowTracker(f"sqlite:///{path}", tmp_path / "artifacts")
    run_id = tracker.start_run("exp", "job", {})
    tracker.end_run(run_id, "FINISHED")
    (aside,) = tmp_path.glob("mlflow.db.half-migrated-*")
    assert digest(aside)  # kept, not deleted
    assert not [t for t in tables(path) if t.startswith("_alembic_tmp_")] and version(path) == head()
    assert any("held no run, experiment or other data" in r.getMessage() and str(aside) in r.getMessage()
               for r in caplog.records)


def test_a_store_with_an_older_schema_is_backed_up_and_upgraded(tmp_path: Path) -> None:
    from alembic import command
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config, create_sqlalchemy_engine_with_retry
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    path = tmp_path / "mlflow.db"
    uri = f"sqlite:///{path}"
    config = _get_alembic_config(uri)
    older = ScriptDirectory.from_config(config).get_revision(head()).down_revision
    assert isinstance(older, str)
    engine = create_sqlalchemy_engine_with_retry(uri)
    InitialBase.metadata.create_all(engine)
    with engine.begin() as connection:  # what an older MLflow would have made
        config.attributes["connection"] = connection
        command.upgrade(config, older)
    engine.dispose()
    sql(path, "INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage) "
              "VALUES (7, 'kept', 'file:///kept', 'active')")
    tracker = MlflowTracker(uri, tmp_path / "artifacts")
    assert tracker.experiment_id("kept") == "7"  # the data came through the upgrade
    assert version(path) == head()
    (backup,) = tmp_path.glob(f"mlflow.db.backup-{older}-*")
    assert version(backup) == older


def test_an_upgrade_that_fails_is_undone_and_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = store_with_a_run(tmp_path)
    older = "0" * 12
    sql(path, f"UPDATE alembic_version SET version_num = '{older}'")
    monkeypatch.setattr(store_setup, "_known_revision", lambda version: True)
    before = dump(path)

    def upgrade_that_breaks_halfway(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        sql(path, "CREATE TABLE _alembic_tmp_runs AS SELECT * FROM runs", "DROP TABLE runs")
        return subprocess.CompletedProcess(command, 1, "", "sqlite3.OperationalError: disk I/O error")

    monkeypatch.setattr(store_setup.subprocess, "run", upgrade_that_breaks_halfway)
    with pytest.raises(TrackingError) as error:
        MlflowTracker(f"sqlite:///{path}", tmp_path / "artifacts")
    message = str(error.value)
    assert "`mlflow db upgrade` failed" in message and "restored from the backup" in message
    assert "no run data is lost" in message and "disk I/O error" in message
    assert dump(path) == before and "runs" in tables(path)


def test_a_store_from_a_newer_mlflow_is_left_alone(tmp_path: Path) -> None:
    path, _ = store_with_a_run(tmp_path)
    sql(path, "UPDATE alembic_version SET version_num = 'ffffffffffff'")
    before = digest(path)
    with pytest.raises(TrackingError, match="written by a newer MLflow.*Nothing was changed"):
        MlflowTracker(f"sqlite:///{path}", tmp_path / "artifacts")
    assert digest(path) == before



def test_a_file_that_is_not_a_store_is_named(tmp_path: Path) -> None:
    path = tmp_path / "mlflow.db"
    path.write_text("not a database, but some notes\n" * 100)
    with pytest.raises(TrackingError, match=r"cannot read the tracking store .*Is .*mlflow.db an MLflow SQLite store"):
        MlflowTracker(f"sqlite:///{path}", tmp_path / "artifacts")
    assert path.read_text().startswith("not a database")


def journal_mode(path: Path) -> str:
    with closing(sqlite3.connect(path)) as db:
        return str(db.execute("PRAGMA journal_mode").fetchone()[0])


def test_a_local_store_is_kept_in_wal_mode_new_or_old(tmp_path: Path) -> None:
    """One fsync of the log per commit instead of the rollback journal's several; as durable."""
    new = tmp_path / "new" / "mlflow.db"
    tracker = MlflowTracker(f"sqlite:///{new}", tmp_path / "artifacts")
    run_id = tracker.start_run("exp", "job", {})
    tracker.end_run(run_id, "FINISHED")
    assert journal_mode(new) == "wal"
    old = tmp_path / "old" / "mlflow.db"
    MlflowTracker(f"sqlite:///{old}", tmp_path / "artifacts")
    store_setup._forget_store(f"sqlite:///{old}")  # MLflow's pooled connections let go of it
    sql(old, "PRAGMA journal_mode=DELETE")  # a store made before cfexp used WAL
    assert journal_mode(old) == "delete"
    MlflowTracker(f"sqlite:///{old}", tmp_path / "artifacts")
    assert journal_mode(old) == "wal"
    with closing(sqlite3.connect(old)) as db:  # SQLite's default: the log is synced at every commit
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_a_store_on_a_network_file_system_keeps_the_rollback_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_setup, "_on_local_file_system", lambda folder: False)
    path = tmp_path / "mlflow.db"
    MlflowTracker(f"sqlite:///{path}", tmp_path / "artifacts")
    assert journal_mode(path) == "delete"


def test_the_mount_of_a_folder_is_read_from_proc_mounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mounts = "/dev/vda / ext4 rw 0 0\nserver:/export /shared nfs4 rw 0 0\nfuse /fuse fuse.sshfs rw 0 0\n"
    real_read_text = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: mounts if str(self) == "/proc/mounts" else real_read_text(self, *a, **k))
    assert store_setup._on_local_file_system(Path("/home/me"))
    assert not store_setup._on_local_file_system(Path("/shared/me/mlruns"))
    assert not store_setup._on_local_file_system(Path("/fuse/x"))


def test_mlflows_schema_version_is_looked_up_once_per_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its migration scripts are imported once; later commands read the answer from the cache."""
    import mlflow.store.db.utils as mlflow_db
    from alembic.script import ScriptDirectory

    monkeypatch.setenv("CFEXP_CACHE_DIR", str(tmp_path))
    # Whatever _head_revision hands MLflow in this process is undone after the test.
    monkeypatch.setattr(mlflow_db, "_get_latest_schema_revision", mlflow_db._get_latest_schema_revision)
    truth = ScriptDirectory.from_config(mlflow_db._get_alembic_config(db_url="")).get_heads()[0]
    assert store_setup._head_revision() == truth
    cached = json.loads((tmp_path / store_setup.HEAD_CACHE_FILE).read_text())
    assert list(cached.values()) == [truth]
    assert mlflow_db._get_latest_schema_revision() == truth  # MLflow's own check gets the same answer
    fingerprint = next(iter(cached))
    (tmp_path / store_setup.HEAD_CACHE_FILE).write_text(json.dumps({fingerprint: "from-the-cache"}))
    assert store_setup._head_revision() == "from-the-cache"  # no script imported
    monkeypatch.setattr(store_setup, "_migrations_fingerprint", lambda: "another MLflow")
    monkeypatch.setattr(mlflow_db, "_get_latest_schema_revision", lambda: truth)
    assert store_setup._head_revision() == truth  # another MLflow is looked up anew
