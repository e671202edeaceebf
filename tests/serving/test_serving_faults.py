"""The simulator's injected faults that agents must survive: a malformed line, a hung reply.

Each is checked on the wire (what a client reads) and in the ground truth (what
the server says it did). HTTP statuses and dropped connections are covered in
test_serving_sim.py.
"""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from cfexp.errors import ConfigError
from cfexp.serving.faults import NO_FAULT, FaultInjector
from cfexp.serving.settings import FaultSettings, parse_settings
from tests.serving.serving_helpers import SIM_MODEL, ServerFactory

CHAT = [{"role": "user", "content": "Say something."}]
FAST = {"time_scale": 0.001, "jitter_cv": 0.0}


def test_fault_plan_for_malformed_lines_and_hangs() -> None:
    injector = FaultInjector(
        FaultSettings(malformed_after_tokens=0, malformed_every_n=2, hang_after_tokens=4, hang_every_n=3)
    )
    plans = [injector.plan() for _ in range(6)]
    assert [p.malformed_after_tokens for p in plans] == [None, 0, None, 0, None, 0]
    assert [p.hang_after_tokens for p in plans] == [None, None, 4, None, None, 4]
    assert plans[0] is NO_FAULT


@pytest.mark.parametrize(
    "faults, message",
    [
        ({"malformed_after_tokens": -1}, "<malformed_after_tokens=-1>: expected null or a whole number >= 0"),
        ({"hang_after_tokens": 1.5}, "<hang_after_tokens=1.5>: expected null or a whole number >= 0"),
        ({"hang_every_n": 0}, "<hang_every_n=0>: expected a whole number >= 1"),
    ],
)
def test_bad_fault_settings_are_refused(faults: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_settings("sim", {"faults": faults})


def test_malformed_line_fault_ollama_stream_and_whole(server_factory: ServerFactory) -> None:
    server = server_factory("sim", {**FAST, "faults": {"malformed_after_tokens": 2}})
    request = {"model": SIM_MODEL, "messages": CHAT, "options": {"num_predict": 5}}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        with client.stream("POST", "/api/chat", json=request) as response:
            assert response.status_code == 200
            lines = [line for line in response.iter_lines() if line]
        whole = client.post("/api/chat", json={**request, "stream": False})
    # Two good chunks, the bad line, then the stream goes on to its final object.
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[2])
    good = [json.loads(line) for line in lines[:2] + lines[3:]]
    assert [g["done"] for g in good] == [False] * 5 + [True]
    assert whole.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(whole.text)
    records = server.wait_ground_truth(2)
    assert [r["outcome"] for r in records] == ["fault_malformed", "fault_malformed"]


def test_malformed_line_fault_openai_sse(server_factory: ServerFactory) -> None:
    server = server_factory("sim", {**FAST, "faults": {"malformed_after_tokens": 0}})
    request = {"model": SIM_MODEL, "messages": CHAT, "stream": True, "max_tokens": 3}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        with client.stream("POST", "/v1/chat/completions", json=request) as response:
            data = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    with pytest.raises(json.JSONDecodeError):  # the very first event
        json.loads(data[0])
    assert data[-1] == "[DONE]" and all(json.loads(d) for d in data[1:-1])
    assert server.wait_ground_truth(1)[0]["outcome"] == "fault_malformed"


def test_hang_fault_stops_sending_until_the_client_gives_up(server_factory: ServerFactory) -> None:
    server = server_factory("sim", {**FAST, "faults": {"hang_after_tokens": 2, "hang_every_n": 2}})
    request = {"model": SIM_MODEL, "messages": CHAT, "options": {"num_predict": 6}}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/api/chat", json={**request, "stream": False}).status_code == 200  # request 1
        lines: list[str] = []
        with pytest.raises(httpx.ReadTimeout):  # request 2: two chunks, then silence, connection open
            with client.stream("POST", "/api/chat", json=request, timeout=httpx.Timeout(30, read=1.0)) as response:
                for line in response.iter_lines():
                    lines.append(line)
        assert len([line for line in lines if line]) == 2
    # The hung reply ends once its client has gone; the slot serves the next request.
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/api/chat", json={**request, "stream": False}).status_code == 200  # request 3
    records = sorted(server.wait_ground_truth(3), key=lambda r: r["t_received_ns"])
    assert [r["outcome"] for r in records] == ["ok", "fault_hang", "ok"]
    assert len(records[1]["chunk_sent_ns"]) == 2


def test_hang_before_any_reply_and_a_server_stopped_while_hanging(server_factory: ServerFactory) -> None:
    server = server_factory("sim", {**FAST, "faults": {"hang_after_tokens": 0}})
    body = json.dumps({"model": SIM_MODEL, "messages": CHAT, "stream": False}).encode()
    head = f"POST /api/chat HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + body)
        deadline = time.monotonic() + 30
        while server.status()["busy"] < 1:  # admitted, and hanging
            assert time.monotonic() < deadline
            time.sleep(0.01)
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):  # not a byte: no status line, no headers
            sock.recv(1)
        # SIGTERM while it hangs: the server still stops cleanly, cutting the connection.
        assert server.stop() == 0
        sock.settimeout(10)
        assert sock.recv(1) == b""
    (record,) = server.ground_truth_records()
    assert record["outcome"] == "fault_hang" and record["http_status"] is None
