"""Where runs go: tracking.uri, then $MLFLOW_TRACKING_URI, then SQLite under mlruns/."""

from __future__ import annotations

from pathlib import Path

import pytest

from cfexp.tracking.store import resolve_uri


def test_the_default_is_sqlite_under_mlruns(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_uri(None, tmp_path / "mlruns") == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    assert (tmp_path / "mlruns").is_dir()


def test_the_environment_overrides_the_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_uri(None, tmp_path) == "http://127.0.0.1:5000"


def test_the_config_overrides_everything(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_uri("sqlite:////data/shared.db", tmp_path) == "sqlite:////data/shared.db"
