"""The record schema in Python: spec validation, JSONL writing and tolerant reading."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from cfexp.agents.records import (
    SCHEMA_VERSION,
    AgentSpec,
    CallRecord,
    DoneRecord,
    ErrorKind,
    ReadyRecord,
    RecordWriter,
    Spec,
    read_records,
)
from cfexp.errors import AgentError, ConfigError

GOOD: dict[str, Any] = {
    "schema_version": 1,
    "run_id": "run-1",
    "scenario": "multi_agent",
    "data_dir": "/data",
    "num_predict": 128,
    "call_timeout_s": 30,
    "defeat_prompt_cache": True,
    "agents": [
        {
            "name": f"agent_{i}",
            "persona": "DataCollector",
            "base_url": "http://127.0.0.1:11434",
            "api": "ollama",
            "model": "gemma3:270m",
            "options": {"num_gpu": 80, "num_ctx": 512, "temperature": 0.8, "seed": None},
            "instance": i,
            "api_key": "sk-secret",
        }
        for i in range(2)
    ],
}


def test_good_spec_round_trips() -> None:
    spec = Spec.from_dict(GOOD)
    assert spec.call_timeout_s == 30.0 and len(spec.agents) == 2
    assert spec.agents[0].options == {"num_gpu": 80, "num_ctx": 512, "temperature": 0.8}
    again = Spec.from_dict(spec.to_dict())
    assert again == spec
    assert "sk-secret" not in repr(spec)


def _bad(path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(GOOD)
    node: Any = spec
    *parents, last = path.split(".")
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return spec


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("schema_version", 2, "schema_version=2"),
        ("scenario", "chat", "scenario=chat"),
        ("num_predict", 0, "num_predict=0"),
        ("num_predict", True, "num_predict=True"),
        ("call_timeout_s", -1, "call_timeout_s=-1"),
        ("run_id", KeyError, "missing field <spec.run_id>"),
        ("agents", [], "<agents>"),
        ("extra", 1, "unknown field(s) in <spec>: extra"),
        ("runtime", "trio", "runtime='trio'"),
        ("agents.0.api", "grpc", "agents[0].api=grpc"),
        ("agents.0.base_url", "http://x/", "trailing slash"),
        ("agents.0.options", {"num_gpus": 1}, "agents[0].options.num_gpus"),
        ("agents.0.options", {"top_k": "40"}, "must be a number"),
        ("agents.1.name", "agent_0", "unique"),
        ("agents.0.api_key", 5, "agents[0].api_key> must be a string"),
    ],
)
def test_bad_spec_names_the_field(path: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Spec.from_dict(_bad(path, value))
    assert message in str(info.value)


def test_single_scenarios_take_one_agent() -> None:
    with pytest.raises(ConfigError, match="exactly one agent"):
        Spec.from_dict(_bad("scenario", "single_agent"))


def test_spec_load_reports_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Spec.load(path)


def _call_record() -> CallRecord:
    return CallRecord(
        run_id="r", agent="a", call_index=0, step="analysis", api="ollama",
        base_url="http://x", instance=0, model="m", options=None, prompt_chars=3,
        t_send_ns=1, error_kind=ErrorKind.TIMEOUT,
    )  # fmt: skip


def test_records_start_with_version_kind_run_id() -> None:
    record = _call_record().to_dict()
    assert list(record)[:3] == ["schema_version", "kind", "run_id"]
    assert record["schema_version"] == SCHEMA_VERSION and record["kind"] == "call"
    assert record["error_kind"] == "timeout"


def test_writer_and_reader_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    with RecordWriter(path) as writer:
        writer.write(
            ReadyRecord(
                run_id="r", language="python", runtime="asyncio", agent_version="0", t_ready_ns=5
            )
        )
        writer.write(_call_record())
        writer.write(DoneRecord(run_id="r", success=True, t_end_ns=9))
    log = read_records(path)
    records, truncated = log
    assert [r["kind"] for r in records] == ["ready", "call", "done"]
    assert not truncated and log.complete
    assert log.of_kind("call")[0]["text"] == ""


def test_truncated_last_line_is_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    ready = json.dumps(ReadyRecord("r", "python", "asyncio", "0", 5).to_dict())
    path.write_text(ready + "\n" + '{"schema_version":1,"kind":"call","run_id":"r","te')
    log = read_records(path)
    assert [r["kind"] for r in log.records] == ["ready"]
    assert log.truncated and not log.complete


def test_missing_file_means_no_records(tmp_path: Path) -> None:
    assert read_records(tmp_path / "absent.jsonl") == ([], False)


def test_bad_line_in_the_middle_raises(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text('garbage\n{"schema_version":1,"kind":"done","run_id":"r"}\n')
    with pytest.raises(AgentError, match="line=1"):
        read_records(path)


def test_other_schema_version_raises(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text('{"schema_version":2,"kind":"done","run_id":"r"}\n')
    with pytest.raises(AgentError, match="schema_version=2"):
        read_records(path)


def test_agent_spec_repr_hides_the_key() -> None:
    agent = AgentSpec("a", "default", "http://x", "openai", "m", None, 0, api_key="sk-xyz")
    assert "sk-xyz" not in repr(agent)
