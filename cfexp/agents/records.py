"""The agent contract's output: the records agents write (docs/record-schema.md §2–3).

The typed mirror of the normative text, used by the Python agent (writing with
:class:`RecordWriter`) and by the harness (reading back with
:func:`read_records`, which gives the same types). The Rust agent implements the
same schema (``rust/cfexp-agent/src/records.rs``); the shared golden fixtures
in ``tests/fixtures/`` hold both to it.

    spec.json ──▶ agent ──(RecordWriter)──▶ records.jsonl
    records.jsonl ──read_records()──▶ RecordLog[Record] ──▶ cfexp.metrics

Records hold raw facts only (clock readings, the server's own counters,
texts); every metric is derived from them by ``cfexp.metrics``.

Kept import-light on purpose (json, dataclasses, enum): the agent imports it
before its ``ready`` record, whose latency is measured.
"""

from __future__ import annotations

import json
import logging
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, ClassVar, NamedTuple, TypeVar, get_type_hints

from cfexp.agents.spec import SCHEMA_VERSION
from cfexp.errors import AgentError

log = logging.getLogger(__name__)


class ErrorKind(StrEnum):
    """Why a call failed; the values are shared with the Rust agent."""

    CONNECT = "connect"
    TIMEOUT = "timeout"
    HTTP_STATUS = "http_status"
    MALFORMED_STREAM = "malformed_stream"
    STREAM_ERROR = "stream_error"
    INCOMPLETE_STREAM = "incomplete_stream"
    EMPTY_RESPONSE = "empty_response"


@dataclass
class _Record:
    """Base of every record: ``schema_version``, ``kind``, ``run_id`` come first."""

    kind: ClassVar[str]
    run_id: str

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "kind": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.value if isinstance(value, StrEnum) else value
        return out


@dataclass
class ReadyRecord(_Record):
    kind: ClassVar[str] = "ready"
    language: str
    runtime: str
    agent_version: str
    t_ready_ns: int


@dataclass
class IngestRecord(_Record):
    kind: ClassVar[str] = "ingest"
    agent: str
    files: int
    bytes: int
    files_by_type: dict[str, int]
    t_start_ns: int
    t_end_ns: int


@dataclass
class CallRecord(_Record):
    """One LLM call, successful or not (docs/record-schema.md section 3)."""

    kind: ClassVar[str] = "call"
    agent: str
    call_index: int
    step: str
    api: str
    base_url: str
    instance: int
    model: str
    options: dict[str, Any] | None
    prompt_chars: int
    # The cache-defeating prefix put before the first message; None = none.
    prompt_nonce: str | None
    # Field order is the line's key order, which the Rust agent writes alike
    # (docs/record-schema.md section 3): the outcome, then the clock readings.
    success: bool = False
    error_kind: ErrorKind | None = None
    error: str | None = None
    http_status: int | None = None
    # The call began (request built, handed to the HTTP client); its timeout runs from here.
    t_start_ns: int = 0
    # The TCP connection this call opened: connect begun / established. Both
    # None when the call went out on a kept-alive connection; the end None when
    # the connect failed.
    t_connect_start_ns: int | None = None
    t_connect_end_ns: int | None = None
    # Just before the request's first byte was written on the established
    # connection; None when it never was (the connection failed first).
    t_send_ns: int | None = None
    t_first_byte_ns: int | None = None
    t_first_token_ns: int | None = None
    t_last_token_ns: int | None = None
    t_end_ns: int = 0
    chunk_times_ns: list[int] = field(default_factory=list)
    content_chunks: int = 0
    # The server's own counters, as it sent them (names: docs/record-schema.md).
    server_load_duration_ns: int | None = None
    server_prompt_eval_count: int | None = None
    server_prompt_eval_duration_ns: int | None = None
    server_eval_count: int | None = None
    server_eval_duration_ns: int | None = None
    server_total_duration_ns: int | None = None
    server_prompt_tokens: int | None = None
    server_completion_tokens: int | None = None
    server_cached_tokens: int | None = None
    server_timings_prompt_n: int | None = None
    server_timings_cache_n: int | None = None
    server_timings_prompt_ms: float | None = None
    server_timings_predicted_n: int | None = None
    server_timings_predicted_ms: float | None = None
    server_prompt_truncated_tokens: int | None = None
    finish_reason: str | None = None
    text: str = ""


@dataclass
class AgentRecord(_Record):
    kind: ClassVar[str] = "agent"
    agent: str
    persona: str
    instance: int
    success: bool
    error_kind: ErrorKind | None
    error: str | None
    t_start_ns: int
    t_end_ns: int
    findings: list[str]
    recommendations: list[str]
    calls: int


@dataclass
class DoneRecord(_Record):
    kind: ClassVar[str] = "done"
    success: bool
    t_end_ns: int


Record = ReadyRecord | IngestRecord | CallRecord | AgentRecord | DoneRecord
RECORD_TYPES: dict[str, type[Record]] = {
    cls.kind: cls for cls in (ReadyRecord, IngestRecord, CallRecord, AgentRecord, DoneRecord)
}

