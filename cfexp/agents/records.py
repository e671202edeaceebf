"""The agent contract in Python: the spec the harness writes, the records agents write.

``docs/record-schema.md`` is the normative text; this module is its typed
mirror, used by the Python agent (writing) and by the harness (writing specs,
reading records). The Rust agent implements the same schema independently.

    Spec ──(harness writes spec.json)──▶ agent ──(RecordWriter)──▶ records.jsonl
    records.jsonl ──read_records()──▶ RecordLog ──▶ cfexp.metrics

Kept import-light on purpose (json, dataclasses, enum): the agent imports it
before its ``ready`` record, whose latency is measured.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, ClassVar, NamedTuple

from cfexp.errors import AgentError, ConfigError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

SCENARIOS = ("single_inference", "single_agent", "multi_agent")
APIS = ("ollama", "openai")
RUNTIMES = ("asyncio", "uvloop")
STEPS = ("single_inference", "analysis", "report")
# Model options an agent may send (Ollama names); anything else is a spec error,
# so a typo cannot silently become "server defaults".
OPTION_KEYS = ("num_gpu", "num_ctx", "temperature", "top_p", "top_k", "repeat_penalty", "seed")


class ErrorKind(StrEnum):
    """Why a call failed; the values are shared with the Rust agent."""

    CONNECT = "connect"
    TIMEOUT = "timeout"
    HTTP_STATUS = "http_status"
    MALFORMED_STREAM = "malformed_stream"
    STREAM_ERROR = "stream_error"
    INCOMPLETE_STREAM = "incomplete_stream"
    EMPTY_RESPONSE = "empty_response"


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class AgentSpec:
    """One concurrent agent of a job (``spec.agents[i]``)."""

    name: str
    persona: str
    base_url: str
    api: str
    model: str
    options: dict[str, Any] | None
    instance: int
    # repr=False: a logged or printed spec never shows the key.
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Spec:
    """What one agent process is asked to do (``spec.json``)."""

    run_id: str
    scenario: str
    data_dir: str
    num_predict: int
    call_timeout_s: float
    defeat_prompt_cache: bool
    agents: tuple[AgentSpec, ...]
    schema_version: int = SCHEMA_VERSION
    # Python agent only (asyncio | uvloop); other agents ignore it. The
    # command line's --runtime wins over it.
    runtime: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object the harness writes (with ``api_key`` as given)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["agents"] = [{f.name: getattr(a, f.name) for f in fields(a)} for a in self.agents]
        return out

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, raw: Any) -> Spec:
        """Validate a decoded spec; raises :class:`ConfigError` naming the bad field."""
        return _SpecReader(raw).read()

    @classmethod
    def load(cls, path: Path) -> Spec:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read the spec <path={path}>: {exc}") from exc
        except ValueError as exc:
            raise ConfigError(f"the spec is not valid JSON <path={path}>: {exc}") from exc
        return cls.from_dict(raw)


class _SpecReader:
    """Field-by-field validation with messages that show the bad value."""

    _TOP: ClassVar[frozenset[str]] = frozenset(
        {
            "schema_version",
            "run_id",
            "scenario",
            "data_dir",
            "num_predict",
            "call_timeout_s",
            "defeat_prompt_cache",
            "agents",
            "runtime",
        }
    )
    _AGENT: ClassVar[frozenset[str]] = frozenset(
        {"name", "persona", "base_url", "api", "model", "options", "instance", "api_key"}
    )

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def read(self) -> Spec:
        raw = self._object(self.raw, "spec")
        self._known(raw, self._TOP, "spec")
        version = self._get(raw, "schema_version", int, "spec")
        if version != SCHEMA_VERSION:
            raise ConfigError(
                f"unsupported <schema_version={version}>: this agent reads "
                f"{SCHEMA_VERSION}; rebuild the agent and the harness from one commit"
            )
        scenario = self._choice(raw, "scenario", SCENARIOS, "spec")
        num_predict = self._get(raw, "num_predict", int, "spec")
        if num_predict < 1:
            raise ConfigError(f"<num_predict={num_predict}> must be at least 1")
        timeout = self._get(raw, "call_timeout_s", (int, float), "spec")
        if not timeout > 0:
            raise ConfigError(f"<call_timeout_s={timeout}> must be positive")
        runtime = raw.get("runtime")
        if runtime is not None and runtime not in RUNTIMES:
            raise ConfigError(f"<runtime={runtime!r}> must be one of {', '.join(RUNTIMES)} or null")
        agents_raw = raw.get("agents")
        if not isinstance(agents_raw, list) or not agents_raw:
            raise ConfigError("<agents> must be a non-empty list of agent objects")
        agents = tuple(self._agent(a, f"agents[{i}]") for i, a in enumerate(agents_raw))
        if scenario != "multi_agent" and len(agents) != 1:
            raise ConfigError(
                f"<scenario={scenario}> runs exactly one agent, got {len(agents)}: "
                "use scenario multi_agent for several"
            )
        names = [a.name for a in agents]
        if len(set(names)) != len(names):
            raise ConfigError(f"agent names must be unique <names={names}>")
        return Spec(
            schema_version=version,
            run_id=self._get(raw, "run_id", str, "spec"),
            scenario=scenario,
            data_dir=self._get(raw, "data_dir", str, "spec"),
            num_predict=num_predict,
            call_timeout_s=float(timeout),
            defeat_prompt_cache=self._get(raw, "defeat_prompt_cache", bool, "spec"),
            agents=agents,
            runtime=runtime,
        )

    def _agent(self, raw: Any, where: str) -> AgentSpec:
        raw = self._object(raw, where)
        self._known(raw, self._AGENT, where)
        base_url = self._get(raw, "base_url", str, where)
        if not base_url.startswith(("http://", "https://")) or base_url.endswith("/"):
            raise ConfigError(
                f"<{where}.base_url={base_url}> must be an http(s) URL without a trailing slash"
            )
        options = raw.get("options")
        if options is not None:
            # A null value means "not set": the key is not sent.
            given = self._object(options, f"{where}.options")
            options = {key: value for key, value in given.items() if value is not None}
            for key, value in options.items():
                if key not in OPTION_KEYS:
                    raise ConfigError(
                        f"unknown model option <{where}.options.{key}>: "
                        f"allowed are {', '.join(OPTION_KEYS)}"
                    )
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ConfigError(f"<{where}.options.{key}={value!r}> must be a number")
        api_key = raw.get("api_key")
        if api_key is not None and not isinstance(api_key, str):
            # Never echo the value: it is a secret.
            raise ConfigError(f"<{where}.api_key> must be a string or null")
        return AgentSpec(
            name=self._get(raw, "name", str, where),
            persona=self._get(raw, "persona", str, where),
            base_url=base_url,
            api=self._choice(raw, "api", APIS, where),
            model=self._get(raw, "model", str, where),
            options=options,
            instance=self._get(raw, "instance", int, where),
            api_key=api_key,
        )

    @staticmethod
    def _object(value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ConfigError(f"<{where}> must be a JSON object, got {type(value).__name__}")
        return value

    @staticmethod
    def _known(raw: dict[str, Any], allowed: frozenset[str], where: str) -> None:
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise ConfigError(f"unknown field(s) in <{where}>: {', '.join(unknown)}")

    @staticmethod
    def _get(raw: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
        if key not in raw:
            raise ConfigError(f"missing field <{where}.{key}>")
        value = raw[key]
        # bool is an int in Python; a spec saying `"num_predict": true` is still wrong.
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            raise ConfigError(f"<{where}.{key}={value!r}> has the wrong type")
        return value

    def _choice(self, raw: dict[str, Any], key: str, allowed: tuple[str, ...], where: str) -> str:
        value = self._get(raw, key, str, where)
        if value not in allowed:
            raise ConfigError(f"<{where}.{key}={value}> must be one of {', '.join(allowed)}")
        return str(value)


# ------------------------------------------------------------------------ records


@dataclass
class _Record:
    """Base of every record: ``schema_version``, ``kind``, ``run_id`` come first."""

    kind: ClassVar[str]
    run_id: str

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "kind": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.value if isinstance(value, ErrorKind) else value
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
    t_send_ns: int
    success: bool = False
    error_kind: ErrorKind | None = None
    error: str | None = None
    http_status: int | None = None
    t_first_byte_ns: int | None = None
    t_first_token_ns: int | None = None
    t_last_token_ns: int | None = None
    t_end_ns: int = 0
    chunk_times_ns: list[int] = field(default_factory=list)
    content_chunks: int = 0
    output_tokens: int | None = None
    server_load_duration_ns: int | None = None
    server_prompt_eval_count: int | None = None
    server_prompt_eval_duration_ns: int | None = None
    server_eval_count: int | None = None
    server_eval_duration_ns: int | None = None
    server_total_duration_ns: int | None = None
    server_prompt_tokens: int | None = None
    server_completion_tokens: int | None = None
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

# Server counters a call record carries, in record order (shared with the parser).
SERVER_COUNTERS = (
    "server_load_duration_ns",
    "server_prompt_eval_count",
    "server_prompt_eval_duration_ns",
    "server_eval_count",
    "server_eval_duration_ns",
    "server_total_duration_ns",
    "server_prompt_tokens",
    "server_completion_tokens",
)


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
    """The records of one agent process, as decoded JSON objects.

    A tuple, so ``records, truncated = read_records(path)`` reads naturally.
    """

    records: list[dict[str, Any]]
    # The last line was cut short (the process was killed mid-write).
    truncated: bool = False

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == kind]

    @property
    def complete(self) -> bool:
        """True when the agent reached its ``done`` record and nothing was cut."""
        return bool(self.of_kind("done")) and not self.truncated


def read_records(path: Path) -> RecordLog:
    """Read an agent's JSONL records.

    A missing file gives no records (the agent stopped before writing any). A
    last line that is not valid JSON is a write cut short by a kill: it is
    reported as ``truncated`` (and logged), not raised. Any other bad line, or
    a record of another schema version, raises :class:`AgentError`: that is a
    bug in the agent, not a crash.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return RecordLog(records=[], truncated=False)
    except OSError as exc:
        raise AgentError(f"cannot read the agent's records <path={path}>: {exc}") from exc
    lines = data.split(b"\n")
    records: list[dict[str, Any]] = []
    truncated = False
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        is_last = number == len(lines)  # no newline after it
        try:
            record = json.loads(raw.decode("utf-8"))
            if not isinstance(record, dict) or "kind" not in record:
                raise ValueError("not a record object")
        except ValueError as exc:
            if is_last:
                log.warning(
                    "the agent's last record line was cut short <path=%s line=%d>: %.200r",
                    path, number, raw,
                )  # fmt: skip
                truncated = True
                break
            raise AgentError(
                f"bad record line <path={path} line={number}>: {exc}; "
                "the agent wrote something that is not a record"
            ) from exc
        version = record.get("schema_version")
        if version != SCHEMA_VERSION:
            raise AgentError(
                f"record of <schema_version={version}> at <path={path} line={number}>: "
                f"this cfexp reads {SCHEMA_VERSION}; rebuild the agent"
            )
        records.append(record)
    return RecordLog(records=records, truncated=truncated)
