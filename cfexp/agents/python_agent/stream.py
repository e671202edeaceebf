"""Streaming-response parsers: raw body bytes in, events out. No I/O, no clock.

One parser per wire format, both behind the same two methods, so the call loop
in ``client.py`` is written once:

    parser.feed(chunk) -> [Event, ...]   # any split of the body, bytes or str
    parser.finish()    -> [Event, ...]   # the body ended

Events: :class:`Content` (a non-empty piece of generated text), :class:`Counters`
(the server's own counts and timings, finish reason), :class:`End` (the final object /
``[DONE]``), :class:`Failure` (the stream is unusable; parsing stops).
:class:`StreamSummary` folds events into what a call record needs.

The rules (line splitting, what is malformed, which error wins) are written
down in docs/agent-workflow.md, "Parsing a stream"; the golden fixtures in
tests/fixtures/streams/ check them for this parser and for the Rust one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from cfexp.agents.records import ErrorKind

# The white space both languages strip: Rust's `trim_ascii` set (no vertical tab).
ASCII_WS = " \t\n\r\x0c"
_MAX_QUOTE = 200


@dataclass(frozen=True, slots=True)
class Content:
    text: str


# A server-reported value: a counter (int), a millisecond reading (float) or
# the finish reason (str).
Value = int | float | str


@dataclass(frozen=True, slots=True)
class Counters:
    """Server-reported values, by call-record field; only those present in the message are set."""

    values: dict[str, Value]


@dataclass(frozen=True, slots=True)
class End:
    """The stream's final object (Ollama ``done: true``) or ``data: [DONE]``."""


@dataclass(frozen=True, slots=True)
class Failure:
    kind: ErrorKind
    message: str


Event = Content | Counters | End | Failure


class StreamParser(Protocol):
    @property
    def stopped(self) -> bool: ...

    def feed(self, data: bytes | str) -> list[Event]: ...

    def finish(self) -> list[Event]: ...


# What Rust's serde_json reads, so both agents take the same values from a line:
def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN/Infinity; RFC 8259 (and serde_json) do not.
    raise ValueError(f"invalid JSON constant {name}")


def _parse_float(text: str) -> float:
    # Python reads 1e400 as inf; serde_json refuses a number out of range.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _parse_int(text: str) -> int | float:
    # serde_json reads -0 as the float -0.0 (so it is no counter), and an
    # integer beyond u64 as a float, refusing one beyond the float range.
    if text == "-0":
        return -0.0
    if len(text) > 300 and not math.isfinite(float(text)):
        raise ValueError(f"number out of range: {text[:40]}...")
    return int(text)


def _loads(text: str) -> Any:
    value = json.loads(
        text, parse_constant=_reject_constant, parse_float=_parse_float, parse_int=_parse_int
    )
    # Python's json lets a lone UTF-16 surrogate escape (\ud800) through as a
    # code point no UTF-8 record can hold; serde_json refuses it. Checked only
    # when the line has such an escape at all (a valid pair is fine).
    if "\\ud" in text or "\\uD" in text:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("lone surrogate in a \\u escape") from None
    return value


def _quote(text: str) -> str:
    return repr(text[:_MAX_QUOTE])


_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def _int(value: Any) -> int | None:
    """A counter: a JSON integer (not a bool, not 12.0) that fits a signed 64-bit int."""
    return value if type(value) is int and _I64_MIN <= value <= _I64_MAX else None


def _number(value: Any) -> float | None:
    """A millisecond reading: any JSON number (not a bool), as a float."""
    return float(value) if type(value) in (int, float) else None


