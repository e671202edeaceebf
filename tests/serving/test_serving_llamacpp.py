"""The real engine: Gemma 3 270M through llama-cpp-python, small requests only.

These run the embedded model on the CPU (they are slow, not skipped). Greedy
sampling (temperature 0) keeps replies reproducible; num_predict stays <= 24
and long prompts are cut to small contexts, so the file stays short on 2 cores.

Counting as real servers count: ``prompt_eval_count`` = the whole prompt,
``timings.prompt_n`` / ``cache_n`` = evaluated / reused from the slot's KV
cache, ``eval_count`` = tokens sampled, the end-of-generation token included
when the model stops by itself.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Generator, Iterator, Sequence
from typing import Any

import httpx
import llama_cpp
import pytest

from cfexp.serving.engines.base import GenerationStats, TokenPiece
from cfexp.serving.engines.llama import LlamaEngine
from cfexp.serving.request import ChatMessage, GenerationRequest, SamplingOptions
from cfexp.serving.settings import LlamaSettings
from tests.serving.serving_helpers import (
    LLAMA_MODEL,
    Server,
    ServerFactory,
    ndjson_lines,
    sse_events,
    start_server,
)

pytestmark = [pytest.mark.slow, pytest.mark.llamacpp]

SETTINGS: dict[str, Any] = {"n_ctx": 1024, "n_threads": 2, "slots": 1}
CHAT = [
    {"role": "system", "content": "You are a concise analyst."},
    {"role": "user", "content": "List three colours."},
]
GREEDY = {"temperature": 0, "seed": 1}


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server("llamacpp", SETTINGS, tmp_path_factory.mktemp("llama"))
    yield server
    assert server.stop() == 0, server.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def client(llama_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=llama_server.url, timeout=120) as client:
        yield client


def test_streamed_chat_reply(client: httpx.Client) -> None:
    request = {"model": LLAMA_MODEL, "messages": CHAT, "options": {**GREEDY, "num_predict": 16}}
    with client.stream("POST", "/api/chat", json=request) as response:
        assert response.status_code == 200
        *chunks, final = ndjson_lines(response)
    text = "".join(c["message"]["content"] for c in chunks)
    assert text.strip()
    assert final["done"] is True and final["done_reason"] in ("stop", "length")
    assert 0 < final["eval_count"] <= 16 and len(chunks) <= final["eval_count"]
    if final["done_reason"] == "length":
        assert final["eval_count"] == 16
    assert final["prompt_eval_count"] > 0 and final["prompt_eval_duration"] > 0 and final["eval_duration"] > 0
    timings = final["timings"]
    assert timings["prompt_n"] + timings["cache_n"] == final["prompt_eval_count"] and timings["prompt_n"] > 0
    assert timings["predicted_n"] == final["eval_count"] and final["prompt_truncated_tokens"] == 0
    assert timings["prompt_ms"] == final["prompt_eval_duration"] / 1e6
    # llama-server's rate: the first token comes from the prompt's logits, so n - 1 decode steps.
    steps = timings["predicted_n"] - 1
    assert timings["predicted_per_token_ms"] == pytest.approx(timings["predicted_ms"] / steps)
    # load_duration is left out: a slot's first request reports the load done
    # at startup, before the request arrived.
    assert final["total_duration"] >= final["prompt_eval_duration"] + final["eval_duration"]


def test_openai_stream_with_usage(client: httpx.Client) -> None:
    request = {
        "model": LLAMA_MODEL,
        "messages": CHAT,
        "max_tokens": 12,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/v1/chat/completions", json=request) as response:
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    usage = events[-2]["usage"]
    assert (
        events[-2]["choices"] == [] and 0 < usage["completion_tokens"] <= 12 and usage["prompt_tokens"] > 10
    )
    # timings on the last chunk, as llama-server sends them.
    timings = events[-2]["timings"]
    assert timings["predicted_n"] == usage["completion_tokens"]
    assert timings["cache_n"] == usage["prompt_tokens_details"]["cached_tokens"]
    assert timings["prompt_n"] + timings["cache_n"] == usage["prompt_tokens"]
    assert "timings" not in events[-3]
    content = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-2])
    assert content.strip()


def test_prompt_cache_shows_in_timings_not_in_prompt_eval_count(client: httpx.Client) -> None:
    chat = [{"role": "user", "content": "Describe a quiet harbour town at dawn in one sentence."}]
    request = {
        "model": LLAMA_MODEL,
        "messages": chat,
        "stream": False,
        "options": {**GREEDY, "num_predict": 4},
    }
    first = client.post("/api/chat", json=request).json()
    second = client.post("/api/chat", json=request).json()
    openai = client.post(
        "/v1/chat/completions",
        json={"model": LLAMA_MODEL, "messages": chat, "max_tokens": 2, "temperature": 0},
    ).json()
    prompt = first["prompt_eval_count"]
    # As Ollama: the whole prompt is counted both times.
    assert prompt > 10 and second["prompt_eval_count"] == prompt == openai["usage"]["prompt_tokens"]
    assert first["timings"]["prompt_n"] > 10
    # Llama.generate re-evaluates the last prompt token; the rest comes from the slot's KV cache.
    assert (second["timings"]["prompt_n"], second["timings"]["cache_n"]) == (1, prompt - 1)
    cached = openai["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached == openai["timings"]["cache_n"] == prompt - 1


def test_without_prompt_cache_every_prompt_is_evaluated_in_full(server_factory: ServerFactory) -> None:
    server = server_factory("llamacpp", {**SETTINGS, "prompt_cache": False})
    chat = [{"role": "user", "content": "Describe a quiet harbour town at dawn in one sentence."}]
    request = {"model": LLAMA_MODEL, "messages": chat, "max_tokens": 4, "temperature": 0}
    with httpx.Client(base_url=server.url, timeout=120) as client:
        first = client.post("/v1/chat/completions", json=request).json()["usage"]
        second = client.post("/v1/chat/completions", json=request).json()["usage"]
        ollama = client.post(
            "/api/chat",
            json={"model": LLAMA_MODEL, "messages": chat, "stream": False, "options": {"num_predict": 2}},
        ).json()
    assert first["prompt_tokens"] == second["prompt_tokens"] > 10
    assert second["prompt_tokens_details"]["cached_tokens"] == 0
    assert ollama["prompt_eval_count"] == first["prompt_tokens"]
    assert (ollama["timings"]["prompt_n"], ollama["timings"]["cache_n"]) == (first["prompt_tokens"], 0)


def _stream(url: str, index: int, results: dict[int, dict[str, Any]]) -> None:
    messages = [{"role": "user", "content": f"Write a short note number {index} about rivers."}]
    request = {"model": LLAMA_MODEL, "messages": messages, "options": {**GREEDY, "num_predict": 16}}
    result: dict[str, Any] = {"chunks": 0, "text": "", "final": None, "error": None}
    try:
        with (
            httpx.Client(base_url=url, timeout=120) as client,
            client.stream("POST", "/api/chat", json=request) as response,
        ):
            result["request_id"] = response.headers["x-request-id"]
            for line in ndjson_lines(response):
                if line.get("done"):
                    result["final"] = line
                else:
                    result["chunks"] += 1
                    result["text"] += line["message"]["content"]
    except httpx.HTTPError as exc:
        result["error"] = repr(exc)
    results[index] = result


def test_concurrent_streams_are_never_lost(llama_server: Server) -> None:
    """6 concurrent streams on one slot, three times: every stream completes."""
    for _ in range(3):
        results: dict[int, dict[str, Any]] = {}
        threads = [threading.Thread(target=_stream, args=(llama_server.url, i, results)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
        assert sorted(results) == list(range(6))
        for result in results.values():
            assert result["error"] is None, result
            final = result["final"]
            assert final is not None and final["done"] is True, result
            assert 0 < final["eval_count"] <= 16 and result["chunks"] >= 1 and result["text"], result
        records = llama_server.ground_truth_for([r["request_id"] for r in results.values()])
        ours = sorted((records[r["request_id"]] for r in results.values()), key=lambda r: r["t_queued_ns"])
        assert [r["t_admitted_ns"] for r in ours] == sorted(r["t_admitted_ns"] for r in ours)  # FIFO
        assert all(
            r["outcome"] == "ok" and r["eval_count"] == results_by_id(results)[r["request_id"]] for r in ours
        )


def results_by_id(results: dict[int, dict[str, Any]]) -> dict[str, int]:
    return {r["request_id"]: r["final"]["eval_count"] for r in results.values()}


def test_num_ctx_change_reloads_the_model(client: httpx.Client) -> None:
    request = {"model": LLAMA_MODEL, "messages": CHAT, "stream": False}
    smaller = client.post(
        "/api/chat", json={**request, "options": {**GREEDY, "num_predict": 2, "num_ctx": 512}}
    ).json()
    assert smaller["load_duration"] > 10_000_000  # a real load takes well over 10 ms
    assert client.get("/api/ps").json()["models"][0]["context_length"] == 512
    same = client.post(
        "/api/chat", json={**request, "options": {**GREEDY, "num_predict": 2, "num_ctx": 512}}
    ).json()
    assert same["load_duration"] == 0
    back = client.post("/api/chat", json={**request, "options": {**GREEDY, "num_predict": 2}}).json()
    assert back["load_duration"] > 10_000_000
    assert client.get("/api/ps").json()["models"][0]["context_length"] == 1024


def test_long_prompts_are_truncated(llama_server: Server, client: httpx.Client) -> None:
    """~1500 tokens into a context of 256: the first 4 and the most recent tokens are kept."""
    long_chat = [{"role": "user", "content": "harbour " * 1500}]
    ollama = client.post(
        "/api/chat",
        json={
            "model": LLAMA_MODEL,
            "messages": long_chat,
            "stream": False,
            "options": {**GREEDY, "num_ctx": 256, "num_predict": 4},
        },
    )
    assert ollama.status_code == 200, ollama.text
    body = ollama.json()
    # 256 - num_predict 4 = 252 prompt tokens kept; the rest dropped.
    assert body["prompt_eval_count"] == 252 and body["prompt_truncated_tokens"] > 1000
    assert body["eval_count"] == 4 and body["message"]["content"]
    whole = body["prompt_eval_count"] + body["prompt_truncated_tokens"]
    # OpenAI runs with the loaded context (256 now): max_tokens 2 leaves 254.
    openai = client.post(
        "/v1/chat/completions",
        json={"model": LLAMA_MODEL, "messages": long_chat, "max_tokens": 2, "temperature": 0},
    ).json()
    assert openai["usage"]["prompt_tokens"] == 254 and openai["prompt_truncated_tokens"] == whole - 254
    records = llama_server.ground_truth_for([ollama.headers["x-request-id"]])
    assert records[ollama.headers["x-request-id"]]["prompt_truncated_tokens"] == whole - 252
    line = f"truncating input prompt limit=256 prompt={whole} keep=4 new=252 dropped={whole - 252}"
    assert line in llama_server.log.read_text()


def test_unknown_model_and_pull(client: httpx.Client) -> None:
    missing = client.post("/api/chat", json={"model": "llama3", "messages": CHAT})
    assert missing.status_code == 404 and missing.json() == {"error": "model 'llama3' not found"}
    assert client.post("/api/pull", json={"model": LLAMA_MODEL, "stream": False}).json() == {
        "status": "success"
    }
    assert client.post("/api/pull", json={"model": "llama3"}).status_code == 404


def test_end_of_generation_token_is_counted_when_the_model_stops_by_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The embedded base model rarely stops by itself, so its 4th token is made the end of turn.

    Everything else is real llama.cpp: the vocabulary's EOG check, the KV cache, the perf timings.
    """
    engine = LlamaEngine(LlamaSettings(n_ctx=256, n_threads=2))
    try:
        llm = engine._slots[0].llama
        end_of_turn = llama_cpp.llama_vocab_eot(llm._model.vocab)
        assert llama_cpp.llama_vocab_is_eog(llm._model.vocab, end_of_turn)
        original = llm.generate

        def stops_after_3(tokens: Sequence[int], **kwargs: Any) -> Generator[int, None, None]:
            for index, token in enumerate(original(tokens, **kwargs)):
                yield end_of_turn if index == 3 else token

        request = GenerationRequest(
            request_id="t",
            api="ollama",
            endpoint="/api/chat",
            kind="chat",
            model=LLAMA_MODEL,
            stream=True,
            messages=(ChatMessage("user", "Name a colour."),),
            options=SamplingOptions(temperature=0, seed=1, num_predict=10),
        )
        monkeypatch.setattr(llm, "generate", stops_after_3)
        events = list(engine.generate(engine.prepare(request), 0))
        stopped = events[-1]
        assert isinstance(stopped, GenerationStats) and stopped.done_reason == "stop"
        assert "".join(e.text for e in events if isinstance(e, TokenPiece))
        # 3 tokens, then the end of turn, counted as Ollama and llama-server count it.
        assert stopped.eval_count == 4 and stopped.eval_steps == 3
        monkeypatch.setattr(llm, "generate", original)
        cut_request = dataclasses.replace(request, options=SamplingOptions(temperature=0, num_predict=3))
        cut = list(engine.generate(engine.prepare(cut_request), 0))[-1]
        assert isinstance(cut, GenerationStats) and cut.done_reason == "length" and cut.eval_count == 3
        # The same prompt again: counted whole, evaluated 1 token.
        assert cut.prompt_tokens == stopped.prompt_tokens and cut.prompt_evaluated == 1
    finally:
        engine.close()


