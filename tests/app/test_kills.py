"""Kills and signals in the middle of a job.

A server or an agent killed: a FAILED run, a clear message, the sweep goes on,
no orphan. Ctrl-C or SIGTERM to cfexp: the running job's run and the sweep's
parent run are KILLED, and no process of cfexp's tree survives (checked by pid).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from tests.app.test_e2e_sim import REPO, client_for, leftover_processes, run_cfexp, runs_of

pytestmark = pytest.mark.slow

# Slow enough (~4 s of decoding) that the job is surely mid-stream when we strike.
SLOW_SIM = (
    "backend=sim", "backend.settings.time_scale=1.0", "+backend.settings.decode_gpu_tok_s=20",
    "scenario=single_inference", "num_predict=80",
)


def kill_when_streaming(
    tmp_path: Path, needle: str, found: list[int], records: str = "run/records.raw.jsonl"
) -> None:
    """Wait until the agent is streaming, then SIGKILL the process whose command line has `needle`."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        streaming = any(tmp_path.glob(records))
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
    else:  # the killed agent's records so far and its stderr reach the run (docs/fault-model.md)
        client = client_for(tmp_path)
        kept = {a.path: a for a in client.list_artifacts(run.info.run_id)}
        assert {"records.raw.jsonl", "agent.stderr.log"} <= set(kept), sorted(kept)
        raw = Path(client.download_artifacts(run.info.run_id, "records.raw.jsonl", str(tmp_path / "dl"))).read_text()
        kinds = [json.loads(line)["kind"] for line in raw.splitlines()]
        assert kinds[0] == "ready" and "done" not in kinds, raw[:500]  # what it wrote before it died
    assert leftover_processes(tmp_path) == []


def test_a_server_killed_mid_stream_fails_its_job_and_the_sweep_goes_on(tmp_path: Path) -> None:
    killed: list[int] = []
    striker = threading.Thread(
        target=kill_when_streaming, args=(tmp_path, "cfexp.serving", killed, "multirun/0/records.raw.jsonl")
    )
    striker.start()
    done = run_cfexp(tmp_path, "-m", *SLOW_SIM, "temperature=0.6,0.8", timeout=300)
    striker.join()
    assert len(killed) == 1
    assert done.returncode == 1 and "1 of 2 job(s) failed" in done.stderr, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    children = {r.data.params["temperature"]: r for r in runs_of(tmp_path) if r.data.tags.get("mlflow.parentRunId")}
    # The first job lost its server; the second got a new one and finished.
    assert children["0.6"].info.status == "FAILED" and children["0.8"].info.status == "FINISHED"
    assert leftover_processes(tmp_path) == []


# --- Ctrl-C and SIGTERM to a running sweep ------------------------------------


@contextmanager
def started_cfexp(tmp_path: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """`python -m cfexp ARGS` in its own session (as a shell's foreground job), outputs under
    tmp_path; its whole process group is SIGKILLed on the way out if it still runs."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    command = [
        sys.executable, "-m", "cfexp", *args, f"paths.root_dir={tmp_path}",
        f"hydra.sweep.dir={tmp_path}/multirun", f"hydra.run.dir={tmp_path}/run",
    ]
    cfexp = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        yield cfexp
    finally:
        if cfexp.poll() is None:
            os.killpg(cfexp.pid, signal.SIGKILL)
            cfexp.communicate()


def cmdline(proc: psutil.Process) -> str:
    """The process's command line; "" once it has ended (a short-lived child may end, or be a
    zombie not yet reaped, between listing the tree and reading it)."""
    try:
        return " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return ""


def process_tree_when_streaming(main: psutil.Process, records: Path) -> list[psutil.Process]:
    """cfexp and every descendant, once the agent streams from the server (agent and server both up)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        tree = [main, *main.children(recursive=True)]
        cmdlines = [cmdline(p) for p in tree]
        agent_up = any("cfexp.agents.python_agent" in c for c in cmdlines)
        server_up = any("cfexp.serving" in c for c in cmdlines)
        if agent_up and server_up and records.exists() and '"kind":"ready"' in records.read_text():
            time.sleep(1.0)  # well into the first call's stream
            return [main, *main.children(recursive=True)]
        assert main.is_running(), "cfexp ended before the job streamed"
        time.sleep(0.05)
    raise AssertionError("the job never started streaming")


def survivors(tree: list[psutil.Process]) -> list[str]:
    """Those of ``tree`` still alive: the same pid and start time, and not a zombie."""
    alive = []
    for proc in tree:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:  # is_running checks the start time
                alive.append(f"{proc.pid}: {' '.join(proc.cmdline())}")
        except psutil.NoSuchProcess:
            pass
    return alive


