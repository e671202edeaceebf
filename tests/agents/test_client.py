"""The measured HTTP call: request bodies (shared fixtures) and failures as records.

The network is replaced by ``httpx.MockTransport``, except for the connection
clock readings, which need httpcore's real connections (a loopback
:class:`ScriptedServer`); the end-to-end tests in test_agent_process.py run
the whole agent process.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from cfexp.agents.python_agent.client import (
    WIRE_APIS,
    CallRequest,
    new_client,
    request_headers,
    stream_call,
)
from cfexp.agents.records import CallRecord, ErrorKind
from cfexp.agents.spec import AgentSpec
from cfexp.vocab import Api
from tests.agents.scripted_server import Reply, ScriptedServer, ollama_reply, openai_reply

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "workflow"
REQUESTS = json.loads((FIXTURES / "request_cases.json").read_text(encoding="utf-8"))


def _call(api: str = "ollama", timeout_s: float = 5.0, **agent: Any) -> CallRequest:
    spec = AgentSpec(
        name="agent_0",
        persona="default",
        base_url="http://llm.test",
        api=Api(api),
        model=agent.pop("model", "m"),
        options=agent.pop("options", None),
        instance=0,
        api_key=agent.pop("api_key", None),
    )
    return CallRequest(
        run_id="run-1",
        agent=spec,
        call_index=agent.pop("call_index", 0),
        step="analysis",
        messages=agent.pop("messages", [{"role": "user", "content": "héllo"}]),
        num_predict=agent.pop("num_predict", 16),
        timeout_s=timeout_s,
        prompt_nonce=agent.pop("prompt_nonce", None),
    )


@pytest.mark.parametrize("case", REQUESTS, ids=[c["description"][:40] for c in REQUESTS])
def test_request_body(case: dict[str, Any]) -> None:
    call = _call(
        case["api"],
        model=case["model"],
        options=case["options"],
        api_key=case["api_key"],
        messages=case["messages"],
        num_predict=case["num_predict"],
    )
    wire = WIRE_APIS[case["api"]]
    body, options = wire.build_body(call)
    assert wire.path == case["expected_path"]
    assert body == case["expected_body"]
    assert options == case["expected_options_recorded"]
    # Sorted keys, as the Rust agent's map writes them: byte-identical records.
    assert list(options) == sorted(options)
    assert request_headers(call.agent).get("Authorization") == case["expected_authorization"]


Handler = Callable[[httpx.Request], Any]


def run_call(handler: Handler, call: CallRequest) -> CallRecord:
    async def go() -> CallRecord:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await stream_call(client, call)

    return asyncio.run(go())


def ndjson(*pieces: str, final: bool = True) -> list[bytes]:
    lines = [json.dumps({"message": {"content": p}, "done": False}) + "\n" for p in pieces]
    if final:
        lines.append(
            json.dumps({"message": {"content": ""}, "done": True, "eval_count": len(pieces)}) + "\n"
        )
    return [line.encode() for line in lines]


def streaming(
    chunks: list[bytes], delay_s: float | list[float] = 0.0, then: Exception | None = None
) -> Handler:
    """A streamed 200 reply; ``delay_s`` before each chunk (one for all, or one per chunk)."""
    delays = delay_s if isinstance(delay_s, list) else [delay_s] * len(chunks)

    async def body() -> AsyncIterator[bytes]:
        for chunk, delay in zip(chunks, delays, strict=True):
            await asyncio.sleep(delay)
            yield chunk
        if then is not None:
            raise then

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body())

    return handler


def assert_clock_order(record: CallRecord) -> None:
    """Monotonic readings in contract order; first/last token = first/last chunk time."""
    times = [
        record.t_start_ns,
        record.t_connect_start_ns,
        record.t_connect_end_ns,
        record.t_send_ns,
        record.t_first_byte_ns,
        record.t_first_token_ns,
        record.t_last_token_ns,
    ]
    present = [t for t in times if t is not None] + [record.t_end_ns]
    assert present == sorted(present)
    assert record.chunk_times_ns == sorted(record.chunk_times_ns)
    assert record.content_chunks == len(record.chunk_times_ns)
    if record.chunk_times_ns:
        assert record.t_first_token_ns == record.chunk_times_ns[0]
        assert record.t_last_token_ns == record.chunk_times_ns[-1]


def test_successful_call() -> None:
    record = run_call(streaming(ndjson("a", "b", "c"), delay_s=0.01), _call())
    assert record.success and record.error_kind is None
    assert (record.text, record.content_chunks, record.server_eval_count) == ("abc", 3, 3)
    assert record.prompt_nonce is None
    assert record.http_status == 200
    assert record.prompt_chars == len("héllo")
    assert record.options == {"num_predict": 16}
    first, last = record.t_first_token_ns, record.t_last_token_ns
    assert first is not None and last is not None
    assert last - first >= 15_000_000  # two 10 ms gaps
    assert_clock_order(record)


def test_http_error_status_keeps_the_body() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="x" * 600)

    record = run_call(handler, _call())
    assert (record.success, record.error_kind, record.http_status) == (
        False,
        ErrorKind.HTTP_STATUS,
        500,
    )
    assert record.error == "x" * 500
    assert record.t_first_byte_ns is not None
    assert_clock_order(record)


def test_connect_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    record = run_call(handler, _call())
    assert (record.error_kind, record.http_status, record.text) == (ErrorKind.CONNECT, None, "")
    assert_clock_order(record)


def test_connection_lost_mid_stream_is_incomplete() -> None:
    lost = httpx.ReadError("connection reset")
    record = run_call(streaming(ndjson("a", "b", final=False), then=lost), _call())
    assert (record.error_kind, record.text, record.content_chunks) == (
        ErrorKind.INCOMPLETE_STREAM, "ab", 2
    )  # fmt: skip
    assert_clock_order(record)


def test_timeout_covers_the_whole_stream() -> None:
    # "a" at once, then silence for 30 s: the 1 s timeout for the whole call fires in between
    # with seconds to spare either side, however busy the machine (issue 17.5).
    record = run_call(streaming(ndjson("a", "b", "c"), delay_s=[0, 30, 0, 0]), _call(timeout_s=1.0))
    assert record.error_kind == ErrorKind.TIMEOUT
    assert record.text == "a"  # partial text is kept
    assert 1e9 <= record.t_end_ns - record.t_start_ns < 20e9  # the timeout runs from the call's start
    assert_clock_order(record)


def test_stream_failures_come_from_the_parser() -> None:
    record = run_call(streaming([b'{"error": "boom"}\n']), _call())
    assert (record.error_kind, record.error) == (ErrorKind.STREAM_ERROR, "boom")


def test_openai_stream_with_usage_and_llama_server_timings() -> None:
    events = [
        {"choices": [{"delta": {"content": "Hi"}, "finish_reason": None}]},
        {"choices": [{"delta": {}, "finish_reason": "stop"}]},
        {
            "choices": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 2}},
            "timings": {"cache_n": 2, "prompt_n": 3, "prompt_ms": 1.25, "predicted_n": 1, "predicted_ms": 7},
        },
    ]
    body = [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]
    record = run_call(streaming(body), _call("openai", api_key="sk-secret"))
    assert record.success
    assert (record.server_completion_tokens, record.server_prompt_tokens, record.finish_reason) == (1, 5, "stop")
    assert (record.server_cached_tokens, record.server_timings_cache_n, record.server_timings_prompt_n) == (2, 2, 3)
    assert (record.server_timings_prompt_ms, record.server_timings_predicted_ms) == (1.25, 7.0)
    assert type(record.server_timings_predicted_ms) is float
    assert (record.server_timings_predicted_n, record.server_prompt_truncated_tokens) == (1, None)
    assert record.server_eval_count is None  # Ollama's counters stay null on the OpenAI API
    assert "sk-secret" not in json.dumps(record.to_dict())


def test_ollama_final_object_timings_and_truncation() -> None:
    final = {
        "message": {"content": ""}, "done": True, "done_reason": "length", "eval_count": 1,
        "prompt_eval_count": 448, "timings": {"prompt_n": 448, "cache_n": 0, "prompt_ms": 812.5},
        "prompt_truncated_tokens": 37,
    }  # fmt: skip
    chunks = [b'{"message":{"content":"x"},"done":false}\n', json.dumps(final).encode() + b"\n"]
    record = run_call(streaming(chunks), _call())
    assert record.success and record.finish_reason == "length"
    assert (record.server_prompt_eval_count, record.server_timings_prompt_n) == (448, 448)
    assert (record.server_timings_cache_n, record.server_timings_prompt_ms) == (0, 812.5)
    assert record.server_prompt_truncated_tokens == 37
    assert record.server_timings_predicted_ms is None and record.server_cached_tokens is None


def test_the_nonce_is_recorded_as_sent() -> None:
    nonce = "Request 3f9a0c71d2be-0-1.\n"
    messages = [{"role": "system", "content": nonce + "Be brief."}, {"role": "user", "content": "Go."}]
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, content=b"".join(ndjson("ok")))

    record = run_call(handler, _call(messages=messages, prompt_nonce=nonce, call_index=1))
    assert record.prompt_nonce == nonce
    assert sent[0]["messages"][0]["content"].startswith(nonce)
    assert record.prompt_chars == len(nonce) + len("Be brief.") + len("Go.")


def test_timings_in_several_events_the_last_wins() -> None:
    """llama-server with timings_per_token sends running timings in every chunk."""
    events = [
        {"choices": [{"delta": {"content": "a"}}], "timings": {"prompt_n": 3, "predicted_n": 1, "predicted_ms": 1.0}},
        {"choices": [{"delta": {"content": "b"}}], "timings": {"prompt_n": 3, "predicted_n": 2, "predicted_ms": 2.5}},
        {"choices": [], "timings": {"predicted_n": "2"}},  # not an integer: ignored, not a reset
    ]
    body = [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]
    record = run_call(streaming(body), _call("openai"))
    assert (record.server_timings_predicted_n, record.server_timings_predicted_ms) == (2, 2.5)
    assert record.server_timings_prompt_n == 3


# ------------------------------------------------ connection clock (real sockets)


def _calls_on_one_client(
    base_url: str, count: int, api: str = "ollama", loop: str = "asyncio"
) -> list[CallRecord]:
    """``count`` calls in a row through one pooled client, as the agent makes them, on ``loop``."""
    run = asyncio.run if loop == "asyncio" else pytest.importorskip("uvloop").run
    call = _call(api)
    call = CallRequest(**{**call.__dict__, "agent": AgentSpec(**{**call.agent.__dict__, "base_url": base_url})})

    async def go() -> list[CallRecord]:
        async with new_client((call.agent,), call.timeout_s) as client:
            return [await stream_call(client, call) for _ in range(count)]

    records: list[CallRecord] = run(go())
    return records


def test_a_fresh_connection_is_timed_and_the_request_is_stamped_after_it() -> None:
    """t_start ≤ connect start < connect end ≤ t_send ≤ the server reading the request."""
    with ScriptedServer(lambda path, body: ollama_reply("hello")) as server:
        (record,) = _calls_on_one_client(server.base_url, 1)
    (seen,) = server.requests
    assert record.success, record.error
    assert record.t_connect_start_ns is not None and record.t_connect_end_ns is not None
    assert record.t_send_ns is not None
    assert record.t_start_ns <= record.t_connect_start_ns < record.t_connect_end_ns <= record.t_send_ns
    # The server's reading (time.monotonic, the same clock) comes after the
    # send, give or take the float's rounding.
    assert record.t_send_ns <= seen.t_start * 1e9 + 1_000
    assert_clock_order(record)


@pytest.mark.parametrize("api", ["ollama", "openai"])
def test_successful_calls_reuse_one_kept_alive_connection(api: str) -> None:
    """The stream is read to its end, so the next call goes over the same connection.

    Its record has no connect readings, and its send stamp is its own request's write.
    """
    reply = ollama_reply if api == "ollama" else openai_reply
    with ScriptedServer(lambda path, body: reply("hello")) as server:
        records = _calls_on_one_client(server.base_url, 3, api)
    assert server.connections == 1
    assert [seen.connection for seen in server.requests] == [1, 1, 1]
    first, *later = records
    assert first.t_connect_start_ns is not None and first.t_connect_end_ns is not None
    for record, seen in zip(later, server.requests[1:], strict=True):
        assert record.success, record.error
        assert (record.t_connect_start_ns, record.t_connect_end_ns) == (None, None)
        assert record.t_send_ns is not None and record.t_start_ns <= record.t_send_ns
        assert record.t_send_ns <= seen.t_start * 1e9 + 1_000
        assert_clock_order(record)


@pytest.mark.parametrize(
    "failed",
    [
        Reply(status=503, chunks=[b"busy"]),  # read to its end, yet a failed call
        Reply(chunks=ndjson("cut before", "the end", final=False), drop_connection=True),
        Reply(chunks=ndjson("no final message", final=False)),  # ends cleanly, incomplete
    ],
    ids=["error-status", "cut-stream", "no-final-message"],
)
# The event loop's socket object differs (asyncio's TransportSocket, uvloop's
# PseudoSocket): the connection must be discarded on both.
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_failed_calls_connection_is_not_reused(failed: Reply, loop: str) -> None:
    replies = iter([failed, ollama_reply("hello")])
    with ScriptedServer(lambda path, body: next(replies)) as server:
        first, second = _calls_on_one_client(server.base_url, 2, loop=loop)
    assert not first.success
    assert second.success, second.error
    assert second.t_connect_start_ns is not None and second.t_connect_end_ns is not None
    assert [seen.connection for seen in server.requests] == [1, 2]


def test_a_connection_the_server_closed_after_its_reply_is_replaced() -> None:
    """Whether the pool sees the close first or the request meets it, every call succeeds."""
    with ScriptedServer(lambda path, body: ollama_reply("hello", close_at_end=True)) as server:
        records = _calls_on_one_client(server.base_url, 3)
    assert all(record.success for record in records), [record.error for record in records]
    assert [seen.connection for seen in server.requests] == [1, 2, 3]
    for record in records:
        assert record.t_connect_start_ns is not None and record.t_connect_end_ns is not None
        assert_clock_order(record)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_reused_connection_closed_under_the_request_is_resent_once(
    caplog: pytest.LogCaptureFixture, loop: str
) -> None:
    """llama-server's close meets the next request: sent once more, on a new connection.

    The server never answered the first attempt, so the record is the second
    attempt's: its connect readings and its send time.
    """
    replies = iter([ollama_reply("one", close_after=True), ollama_reply("two")])
    with ScriptedServer(lambda path, body: next(replies)) as server:
        first, second = _calls_on_one_client(server.base_url, 2, loop=loop)
    assert first.success and second.success, second.error
    assert second.text == "two"
    # Call 2's first attempt reached connection 1, which closed unanswered
    # (the server never handled it); the resend went over connection 2.
    assert server.connections == 2
    assert [seen.connection for seen in server.requests] == [1, 2]
    assert second.t_connect_start_ns is not None and second.t_connect_end_ns is not None
    assert second.t_send_ns is not None and second.t_connect_end_ns <= second.t_send_ns
    assert second.t_send_ns <= server.requests[1].t_start * 1e9 + 1_000
    assert_clock_order(second)
    assert any("sending the request once more" in r.message and r.levelname == "WARNING" for r in caplog.records)


def test_a_reused_connection_cut_after_response_bytes_is_not_resent() -> None:
    replies = iter([ollama_reply("one"), Reply(chunks=ndjson("two, then", final=False), drop_connection=True)])
    with ScriptedServer(lambda path, body: next(replies)) as server:
        first, second = _calls_on_one_client(server.base_url, 2)
    assert first.success
    assert second.error_kind == ErrorKind.INCOMPLETE_STREAM
    assert len(server.requests) == 2


def test_a_fresh_connection_closed_before_a_response_is_not_resent() -> None:
    with ScriptedServer(lambda path, body: Reply(raw_then_close=b"")) as server:
        (record,) = _calls_on_one_client(server.base_url, 1)
    assert record.error_kind == ErrorKind.CONNECT
    assert len(server.requests) == 1


def test_a_refused_connection_has_no_send_time() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    (record,) = _calls_on_one_client(f"http://127.0.0.1:{port}", 1)
    assert record.error_kind == ErrorKind.CONNECT
    assert record.t_connect_start_ns is not None
    assert (record.t_connect_end_ns, record.t_send_ns) == (None, None)
    assert_clock_order(record)
