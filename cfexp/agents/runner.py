"""Starts any agent process — Python or Rust — and measures it from outside.

The same measurement for every language, so nothing depends on an agent
reporting on itself honestly:

- startup: from just before ``exec`` (harness clock) to the agent's ``ready``
  record (same ``CLOCK_MONOTONIC``), i.e. process start to ready to send;
- peak RSS and CPU time: the kernel's ``rusage`` of the exited child
  (``os.wait4``), exact and free of sampling error.

While the agent runs, a watch function (the servers' liveness check) is called
a few times a second; if it raises, the agent is stopped and the error goes up.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfexp.childproc import die_with_parent, kill_group

log = logging.getLogger(__name__)

_WATCH_PERIOD_S = 0.2


@dataclass(frozen=True)
class AgentCommand:
    """How to start one agent variant."""

    argv_prefix: list[str]
    language: str
    runtime: str
    # What the run records about the binary (size, profile, rustc) — Rust only.
    build_info: dict[str, str]


@dataclass
class AgentProcessResult:
    """What the harness saw of the agent process."""

    exit_code: int | None
    signal: int | None
    timed_out: bool
    t_spawn_ns: int
    t_exit_ns: int
    peak_rss_mb: float
    cpu_user_ms: float
    cpu_sys_ms: float
    records_path: Path
    stdout_path: Path
    stderr_path: Path

    @property
    def wall_ms(self) -> float:
        return (self.t_exit_ns - self.t_spawn_ns) / 1e6

    @property
    def cpu_ms(self) -> float:
        return self.cpu_user_ms + self.cpu_sys_ms

    def stderr_tail(self, lines: int = 15) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def python_agent_command(runtime: str) -> AgentCommand:
    return AgentCommand(
        argv_prefix=[sys.executable, "-m", "cfexp.agents.python_agent", "--runtime", runtime],
        language="python",
        runtime=runtime,
        build_info={},
    )


def run_agent(
    command: AgentCommand,
    spec: dict[str, Any],
    job_dir: Path,
    timeout_s: float,
    watch: Callable[[], None] = lambda: None,
) -> AgentProcessResult:
    """Run the agent to completion (or timeout) and measure it."""
    job_dir.mkdir(parents=True, exist_ok=True)
    spec_path = job_dir / "agent_spec.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    records_path = job_dir / "records.raw.jsonl"
    stdout_path, stderr_path = job_dir / "agent.stdout.log", job_dir / "agent.stderr.log"
    argv = [*command.argv_prefix, "--spec", str(spec_path), "--out", str(records_path)]
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        t_spawn_ns = time.monotonic_ns()
        popen = subprocess.Popen(  # noqa: S603 - argv list, never a shell string
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )
    waited: dict[str, Any] = {}

    def reap() -> None:
        # wait4 gives the child's own rusage (peak RSS, CPU) when it exits.
        _, status, usage = os.wait4(popen.pid, 0)
        waited.update(status=status, usage=usage, t_exit_ns=time.monotonic_ns())

    reaper = threading.Thread(target=reap, name="agent-reaper", daemon=True)
    reaper.start()
    timed_out = False
    deadline = time.monotonic() + timeout_s
    try:
        while reaper.is_alive():
            reaper.join(_WATCH_PERIOD_S)
            if not reaper.is_alive():
                break
            watch()
            if time.monotonic() > deadline:
                log.error("agent exceeded timeouts.run_s=%s; stopping it", timeout_s)
                timed_out = True
                kill_group(popen.pid)
                reaper.join()
    except BaseException:
        kill_group(popen.pid)
        reaper.join()
        raise
    finally:
        popen.returncode = -1  # reaped by wait4; stops Popen from waiting or warning
    status, usage = waited["status"], waited["usage"]
    return AgentProcessResult(
        exit_code=os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        timed_out=timed_out,
        t_spawn_ns=t_spawn_ns,
        t_exit_ns=waited["t_exit_ns"],
        peak_rss_mb=usage.ru_maxrss / 1024.0,  # Linux reports kB
        cpu_user_ms=usage.ru_utime * 1000.0,
        cpu_sys_ms=usage.ru_stime * 1000.0,
        records_path=records_path,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
    )
