"""Counting as real servers count, on the wire of both APIs and in the ground truth (simulator).

- Ollama ``prompt_eval_count`` = the whole prompt, cached + evaluated (a cache
  hit shows only in ``prompt_eval_duration`` and in our ``timings``);
- ``eval_count`` / ``completion_tokens`` count the end-of-turn token when the
  reply stopped by itself (``count_end_of_turn``);
- llama.cpp's ``timings`` object in the final message, where llama-server puts
  it, and the extension ``prompt_truncated_tokens``; neither with ``timings: false``;
- a prompt longer than the context is truncated, not refused.

Durations are checked against the simulator's model time in the ground truth
(``sim``): with no jitter, a measured duration is never shorter than
model seconds x ``time_scale``, since the simulator sleeps until absolute deadlines.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.serving.serving_helpers import SIM_MODEL, Server, ServerFactory, ndjson_lines, sse_events

pytestmark = pytest.mark.slow

SCALE = 0.002
SETTINGS: dict[str, Any] = {
    "time_scale": SCALE,
    "jitter_cv": 0.0,
    "natural_stop_tokens": 6,
    "prefill_gpu_tok_s": 1000.0,
    "decode_gpu_tok_s": 100.0,
}
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Summarise the data."}]
TIMINGS_KEYS = [
    "cache_n",
    "prompt_n",
    "prompt_ms",
    "prompt_per_token_ms",
    "prompt_per_second",
    "predicted_n",
    "predicted_ms",
    "predicted_per_token_ms",
    "predicted_per_second",
]
OLLAMA_FINAL_KEYS = {
    "model",
    "created_at",
    "message",
    "done",
    "done_reason",
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
}
# Rounding of the model's nanoseconds, per duration.
ROUNDING_NS = 1_000


def _model_ns(seconds: float) -> int:
    return round(seconds * SCALE * 1e9)


def _chat(
    client: httpx.Client, options: dict[str, Any], messages: list[dict[str, str]] = CHAT
) -> dict[str, Any]:
    response = client.post(
        "/api/chat", json={"model": SIM_MODEL, "messages": messages, "stream": False, "options": options}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _check_timings(final: dict[str, Any], prompt_tokens: int, eval_count: int) -> None:
    timings = final["timings"]
    assert list(timings) == TIMINGS_KEYS
    assert timings["prompt_n"] + timings["cache_n"] == prompt_tokens
    assert timings["predicted_n"] == eval_count
    assert all(isinstance(timings[k], float) for k in TIMINGS_KEYS if k.endswith(("_ms", "_second")))


def test_ollama_final_object_counts_and_timings(server_factory: ServerFactory) -> None:
    server = server_factory("sim", SETTINGS)
    request = {"model": SIM_MODEL, "messages": CHAT, "options": {"num_predict": 20}}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        with client.stream("POST", "/api/chat", json=request) as response:
            request_id = response.headers["x-request-id"]
            *chunks, final = ndjson_lines(response)
        whole = _chat(client, {"num_predict": 20})
        generate = client.post(
            "/api/generate", json={"model": SIM_MODEL, "prompt": "Why?", "stream": False}
        ).json()
    # The model stopped by itself after 6 tokens; its end-of-turn token is counted.
    assert len(chunks) == 6 and final["done_reason"] == "stop" and final["eval_count"] == 7
    assert set(final) == OLLAMA_FINAL_KEYS | {"timings", "prompt_truncated_tokens"}
    assert final["prompt_truncated_tokens"] == 0
    _check_timings(final, final["prompt_eval_count"], 7)
    assert final["timings"]["prompt_ms"] == final["prompt_eval_duration"] / 1e6
    assert final["timings"]["predicted_ms"] == final["eval_duration"] / 1e6
    # predicted_per_token_ms covers the 7 decode steps (the end-of-turn token's included).
    assert final["timings"]["predicted_per_token_ms"] == pytest.approx(final["eval_duration"] / 1e6 / 7)
    assert whole["eval_count"] == 7 and whole["timings"]["predicted_n"] == 7
    assert generate["done_reason"] == "stop" and generate["eval_count"] == 7 and "timings" in generate

    (record,) = [r for r in server.wait_ground_truth(3) if r["request_id"] == request_id]
    assert (record["prompt_eval_count"], record["eval_count"]) == (final["prompt_eval_count"], 7)
    assert (record["prompt_n"], record["cache_n"]) == (
        final["timings"]["prompt_n"],
        final["timings"]["cache_n"],
    )
    assert record["done_reason"] == "stop" and record["prompt_truncated_tokens"] == 0
    assert record["eval_duration_ns"] == final["eval_duration"]
    sim = record["sim"]
    assert sim["decode_steps_by_active"] == {"1": 7}
    assert sim["decode_model_s"] == pytest.approx(7 / 100.0)
    assert record["eval_duration_ns"] >= _model_ns(sim["decode_model_s"]) - ROUNDING_NS
    assert sim["prefill_model_s"] == pytest.approx(record["prompt_n"] / 1000.0)
    assert record["prompt_eval_duration_ns"] >= _model_ns(sim["prefill_model_s"]) - ROUNDING_NS


def test_openai_timings_where_llama_server_puts_them(server_factory: ServerFactory) -> None:
    server = server_factory("sim", SETTINGS)
    base = {"model": SIM_MODEL, "messages": CHAT, "max_tokens": 20}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        with client.stream(
            "POST",
            "/v1/chat/completions",
            json={**base, "stream": True, "stream_options": {"include_usage": True}},
        ) as response:
            with_usage = sse_events(response)
        with client.stream("POST", "/v1/chat/completions", json={**base, "stream": True}) as response:
            without_usage = sse_events(response)
        whole = client.post("/v1/chat/completions", json=base).json()
        completion = client.post(
            "/v1/completions", json={"model": SIM_MODEL, "prompt": "Once", "max_tokens": 3}
        ).json()

    # include_usage: the usage chunk (the last) carries timings; the finish chunk does not.
    assert with_usage[-1] == "[DONE]"
    usage_chunk, finish = with_usage[-2], with_usage[-3]
    assert finish["choices"][0]["finish_reason"] == "stop" and "timings" not in finish
    usage = usage_chunk["usage"]
    assert usage["completion_tokens"] == 7  # 6 content chunks + the end-of-turn token
    assert len(with_usage) - 3 == 6
    _check_timings(usage_chunk, usage["prompt_tokens"], 7)
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage_chunk["timings"]["cache_n"]
    assert usage_chunk["prompt_truncated_tokens"] == 0
    # Without usage, the finish chunk is the last one: timings go there.
    last = without_usage[-2]
    assert last["choices"][0]["finish_reason"] == "stop" and last["timings"]["predicted_n"] == 7
    assert last["prompt_truncated_tokens"] == 0
    assert all("timings" not in e for e in without_usage[:-2])
    # Whole replies: top-level timings, next to usage.
    assert whole["usage"]["completion_tokens"] == 7 and whole["choices"][0]["finish_reason"] == "stop"
    _check_timings(whole, whole["usage"]["prompt_tokens"], 7)
    assert (
        completion["choices"][0]["finish_reason"] == "length"
        and completion["usage"]["completion_tokens"] == 3
    )
    _check_timings(completion, completion["usage"]["prompt_tokens"], 3)


def test_timings_off_the_final_messages_are_exactly_ollamas_and_openais(
    server_factory: ServerFactory,
) -> None:
    server = server_factory("sim", {**SETTINGS, "timings": False})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        ollama = _chat(client, {"num_predict": 20})
        with client.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "model": SIM_MODEL,
                "messages": CHAT,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ) as response:
            events = sse_events(response)
        whole = client.post("/v1/chat/completions", json={"model": SIM_MODEL, "messages": CHAT}).json()
    assert set(ollama) == OLLAMA_FINAL_KEYS and ollama["eval_count"] == 7
    assert set(events[-2]) == {"id", "object", "created", "model", "system_fingerprint", "choices", "usage"}
    assert set(whole) == {"id", "object", "created", "model", "system_fingerprint", "choices", "usage"}
    assert whole["usage"]["completion_tokens"] == 7
    records = server.wait_ground_truth(3)
    assert all(r["prompt_n"] is not None for r in records)  # the ground truth still has everything


def test_end_of_turn_counting_natural_stop_versus_length(server_factory: ServerFactory) -> None:
    counted = server_factory("sim", SETTINGS)
    uncounted = server_factory("sim", {**SETTINGS, "count_end_of_turn": False})
    with httpx.Client(base_url=counted.url, timeout=30) as client:
        cases = {n: _chat(client, {} if n is None else {"num_predict": n}) for n in (None, 100, 7, 6, 3)}
    expected = {None: (7, "stop"), 100: (7, "stop"), 7: (7, "stop"), 6: (6, "length"), 3: (3, "length")}
    assert {n: (b["eval_count"], b["done_reason"]) for n, b in cases.items()} == expected
    assert all(len(b["message"]["content"]) > 0 for b in cases.values())
    # Stopping by itself costs the end-of-turn token's decode step, counted or not.
    with httpx.Client(base_url=uncounted.url, timeout=30) as client:
        stopped = _chat(client, {"num_predict": 100})
        cut = _chat(client, {"num_predict": 6})
    assert (stopped["eval_count"], stopped["done_reason"]) == (6, "stop")
    assert (cut["eval_count"], cut["done_reason"]) == (6, "length")
    assert stopped["message"]["content"] == cut["message"]["content"]  # the same 6 tokens
    records = {r["done_reason"]: r for r in uncounted.wait_ground_truth(2)}
    assert records["stop"]["sim"]["decode_steps_by_active"] == {"1": 7}
    assert records["length"]["sim"]["decode_steps_by_active"] == {"1": 6}
    assert stopped["eval_duration"] >= _model_ns(7 / 100.0) - ROUNDING_NS


def test_repeated_prompt_counts_the_whole_prompt_and_shows_the_hit_in_timings(
    server_factory: ServerFactory,
) -> None:
    server = server_factory("sim", SETTINGS)
    messages = [{"role": "user", "content": "A long question about the benchmark results. " * 20}]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        first = _chat(client, {"num_predict": 4}, messages)
        again = _chat(client, {"num_predict": 4}, messages)
        openai = client.post(
            "/v1/chat/completions", json={"model": SIM_MODEL, "messages": messages, "max_tokens": 4}
        ).json()
    prompt = first["prompt_eval_count"]
    assert prompt > 200 and again["prompt_eval_count"] == prompt == openai["usage"]["prompt_tokens"]
    assert (first["timings"]["prompt_n"], first["timings"]["cache_n"]) == (prompt, 0)
    assert (again["timings"]["prompt_n"], again["timings"]["cache_n"]) == (1, prompt - 1)
    # The hit shows in prompt_eval_duration (Ollama's only clue): model time of 1 token, not `prompt`.
    records = sorted(server.wait_ground_truth(3), key=lambda r: r["t_received_ns"])
    assert records[0]["sim"]["prefill_model_s"] == pytest.approx(prompt / 1000.0)
    assert records[1]["sim"]["prefill_model_s"] == pytest.approx(1 / 1000.0)
    assert first["prompt_eval_duration"] >= _model_ns(prompt / 1000.0) - ROUNDING_NS
    assert (
        openai["usage"]["prompt_tokens_details"]["cached_tokens"]
        == openai["timings"]["cache_n"]
        == prompt - 1
    )


def _raw_prompt(tokens: int) -> str:
    """A /v1/completions prompt of exactly ``tokens`` simulated tokens (4 characters each)."""
    return "abcd" * tokens


def test_prompt_longer_than_the_context_is_truncated_on_both_apis(server_factory: ServerFactory) -> None:
    server: Server = server_factory("sim", {**SETTINGS, "n_ctx": 256})
    with httpx.Client(base_url=server.url, timeout=30) as client:

        def completion(tokens: int, **body: Any) -> dict[str, Any]:
            response = client.post(
                "/v1/completions", json={"model": SIM_MODEL, "prompt": _raw_prompt(tokens), **body}
            )
            assert response.status_code == 200, response.text
            result: dict[str, Any] = response.json()
            return result

        fits = completion(255, max_tokens=50)  # room for one token: used whole
        cut = completion(256, max_tokens=50)
        long = completion(1000, max_tokens=16)
        unlimited = completion(1000)
        ollama = client.post(
            "/api/generate",
            json={
                "model": SIM_MODEL,
                "prompt": _raw_prompt(1000),
                "raw": True,
                "stream": False,
                "options": {"num_ctx": 256, "num_predict": 16},
            },
        ).json()
        with client.stream(
            "POST",
            "/api/generate",
            json={"model": SIM_MODEL, "prompt": _raw_prompt(600), "raw": True, "options": {"num_ctx": 256}},
        ) as response:
            streamed = ndjson_lines(response)[-1]
    assert (fits["usage"]["prompt_tokens"], fits["prompt_truncated_tokens"]) == (255, 0)
    assert fits["usage"]["completion_tokens"] == 1 and fits["choices"][0]["finish_reason"] == "length"
    # num_predict (50) is kept free for the reply: 256 - 50 = 206 prompt tokens kept.
    assert (cut["usage"]["prompt_tokens"], cut["prompt_truncated_tokens"]) == (206, 50)
    assert (long["usage"]["prompt_tokens"], long["prompt_truncated_tokens"]) == (240, 760)
    assert long["usage"]["completion_tokens"] == 7  # the reply fits: 6 tokens + end of turn
    # No max_tokens: half the context is kept for the reply.
    assert (unlimited["usage"]["prompt_tokens"], unlimited["prompt_truncated_tokens"]) == (128, 872)
    assert (ollama["prompt_eval_count"], ollama["prompt_truncated_tokens"]) == (240, 760)
    assert ollama["eval_count"] == 7 and ollama["done_reason"] == "stop"
    assert (streamed["prompt_eval_count"], streamed["prompt_truncated_tokens"]) == (128, 472)

    records = sorted(server.wait_ground_truth(6), key=lambda r: r["t_received_ns"])
    assert [r["prompt_truncated_tokens"] for r in records] == [0, 50, 760, 872, 760, 472]
    assert [r["prompt_eval_count"] for r in records] == [255, 206, 240, 128, 240, 128]
    assert all(r["outcome"] == "ok" and r["http_status"] == 200 for r in records)
    log = server.log.read_text()
    line = f"request {records[2]['request_id']}: truncating input prompt limit=256 prompt=1000 keep=4 new=240"
    assert line in log
