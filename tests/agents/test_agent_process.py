"""The Python agent end to end: a real subprocess against a scripted loopback server.

Checks the contract from outside, as the harness sees it: record order
(ready first, done last), exit status, failures as call records, concurrency
of multi_agent, the nonce, and that the api_key never reaches the records.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cfexp.agents.records import (
    AgentRecord,
    CallRecord,
    DoneRecord,
    IngestRecord,
    ReadyRecord,
    Record,
    read_records,
)
from cfexp.agents.spec import SCHEMA_VERSION, nonce_text
from tests.agents.scripted_server import Reply, Script, ScriptedServer, ollama_reply, openai_reply

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = REPO / "cfexp" / "data"
ANALYSIS = (
    "## Key Findings\n- Full offload doubles throughput.\n- Context costs little.\n"
    "## Recommendations\n1. Use num_gpu 999.\n"
)
REPORT = "# Report\n## Summary\nThroughput and latency are fine.\n"
SECRET = "sk-very-secret-key"
SALT = "3f9a0c71d2be"

Start = Callable[[Script], ScriptedServer]


@dataclass
class AgentRun:
    exit_code: int
    records: list[Record]
    stderr: str
    raw: str

    def kinds(self) -> list[str]:
        return [r.kind for r in self.records]

    def calls(self) -> list[CallRecord]:
        return [r for r in self.records if isinstance(r, CallRecord)]

    def agents(self) -> dict[str, AgentRecord]:
        return {r.agent: r for r in self.records if isinstance(r, AgentRecord)}

    def done(self) -> DoneRecord:
        done = self.records[-1]
        assert isinstance(done, DoneRecord)
        return done


def make_spec(
    scenario: str, base_url: str, agents: int = 1, api: str = "ollama", **top: Any
) -> dict[str, Any]:
    personas = ["DataCollector", "InsightAgent"] if agents > 1 else ["default"]
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": "run-e2e",
        "scenario": scenario,
        "data_dir": str(DATA_DIR),
        "num_predict": 32,
        "call_timeout_s": 10,
        "cache_nonce": SALT,
        "agents": [
            {
                "name": f"agent_{i}",
                "persona": personas[i % len(personas)],
                "base_url": base_url,
                "api": api,
                "model": f"model-{i}",
                "options": {"num_ctx": 512, "temperature": 0.8},
                "instance": i,
                "api_key": SECRET if api == "openai" else None,
            }
            for i in range(agents)
        ],
        **top,
    }


def run_agent(tmp_path: Path, spec: dict[str, Any] | str, *args: str) -> AgentRun:
    spec_path, out = tmp_path / "spec.json", tmp_path / "records.jsonl"
    spec_path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cfexp.agents.python_agent",
            "--spec",
            str(spec_path),
            "--out",
            str(out),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    log = read_records(out)
    assert not log.truncated
    raw = out.read_text() if out.exists() else ""
    return AgentRun(proc.returncode, log.records, proc.stderr, raw)


def assert_envelope(run: AgentRun) -> None:
    """ready first, done last, one each; every record carries version and run_id."""
    kinds = run.kinds()
    assert kinds[0] == "ready" and kinds[-1] == "done"
    assert kinds.count("ready") == 1 and kinds.count("done") == 1
    assert all(r.run_id == "run-e2e" for r in run.records)
    assert all(json.loads(line)["schema_version"] == SCHEMA_VERSION for line in run.raw.split("\n") if line)
    ready = run.records[0]
    assert isinstance(ready, ReadyRecord) and ready.language == "python"
    assert all(c.t_send_ns > ready.t_ready_ns for c in run.calls())


def test_single_inference(tmp_path: Path, scripted_server: Start) -> None:
    server = scripted_server(
        lambda path, body: ollama_reply("Memory bandwidth limits decode.", chunk_delay_s=0.01)
    )
    run = run_agent(tmp_path, make_spec("single_inference", server.base_url))
    assert run.exit_code == 0, run.stderr
    assert_envelope(run)
    assert run.kinds() == ["ready", "call", "agent", "done"]
    call = run.calls()[0]
    assert call.success and call.step == "single_inference"
    assert call.text == "Memory bandwidth limits decode."
    assert (call.server_eval_count, call.content_chunks, call.server_prompt_eval_count) == (4, 4, 50)
    assert call.options == {"num_ctx": 512, "temperature": 0.8, "num_predict": 32}
    assert call.t_first_token_ns is not None and call.t_last_token_ns is not None
    assert call.t_send_ns < call.t_first_token_ns < call.t_last_token_ns <= call.t_end_ns
    assert run.done().success is True
    # The nonce starts the first message of the call, and the record says which.
    sent = server.requests[0]
    assert sent.path == "/api/chat"
    nonce = nonce_text(SALT, "agent_0", 0)
    assert sent.body["messages"][0]["content"].startswith(nonce)
    assert call.prompt_nonce == nonce
    assert call.prompt_chars == sum(len(m["content"]) for m in sent.body["messages"])


def test_single_agent_openai(tmp_path: Path, scripted_server: Start) -> None:
    def script(path: str, body: dict[str, Any]) -> Reply:
        first = body["messages"][0]["content"]
        return openai_reply(ANALYSIS if first.startswith(nonce_text(SALT, "agent_0", 0)) else REPORT)

    server = scripted_server(script)
    run = run_agent(tmp_path, make_spec("single_agent", server.base_url, api="openai"))
    assert run.exit_code == 0, run.stderr
    assert_envelope(run)
    assert run.kinds() == ["ready", "ingest", "call", "call", "agent", "done"]
    ingest = run.records[1]
    assert isinstance(ingest, IngestRecord)
    assert (ingest.files, ingest.files_by_type) == (20, {"csv": 2, "json": 11, "md": 7})
    analysis, report = run.calls()
    assert (analysis.step, analysis.call_index, report.step, report.call_index) == (
        "analysis", 0, "report", 1
    )  # fmt: skip
    assert analysis.server_completion_tokens == 4 and analysis.finish_reason == "stop"
    assert (analysis.prompt_nonce, report.prompt_nonce) == (
        nonce_text(SALT, "agent_0", 0), nonce_text(SALT, "agent_0", 1)
    )  # fmt: skip
    agent = run.agents()["agent_0"]
    assert agent.findings == ["Full offload doubles throughput.", "Context costs little."]
    assert agent.recommendations == ["Use num_gpu 999."]
    assert (agent.success, agent.calls) == (True, 2)
    # The analysis prompt carries the data summary; the report prompt the parsed items only.
    summary = (REPO / "tests/fixtures/workflow/data_summary.txt").read_text()
    analysis_prompt = "\n".join(m["content"] for m in server.requests[0].body["messages"])
    report_prompt = "\n".join(m["content"] for m in server.requests[1].body["messages"])
    assert summary in analysis_prompt and summary not in report_prompt
    assert "- Full offload doubles throughput." in report_prompt
    assert report_prompt.startswith(nonce_text(SALT, "agent_0", 1))
    # The key is sent, and never written down.
    assert all(r.headers["Authorization"] == f"Bearer {SECRET}" for r in server.requests)
    assert server.requests[0].body["max_tokens"] == 32
    assert SECRET not in run.raw and SECRET not in run.stderr


def test_multi_agent_runs_agents_concurrently(tmp_path: Path, scripted_server: Start) -> None:
    # Each call streams for ~0.4 s; serialised agents could not overlap.
    server = scripted_server(
        lambda path, body: ollama_reply(ANALYSIS, pieces=5, chunk_delay_s=0.08)
    )
    run = run_agent(tmp_path, make_spec("multi_agent", server.base_url, agents=2))
    assert run.exit_code == 0, run.stderr
    assert_envelope(run)
    assert run.kinds().count("ingest") == 2 and len(run.calls()) == 4
    first = {c.agent: c for c in run.calls() if c.call_index == 0}
    a, b = first["agent_0"], first["agent_1"]
    assert max(a.t_send_ns, b.t_send_ns) < min(a.t_end_ns, b.t_end_ns), "calls did not overlap"
    assert server.max_active == 2
    # Each agent's calls carry their own nonce: no two prompts start alike.
    nonces = [c.prompt_nonce for c in run.calls()]
    assert len(set(nonces)) == 4
    assert sorted(nonces) == sorted(nonce_text(SALT, c.agent, c.call_index) for c in run.calls())
    personas = {name: r.persona for name, r in run.agents().items()}
    assert personas == {"agent_0": "DataCollector", "agent_1": "InsightAgent"}


def test_one_failing_agent_does_not_stop_the_other(tmp_path: Path, scripted_server: Start) -> None:
    def script(path: str, body: dict[str, Any]) -> Reply:
        if body["model"] == "model-1":
            return Reply(status=500, chunks=[b"model crashed"], content_type="text/plain")
        return ollama_reply(ANALYSIS)

    server = scripted_server(script)
    run = run_agent(tmp_path, make_spec("multi_agent", server.base_url, agents=2))
    assert run.exit_code == 1
    agents = run.agents()
    assert agents["agent_0"].success and agents["agent_0"].calls == 2
    bad = agents["agent_1"]
    assert (bad.success, bad.error_kind, bad.calls) == (False, "http_status", 1)
    assert run.done().success is False


@pytest.mark.parametrize(
    ("reply", "error_kind"),
    [
        (Reply(status=500, chunks=[b"internal error"], content_type="text/plain"), "http_status"),
        (
            Reply(chunks=[b'{"message":{"content":"x"},"done":false}\n', b"<html>oops</html>\n"]),
            "malformed_stream",
        ),
        (
            Reply(chunks=[b'{"message":{"content":"x"},"done":false}\n'], drop_connection=True),
            "incomplete_stream",
        ),
        (Reply(chunks=[b'{"message":{"content":"x"},"done":false}\n']), "incomplete_stream"),
        (Reply(chunks=[b'{"error":"out of memory"}\n']), "stream_error"),
        (Reply(chunks=[b'{"message":{"content":""},"done":true}\n']), "empty_response"),
    ],
    ids=["http500", "malformed", "dropped", "no_final", "stream_error", "empty"],
)
def test_failing_server_gives_failed_call_records(
    tmp_path: Path, scripted_server: Start, reply: Reply, error_kind: str
) -> None:
    server = scripted_server(lambda path, body: reply)
    run = run_agent(tmp_path, make_spec("single_agent", server.base_url))
    assert run.exit_code == 1, run.stderr
    assert_envelope(run)
    # The workflow stops at the first failed call: no report call.
    assert run.kinds() == ["ready", "ingest", "call", "agent", "done"]
    call = run.calls()[0]
    assert (call.success, call.error_kind) == (False, error_kind)
    assert call.error
    agent = run.agents()["agent_0"]
    assert (agent.success, agent.error_kind) == (False, error_kind)
    if error_kind == "http_status":
        assert (call.http_status, call.error) == (500, "internal error")


def test_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = run_agent(tmp_path, make_spec("single_inference", f"http://127.0.0.1:{port}"))
    assert run.exit_code == 1
    call = run.calls()[0]
    assert (call.error_kind, call.http_status, call.t_first_byte_ns) == ("connect", None, None)


def test_call_timeout(tmp_path: Path, scripted_server: Start) -> None:
    # The reply would come after 10 s: the 0.5 s timeout fires long before, even on a busy machine.
    server = scripted_server(lambda path, body: ollama_reply("late", first_delay_s=10.0))
    run = run_agent(tmp_path, make_spec("single_inference", server.base_url, call_timeout_s=0.5))
    assert run.exit_code == 1
    call = run.calls()[0]
    assert call.error_kind == "timeout"
    assert 0.5e9 <= call.t_end_ns - call.t_start_ns < 8e9  # the timeout runs from the call's start


def test_uvloop_runtime(tmp_path: Path, scripted_server: Start) -> None:
    server = scripted_server(lambda path, body: ollama_reply("fast"))
    run = run_agent(tmp_path, make_spec("single_inference", server.base_url), "--runtime", "uvloop")
    assert run.exit_code == 0, run.stderr
    assert isinstance(run.records[0], ReadyRecord) and run.records[0].runtime == "uvloop"


def test_runtime_from_the_spec(tmp_path: Path, scripted_server: Start) -> None:
    server = scripted_server(lambda path, body: ollama_reply("fast"))
    run = run_agent(tmp_path, make_spec("single_inference", server.base_url, runtime="uvloop"))
    assert run.exit_code == 0, run.stderr
    assert isinstance(run.records[0], ReadyRecord) and run.records[0].runtime == "uvloop"


def test_without_a_salt_there_is_no_nonce(tmp_path: Path, scripted_server: Start) -> None:
    server = scripted_server(lambda path, body: ollama_reply("fast"))
    run = run_agent(tmp_path, make_spec("single_inference", server.base_url, cache_nonce=None))
    assert run.exit_code == 0, run.stderr
    (call,) = run.calls()
    assert call.prompt_nonce is None
    prompts = json.loads((DATA_DIR / "prompts.json").read_text())
    assert server.requests[0].body["messages"] == [
        {"role": "user", "content": prompts["single_inference"]["user"]}
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{not json", "not valid JSON"),
        (
            json.dumps({**make_spec("single_inference", "http://x"), "scenario": "chat"}),
            "scenario=chat",
        ),
        (
            json.dumps({**make_spec("single_inference", "http://x"), "schema_version": 1}),
            "schema_version=1",
        ),
        (
            json.dumps({**make_spec("single_inference", "http://x"), "cache_nonce": "no-dash"}),
            "cache_nonce='no-dash'",
        ),
        (
            json.dumps({**make_spec("single_inference", "http://x"), "data_dir": "/nonexistent"}),
            "cannot load data file",
        ),
        (
            json.dumps(
                make_spec("single_inference", "http://x")
                | {
                    "agents": [
                        {
                            **make_spec("single_inference", "http://x")["agents"][0],
                            "persona": "Nobody",
                        }
                    ]
                }
            ),
            "unknown persona",
        ),
    ],
    ids=["json", "scenario", "schema_version", "salt", "data_dir", "persona"],
)
def test_bad_spec_exits_2(tmp_path: Path, spec: str, message: str) -> None:
    run = run_agent(tmp_path, spec)
    assert run.exit_code == 2
    assert message in run.stderr
    assert run.records == []


def test_agent_imports_stay_light() -> None:
    """Start-up to ready is measured: the agent must not pull in the harness's heavy stack."""
    code = (
        "import sys; sys.modules.setdefault('httpx._main', None);"
        "import cfexp.agents.python_agent.main;"
        "heavy = {'pandas', 'numpy', 'mlflow', 'hydra', 'omegaconf', 'psutil', 'scipy', 'uvloop',"
        " 'click', 'rich', 'pygments'};"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
