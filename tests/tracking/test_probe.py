"""The tracking server probe gives up within its timeout (docs/tracking.md, "unreachable").

A closed port refuses at once; the hard case is a host that takes the
connection and never answers: here a socket that listens (the kernel completes
the handshake) but never reads or replies.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from cfexp.tracking.spool import reachable


@pytest.fixture
def silent_server() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)  # never accepted, never answered
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_server_that_never_answers_is_unreachable_after_the_timeout(silent_server: str) -> None:
    started = time.monotonic()
    assert reachable(silent_server, timeout_s=1.0) is False
    waited = time.monotonic() - started
    assert 0.9 <= waited < 10, waited  # it waited for an answer, and gave up (not minutes of retries)


def test_a_closed_port_and_a_local_store() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    assert reachable(closed, timeout_s=1.0) is False
    assert reachable("sqlite:////nonexistent/mlflow.db") is True  # local: nothing to probe