def _object(obj: dict[str, Any], key: str) -> dict[str, Any] | None:
    """``obj[key]`` when it is an object; None when absent or null; the wrong shape otherwise."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _ShapeError(f"{key!r} is not an object")
    return value


# llama.cpp's `timings` object (llama-server, cfexp's own servers): its fields
# and the call-record field each fills, counters first.
_TIMINGS_COUNTERS = (
    ("prompt_n", "server_timings_prompt_n"),
    ("cache_n", "server_timings_cache_n"),
    ("predicted_n", "server_timings_predicted_n"),
)
_TIMINGS_MILLISECONDS = (
    ("prompt_ms", "server_timings_prompt_ms"),
    ("predicted_ms", "server_timings_predicted_ms"),
)


def _extensions(obj: dict[str, Any], values: dict[str, Value]) -> None:
    """The fields both APIs may carry in their last message: ``timings`` and ``prompt_truncated_tokens``."""
    timings = _object(obj, "timings")
    if timings is not None:
        for wire, name in _TIMINGS_COUNTERS:
            number = _int(timings.get(wire))
            if number is not None:
                values[name] = number
        for wire, name in _TIMINGS_MILLISECONDS:
            ms = _number(timings.get(wire))
            if ms is not None:
                values[name] = ms
    truncated = _int(obj.get("prompt_truncated_tokens"))
    if truncated is not None:
        values["server_prompt_truncated_tokens"] = truncated


def _error_message(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("message"), str):
        return str(value["message"])
    return json.dumps(value)


class _ShapeError(Exception):
    """A line parsed as JSON but has the wrong shape (-> malformed_stream)."""


class _LineParser:
    """Splits the body into lines; subclasses interpret one line at a time.

    Lines end at ``\\n`` (a ``\\r`` before it is dropped); bytes are split
    before decoding, so a UTF-8 character cut between chunks is reassembled.
    A last line without its newline is still parsed when the body ends.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._stopped = False

    @property
    def stopped(self) -> bool:
        """True after :class:`End` or :class:`Failure`: later input is ignored."""
        return self._stopped

    def feed(self, data: bytes | str) -> list[Event]:
        if self._stopped:
            return []
        if isinstance(data, str):
            data = data.encode("utf-8")
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        events: list[Event] = []
        for raw in lines:
            events.extend(self._raw_line(raw, terminated=True))
            if self._stopped:
                break
        return events

    def finish(self) -> list[Event]:
        if self._stopped:
            return []
        events = self._raw_line(self._buffer, terminated=False) if self._buffer else []
        self._buffer = b""
        if not self._stopped:
            events.append(Failure(ErrorKind.INCOMPLETE_STREAM, self._missing_end))
            self._stopped = True
        return events

    _missing_end = "the stream ended without its final message"

    def _raw_line(self, raw: bytes, terminated: bool) -> list[Event]:
        try:
            line = raw.decode("utf-8").strip(ASCII_WS)
        except UnicodeDecodeError:
            return self._fail_bad_line(raw.decode("utf-8", "replace"), terminated, "not UTF-8")
        if not line:
            return []
        try:
            events = self._line(line)
        # Not JSON (JSONDecodeError is a ValueError); absurd nesting is not JSON
        # either (serde_json stops at depth 128, Python's json at the stack limit).
        except (ValueError, RecursionError) as exc:
            return self._fail_bad_line(line, terminated, f"not JSON: {exc}")
        except _ShapeError as exc:
            return self._fail_bad_line(line, terminated, str(exc))
        if any(isinstance(e, (End, Failure)) for e in events):
            self._stopped = True
        return events

    def _fail_bad_line(self, line: str, terminated: bool, why: str) -> list[Event]:
        # An unterminated, unusable last line is a body cut short, not garbage.
        if terminated:
            return self._fail(ErrorKind.MALFORMED_STREAM, f"bad line ({why}): {_quote(line)}")
        return self._fail(ErrorKind.INCOMPLETE_STREAM, f"stream cut mid-line: {_quote(line)}")

    def _fail(self, kind: ErrorKind, message: str) -> list[Event]:
        self._stopped = True
        return [Failure(kind, message)]

    def _line(self, line: str) -> list[Event]:
        raise NotImplementedError


class OllamaParser(_LineParser):
    """``POST /api/chat`` (or ``/api/generate``): one JSON object per line (NDJSON)."""

    _missing_end = "the stream ended without its final object (done: true)"

    _COUNTERS = (
        ("load_duration", "server_load_duration_ns"),
        ("prompt_eval_count", "server_prompt_eval_count"),
        ("prompt_eval_duration", "server_prompt_eval_duration_ns"),
        ("eval_count", "server_eval_count"),
        ("eval_duration", "server_eval_duration_ns"),
        ("total_duration", "server_total_duration_ns"),
    )

    def _line(self, line: str) -> list[Event]:
        obj = _loads(line)
        if not isinstance(obj, dict):
            raise _ShapeError("line is not a JSON object")
        if obj.get("error") is not None:
            return [Failure(ErrorKind.STREAM_ERROR, _error_message(obj["error"]))]
        message = obj.get("message")
        if message is not None:
            if not isinstance(message, dict):
                raise _ShapeError("'message' is not an object")
            content = message.get("content")
        else:
            content = obj.get("response")
        if content is not None and not isinstance(content, str):
            raise _ShapeError("content is not a string")
        done = obj.get("done", False)
        if not isinstance(done, bool):
            raise _ShapeError("'done' is not a boolean")
        events: list[Event] = [Content(content)] if content else []
        if done:
            values: dict[str, Value] = {}
            for wire, name in self._COUNTERS:
                number = _int(obj.get(wire))
                if number is not None:
                    values[name] = number
            _extensions(obj, values)
            if isinstance(obj.get("done_reason"), str):
                values["finish_reason"] = obj["done_reason"]
            events += [Counters(values), End()]
        return events


