"""Fixtures: the serving process started for real, on port 0, as the launcher does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serving.serving_helpers import FAST_SIM, Server, ServerFactory, start_server


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers with any settings; all are stopped (SIGTERM) after the test."""
    servers: list[Server] = []

    def factory(engine: str = "sim", settings: dict[str, Any] | None = None) -> Server:
        server = start_server(
            engine, settings if settings is not None else FAST_SIM, tmp_path / f"server{len(servers)}"
        )
        servers.append(server)
        return server

    yield factory
    for server in servers:
        assert server.stop() == 0, server.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def sim_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One fast simulator for a whole test module."""
    server = start_server("sim", FAST_SIM, tmp_path_factory.mktemp("sim"))
    yield server
    assert server.stop() == 0, server.log.read_text()[-3000:]
