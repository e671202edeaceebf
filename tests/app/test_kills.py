"""A server or an agent killed in the middle of a job: FAILED run, clear message, no orphan."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.app.test_e2e_sim import leftover_processes, run_cfexp, runs_of

pytestmark = pytest.mark.slow

# Slow enough (~4 s of decoding) that the job is surely mid-stream when we strike.
SLOW_SIM = (
    "backend=sim", "backend.settings.time_scale=1.0", "+backend.settings.decode_gpu_tok_s=20",
    "scenario=single_inference", "num_predict=80",
)


def kill_when_streaming(tmp_path: Path, needle: str, found: list[int]) -> None:
    """Wait until the agent is streaming, then SIGKILL the process whose command line has `needle`."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        streaming = any(tmp_path.glob("run/records.raw.jsonl"))
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if streaming and needle in cmdline and str(tmp_path) in cmdline:
                time.sleep(1.0)  # well into the stream
                os.kill(proc.pid, signal.SIGKILL)
                found.append(proc.pid)
                return
        time.sleep(0.05)


@pytest.mark.parametrize(
    "needle, message",
    [
        ("cfexp.serving", "exited with code -9 during the job"),
        ("cfexp.agents.python_agent", "killed by signal 9"),
    ],
)
def test_a_killed_process_fails_the_run_cleanly(tmp_path: Path, needle: str, message: str) -> None:
    killed: list[int] = []
    striker = threading.Thread(target=kill_when_streaming, args=(tmp_path, needle, killed))
    striker.start()
    done = run_cfexp(tmp_path, *SLOW_SIM, timeout=300)
    striker.join()
    assert killed, "the process to kill was never seen"
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr
    (run,) = runs_of(tmp_path)
    assert run.info.status == "FAILED"
    if needle == "cfexp.serving":
        assert "instance=0" in done.stderr  # names the instance, its URL and pid
    assert leftover_processes(tmp_path) == []