class OpenAIParser(_LineParser):
    """``POST /v1/chat/completions`` (or ``/v1/completions``) with ``stream: true``: SSE.

    Every ``data:`` line is one event (LLM servers send one line per event).
    ``:`` comments, blank lines and the fields ``event``, ``id``, ``retry`` are
    ignored; an ``error:`` field (llama.cpp) is a stream error; any other line
    (e.g. a bare JSON error body sent with status 200) is malformed.
    """

    _missing_end = "the stream ended without data: [DONE]"

    def _line(self, line: str) -> list[Event]:
        if line.startswith(":"):
            return []
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name in ("event", "id", "retry"):
            return []
        if name == "error":
            return [Failure(ErrorKind.STREAM_ERROR, value)]
        if name != "data":
            raise _ShapeError("not an SSE field line")
        payload = value.strip(ASCII_WS)
        if not payload:
            return []
        if payload == "[DONE]":
            return [End()]
        return self._event(_loads(payload))

    def _event(self, obj: Any) -> list[Event]:
        if not isinstance(obj, dict):
            raise _ShapeError("event data is not a JSON object")
        if obj.get("error") is not None:
            return [Failure(ErrorKind.STREAM_ERROR, _error_message(obj["error"]))]
        events: list[Event] = []
        values: dict[str, Value] = {}
        choices = obj.get("choices")
        if choices is not None and not isinstance(choices, list):
            raise _ShapeError("'choices' is not a list")
        if choices:
            first = choices[0]
            if not isinstance(first, dict):
                raise _ShapeError("'choices[0]' is not an object")
            delta = first.get("delta")
            if delta is not None:
                if not isinstance(delta, dict):
                    raise _ShapeError("'delta' is not an object")
                content = delta.get("content")
            else:
                content = first.get("text")
            if content is not None and not isinstance(content, str):
                raise _ShapeError("content is not a string")
            if content:
                events.append(Content(content))
            if isinstance(first.get("finish_reason"), str):
                values["finish_reason"] = first["finish_reason"]
        usage = _object(obj, "usage")
        if usage is not None:
            for wire, name in (
                ("prompt_tokens", "server_prompt_tokens"),
                ("completion_tokens", "server_completion_tokens"),
            ):
                number = _int(usage.get(wire))
                if number is not None:
                    values[name] = number
            details = _object(usage, "prompt_tokens_details")
            if details is not None:
                cached = _int(details.get("cached_tokens"))
                if cached is not None:
                    values["server_cached_tokens"] = cached
        # llama-server puts `timings` in its last event (the usage event when
        # usage is asked for); read wherever it comes, the last one wins.
        _extensions(obj, values)
        if values:
            events.append(Counters(values))
        return events


PARSERS: dict[str, type[_LineParser]] = {"ollama": OllamaParser, "openai": OpenAIParser}


def new_parser(api: str) -> StreamParser:
    """A fresh parser for ``api`` (``ollama`` or ``openai``)."""
    return PARSERS[api]()


@dataclass
class StreamSummary:
    """Folds events into the call record's stream fields.

    ``add(event, t_ns)`` takes the arrival time of the network chunk that
    completed the event; a content event's time goes into ``chunk_times_ns``.
    Later counters override earlier ones (OpenAI sends ``finish_reason`` and
    ``usage`` in different events). The first failure is kept.
    """

    pieces: list[str] = field(default_factory=list)
    chunk_times_ns: list[int] = field(default_factory=list)
    counters: dict[str, Value] = field(default_factory=dict)
    ended: bool = False
    failure: Failure | None = None

    def add(self, event: Event, t_ns: int) -> None:
        if isinstance(event, Content):
            self.pieces.append(event.text)
            self.chunk_times_ns.append(t_ns)
        elif isinstance(event, Counters):
            self.counters.update(event.values)
        elif isinstance(event, End):
            self.ended = True
        elif self.failure is None:
            self.failure = event

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def outcome(self) -> tuple[bool, ErrorKind | None, str | None]:
        """(success, error_kind, error) once the body has been fully fed and finished."""
        if self.failure is not None:
            return False, self.failure.kind, self.failure.message
        if not self.ended:
            return False, ErrorKind.INCOMPLETE_STREAM, "the stream ended without its final message"
        if not self.pieces:
            return False, ErrorKind.EMPTY_RESPONSE, "the stream completed without any content"
        return True, None, None
