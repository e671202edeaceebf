"""The harness measures any agent process from outside, the same way."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import psutil

from cfexp.agents.runner import AgentCommand, run_agent
from cfexp.errors import ServerDiedError

# A stand-in agent: writes a ready record, holds ~80 MB, burns some CPU, exits 0.
FAKE_AGENT = r"""
import json, sys, time
out = sys.argv[sys.argv.index("--out") + 1]
with open(out, "w") as f:
    f.write(json.dumps({"schema_version": 1, "kind": "ready", "run_id": "r", "t_ready_ns": time.monotonic_ns()}) + "\n")
    f.flush()
    block = bytearray(80 * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    time.sleep(float(sys.argv[1]))
    f.write(json.dumps({"schema_version": 1, "kind": "done", "run_id": "r", "success": True, "t_end_ns": time.monotonic_ns()}) + "\n")
"""


def fake_agent(sleep_s: float) -> AgentCommand:
    return AgentCommand([sys.executable, "-c", FAKE_AGENT, str(sleep_s)], "python", "asyncio", {})


def test_rusage_and_startup_are_measured_from_outside(tmp_path: Path) -> None:
    result = run_agent(fake_agent(0.0), {"run_id": "r"}, tmp_path, timeout_s=60)
    assert result.exit_code == 0 and not result.timed_out
    assert result.peak_rss_mb is not None and result.peak_rss_mb >= 80  # the kernel saw the 80 MB block
    assert result.cpu_ms is not None and result.cpu_ms >= 150  # ~200 ms of busy loop
    ready = json.loads(result.records_path.read_text().splitlines()[0])
    startup_ns = ready["t_ready_ns"] - result.t_spawn_ns
    assert 0 < startup_ns < (result.t_exit_ns - result.t_spawn_ns)
    assert json.loads((tmp_path / "agent_spec.json").read_text()) == {"run_id": "r"}


def test_a_run_timeout_kills_the_agent(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_agent(fake_agent(30.0), {}, tmp_path, timeout_s=1.5)
    assert result.timed_out and result.signal is not None
    assert time.monotonic() - started < 10


def test_a_failing_watch_stops_the_agent_and_says_why(tmp_path: Path) -> None:
    """The agent is stopped, and the result still comes back (its records are read and kept)."""
    calls = []

    def watch() -> None:
        calls.append(1)
        if len(calls) > 3:
            raise ServerDiedError("server <instance=0> exited")

    result = run_agent(fake_agent(30.0), {}, tmp_path, timeout_s=60, watch=watch)
    assert isinstance(result.stopped_by, ServerDiedError) and not result.timed_out
    assert result.records_path.exists()
    spec_users = [
        p for p in psutil.process_iter(["cmdline"]) if FAKE_AGENT[:40] in " ".join(p.info["cmdline"] or [])
    ]
    assert spec_users == []  # the agent is gone


def test_the_exit_of_a_child_is_seen_at_once_and_a_running_one_times_out() -> None:
    """The agent's exit wakes the harness (a pidfd) instead of a poll that sleeps up to 50 ms."""
    import subprocess
    import sys

    from cfexp.agents.runner import _ExitWaiter

    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    waiter = _ExitWaiter(running)
    try:
        assert waiter(0.05) is False
    finally:
        running.kill()
    assert waiter(5.0) is True and running.returncode is not None
    waiter.close()
