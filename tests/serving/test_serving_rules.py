"""In-process tests of the counting rules: truncation, reply length, timings, the instance gate.

Invariants: a truncated prompt plus its reserved reply room fits the context
and keeps its first and most recent tokens; the simulated model stops by
itself only before its cap, with an end-of-turn token counted like any token
(``count_end_of_turn``); the gate lets one configuration be loaded at a time,
reloading only when no request runs, in arrival order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from cfexp.errors import ConfigError
from cfexp.serving.engines.base import (
    TRUNCATE_KEEP_HEAD,
    GenerationStats,
    TokenPiece,
    Truncation,
    plan_truncation,
)
from cfexp.serving.engines.instance import Config, InstanceGate
from cfexp.serving.engines.sim import CHARS_PER_TOKEN, SimEngine
from cfexp.serving.request import GenerationRequest, SamplingOptions
from cfexp.serving.settings import SimSettings, parse_settings
from cfexp.serving.timings import final_extras, timings_body

# -- truncation ------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, num_ctx, num_predict, expected",
    [
        (255, 256, None, None),  # room for one token: used whole
        (256, 256, None, Truncation(4, 124, 128)),  # no num_predict: half the context for the reply
        (1000, 256, 16, Truncation(4, 236, 760)),  # the reply's num_predict is reserved
        (1000, 256, 500, Truncation(4, 124, 872)),  # ... at most half the context
        (1000, 256, 0, Truncation(4, 251, 745)),  # at least one token of room
        (1000, 256, -1, Truncation(4, 124, 872)),  # negative = no limit, as Ollama's -1
        (40, 16, 4, Truncation(4, 8, 28)),
    ],
)
def test_truncation_rule(
    prompt: int, num_ctx: int, num_predict: int | None, expected: Truncation | None
) -> None:
    plan = plan_truncation(prompt, num_ctx, num_predict)
    assert plan == expected
    if plan is not None:
        assert plan.head == TRUNCATE_KEEP_HEAD and plan.kept + plan.dropped == prompt
        assert plan.kept < num_ctx  # the reply always has room


def _completion(prompt: str, **options: int) -> GenerationRequest:
    return GenerationRequest(
        request_id="t",
        api="openai",
        endpoint="/v1/completions",
        kind="completion",
        model="cfexp-sim",
        stream=True,
        prompt=prompt,
        options=SamplingOptions(**options),
    )


def _run(engine: SimEngine, request: GenerationRequest) -> tuple[list[str], GenerationStats]:
    events = list(engine.generate(engine.prepare(request), 0))
    stats = events[-1]
    assert isinstance(stats, GenerationStats)
    return [e.text for e in events if isinstance(e, TokenPiece)], stats


def test_sim_truncation_keeps_the_head_and_the_most_recent_tokens() -> None:
    engine = SimEngine(SimSettings(time_scale=0.0, jitter_cv=0.0, n_ctx=64))
    head, tail = "H" * 4 * CHARS_PER_TOKEN, "T" * 40 * CHARS_PER_TOKEN
    prompt = head + "x" * 100 * CHARS_PER_TOKEN + tail  # 144 tokens into a context of 64
    pieces, stats = _run(engine, _completion(prompt, num_predict=8))
    plan = plan_truncation(144, 64, 8)
    assert plan is not None
    assert (stats.prompt_tokens, stats.prompt_truncated_tokens) == (plan.kept, plan.dropped) == (56, 88)
    assert len(pieces) == 8 and stats.done_reason == "length"
    # What the slot's cache holds is what the model saw: the head, then the prompt's end.
    cached = engine._slots[0].cached_text
    assert cached.startswith(head + "x") and cached.startswith(head + prompt[-52 * CHARS_PER_TOKEN :])
    # The same long prompt again: the same truncation, so the cache serves it.
    _, again = _run(engine, _completion(prompt, num_predict=8))
    assert (again.prompt_tokens, again.prompt_evaluated, again.cached_prompt_tokens) == (56, 1, 55)


# -- reply length and the end-of-turn token ----------------------------------------


@pytest.mark.parametrize(
    "natural, num_predict, room, expected",
    [
        (None, None, 1000, (128, True)),  # default_num_predict, then it stops by itself
        (None, 50, 1000, (50, False)),  # an explicit length is a cut, as before
        (None, None, 100, (100, False)),  # the context cuts the default reply
        (6, None, 1000, (6, True)),
        (6, 7, 1000, (6, True)),  # 6 tokens + the end-of-turn token = 7 fit
        (6, 6, 1000, (6, False)),  # the cap comes before the end-of-turn token
        (6, 3, 1000, (3, False)),
        (6, None, 6, (6, False)),  # the context is full first
        (0, 5, 1000, (0, True)),  # an empty reply that stops at once
        (6, 0, 1000, (0, False)),
    ],
)
def test_reply_length(
    natural: int | None, num_predict: int | None, room: int, expected: tuple[int, bool]
) -> None:
    engine = SimEngine(SimSettings(natural_stop_tokens=natural))
    assert engine.reply_length(num_predict, room) == expected


@pytest.mark.parametrize("count_end_of_turn", [True, False])
def test_end_of_turn_token_counted_on_natural_stop_only(count_end_of_turn: bool) -> None:
    engine = SimEngine(
        SimSettings(time_scale=0.0, jitter_cv=0.0, natural_stop_tokens=6, count_end_of_turn=count_end_of_turn)
    )
    pieces, stopped = _run(engine, _completion("Tell me.", num_predict=20))
    assert len(pieces) == 6 and stopped.done_reason == "stop"
    assert stopped.eval_count == (7 if count_end_of_turn else 6)
    assert stopped.eval_steps == 7  # the end-of-turn token takes its decode step either way
    assert stopped.detail is not None and stopped.detail["decode_steps_by_active"] == {"1": 7}
    pieces, cut = _run(engine, _completion("Tell me.", num_predict=4))
    assert len(pieces) == 4 and cut.done_reason == "length" and cut.eval_count == cut.eval_steps == 4


# -- timings ---------------------------------------------------------------------


def test_timings_object_follows_llama_server() -> None:
    stats = GenerationStats(
        prompt_tokens=100,
        prompt_evaluated=20,
        eval_count=11,
        load_duration_ns=0,
        prompt_eval_duration_ns=40_000_000,
        eval_duration_ns=500_000_000,
        done_reason="stop",
        prompt_truncated_tokens=3,
        eval_steps=10,
    )
    assert timings_body(stats) == {
        "cache_n": 80,
        "prompt_n": 20,
        "prompt_ms": 40.0,
        "prompt_per_token_ms": 2.0,
        "prompt_per_second": 500.0,
        "predicted_n": 11,
        "predicted_ms": 500.0,
        "predicted_per_token_ms": 50.0,
        "predicted_per_second": 20.0,
    }
    assert final_extras(stats, True)["prompt_truncated_tokens"] == 3
    assert final_extras(stats, False) == {}
    empty = timings_body(GenerationStats(0, 0, 0, 5, 0, 0, "load"))
    assert empty["prompt_per_second"] == empty["predicted_per_token_ms"] == 0.0


# -- the instance gate -------------------------------------------------------------


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.001)


def _waiting(gate: InstanceGate) -> int:
    return gate._next_ticket - gate._serving


def test_gate_passes_at_once_when_the_config_is_loaded() -> None:
    loads: list[Config] = []
    gate = InstanceGate((4096, 18))
    with gate.use((4096, 18), (4096, 18), loads.append) as a, gate.use(None, (2048, 0), loads.append) as b:
        # Two requests share the instance; None = whatever is loaded.
        assert (a.reloaded, a.load_ns, b.config, b.load_ns) == (False, 0, (4096, 18), 0)
    assert loads == []
    empty = InstanceGate()
    with empty.use(None, (2048, 0), loads.append) as first:
        assert first.reloaded and first.config == (2048, 0) and first.load_ns > 0
    assert loads == [(2048, 0)]


def test_gate_reload_waits_for_running_requests_and_holds_later_ones_back() -> None:
    """A: running (4096). B wants 8192: waits for A. C wants 4096: waits behind B, then reloads back."""
    events: list[str] = []
    lock = threading.Lock()
    gate = InstanceGate((4096, 18))
    release = {name: threading.Event() for name in "ABC"}

    def note(text: str) -> None:
        with lock:
            events.append(text)

    def load(config: Config) -> None:
        note(f"load {config[0]}")

    def request(name: str, config: Config) -> None:
        with gate.use(config, (4096, 18), load) as passage:
            note(f"{name} in")
            release[name].wait(10)
            note(f"{name} out")
        results[name] = passage.load_ns

    results: dict[str, int] = {}
    threads = {
        "A": threading.Thread(target=request, args=("A", (4096, 18))),
        "B": threading.Thread(target=request, args=("B", (8192, 18))),
        "C": threading.Thread(target=request, args=("C", (4096, 18))),
    }
    threads["A"].start()
    _wait_for(lambda: events == ["A in"])
    threads["B"].start()
    _wait_for(lambda: _waiting(gate) == 1)
    threads["C"].start()  # 4096 is loaded, yet C waits behind B: arrival order
    _wait_for(lambda: _waiting(gate) == 2)
    assert events == ["A in"]
    release["A"].set()
    _wait_for(lambda: "B in" in events)
    release["B"].set()
    _wait_for(lambda: "C in" in events)
    release["C"].set()
    for thread in threads.values():
        thread.join(10)
    assert events == ["A in", "A out", "load 8192", "B in", "B out", "load 4096", "C in", "C out"]
    assert results["A"] == 0 and results["B"] > 0 and results["C"] > 0
    assert gate.loaded == (4096, 18)


def test_gate_after_a_failed_load_the_next_request_loads_again() -> None:
    gate = InstanceGate((4096, 18))

    def fail(config: Config) -> None:
        raise RuntimeError("no memory")

    with pytest.raises(RuntimeError), gate.use((8192, 18), (4096, 18), fail):
        pass
    assert gate.loaded is None
    loads: list[Config] = []
    with gate.use(None, (4096, 18), loads.append) as passage:
        assert passage.reloaded and passage.config == (4096, 18)
    assert loads == [(4096, 18)]


# -- settings --------------------------------------------------------------------


def test_new_sim_settings_are_checked() -> None:
    parsed = parse_settings(
        "sim",
        {
            "natural_stop_tokens": 12,
            "count_end_of_turn": False,
            "batch_slowdown": 1,
            "drift_per_s": 0.01,
            "timings": False,
        },
    )
    assert isinstance(parsed, SimSettings)
    assert (parsed.natural_stop_tokens, parsed.count_end_of_turn, parsed.batch_slowdown) == (12, False, 1.0)
    assert (parsed.drift_per_s, parsed.timings) == (0.01, False)
    assert parse_settings("llamacpp", {"timings": False}).timings is False
    for bad in (
        {"natural_stop_tokens": -1},
        {"natural_stop_tokens": 2.5},
        {"batch_slowdown": -0.1},
        {"drift_per_s": -1},
        {"count_end_of_turn": 1},
        {"timings": "no"},
    ):
        key = next(iter(bad))
        with pytest.raises(ConfigError, match=f"<{key}="):
            parse_settings("sim", bad)
