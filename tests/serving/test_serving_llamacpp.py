"""The real engine: Gemma 3 270M through llama-cpp-python, small requests only.

These run the embedded model on the CPU (they are slow, not skipped). Greedy
sampling (temperature 0) keeps replies reproducible; num_predict stays <= 24
so the file takes well under two minutes on 2 cores.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

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
    assert final["prompt_eval_count"] > 0 and final["prompt_eval_duration"] > 0 and final["eval_duration"] > 0
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
    content = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-2])
    assert content.strip()


def test_prompt_cache_shows_in_prompt_eval_count(client: httpx.Client) -> None:
    chat = [{"role": "user", "content": "Describe a quiet harbour town at dawn in one sentence."}]
    request = {
        "model": LLAMA_MODEL,
        "messages": chat,
        "stream": False,
        "options": {**GREEDY, "num_predict": 4},
    }
    first = client.post("/api/chat", json=request).json()
    second = client.post("/api/chat", json=request).json()
    assert first["prompt_eval_count"] > 10
    assert second["prompt_eval_count"] <= 2 < first["prompt_eval_count"]


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


def test_prompt_too_long_and_unknown_model(client: httpx.Client) -> None:
    long_chat = [{"role": "user", "content": "harbour " * 1500}]
    response = client.post(
        "/v1/chat/completions", json={"model": LLAMA_MODEL, "messages": long_chat, "max_tokens": 2}
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "context_length_exceeded"
    missing = client.post("/api/chat", json={"model": "llama3", "messages": CHAT})
    assert missing.status_code == 404 and missing.json() == {"error": "model 'llama3' not found"}
    assert client.post("/api/pull", json={"model": LLAMA_MODEL, "stream": False}).json() == {
        "status": "success"
    }
    assert client.post("/api/pull", json={"model": "llama3"}).status_code == 404
