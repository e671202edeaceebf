"""Session fixtures: one real PostgreSQL cluster and one MLflow tracking server on it.

Both start once per session (the MLflow server's first start creates its
schema, which takes tens of seconds) and stop, with every process they
spawned, when the session ends. Each test gets its own MLflow experiment on
the server and its own Optuna database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.shared_tracking.services import MlflowServer, Postgres, mlflow_server, postgres_cluster


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def tracking_server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    store = postgres.create_database("mlflow")
    with mlflow_server(store, tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


@pytest.fixture
def optuna_url(postgres: Postgres) -> str:
    """A fresh, empty database for one test's Optuna storage."""
    return postgres.create_database(f"optuna_{uuid.uuid4().hex[:8]}")


@pytest.fixture
def experiment(request: pytest.FixtureRequest) -> str:
    """An MLflow experiment of this test alone on the shared server."""
    return f"{request.node.name[:60]}-{uuid.uuid4().hex[:6]}"
