"""A store in a folder nobody may write (a read-only mount, a published copy) is still reported.

A local store is in WAL mode, whose readers create ``<store>-shm`` beside it.
The tests mount the store's folder read-only in a private mount namespace
(``unshare``), so that even this test's root user cannot write it, and run the
reading command there.
"""

from __future__ import annotations

import pickle
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pandas as pd

from cfexp.tracking import query
from tests.report.conftest import EXPERIMENT

REPO = Path(__file__).resolve().parents[2]


def _in_read_only_folder(folder: Path, command: list[str]) -> subprocess.CompletedProcess[str]:
    """``command``, run where ``folder`` is mounted read-only (for this command's processes only)."""
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(folder), *command],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )


def _search_runs_there(folder: Path, uri: str, out: Path) -> subprocess.CompletedProcess[str]:
    """search_runs(uri) with ``folder`` read-only; the frame is pickled to ``out``."""
    program = (
        "import os, pickle, sys\n"
        "from cfexp.tracking import query\n"
        "folder, uri, out = sys.argv[1:]\n"
        "assert not os.access(folder, os.W_OK), 'the folder is writable: the test proves nothing'\n"
        f"frame = query.search_runs(uri, {EXPERIMENT!r})\n"
        "with open(out, 'wb') as f: pickle.dump(frame, f)\n"
    )
    return _in_read_only_folder(folder, [sys.executable, "-c", program, str(folder), uri, str(out)])


def _journal_mode(db: Path) -> str:
    with closing(sqlite3.connect(db)) as connection:
        return str(connection.execute("PRAGMA journal_mode").fetchone()[0])


def test_a_wal_store_in_a_read_only_folder_reads_the_same_runs_and_reports(store: str, tmp_path: Path) -> None:
    expected = query.search_runs(store, EXPERIMENT)
    # The store file alone, in WAL mode, published in a folder of its own (every command folds its
    # write-ahead log into the file as it exits).
    published = tmp_path / "published"
    published.mkdir()
    db = published / "mlflow.db"
    with closing(sqlite3.connect(Path(store.removeprefix("sqlite:///")))) as source, \
            closing(sqlite3.connect(db)) as copy:
        source.backup(copy)
        copy.execute("PRAGMA journal_mode=WAL")
    assert _journal_mode(db) == "wal"
    assert sorted(p.name for p in published.iterdir()) == ["mlflow.db"]
    uri = f"sqlite:///{db}"

    done = _search_runs_there(published, uri, tmp_path / "frame.pickle")
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "frame.pickle", "rb") as f:
        pd.testing.assert_frame_equal(pickle.load(f), expected)

    report = _in_read_only_folder(published, [
        sys.executable, "-m", "cfexp.cli", "report", "--experiment", EXPERIMENT, "--tracking-uri", uri,
        "--out", str(tmp_path / "report"),
    ])
    assert report.returncode == 0, report.stderr
    assert "**13 runs**: 12 finished and used" in (tmp_path / "report" / "report.md").read_text()
    assert sorted(p.name for p in published.iterdir()) == ["mlflow.db"]  # nothing was written beside the store


def test_a_read_only_copy_taken_mid_write_is_refused_saying_how_to_read_it(store: str, tmp_path: Path) -> None:
    """Commits still in the write-ahead log would be missed by an immutable reader: refused, not read short."""
    db = Path(store.removeprefix("sqlite:///"))
    copy = tmp_path / "copy"
    copy.mkdir()
    with closing(sqlite3.connect(db)) as writer:  # a command still writing: its log not yet folded into the store
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("UPDATE runs SET name = name || ' (renamed)'")
        writer.commit()
        for part in (db.name, db.name + "-wal"):
            shutil.copyfile(db.parent / part, copy / part)
    assert (copy / (db.name + "-wal")).stat().st_size > 0
    uri = f"sqlite:///{copy / db.name}"

    done = _in_read_only_folder(copy, [
        sys.executable, "-m", "cfexp.cli", "report", "--experiment", EXPERIMENT, "--tracking-uri", uri,
        "--out", str(tmp_path / "report"),
    ])
    assert done.returncode == 2, done.stderr
    assert "its folder cannot be written, and its write-ahead log mlflow.db-wal holds commits not yet in mlflow.db" \
        in done.stderr
    assert "Copy the folder (the store and its -wal file) somewhere writable" in done.stderr

    # Where it can be written, the same copy reads whole, the log's commits included.
    renamed = query.search_runs(uri, EXPERIMENT)
    assert renamed["run_name"].str.endswith(" (renamed)").all()
