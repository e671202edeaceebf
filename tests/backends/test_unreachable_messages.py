"""Nothing answers at backend.url: the message fits the backend and how it was configured.

A `cfexp serve` given by URL is never told to install Ollama; an external
server is never told about start_if_absent (issue 13, item 4).
"""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from cfexp.backends.base import LaunchSpec
from cfexp.backends.external import OllamaBackend
from cfexp.errors import ServerUnreachableError


def closed_url() -> str:
    with socket.socket() as sock:  # bound then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def spec(backend: str, url: str, *, start_if_absent: bool, external: bool) -> LaunchSpec:
    return LaunchSpec(
        backend=backend, api="ollama", host="127.0.0.1", url=url, model_name="gemma3:270m", model_file=None,
        n_layers=18, gpu_layers=None, ctx=None, threads=1, slots=1,
        start_if_absent=start_if_absent, external=external, binary="no-such-ollama",
    )


@pytest.mark.parametrize(
    "backend, start_if_absent, external, says, never",
    [
        ("sim", True, False, "start one there (`cfexp serve sim --port", "Ollama"),
        ("llamacpp", True, False, "drop backend.url so that cfexp starts its own", "Ollama"),
        ("ollama", False, True, "with topology.lifecycle=external cfexp starts nothing", "start_if_absent"),
        ("ollama", False, False, "with backend.start_if_absent=true cfexp starts `ollama serve`", "lifecycle"),
        ("ollama", True, False, "is not on PATH: install Ollama", "start_if_absent"),
    ],
    ids=["sim", "llamacpp", "ollama_external", "ollama_no_start", "ollama_not_installed"],
)
def test_the_message_fits_the_backend(
    tmp_path: Path, backend: str, start_if_absent: bool, external: bool, says: str, never: str
) -> None:
    url = closed_url()
    with pytest.raises(Exception) as failure:
        OllamaBackend().start(spec(backend, url, start_if_absent=start_if_absent, external=external), 0, tmp_path, 5)
    message = str(failure.value)
    assert f"<backend={backend} url={url}>" in message and says in message, message
    assert never not in message, message
    if backend != "ollama" or not start_if_absent:
        assert isinstance(failure.value, ServerUnreachableError)


def test_ollama_is_never_started_for_an_address_beyond_loopback(tmp_path: Path) -> None:
    """192.0.2.0/24 is TEST-NET-1: nothing answers there; cfexp must not try `ollama serve` for it."""
    marker = tmp_path / "started"
    stand_in = tmp_path / "ollama"
    stand_in.write_text(f"#!/bin/sh\ntouch {marker}\nsleep 30\n")
    stand_in.chmod(0o755)
    launch = spec("ollama", "http://192.0.2.1:11434", start_if_absent=True, external=False)
    launch = dataclasses.replace(launch, binary=str(stand_in))
    with pytest.raises(ServerUnreachableError, match="cfexp only starts servers on loopback"):
        OllamaBackend().start(launch, 0, tmp_path, 5)
    assert not marker.exists()
