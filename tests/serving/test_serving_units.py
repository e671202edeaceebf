"""In-process tests of the pieces: queue, settings, template, sim text, faults, sim engine."""

from __future__ import annotations

import itertools
import threading
import time
from statistics import mean

import pytest

from cfexp.errors import ConfigError
from cfexp.serving.admission import AdmissionQueue
from cfexp.serving.engines.base import (
    GenerationStats,
    TokenPiece,
    canonical_model_name,
    effective_num_predict,
)
from cfexp.serving.engines.sim import SimEngine
from cfexp.serving.engines.simtext import token_pieces
from cfexp.serving.faults import FaultInjector
from cfexp.serving.request import ChatMessage, GenerationRequest, RequestError, SamplingOptions
from cfexp.serving.settings import FaultSettings, LlamaSettings, SimSettings, parse_settings
from cfexp.serving.templates import render_gemma


def test_queue_admits_in_arrival_order() -> None:
    """FIFO: with the only slot taken, waiters are admitted in the order they queued."""
    queue = AdmissionQueue(1)
    order: list[int] = []
    holder = queue._acquire()

    def wait_turn(index: int) -> None:
        with queue.admit():
            order.append(index)

    threads = []
    for index in range(6):
        thread = threading.Thread(target=wait_turn, args=(index,))
        thread.start()
        threads.append(thread)
        while queue.status().waiting < index + 1:  # arrival order is fixed before the next starts
            time.sleep(0.001)
    queue._release(holder.slot)
    for thread in threads:
        thread.join(10)
    assert order == list(range(6))
    status = queue.status()
    assert (status.busy, status.waiting, status.queued_total, status.admitted_total) == (0, 0, 7, 7)


def test_queue_hands_out_distinct_slots() -> None:
    queue = AdmissionQueue(3)
    with queue.admit() as a, queue.admit() as b, queue.admit() as c:
        assert sorted([a.slot, b.slot, c.slot]) == [0, 1, 2]
        assert queue.status().busy == 3
    assert queue.status().busy == 0


def test_settings_parse_and_reject() -> None:
    sim = parse_settings("sim", {"n_ctx": 1024, "decode_cpu_tok_s": 10, "faults": {"fail_status": 500}})
    assert isinstance(sim, SimSettings) and sim.n_ctx == 1024 and sim.decode_cpu_tok_s == 10.0
    assert sim.faults == FaultSettings(fail_status=500)
    llama = parse_settings("llamacpp", {"n_threads": 1, "prompt_cache": False})
    assert isinstance(llama, LlamaSettings) and llama.model_path is None and not llama.prompt_cache
    with pytest.raises(ConfigError, match=r"<prompt_cache=1>: expected true or false"):
        parse_settings("llamacpp", {"prompt_cache": 1})
    with pytest.raises(ConfigError, match=r"unknown llamacpp setting <time_scale=1>"):
        parse_settings("llamacpp", {"time_scale": 1})
    with pytest.raises(ConfigError, match=r"<slots=True>"):
        parse_settings("sim", {"slots": True})


def test_gemma_template_folds_the_system_prompt_into_the_first_turn() -> None:
    messages = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Hi"),
        ChatMessage("assistant", "Hello"),
        ChatMessage("user", "More"),
    ]
    assert render_gemma(messages) == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello<end_of_turn>\n"
        "<start_of_turn>user\nMore<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_sim_text_is_seeded_markdown() -> None:
    first = "".join(itertools.islice(token_pieces(7), 120))
    assert first == "".join(itertools.islice(token_pieces(7), 120))
    assert first != "".join(itertools.islice(token_pieces(8), 120))
    assert first.startswith("## Key Findings\n- ") and "\n## Recommendations\n- " in first


def test_fault_plan_every_nth() -> None:
    injector = FaultInjector(
        FaultSettings(fail_status=503, fail_every_n=3, drop_after_tokens=2, drop_every_n=2)
    )
    plans = [injector.plan() for _ in range(6)]
    assert [p.fail_status for p in plans] == [None, None, 503, None, None, 503]
    assert [p.drop_after_tokens for p in plans] == [None, 2, None, 2, None, 2]


def test_model_names_and_num_predict() -> None:
    assert canonical_model_name("gemma3") == "gemma3:latest"
    assert canonical_model_name("gemma3:270m") == "gemma3:270m"
    assert canonical_model_name("registry.io:5000/x") == "registry.io:5000/x:latest"
    assert effective_num_predict(None, 128, 1000) == (128, False)
    assert effective_num_predict(-1, None, 50) == (50, True)
    assert effective_num_predict(500, 128, 50) == (50, True)


def _request(content: str, **options: int) -> GenerationRequest:
    return GenerationRequest(
        request_id="t",
        api="ollama",
        endpoint="/api/chat",
        kind="chat",
        model="cfexp-sim",
        stream=True,
        messages=(ChatMessage("user", content),),
        options=SamplingOptions(**options),
    )


def test_sim_engine_counts_and_cache() -> None:
    engine = SimEngine(SimSettings(time_scale=0.0, jitter_cv=0.0))
    prepared = engine.prepare(_request("A question about the data. " * 4, num_predict=5))
    events = list(engine.generate(prepared, 0))
    pieces, stats = events[:-1], events[-1]
    assert all(isinstance(p, TokenPiece) for p in pieces) and len(pieces) == 5
    assert isinstance(stats, GenerationStats) and stats.eval_count == 5 and stats.done_reason == "length"
    assert stats.prompt_tokens == stats.prompt_evaluated == prepared.prompt_tokens
    again = list(engine.generate(prepared, 0))[-1]
    # A repeated prompt: the whole prompt is counted, one token is evaluated.
    assert isinstance(again, GenerationStats) and again.prompt_evaluated == 1
    assert again.prompt_tokens == prepared.prompt_tokens
    assert again.cached_prompt_tokens == prepared.prompt_tokens - 1
    with pytest.raises(RequestError, match="not found"):
        engine.prepare(GenerationRequest("t", "ollama", "/api/chat", "chat", "other", True))


def test_sim_jitter_has_mean_one_and_the_given_spread() -> None:
    import random

    engine = SimEngine(SimSettings(jitter_cv=0.2))
    rng = random.Random(1)
    draws = [engine._jitter(rng) for _ in range(20000)]
    assert abs(mean(draws) - 1.0) < 0.01
    spread = (mean((d - 1.0) ** 2 for d in draws)) ** 0.5
    assert abs(spread - 0.2) < 0.01


def test_public_surface() -> None:
    import cfexp.serving as serving

    assert serving.__all__ == sorted(serving.__all__)
    assert all(hasattr(serving, name) for name in serving.__all__)
    assert serving.READY_MARKER == "CFEXP_SERVING_READY"
