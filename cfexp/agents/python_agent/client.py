"""One streamed chat call over HTTP, measured, turned into a call record.

:func:`stream_call` is the only call loop, for both APIs: what differs per API
(path, request body, stream parser) is looked up in :data:`WIRE_APIS`. Every
failure becomes a record with an ``error_kind``; nothing raises out of it.

Clock readings (``time.monotonic_ns``, i.e. CLOCK_MONOTONIC) are taken exactly
where docs/record-schema.md says: ``t_start_ns`` after the request is built,
just before it is handed to httpx; ``t_connect_start_ns``/``t_connect_end_ns``
around the TCP connect (and TLS) the call made, ``t_send_ns`` just before the
request's first byte is written on the established connection — both from
httpcore's ``trace`` extension (:class:`WireClock`), so the connection pool,
the connect and httpx's own request handling stay out of TTFT; each content
chunk's time when the network read that completed it returned; ``t_end_ns``
after the response closed.

Keep-alive: each agent has its own pooled client (:func:`new_client`), so its
calls go one after another over one kept-alive connection. A successful
stream is read to its end, which hands the connection back to the pool; a
failed, timed-out or cut call closes its connection instead. A call on a
reused connection records null connect times. When a reused connection turns
out closed before any response came (llama-server closes after every stream
while announcing keep-alive), the request is sent once more on a fresh
connection (:func:`_send`; docs/fault-model.md, "Keep-alive and the one resend").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from time import monotonic_ns
from typing import Any

import httpx

from cfexp.agents.python_agent.stream import StreamSummary, new_parser
from cfexp.agents.records import SERVER_COUNTERS, SERVER_MILLISECONDS, CallRecord, ErrorKind
from cfexp.agents.spec import AgentSpec

log = logging.getLogger(__name__)

# Error bodies are quoted in the record up to this many characters (the contract).
_ERROR_BODY_CHARS = 500
# ...and read up to this many bytes, so a huge error page cannot stall the call.
_ERROR_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class CallRequest:
    """Everything one call needs; built by the workflow."""

    run_id: str
    agent: AgentSpec
    call_index: int
    step: str
    messages: list[dict[str, str]]
    num_predict: int
    timeout_s: float
    # The cache-defeating prefix that starts messages[0], or None.
    prompt_nonce: str | None = None


# ------------------------------------------------------------- request bodies


def ollama_body(call: CallRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    """(request body, model options as sent) for ``POST /api/chat``."""
    # num_predict is a budget, not a tuning option: sent even for the baseline.
    options = _sorted({**(call.agent.options or {}), "num_predict": call.num_predict})
    body = {
        "model": call.agent.model,
        "messages": call.messages,
        "stream": True,
        "options": options,
    }
    return body, options


# OpenAI-compatible servers take these sampling fields at the top level;
# num_gpu/num_ctx are launch parameters there and are not sent.
_OPENAI_OPTIONS = ("temperature", "top_p", "seed", "top_k", "repeat_penalty")


def openai_body(call: CallRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    """(request body, model options as sent) for ``POST /v1/chat/completions``."""
    given = call.agent.options or {}
    options: dict[str, Any] = {"max_tokens": call.num_predict}
    options.update((key, given[key]) for key in _OPENAI_OPTIONS if key in given)
    options = _sorted(options)
    body = {
        "model": call.agent.model,
        "messages": call.messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        **options,
    }
    return body, options


def _sorted(options: dict[str, Any]) -> dict[str, Any]:
    """Keys in sorted order: the record's ``options`` is then byte-identical to the Rust agent's."""
    return dict(sorted(options.items()))


@dataclass(frozen=True)
class WireApi:
    """What differs between the two APIs; the call loop itself does not."""

    path: str
    build_body: Callable[[CallRequest], tuple[dict[str, Any], dict[str, Any]]]
    accept: str


WIRE_APIS: dict[str, WireApi] = {
    "ollama": WireApi("/api/chat", ollama_body, "application/x-ndjson"),
    "openai": WireApi("/v1/chat/completions", openai_body, "text/event-stream"),
}


def request_headers(agent: AgentSpec) -> dict[str, str]:
    headers = {
        "Accept": WIRE_APIS[agent.api].accept,
        # Uncompressed, so a chunk's arrival is a network read, not a decoder's
        # flush (aiter_bytes still decodes, should a server compress anyway).
        "Accept-Encoding": "identity",
    }
    if agent.api == "openai" and agent.api_key:
        headers["Authorization"] = f"Bearer {agent.api_key}"
    return headers


def new_client(agents: tuple[AgentSpec, ...], timeout_s: float) -> httpx.AsyncClient:
    """A pooled client; the agent process makes one per agent (its kept-alive connection).

    One client per agent, not one for the process: an agent's calls then reuse
    its own connection, never another agent's, and the one resend of
    :func:`_send` cannot be handed another kept-alive connection by the pool.
    """
    verify: bool | ssl.SSLContext = True
    if not any(a.base_url.startswith("https://") for a in agents):
        # Loading the CA bundle costs tens of ms before `ready`; plain http needs none.
        verify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return httpx.AsyncClient(
        # Backstop only: asyncio.timeout in stream_call bounds the whole call.
        timeout=httpx.Timeout(timeout_s),
        # The harness's proxy/.netrc settings must not reroute loopback benchmarks.
        trust_env=False,
        verify=verify,
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
    )


async def warm_up() -> None:
    """Load, before ``ready``, what httpx would load lazily at its first connection.

    httpcore's network backend runs on anyio, and anyio imports its event-loop
    backend (and ~30 modules) the first time it is used: 50–150 ms that would
    otherwise fall inside the first call, before its request is written
    (its connect, as ``connect_ms``). One anyio checkpoint in the
    running loop does that loading now, without touching the network.
    """
    import anyio.lowlevel

    await anyio.lowlevel.checkpoint()


# ------------------------------------------------------------------ the call


class WireClock:
    """Reads the clock at the connection events httpcore traces, into a call record.

    httpcore calls it (the request's ``trace`` extension) just before and just
    after each step of the exchange: ``connection.connect_tcp`` (and
    ``connection.start_tls`` for https) when the call opens a connection —
    not at all when it reuses a kept-alive one — then
    ``http11.send_request_headers``, whose *started* event comes right before
    the request's first byte is written to the socket.
    """

    __slots__ = ("_record",)

    def __init__(self, record: CallRecord) -> None:
        self._record = record

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        now = monotonic_ns()
        record = self._record
        if event == "http11.send_request_headers.started":
            record.t_send_ns = now
        elif event == "connection.connect_tcp.started":
            record.t_connect_start_ns = now
        elif event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            # With TLS the connection is set up once its handshake is done.
            record.t_connect_end_ns = now


async def stream_call(client: httpx.AsyncClient, call: CallRequest) -> CallRecord:
    """Send one streamed chat request and measure it; never raises for a failed call."""
    agent = call.agent
    wire = WIRE_APIS[agent.api]
    body, options_sent = wire.build_body(call)
    record = CallRecord(
        run_id=call.run_id,
        agent=agent.name,
        call_index=call.call_index,
        step=call.step,
        api=agent.api,
        base_url=agent.base_url,
        instance=agent.instance,
        model=agent.model,
        options=options_sent,
        prompt_chars=sum(len(m["content"]) for m in call.messages),
        prompt_nonce=call.prompt_nonce,
    )
    request = client.build_request(
        "POST",
        agent.base_url + wire.path,
        json=body,
        headers=request_headers(agent),
        extensions={"trace": WireClock(record)},
    )
    summary = StreamSummary()
    response: httpx.Response | None = None
    kind: ErrorKind | None = None
    error: str | None = None
    # The final message arrived intact: what happens to the rest of the body
    # concerns the connection, not the call.
    complete = False
    record.t_start_ns = monotonic_ns()
    try:
        async with asyncio.timeout(call.timeout_s):
            response = await _send(client, request, record, agent)
            try:
                record.http_status = response.status_code
                if response.is_success:
                    chunks = response.aiter_bytes()
                    await _read_stream(chunks, agent.api, record, summary)
                    _, kind, error = summary.outcome()
                    complete = kind is None
                    if complete:
                        await _drain(chunks)
                else:
                    kind = ErrorKind.HTTP_STATUS
                    error = await _read_error_body(response, record)
            finally:
                if not complete:
                    _discard_connection(response)
                await response.aclose()
    except (TimeoutError, httpx.TimeoutException):
        if not complete:
            kind, error = ErrorKind.TIMEOUT, f"no complete response within {call.timeout_s} s"
    except httpx.ConnectError as exc:
        kind, error = ErrorKind.CONNECT, f"cannot connect to {agent.base_url}: {exc}"
    except httpx.HTTPError as exc:
        if not complete:
            # Before a status line: the connection failed; after it: the body was cut.
            kind = ErrorKind.CONNECT if response is None else ErrorKind.INCOMPLETE_STREAM
            error = f"{type(exc).__name__}: {exc}"
    record.t_end_ns = monotonic_ns()
    _fill_stream_fields(record, summary)
    record.success = kind is None
    record.error_kind, record.error = kind, error
    if kind is not None:
        log.warning(
            "call failed <agent=%s step=%s error_kind=%s>: %s",
            agent.name, call.step, kind.value, error,
        )  # fmt: skip
    return record


# What httpx raises when a kept-alive connection the server has closed takes
# the request: the request cannot be written (WriteError), the read finds the
# connection reset (ReadError), or it ends with no response at all (h11, via
# httpcore: "Server disconnected without sending a response.").
_NO_RESPONSE = "Server disconnected without sending a response."


async def _send(
    client: httpx.AsyncClient, request: httpx.Request, record: CallRecord, agent: AgentSpec
) -> httpx.Response:
    """Send the request; once more on a fresh connection if a reused one was found closed.

    llama-server announces keep-alive yet closes the connection after every
    streamed reply, so the next request can meet a connection closed under
    it. When the connection was reused (this call traced no connect) and it
    failed before a response head arrived, the server has not answered the
    request, and it is sent once more: the pool has no other connection for
    this agent, so it connects afresh, and WireClock overwrites the send
    time and fills in the new connection's connect times. A call that
    connected itself is never resent, nor one whose response head arrived
    (``client.send`` returned). One limit: httpx reports a head cut short
    the same as no head at all (h11 acts on complete heads only), so a
    server that wrote part of a status line and then closed would see the
    request again; the Rust agent, which sees the bytes, would not resend.
    """
    try:
        return await client.send(request, stream=True)
    except (httpx.WriteError, httpx.ReadError, httpx.RemoteProtocolError) as exc:
        reused = record.t_connect_start_ns is None
        if not reused or (isinstance(exc, httpx.RemoteProtocolError) and str(exc) != _NO_RESPONSE):
            raise
        log.warning(
            "kept-alive connection closed before any response <agent=%s base_url=%s>: %s: %s; "
            "sending the request once more on a new connection",
            agent.name, agent.base_url, type(exc).__name__, exc,
        )  # fmt: skip
        record.t_send_ns = None
        return await client.send(request, stream=True)


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read what follows the final message (normally just the end of the body).

    A body read to its end returns the connection to the pool for the
    agent's next call; an unfinished one would close it on ``aclose``.
    """
    async for _ in chunks:
        pass


def _discard_connection(response: httpx.Response | None) -> None:
    """Make sure the pool never hands out this call's connection again.

    A failed call's connection may be in any state (a body not read to its
    end, an injected fault, a server that misbehaved): httpcore closes one
    whose exchange did not finish, but one that did (an error reply read to
    its end, a stream that lacked its final message) would go back to the
    pool. Shutting the socket down makes it read as closed, so the pool drops
    it instead of reusing it (httpcore's ``has_expired``). Through a duplicate
    of its descriptor: the event loop's socket object (asyncio's
    TransportSocket, uvloop's PseudoSocket) need not offer ``shutdown``.
    """
    if response is None:
        return
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is None:
        return
    with contextlib.suppress(OSError, ValueError):  # already closed
        with socket.socket(fileno=os.dup(sock.fileno())) as duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)


