"""Starts any agent process — Python or Rust — and measures it from outside.

The same measurement for every language, so nothing depends on an agent
reporting on itself honestly:

- startup: from just before ``exec`` to the agent's ``ready`` record (both
  ``CLOCK_MONOTONIC``), i.e. process start to ready to send;
- peak RSS and CPU time: the kernel's ``rusage`` of the exited agent
  (``wait4``), exact and free of sampling error.

The agent is started through ``cfexp-launch`` (``launcher.c``, compiled with
the system C compiler on first use): the kernel counts a child's peak RSS from
the memory image it was forked from, so an agent forked straight from cfexp's
Python process would "peak" at cfexp's own 200+ MB. Forked from the ~1 MB
launcher, its figure is its own. Without a C compiler the agent is started
directly and its peak RSS is not reported (never a wrong number).

While the agent runs, a watch function (the servers' liveness check) is called
a few times a second; if it raises, the agent is stopped and the error goes up.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfexp.agents.spec import Spec
from cfexp.childproc import kill_group, launcher_path
from cfexp.errors import CfexpError

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
    # None when it could not be measured without inflation (no C compiler).
    peak_rss_mb: float | None
    cpu_user_ms: float | None
    cpu_sys_ms: float | None
    records_path: Path
    stdout_path: Path
    stderr_path: Path
    # Why the harness stopped the agent before it ended (the watch raised), else None.
    stopped_by: CfexpError | None = None

    @property
    def wall_ms(self) -> float:
        return (self.t_exit_ns - self.t_spawn_ns) / 1e6

    @property
    def cpu_ms(self) -> float | None:
        if self.cpu_user_ms is None or self.cpu_sys_ms is None:
            return None
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
    spec: Spec | dict[str, Any],
    job_dir: Path,
    timeout_s: float,
    watch: Callable[[], None] = lambda: None,
    on_spawn: Callable[[int], None] = lambda pid: None,
) -> AgentProcessResult:
    """Run the agent to completion (or timeout) and measure it.

    ``on_spawn`` gets the pid of the started process (the launcher, whose
    child is the agent), e.g. for a system-metrics sampler.
    """
    job_dir.mkdir(parents=True, exist_ok=True)
    spec_path = job_dir / "agent_spec.json"
    if isinstance(spec, Spec):
        spec.write(spec_path)
    else:  # tests give stand-ins, e.g. a spec the agent must refuse
        spec_path.write_text(json.dumps(spec, indent=2))
    records_path = job_dir / "records.raw.jsonl"
    usage_path = job_dir / "agent_rusage.json"
    usage_path.unlink(missing_ok=True)
    stdout_path, stderr_path = job_dir / "agent.stdout.log", job_dir / "agent.stderr.log"
    argv = [*command.argv_prefix, "--spec", str(spec_path), "--out", str(records_path)]
    launcher = launcher_path()
    if launcher is not None:
        argv = [str(launcher), str(usage_path), *argv]
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        t_spawn_ns = time.monotonic_ns()
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    on_spawn(popen.pid)
    timed_out = False
    stopped_by: CfexpError | None = None
    deadline = time.monotonic() + timeout_s
    exited = _ExitWaiter(popen)
    try:
        while True:
            if exited(_WATCH_PERIOD_S):
                break
            try:
                watch()
            except CfexpError as exc:
                stopped_by = exc
                kill_group(popen.pid)
                popen.wait()
                break
            if time.monotonic() > deadline:
                log.error("agent exceeded timeouts.run_s=%s; stopping it", timeout_s)
                timed_out = True
                kill_group(popen.pid)
                popen.wait()
                break
    except BaseException:
        kill_group(popen.pid)
        popen.wait()
        raise
    finally:
        exited.close()
    t_exit_ns = time.monotonic_ns()
    result = _result(
        popen, launcher is not None, usage_path, timed_out, t_spawn_ns, t_exit_ns,
        records_path, stdout_path, stderr_path,
    )
    result.stopped_by = stopped_by
    return result


class _ExitWaiter:
    """Waits until a child exits, or a timeout passes; True when it exited (and is reaped).

    ``Popen.wait(timeout)`` polls, sleeping longer each time (up to 50 ms), so
    it noticed a 16 ms agent's exit some 15 ms late, in every job. A pidfd
    (Linux 5.3+) becomes readable the moment the process exits.
    """

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        try:
            self._pidfd: int | None = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):  # another OS, an old kernel: Popen's own polling
            self._pidfd = None

    def __call__(self, timeout_s: float) -> bool:
        if self._pidfd is not None:
            readable, _, _ = select.select([self._pidfd], [], [], timeout_s)
            if not readable:
                return False
        try:
            self._popen.wait(None if self._pidfd is not None else timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


def _result(
    popen: subprocess.Popen[bytes],
    launched: bool,
    usage_path: Path,
    timed_out: bool,
    t_spawn_ns: int,
    t_exit_ns: int,
    records_path: Path,
    stdout_path: Path,
    stderr_path: Path,
) -> AgentProcessResult:
    """Combine what the launcher wrote (if it got to write) with the exit status."""
    code = popen.returncode
    # Killed (timeout, watch) or started without the launcher: no usage file.
    usage: dict[str, Any] = json.loads(usage_path.read_text()) if launched and usage_path.exists() else {}
    if usage:
        exit_code = usage["exit_code"] if usage["exit_code"] >= 0 else None
        signal_number = usage["signal"] or None
    else:
        exit_code = code if code >= 0 else None
        signal_number = -code if code < 0 else None
    return AgentProcessResult(
        exit_code=exit_code,
        signal=signal_number,
        timed_out=timed_out,
        t_spawn_ns=usage.get("t_exec_ns") or t_spawn_ns,
        t_exit_ns=t_exit_ns,
        peak_rss_mb=usage["maxrss_kb"] / 1024.0 if usage else None,
        cpu_user_ms=usage["utime_us"] / 1000.0 if usage else None,
        cpu_sys_ms=usage["stime_us"] / 1000.0 if usage else None,
        records_path=records_path,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
    )