def test_logit_bias_on_the_end_of_turn_makes_the_base_model_stop_by_itself(client: httpx.Client) -> None:
    """OpenAI's logit_bias, as llama-server takes it: 12 on Gemma 3's <end_of_turn> (106) makes
    the base model end "Say OK." by itself; 100 ends the reply at once. Either way the end-of-turn
    token is counted and sent as no chunk (docs/serving.md: llama-server measured the same)."""

    def chat(bias: dict[str, float]) -> tuple[list[str], str, dict[str, Any]]:
        request = {
            "model": LLAMA_MODEL, "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 16,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}, "logit_bias": bias,
        }  # fmt: skip
        with client.stream("POST", "/v1/chat/completions", json=request) as response:
            events = [e for e in sse_events(response) if e != "[DONE]"]
        pieces = [c for e in events for choice in e["choices"] if (c := choice["delta"].get("content"))]
        finish = next(c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"])
        return pieces, finish, events[-1]["usage"]

    pieces, finish, usage = chat({"106": 12})
    assert finish == "stop" and 0 < len(pieces) < 16
    assert usage["completion_tokens"] == len(pieces) + 1
    pieces, finish, usage = chat({"106": 100})
    assert (pieces, finish, usage["completion_tokens"]) == ([], "stop", 1)
    pieces, finish, usage = chat({"106": -100})
    assert finish == "length" and usage["completion_tokens"] == len(pieces) == 16
    unknown = client.post("/v1/chat/completions", json={"model": LLAMA_MODEL, "messages": CHAT,
                                                        "logit_bias": {"999999": 1}})  # fmt: skip
    assert unknown.status_code == 400 and "token id 999999" in unknown.json()["error"]["message"]