async def _read_stream(
    chunks: AsyncIterator[bytes], api: str, record: CallRecord, summary: StreamSummary
) -> None:
    parser = new_parser(api)
    now = monotonic_ns()
    async for data in chunks:
        now = monotonic_ns()
        if not data:
            continue
        if record.t_first_byte_ns is None:
            record.t_first_byte_ns = now
        for event in parser.feed(data):
            summary.add(event, now)
        if parser.stopped:
            # Final message or failure seen: nothing after it counts (the
            # caller drains the rest of a successful stream, for keep-alive).
            break
    # A last line without newline arrived with the last chunk: same time.
    for event in parser.finish():
        summary.add(event, now)


async def _read_error_body(response: httpx.Response, record: CallRecord) -> str:
    body = b""
    async for data in response.aiter_bytes():
        if data and record.t_first_byte_ns is None:
            record.t_first_byte_ns = monotonic_ns()
        body += data
        if len(body) >= _ERROR_BODY_BYTES:
            break
    text = body.decode("utf-8", errors="replace")[:_ERROR_BODY_CHARS]
    return text or f"HTTP {response.status_code} with an empty body"


def _fill_stream_fields(record: CallRecord, summary: StreamSummary) -> None:
    record.chunk_times_ns = summary.chunk_times_ns
    record.content_chunks = len(summary.chunk_times_ns)
    if summary.chunk_times_ns:
        record.t_first_token_ns = summary.chunk_times_ns[0]
        record.t_last_token_ns = summary.chunk_times_ns[-1]
    record.text = summary.text
    counters = summary.counters
    finish_reason = counters.get("finish_reason")
    record.finish_reason = finish_reason if isinstance(finish_reason, str) else None
    for name in SERVER_COUNTERS:
        value = counters.get(name)
        setattr(record, name, value if isinstance(value, int) else None)
    for name in SERVER_MILLISECONDS:
        value = counters.get(name)
        setattr(record, name, value if isinstance(value, float) else None)
