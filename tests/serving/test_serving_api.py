"""Both APIs end to end against a real (simulated-engine) server process.

A client written against Ollama or OpenAI must work unchanged, so these tests
check the documented shapes: NDJSON with a final ``done: true`` object, SSE
ending in ``[DONE]``, usage, and error objects with proper statuses.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.serving.serving_helpers import SIM_MODEL, Server, ndjson_lines, sse_events

pytestmark = pytest.mark.slow

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Summarise the data."}]
COUNTERS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


@pytest.fixture(scope="module")
def client(sim_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim_server.url, timeout=30) as client:
        yield client


# -- Ollama metadata ---------------------------------------------------------------


def test_root_and_head(client: httpx.Client) -> None:
    assert client.get("/").text == "Ollama is running"
    head = client.head("/")
    assert head.status_code == 200 and head.content == b""


def test_version(client: httpx.Client) -> None:
    body = client.get("/api/version").json()
    assert body["version"] and body["engine"] == "sim"


def test_tags_lists_the_model(client: httpx.Client) -> None:
    models = client.get("/api/tags").json()["models"]
    assert [m["name"] for m in models][:1] == [f"{SIM_MODEL}:latest"]
    assert {"size", "digest", "modified_at", "details"} <= set(models[0])


def test_show(client: httpx.Client) -> None:
    body = client.post("/api/show", json={"model": SIM_MODEL}).json()
    assert body["details"]["family"] == "cfexp-sim"
    assert body["model_info"]["cfexp-sim.block_count"] == 18
    missing = client.post("/api/show", json={"model": "nope"})
    assert missing.status_code == 404 and missing.json() == {"error": "model 'nope' not found"}


def test_ps_after_a_generation(client: httpx.Client) -> None:
    client.post(
        "/api/generate",
        json={"model": SIM_MODEL, "prompt": "hi", "stream": False, "options": {"num_predict": 1}},
    )
    models = client.get("/api/ps").json()["models"]
    assert models[0]["name"] == f"{SIM_MODEL}:latest" and models[0]["context_length"] == 4096


def test_pull_streams_statuses_and_makes_the_name_usable(client: httpx.Client) -> None:
    with client.stream("POST", "/api/pull", json={"model": "other:7b"}) as response:
        statuses = [line["status"] for line in ndjson_lines(response)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert client.post("/api/pull", json={"model": "other:7b", "stream": False}).json() == {
        "status": "success"
    }
    reply = client.post(
        "/api/chat",
        json={"model": "other:7b", "messages": CHAT, "stream": False, "options": {"num_predict": 2}},
    )
    assert reply.status_code == 200 and reply.json()["model"] == "other:7b"


# -- Ollama generation -------------------------------------------------------------


def test_chat_streams_ndjson_by_default(client: httpx.Client) -> None:
    with client.stream(
        "POST", "/api/chat", json={"model": SIM_MODEL, "messages": CHAT, "options": {"num_predict": 12}}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = ndjson_lines(response)
    *chunks, final = lines
    assert all(not c["done"] and c["message"]["role"] == "assistant" for c in chunks)
    assert len(chunks) == 12
    assert final["done"] is True and final["done_reason"] == "length" and final["message"]["content"] == ""
    assert all(isinstance(final[key], int) for key in COUNTERS)
    assert final["eval_count"] == 12 and final["prompt_eval_count"] > 0
    assert "".join(c["message"]["content"] for c in chunks).startswith("## Key Findings\n- ")


def test_chat_without_stream(client: httpx.Client) -> None:
    body = client.post(
        "/api/chat",
        json={"model": SIM_MODEL, "messages": CHAT, "stream": False, "options": {"num_predict": 80}},
    ).json()
    assert body["done"] is True and body["eval_count"] == 80
    text = body["message"]["content"]
    assert "## Key Findings\n- " in text and "## Recommendations\n- " in text


def test_generate_streamed_and_not(client: httpx.Client) -> None:
    request = {"model": SIM_MODEL, "prompt": "Why?", "system": "Be brief.", "options": {"num_predict": 5}}
    with client.stream("POST", "/api/generate", json=request) as response:
        *chunks, final = ndjson_lines(response)
    streamed = "".join(c["response"] for c in chunks)
    whole = client.post("/api/generate", json={**request, "stream": False}).json()
    assert final["done"] and final["response"] == "" and final["eval_count"] == 5
    assert whole["response"] == streamed  # the same prompt gives the same text


def test_default_length_when_num_predict_is_absent(client: httpx.Client) -> None:
    body = client.post("/api/chat", json={"model": SIM_MODEL, "messages": CHAT, "stream": False}).json()
    # 128 tokens, then the end-of-turn token, counted as Ollama counts it.
    assert body["eval_count"] == 129 and body["done_reason"] == "stop"
    assert body["timings"]["predicted_n"] == 129


def test_empty_chat_only_loads(client: httpx.Client) -> None:
    body = client.post("/api/chat", json={"model": SIM_MODEL, "messages": [], "stream": False}).json()
    assert body["done"] is True and body["done_reason"] == "load" and body["message"]["content"] == ""


def test_model_name_without_tag_means_latest(client: httpx.Client) -> None:
    body = client.post(
        "/api/chat",
        json={
            "model": f"{SIM_MODEL}:latest",
            "messages": CHAT,
            "stream": False,
            "options": {"num_predict": 1},
        },
    )
    assert body.status_code == 200


def test_sim_prefix_cache_shows_in_timings_not_in_prompt_eval_count(client: httpx.Client) -> None:
    messages = [{"role": "user", "content": "A prompt that is long enough to be worth caching. " * 8}]
    request = {"model": SIM_MODEL, "messages": messages, "stream": False, "options": {"num_predict": 3}}
    first = client.post(
        "/api/chat", json={**request, "messages": [{"role": "user", "content": "something else"}]}
    ).json()
    full = client.post("/api/chat", json=request).json()
    again = client.post("/api/chat", json=request).json()
    assert first["done"] and full["prompt_eval_count"] > 50
    # As Ollama: the whole prompt is counted either way; only timings show the hit.
    assert again["prompt_eval_count"] == full["prompt_eval_count"]
    # The first one shares only the template's opening with "something else".
    assert full["timings"]["prompt_n"] + full["timings"]["cache_n"] == full["prompt_eval_count"]
    assert full["timings"]["prompt_n"] > 50
    assert again["timings"]["prompt_n"] == 1 and again["timings"]["cache_n"] == full["prompt_eval_count"] - 1


# -- OpenAI ------------------------------------------------------------------------


def test_v1_models(client: httpx.Client) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list" and body["data"][0]["id"] == f"{SIM_MODEL}:latest"
    assert client.get(f"/v1/models/{SIM_MODEL}").json()["object"] == "model"
    assert client.get("/v1/models/nope").status_code == 404


def test_chat_completions_without_stream(client: httpx.Client) -> None:
    body = client.post(
        "/v1/chat/completions", json={"model": SIM_MODEL, "messages": CHAT, "max_tokens": 7}
    ).json()
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] == "length"
    usage = body["usage"]
    assert usage["completion_tokens"] == 7 and usage["total_tokens"] == usage["prompt_tokens"] + 7


def test_chat_completions_stream_with_usage(client: httpx.Client) -> None:
    request = {
        "model": SIM_MODEL,
        "messages": CHAT,
        "max_tokens": 9,
        "stream": True,
        "stream_options": {"include_usage": True},
        "top_k": 20,
        "repeat_penalty": 1.1,
        "seed": 3,
        "temperature": 0.5,
        "top_p": 0.9,
    }
    with client.stream("POST", "/v1/chat/completions", json=request) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 9
    finish = events[-3]
    assert finish["choices"][0]["finish_reason"] == "length" and finish["choices"][0]["delta"] == {}
    content = [e["choices"][0]["delta"]["content"] for e in events[:-3]]
    assert len(content) == 9 and all(content)
    assert all(e["object"] == "chat.completion.chunk" and e["usage"] is None for e in events[:-2])


def test_chat_completions_stream_without_usage(client: httpx.Client) -> None:
    request = {"model": SIM_MODEL, "messages": CHAT, "max_tokens": 3, "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=request) as response:
        events = sse_events(response)
    assert events[-1] == "[DONE]" and all("usage" not in e for e in events[:-1])
    assert events[-2]["choices"][0]["finish_reason"] == "length"


def test_completions_stream_and_not(client: httpx.Client) -> None:
    request = {"model": SIM_MODEL, "prompt": "Once", "max_tokens": 4}
    body = client.post("/v1/completions", json=request).json()
    assert body["object"] == "text_completion" and body["usage"]["completion_tokens"] == 4
    with client.stream(
        "POST", "/v1/completions", json={**request, "stream": True, "stream_options": {"include_usage": True}}
    ) as response:
        events = sse_events(response)
    texts = [e["choices"][0]["text"] for e in events[:-3]]
    assert "".join(texts) == body["choices"][0]["text"]
    assert events[-2]["usage"]["prompt_tokens"] == body["usage"]["prompt_tokens"]


# -- errors ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate", "/v1/chat/completions", "/v1/completions"])
def test_bad_json_is_a_400_and_the_server_lives_on(client: httpx.Client, path: str) -> None:
    response = client.post(path, content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    message = error["message"] if isinstance(error, dict) else error
    assert "invalid JSON" in message
    assert client.get("/api/version").status_code == 200


def test_unknown_model(client: httpx.Client) -> None:
    ollama = client.post("/api/chat", json={"model": "x", "messages": CHAT})
    assert ollama.status_code == 404 and ollama.json() == {"error": "model 'x' not found"}
    openai = client.post("/v1/chat/completions", json={"model": "x", "messages": CHAT})
    assert openai.status_code == 404
    assert openai.json()["error"]["code"] == "model_not_found" and "'x'" in openai.json()["error"]["message"]


def test_missing_fields(client: httpx.Client) -> None:
    assert client.post("/api/chat", json={"messages": CHAT}).status_code == 400
    assert client.post("/v1/chat/completions", json={"model": SIM_MODEL, "messages": []}).status_code == 400
    bad_option = client.post(
        "/api/chat", json={"model": SIM_MODEL, "messages": CHAT, "options": {"num_predict": "many"}}
    )
    assert bad_option.status_code == 400 and "num_predict" in bad_option.json()["error"]


@pytest.mark.parametrize(
    ("logit_bias", "message"),
    [
        ([[106, 12]], "expected an object mapping token ids to numbers"),
        ({"eot": 12}, "token ids as keys"),
        ({"106": 101}, "invalid value for 'logit_bias.106': 101 (expected a number from -100 to 100)"),
        ({"106": "12"}, "logit_bias.106"),
    ],
)
def test_a_bad_logit_bias_is_a_400(client: httpx.Client, logit_bias: object, message: str) -> None:
    body = {"model": SIM_MODEL, "messages": CHAT, "max_tokens": 2, "logit_bias": logit_bias}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400 and message in response.json()["error"]["message"]
    # A good one is accepted (and ignored: the simulator has no logits).
    good = client.post("/v1/chat/completions", json={**body, "logit_bias": {"106": -100.0, "1": 5}})
    assert good.status_code == 200


def test_prompt_longer_than_the_context_is_truncated(client: httpx.Client) -> None:
    long_chat = [{"role": "user", "content": "word " * 4000}]  # ~5000 tokens > num_ctx 4096
    ollama = client.post(
        "/api/chat",
        json={"model": SIM_MODEL, "messages": long_chat, "stream": False, "options": {"num_predict": 8}},
    )
    assert ollama.status_code == 200
    body = ollama.json()
    # Kept: num_ctx - num_predict tokens (see test_serving_counting for the rule).
    assert body["prompt_eval_count"] == 4096 - 8 and body["prompt_truncated_tokens"] > 0
    openai = client.post(
        "/v1/chat/completions", json={"model": SIM_MODEL, "messages": long_chat, "max_tokens": 8}
    )
    assert openai.status_code == 200 and openai.json()["prompt_truncated_tokens"] > 0


def test_num_predict_is_capped_by_the_context(client: httpx.Client) -> None:
    chat = [{"role": "user", "content": "x" * 200}]
    body = client.post(
        "/api/chat",
        json={
            "model": SIM_MODEL,
            "messages": chat,
            "stream": False,
            "options": {"num_ctx": 80, "num_predict": 500},
        },
    ).json()
    assert body["done_reason"] == "length" and 0 < body["eval_count"] < 80


def test_unknown_paths_and_methods(client: httpx.Client) -> None:
    assert client.get("/api/nothing").status_code == 404
    assert client.get("/v1/nothing").json()["error"]["code"] == "unknown_url"
    assert client.get("/api/chat").status_code == 405
