"""The agent contract's output: records written as JSONL, read back as their types.

``tests/fixtures/records/records.jsonl`` is shared with the Rust agent
(``rust/cfexp-agent/tests/records.rs``): both must write exactly its bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cfexp.agents.records import (
    SCHEMA_VERSION,
    SERVER_COUNTERS,
    SERVER_MILLISECONDS,
    AgentRecord,
    CallRecord,
    DoneRecord,
    ErrorKind,
    IngestRecord,
    ReadyRecord,
    Record,
    RecordWriter,
    read_records,
    record_from_dict,
)
from cfexp.errors import AgentError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "records" / "records.jsonl"

# The call record's keys, in the order both agents write them (docs/record-schema.md §3).
CALL_FIELDS = [
    "agent", "call_index", "step", "api", "base_url", "instance", "model", "options",
    "prompt_chars", "prompt_nonce", "success", "error_kind", "error", "http_status",
    "t_start_ns", "t_connect_start_ns", "t_connect_end_ns", "t_send_ns", "t_first_byte_ns", "t_first_token_ns", "t_last_token_ns", "t_end_ns",
    "chunk_times_ns", "content_chunks",
    "server_load_duration_ns", "server_prompt_eval_count", "server_prompt_eval_duration_ns",
    "server_eval_count", "server_eval_duration_ns", "server_total_duration_ns",
    "server_prompt_tokens", "server_completion_tokens", "server_cached_tokens",
    "server_timings_prompt_n", "server_timings_cache_n", "server_timings_prompt_ms",
    "server_timings_predicted_n", "server_timings_predicted_ms", "server_prompt_truncated_tokens",
    "finish_reason", "text",
]  # fmt: skip


def _call_record(**changes: object) -> CallRecord:
    fields = dict(
        run_id="r", agent="agent_0", call_index=0, step="analysis", api="ollama",
        base_url="http://x", instance=0, model="m", options=None, prompt_chars=3,
        prompt_nonce=None, t_send_ns=1, error_kind=ErrorKind.TIMEOUT,
    )  # fmt: skip
    fields.update(changes)
    return CallRecord(**fields)  # type: ignore[arg-type]


def _line(record: dict[str, object]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def test_call_record_lists_every_field_in_the_documented_order() -> None:
    record = _call_record().to_dict()
    assert list(record) == ["schema_version", "kind", "run_id", *CALL_FIELDS]
    assert record["schema_version"] == SCHEMA_VERSION == 3 and record["kind"] == "call"
    assert record["error_kind"] == "timeout"
    assert "output_tokens" not in record  # derived by cfexp.metrics, never agent-emitted
    counters = [f for f in CALL_FIELDS if f in SERVER_COUNTERS or f in SERVER_MILLISECONDS]
    assert counters == [f for f in CALL_FIELDS if f.startswith("server_")]


def test_golden_record_lines_are_written_byte_for_byte(tmp_path: Path) -> None:
    """Each fixture line, read as its type and written again, gives the same bytes (Rust: the same)."""
    # Split at "\n" only: str.splitlines() would also split the U+2028 inside a text.
    lines = FIXTURE.read_text(encoding="utf-8").removesuffix("\n").split("\n")
    records = [record_from_dict(json.loads(line), f"line {i}") for i, line in enumerate(lines, 1)]
    assert {r.kind for r in records} == {"ready", "ingest", "call", "agent", "done"}
    out = tmp_path / "records.jsonl"
    with RecordWriter(out) as writer:
        for record in records:
            writer.write(record)
    assert out.read_bytes() == FIXTURE.read_bytes()


def test_writer_and_reader_round_trip_typed_records(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    call = _call_record(
        options={"num_ctx": 512, "temperature": 0.8},
        prompt_nonce="Request 3f9a0c71d2be-0-0.\n",
        server_timings_prompt_n=14,
        server_timings_prompt_ms=35.125,
        text="café",
    )
    written: list[Record] = [
        ReadyRecord(run_id="r", language="python", runtime="asyncio", agent_version="0", t_ready_ns=5),
        IngestRecord("r", "agent_0", 2, 10, {"csv": 1, "json": 1, "md": 0}, 6, 7),
        call,
        AgentRecord("r", "agent_0", "default", 0, False, ErrorKind.TIMEOUT, "late", 5, 9, [], [], 1),
        DoneRecord(run_id="r", success=True, t_end_ns=9),
    ]
    with RecordWriter(path) as writer:
        for record in written:
            writer.write(record)
    log = read_records(path)
    records, truncated = log
    assert records == written and not truncated and log.complete
    assert [type(r) for r in records] == [type(r) for r in written]
    assert log.calls == [call] and log.ready == written[0] and log.done == written[-1]
    read_call = log.calls[0]
    assert read_call.error_kind is ErrorKind.TIMEOUT
    assert read_call.prompt_nonce == "Request 3f9a0c71d2be-0-0.\n"
    assert log.of_kind(AgentRecord)[0].error_kind is ErrorKind.TIMEOUT


def test_an_integer_millisecond_reading_is_read_as_a_float(tmp_path: Path) -> None:
    record = _call_record().to_dict() | {"server_timings_predicted_ms": 600}
    path = tmp_path / "records.jsonl"
    path.write_text(_line(record) + "\n")
    (call,) = read_records(path).calls
    assert call.server_timings_predicted_ms == 600.0
    assert type(call.server_timings_predicted_ms) is float


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"output_tokens": 4}, "unknown field(s) output_tokens in a call record"),
        ({"surprise": 1, "another": 2}, "unknown field(s) another, surprise in a call record"),
        ({"call_index": "0"}, "<call_index='0'> has the wrong type in a call record"),
        ({"success": 1}, "<success=1> has the wrong type"),
        ({"t_send_ns": True}, "<t_send_ns=True> has the wrong type"),
        ({"server_timings_prompt_n": 14.0}, "<server_timings_prompt_n=14.0> has the wrong type"),
        ({"server_timings_prompt_ms": "35"}, "<server_timings_prompt_ms='35'> has the wrong type"),
        ({"prompt_nonce": 7}, "<prompt_nonce=7> has the wrong type"),
        ({"error_kind": "gone"}, "<error_kind='gone'> has the wrong type"),
        ({"chunk_times_ns": {}}, "<chunk_times_ns={}> has the wrong type"),
        ({"kind": "chat"}, "unknown record <kind='chat'>"),
    ],
)
def test_a_record_that_does_not_fit_the_schema_raises_naming_the_field(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text(_line(_call_record().to_dict() | change) + "\n" + _line(DoneRecord("r", True, 9).to_dict()) + "\n")
    with pytest.raises(AgentError) as info:
        read_records(path)
    assert message in str(info.value)
    assert "line=1" in str(info.value)


def test_a_missing_required_field_raises(tmp_path: Path) -> None:
    record = _call_record().to_dict()
    del record["agent"]
    path = tmp_path / "records.jsonl"
    path.write_text(_line(record) + "\n")
    with pytest.raises(AgentError, match="missing field 'agent' in a call record"):
        read_records(path)


def test_truncated_last_line_is_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    ready = _line(ReadyRecord("r", "python", "asyncio", "0", 5).to_dict())
    call = _line(_call_record().to_dict())
    path.write_text(ready + "\n" + call[: len(call) // 2])  # killed mid-write
    log = read_records(path)
    assert [r.kind for r in log.records] == ["ready"]
    assert log.truncated and not log.complete and log.done is None


def test_missing_file_means_no_records(tmp_path: Path) -> None:
    assert read_records(tmp_path / "absent.jsonl") == ([], False)


def test_bad_line_in_the_middle_raises(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text('garbage\n{"schema_version":3,"kind":"done","run_id":"r","success":true,"t_end_ns":1}\n')
    with pytest.raises(AgentError, match="line=1"):
        read_records(path)


def test_other_schema_version_raises(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text('{"schema_version":1,"kind":"done","run_id":"r","success":true,"t_end_ns":1}\n')
    with pytest.raises(AgentError, match="schema_version=1"):
        read_records(path)