def assert_all_stopped(tree: list[psutil.Process], grace_s: float = 10) -> None:
    """Every process of ``tree`` ends within ``grace_s`` (a stopped one may take a moment to be reaped)."""
    deadline = time.monotonic() + grace_s
    while survivors(tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert survivors(tree) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_a_signal_to_a_running_sweep_kills_its_runs_and_every_process(tmp_path: Path, sig: signal.Signals) -> None:
    with started_cfexp(tmp_path, "-m", *SLOW_SIM, "temperature=0.6,0.8") as cfexp:
        main = psutil.Process(cfexp.pid)
        tree = process_tree_when_streaming(main, tmp_path / "multirun" / "0" / "records.raw.jsonl")
        commands = " ".join(cmdline(p) for p in tree)
        assert "cfexp.serving" in commands and "cfexp.agents.python_agent" in commands
        # The store is held by the tracking writer, which gets Ctrl-C too: it must still close the runs.
        assert "cfexp.tracking.writer" in commands
        if sig == signal.SIGINT:  # Ctrl-C: the terminal signals the foreground process group
            os.killpg(cfexp.pid, signal.SIGINT)
        else:
            cfexp.send_signal(signal.SIGTERM)
        _, stderr = cfexp.communicate(timeout=120)
    assert cfexp.returncode == 128 + sig, stderr[-3000:]
    assert "Traceback" not in stderr and "marked KILLED" in stderr
    assert_all_stopped(tree)
    assert leftover_processes(tmp_path) == []
    runs = runs_of(tmp_path)
    (parent,) = [r for r in runs if r.data.tags.get("cfexp.sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    # The running job is KILLED, the sweep stopped there, and its parent run is closed.
    assert [(c.data.params["temperature"], c.info.status) for c in children] == [("0.6", "KILLED")]
    assert parent.info.status == "KILLED"
    job_status = json.loads((tmp_path / "multirun" / "0" / "cfexp_status.json").read_text())
    assert job_status["status"] == "KILLED"
    assert not (tmp_path / "multirun" / "1").exists()


def test_cfexp_itself_killed_leaves_no_process_behind(tmp_path: Path) -> None:
    """SIGKILL gives cfexp no chance to clean up: the kernel's death signal stops its children.

    The run cannot be closed then (it stays RUNNING; `resume=true` runs its job again).
    """
    with started_cfexp(tmp_path, *SLOW_SIM) as cfexp:
        main = psutil.Process(cfexp.pid)
        tree = process_tree_when_streaming(main, tmp_path / "run" / "records.raw.jsonl")
        assert any("cfexp.tracking.writer" in cmdline(p) for p in tree)  # it must stop too
        cfexp.send_signal(signal.SIGKILL)
        cfexp.communicate(timeout=60)
    assert cfexp.returncode == -signal.SIGKILL
    assert_all_stopped(tree, grace_s=20)  # children get SIGTERM from the kernel, then stop
    assert leftover_processes(tmp_path) == []


def test_the_tracking_writer_killed_mid_sweep_fails_one_job_and_the_sweep_goes_on(tmp_path: Path) -> None:
    """The process that holds the store dies: the job that needed it fails saying why, and the
    harness opens the store itself for the rest (cfexp.tracking.writer)."""
    with started_cfexp(tmp_path, "-m", *SLOW_SIM, "temperature=0.6,0.8") as cfexp:
        main = psutil.Process(cfexp.pid)
        tree = process_tree_when_streaming(main, tmp_path / "multirun" / "0" / "records.raw.jsonl")
        (writer,) = [p for p in tree if "cfexp.tracking.writer" in cmdline(p)]
        writer.kill()
        _, stderr = cfexp.communicate(timeout=300)
    assert cfexp.returncode == 1 and "1 of 2 job(s) failed" in stderr, stderr[-3000:]
    assert "Traceback" not in stderr
    runs = runs_of(tmp_path)
    children = {r.data.params["temperature"]: r for r in runs if r.data.tags.get("mlflow.parentRunId")}
    assert children["0.6"].info.status == "FAILED" and children["0.8"].info.status == "FINISHED"
    assert "tracking writer process" in children["0.6"].data.tags["error"]
    (parent,) = [r for r in runs if r.data.tags.get("cfexp.sweep") == "parent"]
    assert parent.info.status == "FAILED"
    assert leftover_processes(tmp_path) == []