# The server's whole-number counters of a call record, in record order (the
# stream parsers fill them; a value that is not a JSON integer is dropped).
SERVER_COUNTERS = (
    "server_load_duration_ns",
    "server_prompt_eval_count",
    "server_prompt_eval_duration_ns",
    "server_eval_count",
    "server_eval_duration_ns",
    "server_total_duration_ns",
    "server_prompt_tokens",
    "server_completion_tokens",
    "server_cached_tokens",
    "server_timings_prompt_n",
    "server_timings_cache_n",
    "server_timings_predicted_n",
    "server_prompt_truncated_tokens",
)
# ...and its millisecond readings (JSON numbers, from llama.cpp's `timings`).
SERVER_MILLISECONDS = ("server_timings_prompt_ms", "server_timings_predicted_ms")


# ---------------------------------------------------------------- typed reading

_R = TypeVar("_R", ReadyRecord, IngestRecord, CallRecord, AgentRecord, DoneRecord)
# Any record type, or a union of them (what RECORD_TYPES maps a kind to).
_AnyRecord = TypeVar("_AnyRecord", bound=_Record)


def _accepts(hint: Any, value: Any) -> bool:
    """Whether a decoded JSON value fits a field's annotation (shallowly)."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_accepts(arg, value) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        return value in {member.value for member in hint}
    if hint is float:  # JSON has one number type
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    base = origin or hint
    return isinstance(value, base)


def _decode(cls: type[_AnyRecord], raw: dict[str, Any], where: str) -> _AnyRecord:
    """A record of type ``cls`` from its JSON object; AgentError when it does not fit the schema."""
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)} | {"schema_version", "kind"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise AgentError(f"unknown field(s) {', '.join(unknown)} in a {cls.kind} record at {where}")
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in raw:
            if f.default is MISSING and f.default_factory is MISSING:
                raise AgentError(f"missing field {f.name!r} in a {cls.kind} record at {where}")
            continue
        value = raw[f.name]
        hint = hints[f.name]
        if not _accepts(hint, value):
            raise AgentError(f"<{f.name}={value!r}> has the wrong type in a {cls.kind} record at {where}")
        if f.name == "error_kind" and value is not None:
            value = ErrorKind(value)
        elif type(value) is int and _is_float(hint):
            value = float(value)  # a float field holds a float, however the line spelled it
        values[f.name] = value
    return cls(**values)


def _is_float(hint: Any) -> bool:
    """``float`` or ``float | None``: a field whose JSON integers are read as floats."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (types.UnionType, typing.Union) else (hint,)
    return float in args and int not in args


def record_from_dict(raw: dict[str, Any], where: str = "?") -> Record:
    """The typed record of a decoded JSON line (raises AgentError for a bad one)."""
    kind = raw.get("kind")
    cls = RECORD_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise AgentError(f"unknown record <kind={kind!r}> at {where}")
    return _decode(cls, raw, where)


# ---------------------------------------------------------------------- JSONL I/O


class RecordWriter:
    """Appends records as JSON lines, flushing each, so a crash keeps what was written."""

    def __init__(self, path: Path) -> None:
        self._file: IO[str] = path.open("w", encoding="utf-8")

    def write(self, record: Record) -> None:
        # One write() per line, newline included: a kill leaves at most one partial line.
        line = json.dumps(record.to_dict(), ensure_ascii=False, separators=(",", ":"))
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordLog(NamedTuple):
    """The records of one agent process, typed, in the order they were written.

    A tuple, so ``records, truncated = read_records(path)`` reads naturally.
    """

    records: list[Record]
    # The last line was cut short (the process was killed mid-write).
    truncated: bool = False

    def of_kind(self, cls: type[_R]) -> list[_R]:
        return [r for r in self.records if isinstance(r, cls)]

    @property
    def calls(self) -> list[CallRecord]:
        return self.of_kind(CallRecord)

    @property
    def ready(self) -> ReadyRecord | None:
        return next(iter(self.of_kind(ReadyRecord)), None)

    @property
    def done(self) -> DoneRecord | None:
        return next(iter(self.of_kind(DoneRecord)), None)

    @property
    def complete(self) -> bool:
        """True when the agent reached its ``done`` record and nothing was cut."""
        return self.done is not None and not self.truncated


def read_records(path: Path) -> RecordLog:
    """Read an agent's JSONL records as typed records.

    A missing file gives no records (the agent stopped before writing any). A
    last line that is not valid JSON is a write cut short by a kill: it is
    reported as ``truncated`` (and logged), not raised. Any other bad line, a
    record that does not fit the schema, or a record of another schema version
    raises :class:`AgentError`: that is a bug in the agent, not a crash.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return RecordLog(records=[], truncated=False)
    except OSError as exc:
        raise AgentError(f"cannot read the agent's records <path={path}>: {exc}") from exc
    lines = data.split(b"\n")
    records: list[Record] = []
    truncated = False
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        is_last = number == len(lines)  # no newline after it
        where = f"<path={path} line={number}>"
        try:
            decoded = json.loads(raw.decode("utf-8"))
            if not isinstance(decoded, dict) or "kind" not in decoded:
                raise ValueError("not a record object")
        except ValueError as exc:
            if is_last:
                log.warning("the agent's last record line was cut short %s: %.200r", where, raw)
                truncated = True
                break
            raise AgentError(
                f"bad record line {where}: {exc}; the agent wrote something that is not a record"
            ) from exc
        version = decoded.get("schema_version")
        if version != SCHEMA_VERSION:
            raise AgentError(
                f"record of <schema_version={version}> at {where}: "
                f"this cfexp reads {SCHEMA_VERSION}; rebuild the agent"
            )
        records.append(record_from_dict(decoded, where))
    return RecordLog(records=records, truncated=truncated)
