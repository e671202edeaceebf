"""The simulator's shared instance: instance-wide reloads, continuous batching, drift.

Every assertion is held to the ground truth, never to wall-clock luck: the
simulator logs its model time per request (``sim``), and with no jitter a
measured duration is never shorter than model seconds x ``time_scale``
(it sleeps until absolute deadlines), so model time gives exact lower bounds
and the ground truth's own timeline gives the upper ones.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.serving.serving_helpers import SIM_MODEL, Server, ServerFactory

pytestmark = pytest.mark.slow

SCALE = 0.5
# Model seconds: one decode step 0.05 s (25 ms of wall time at SCALE), loads
# 0.2 s + 0.05 s per 1024 tokens of context.
BASE: dict[str, Any] = {
    "time_scale": SCALE,
    "jitter_cv": 0.0,
    "n_ctx": 2048,
    "load_base_s": 0.2,
    "load_s_per_1k_ctx": 0.05,
    "decode_gpu_tok_s": 20.0,
    "prefill_gpu_tok_s": 1000.0,
}
STEP_S = 0.05
# Per-duration rounding of model time to whole nanoseconds (generous).
ROUNDING_NS = 1_000


def _model_ns(seconds: float, scale: float = SCALE) -> int:
    return round(seconds * scale * 1e9)


@dataclass
class _Call:
    """One Ollama chat run on its own thread; ``first_chunk`` is set when a content line arrives."""

    server: Server
    options: dict[str, Any]
    content: str = "Report on the benchmark."
    request_id: str = ""
    final: dict[str, Any] | None = None
    error: str | None = None
    first_chunk: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    client: httpx.Client | None = None

    def __post_init__(self) -> None:
        # Made here, not on the thread: building a client can take a while on a
        # busy machine, and the scenarios need each request to arrive promptly.
        self.client = httpx.Client(base_url=self.server.url, timeout=60)

    def start(self) -> _Call:
        self.thread = threading.Thread(target=self._run)
        self.thread.start()
        return self

    def _run(self) -> None:
        request = {
            "model": SIM_MODEL,
            "messages": [{"role": "user", "content": self.content}],
            "options": self.options,
        }
        assert self.client is not None
        try:
            with self.client as client, client.stream("POST", "/api/chat", json=request) as response:
                self.request_id = response.headers["x-request-id"]
                for text in response.iter_lines():  # as they come, not all at the end
                    if not text.strip():
                        continue
                    line = json.loads(text)
                    if line.get("done"):
                        self.final = line
                    else:
                        self.first_chunk.set()
        except httpx.HTTPError as exc:
            self.error = repr(exc)

    def join(self) -> dict[str, Any]:
        assert self.thread is not None
        self.thread.join(60)
        assert self.error is None and self.final is not None, self.error
        return self.final


def _wait_status(server: Server, key: str, value: int) -> None:
    deadline = time.monotonic() + 30
    while server.status()[key] != value:
        assert time.monotonic() < deadline, f"status {key} never reached {value}: {server.status()}"
        time.sleep(0.002)


def _records(server: Server, calls: list[_Call]) -> list[dict[str, Any]]:
    by_id = server.ground_truth_for([c.request_id for c in calls])
    return [by_id[c.request_id] for c in calls]


def test_reload_is_instance_wide_and_waits_for_the_running_requests(server_factory: ServerFactory) -> None:
    """A runs on slot 0; B (num_ctx 8192) waits for A, then reloads; C (back to 2048) waits for B."""
    server = server_factory("sim", {**BASE, "slots": 2})
    warm = _Call(server, {"num_predict": 2}).start()
    warm.join()
    a = _Call(server, {"num_predict": 80})  # 2 s of wall time
    b = _Call(server, {"num_predict": 3, "num_ctx": 8192})
    c = _Call(server, {"num_predict": 3})
    a.start()
    assert a.first_chunk.wait(30)
    b.start()
    _wait_status(server, "busy", 2)  # B holds slot 1 while A still runs
    c.start()
    _wait_status(server, "waiting", 1)  # C waits for a slot
    for call in (a, b, c):
        call.join()
    rw, ra, rb, rc = _records(server, [warm, a, b, c])

    # The first request loaded the instance (lazily); A found it loaded.
    assert rw["sim"]["reloaded"] and rw["sim"]["load_model_s"] == pytest.approx(0.2 + 0.05 * 2)
    assert not ra["sim"]["reloaded"] and ra["load_duration_ns"] == 0
    # B asked for another context: it waited until A had finished, then loaded.
    assert rb["slot"] == 1 and rb["t_admitted_ns"] < ra["chunk_sent_ns"][-1]
    assert rb["sim"]["reloaded"] and rb["sim"]["load_model_s"] == pytest.approx(0.2 + 0.05 * 8)
    load_b = _model_ns(rb["sim"]["load_model_s"])
    assert rb["t_first_chunk_sent_ns"] - ra["chunk_sent_ns"][-1] >= load_b - ROUNDING_NS
    # Its load_duration (as Ollama's) covers the wait for A and the load; the
    # load alone is the margin for the few microseconds from admission to the gate.
    assert rb["load_duration_ns"] >= ra["chunk_sent_ns"][-1] - rb["t_admitted_ns"]
    assert rb["load_duration_ns"] >= load_b - ROUNDING_NS
    assert b.final is not None and b.final["load_duration"] == rb["load_duration_ns"]
    # C, without num_ctx, asks for the default again: it waited for B, then reloaded back.
    assert rc["t_admitted_ns"] > ra["chunk_sent_ns"][-1]
    assert rc["sim"]["reloaded"] and rc["sim"]["load_model_s"] == pytest.approx(0.2 + 0.05 * 2)
    assert rc["t_first_chunk_sent_ns"] - rb["chunk_sent_ns"][-1] >= _model_ns(0.3) - ROUNDING_NS
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/api/ps").json()["models"][0]["context_length"] == 2048

    # The instance is loaded for every slot: a request on slot 1 does not load again.
    d = _Call(server, {"num_predict": 40})
    e = _Call(server, {"num_predict": 2})
    d.start()
    assert d.first_chunk.wait(30)
    e.start()
    d.join()
    e.join()
    rd, re_ = _records(server, [d, e])
    assert {rd["slot"], re_["slot"]} == {0, 1}
    assert not rd["sim"]["reloaded"] and not re_["sim"]["reloaded"]
    assert rd["load_duration_ns"] == re_["load_duration_ns"] == 0


@pytest.mark.parametrize(
    "slots, slowdown",
    [(2, 1.0), (2, 0.0), (1, 1.0)],
    ids=["batched-slowdown-1", "batched-independent", "one-slot-queues"],
)
def test_batch_slowdown(server_factory: ServerFactory, slots: int, slowdown: float) -> None:
    """A (30 steps) and B (10 steps) both wait for the first load, then run together (2 slots) or in turn (1)."""
    server = server_factory("sim", {**BASE, "slots": slots, "batch_slowdown": slowdown, "load_base_s": 1.0})
    a = _Call(server, {"num_predict": 30}, "First client.")
    b = _Call(server, {"num_predict": 10}, "Second client.")
    a.start()
    _wait_status(server, "busy", 1)
    b.start()
    _wait_status(server, "queued_total", 2)
    a.join()
    b.join()
    ra, rb = _records(server, [a, b])
    for record, steps in ((ra, 30), (rb, 10)):
        sim = record["sim"]
        by_active = {int(k): n for k, n in sim["decode_steps_by_active"].items()}
        assert sum(by_active.values()) == steps
        # The formula: each step takes STEP_S x (1 + slowdown x (k - 1)).
        expected = sum(n * STEP_S * (1 + slowdown * (k - 1)) for k, n in by_active.items())
        assert sim["decode_model_s"] == pytest.approx(expected)
        assert record["eval_duration_ns"] >= _model_ns(sim["decode_model_s"]) - steps * ROUNDING_NS
        assert record["prompt_eval_duration_ns"] >= _model_ns(sim["prefill_model_s"]) - ROUNDING_NS
    if slots == 1:
        # One slot: B queues behind A and never shares the instance.
        assert rb["t_admitted_ns"] > ra["chunk_sent_ns"][-1]
        assert ra["sim"]["decode_steps_by_active"] == {"1": 30}
        assert rb["sim"]["decode_steps_by_active"] == {"1": 10}
        return
    # B arrived during A's load and waited for it at the instance, not for a slot.
    assert rb["t_admitted_ns"] < ra["t_first_chunk_sent_ns"]
    assert not rb["sim"]["reloaded"] and rb["load_duration_ns"] > 0
    # B ran entirely beside A (A passed the gate first and has 3x the steps).
    assert rb["sim"]["prefill_active"] == 2 and rb["sim"]["decode_steps_by_active"] == {"2": 10}
    assert rb["sim"]["decode_model_s"] == pytest.approx(10 * STEP_S * (1 + slowdown))
    # A saw B beside it for some of its steps, and alone for the rest.
    assert ra["sim"]["decode_steps_by_active"].get("2", 0) >= 1


def test_drift_slows_every_duration_with_the_servers_age(server_factory: ServerFactory) -> None:
    scale, drift = 0.02, 0.02  # 1 s of wall time = 50 model seconds: +100 % per wall second
    server = server_factory("sim", {**BASE, "time_scale": scale, "drift_per_s": drift})
    first, second = _Call(server, {"num_predict": 20}), _Call(server, {"num_predict": 20})
    first.start().join()
    second.start().join()
    r1, r2 = _records(server, [first, second])

    def model_age_s(t_ns: int, since_ns: int) -> float:
        return (t_ns - since_ns) / 1e9 / scale

    for record in (r1, r2):
        sim = record["sim"]
        # The server started between spawning and its READY line; its durations
        # ran between the request's admission and its end.
        low = 1 + drift * model_age_s(record["t_admitted_ns"], server.t_ready_ns)
        high = 1 + drift * model_age_s(record["t_done_ns"], server.t_spawned_ns)
        assert low <= sim["drift_first"] <= sim["drift_last"] <= high
        assert 20 * STEP_S * sim["drift_first"] <= sim["decode_model_s"] <= 20 * STEP_S * sim["drift_last"]
        assert record["eval_duration_ns"] >= _model_ns(sim["decode_model_s"], scale) - 20 * ROUNDING_NS
    # The load (first request) drifts too.
    assert r1["sim"]["load_model_s"] == pytest.approx((0.2 + 0.05 * 2) * r1["sim"]["drift_first"])
    # Later requests run on an older, slower machine.
    assert r2["sim"]["drift_first"] >= r1["sim"]["drift_last"]
    assert r2["sim"]["decode_model_s"] > r1["sim"]["decode_model_s"]
