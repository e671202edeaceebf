"""Fixtures of the agent tests: the scripted loopback LLM server."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.agents.scripted_server import Script, ScriptedServer


@pytest.fixture
def scripted_server() -> Iterator[Callable[[Script], ScriptedServer]]:
    """scripted_server(script) -> a started server, stopped after the test."""
    servers: list[ScriptedServer] = []

    def start(script: Script) -> ScriptedServer:
        server = ScriptedServer(script).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()
