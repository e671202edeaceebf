"""Both agents against the simulator's injected faults: each faulty call is a record.

The Python agent and two Rust agents (tokio's and smol's HTTP stacks) run a
multi_agent workflow against a real `python -m cfexp.serving` whose every
second generation request is spoiled. Exactly one agent meets the fault: its
call is recorded as failed with the error kind the contract names
(docs/record-schema.md), and the other agent goes on to finish its workflow.
A hung reply is ended by the agent's own call timeout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cfexp.agents import rust_build
from cfexp.agents.records import AgentRecord, read_records
from cfexp.agents.spec import SCHEMA_VERSION
from tests.serving.serving_helpers import SIM_MODEL, Server, start_server

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CALL_TIMEOUT_S = 2.0

# (faults of every second request, api, the error kind the faulty call gets)
FAULTS = {
    "http_500": ({"fail_status": 500}, "ollama", "http_status"),
    "http_503": ({"fail_status": 503}, "openai", "http_status"),
    "drop_after_3": ({"drop_after_tokens": 3}, "ollama", "incomplete_stream"),
    "malformed_ndjson": ({"malformed_after_tokens": 2}, "ollama", "malformed_stream"),
    "malformed_sse": ({"malformed_after_tokens": 0}, "openai", "malformed_stream"),
    "hang_after_2": ({"hang_after_tokens": 2}, "ollama", "timeout"),
    "hang_at_once": ({"hang_after_tokens": 0}, "openai", "timeout"),
}
AGENTS = ["python", "tokio", "smol"]
# What the server's ground truth says of the faulty request.
SERVER_OUTCOME = {
    "http_500": "fault_status", "http_503": "fault_status", "drop_after_3": "fault_drop",
    "malformed_ndjson": "fault_malformed", "malformed_sse": "fault_malformed",
    "hang_after_2": "fault_hang", "hang_at_once": "fault_hang",
}


def agent_argv(agent: str) -> list[str]:
    if agent == "python":
        return [sys.executable, "-m", "cfexp.agents.python_agent"]
    return [str(rust_build.ensure_built(agent))]


def start_faulty_server(fault: str, directory: Path) -> Server:
    faults, _, _ = FAULTS[fault]
    # Every second generation request: of the two concurrent analysis calls, exactly one.
    every_second = {key.replace("after_tokens", "every_n").replace("status", "every_n"): 2 for key in faults}
    # Calls long enough (tens of ms) that both agents' analysis calls reach the
    # server before either's report: an agent sends its report at once over its
    # kept-alive connection, and at 1/1000 of model time it could do so before
    # the other agent's first request (connect, the server's accept and thread
    # start) had arrived, making the report the second request.
    settings = {"time_scale": 0.02, "jitter_cv": 0.0, "slots": 2, "faults": {**faults, **every_second}}
    return start_server("sim", settings, directory)


def spec_for(base_url: str, api: str) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": "run-faults",
        "scenario": "multi_agent",
        "data_dir": str(REPO / "cfexp" / "data"),
        "num_predict": 8,
        "call_timeout_s": CALL_TIMEOUT_S,
        "cache_nonce": None,
        "agents": [
            {"name": f"agent_{i}", "persona": persona, "base_url": base_url, "api": api, "model": SIM_MODEL,
             "options": None, "instance": 0, "api_key": None}
            for i, persona in enumerate(["DataCollector", "InsightAgent"])
        ],
    }


@pytest.mark.parametrize("agent", AGENTS)
@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_faulty_call_is_recorded_and_the_other_agent_goes_on(fault: str, agent: str, tmp_path: Path) -> None:
    _, api, error_kind = FAULTS[fault]
    argv = agent_argv(agent)
    server = start_faulty_server(fault, tmp_path / "server")
    try:
        spec_path, out = tmp_path / "spec.json", tmp_path / "records.jsonl"
        spec_path.write_text(json.dumps(spec_for(server.url, api)))
        done = subprocess.run(
            [*argv, "--spec", str(spec_path), "--out", str(out)],
            capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
        )
        ground_truth = server.wait_ground_truth(3)
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]
    assert done.returncode == 1, done.stderr[-2000:]  # a call failed; the records are complete
    log = read_records(out)
    assert not log.truncated
    kinds = [r.kind for r in log.records]
    assert kinds[0] == "ready" and kinds[-1] == "done"
    (bad,) = [c for c in log.calls if not c.success]
    assert bad.error_kind == error_kind and bad.error, bad
    if error_kind == "http_status":
        assert bad.http_status == FAULTS[fault][0]["fail_status"]
    if fault == "hang_after_2":  # the two chunks sent before the silence are kept
        assert bad.content_chunks == 2 and bad.text
    outcomes = sorted((a.success, a.error_kind, a.calls) for a in log.of_kind(AgentRecord))
    assert outcomes == [(False, error_kind, 1), (True, None, 2)]
    # The server saw the fault it injected, and the other two requests served whole.
    assert sorted(r["outcome"] for r in ground_truth) == sorted(["ok", "ok", SERVER_OUTCOME[fault]])
