"""Small MLflow stores made with cfexp's own Tracker (MLflow's client), with hand-chosen values.

Creating an MLflow SQLite store runs its schema migrations (seconds on a busy
machine): one empty store is made per session and copied for each test.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from cfexp.tracking.store import MlflowTracker, Tracker

EXPERIMENT = "reporttest"

NewStore = Callable[[Path], tuple[str, Tracker]]


@pytest.fixture(scope="session")
def _empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("empty-store")
    MlflowTracker(f"sqlite:///{root}/mlflow.db", root / "artifacts").experiment_id("template")  # creates the schema
    return root / "mlflow.db"


def copy_store(template: Path, folder: Path) -> tuple[str, Tracker]:
    """(sqlite URI, Tracker) of a copy of the empty store ``template`` in ``folder/mlruns``."""
    (folder / "mlruns").mkdir(parents=True)
    # SQLite's backup, not a file copy: the template is in WAL mode, and its last commits may still be
    # in its -wal file (a copy of mlflow.db alone held a half-migrated schema, which was then recreated).
    with closing(sqlite3.connect(template)) as source, closing(sqlite3.connect(folder / "mlruns" / "mlflow.db")) as copy:
        source.backup(copy)
    uri = f"sqlite:///{folder}/mlruns/mlflow.db"
    return uri, MlflowTracker(uri, folder / "mlruns" / "artifacts")


@pytest.fixture
def new_store(_empty_store: Path) -> NewStore:
    """``new_store(folder)`` -> (sqlite URI, Tracker) of an empty store in ``folder/mlruns``."""
    return lambda folder: copy_store(_empty_store, folder)


def _throughput(language: str, mode: str, rep: int) -> float:
    # Rust configured clearly faster than its baseline; Python configured barely different.
    base = {"python": 100.0, "rust": 200.0}[language]
    gain = {"python": 0.0, "rust": 40.0}[language] if mode == "configured" else 0.0
    return base + gain + (rep - 1) * 2.0 + (1.0 if mode == "configured" else 0.0)


@pytest.fixture
def store(tmp_path: Path, new_store: NewStore) -> str:
    """sqlite URI of a store with 2 languages x 2 options_modes x 3 repetitions + 1 FAILED run."""
    uri, tracker = new_store(tmp_path)
    parent = tracker.start_run(EXPERIMENT, "sweep", {"cfexp.sweep": "parent"})
    for language, runtime in (("python", "asyncio"), ("rust", "tokio")):
        for mode in ("configured", "server_defaults"):
            for rep in range(3):
                run = tracker.start_run(EXPERIMENT, f"{runtime} {mode} {rep}", {
                    "provenance": "simulated", "host": "testhost",
                    "backend": "sim", "backend_version": "0.12.0", "model": "gemma3:270m",
                    "model_digest": "simulated", "code_version": "abc123", "env.cpu_count": "2",
                }, parent_run_id=parent)
                tracker.log_params(run, {
                    "language": language, "runtime.name": runtime,
                    "options_mode": mode, "repetition": rep, "ctx": 512, "paths.root_dir": str(tmp_path),
                })
                tput = _throughput(language, mode, rep)
                tracker.log_metrics(run, {
                    "throughput_tok_s": tput, "ttft_ms": 5000.0 / tput, "e2e_ms": 50000.0 / tput,
                    "agent_startup_ms": {"python": 400.0, "rust": 3.0}[language] + rep,
                    "agent_peak_rss_mb": {"python": 30.0, "rust": 3.5}[language] + rep * 0.1,
                    "output_tokens": 128.0 - rep,
                })
                tracker.end_run(run, "FINISHED")
    failed = tracker.start_run(EXPERIMENT, "asyncio configured 3", {"provenance": "simulated",
                                                                    "error": "agent crashed"}, parent)
    tracker.log_params(failed, {"language": "python", "runtime.name": "asyncio", "options_mode": "configured",
                                "repetition": 3, "ctx": 512})
    tracker.log_metrics(failed, {"throughput_tok_s": 1.0e6})  # absurd: must not reach any statistic
    tracker.end_run(failed, "FAILED")
    tracker.end_run(parent, "FAILED")
    return uri
