"""End to end on the real embedded model: Gemma 3 270M on llama.cpp."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from cfexp.agents.records import read_records
from cfexp.backends.model_files import expected_sha256
from tests.app.test_e2e_sim import client_for, leftover_processes, run_cfexp, runs_of

pytestmark = [pytest.mark.slow, pytest.mark.llamacpp]


def test_the_default_experiment_runs_on_the_real_model(tmp_path: Path) -> None:
    done = run_cfexp(tmp_path, "num_predict=24", timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = runs_of(tmp_path)
    assert run.info.status == "FINISHED"
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["provenance"] == "measured" and tags["backend"] == "llamacpp"
    assert tags["model_digest"] == "sha256:" + expected_sha256()[1]
    # backend.threads: 0 resolved: one instance gets every core (docs/metrics.md, "A core for the client").
    assert tags["launch.threads"] == str(os.cpu_count())
    assert metrics["calls_total"] == 2 and metrics["calls_failed"] == 0
    assert 0 < metrics["output_tokens"] <= 24
    assert metrics["ttft_ms"] > 0 and metrics["server_throughput_tok_s"] > 0
    assert metrics["ingest_files"] > 0
    # The prompt's tokens as the server counted them (cached + evaluated).
    assert metrics["prompt_tokens"] > 20
    texts = client_for(tmp_path).list_artifacts(run.info.run_id, "texts")
    assert len(texts) == 2 and all(t.file_size > 0 for t in texts)
    assert leftover_processes(tmp_path) == []


def test_single_and_dual_on_the_real_model_record_consistent_efficiencies(tmp_path: Path) -> None:
    """Two agents on one llama.cpp instance, then on two (1 thread each).

    On 2 cores nothing guarantees which is faster, so only what physics and
    arithmetic guarantee is asserted: every agent produced output in both
    phases, and speedup × wall == Σ solo.
    """
    done = run_cfexp(
        tmp_path, "-m", "scenario=multi_agent", "topology=single,dual", "num_predict=12", timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    children = [r for r in runs_of(tmp_path) if r.data.tags.get("mlflow.parentRunId")]
    assert sorted(r.data.params["topology.name"] for r in children) == ["dual", "single"]
    for run in children:
        metrics = run.data.metrics
        assert run.info.status == "FINISHED" and run.data.tags["provenance"] == "measured"
        instances = 2 if run.data.params["topology.name"] == "dual" else 1
        assert run.data.tags["launch.threads"] == ",".join([str(max(1, (os.cpu_count() or 1) // instances))] * instances)
        assert metrics["calls_failed"] == 0 and metrics["calls_total"] == 4
        for agent in ("agent_0", "agent_1"):
            assert metrics[f"{agent}_solo_ms"] > 0 and metrics[f"{agent}_concurrent_ms"] > 0
        assert metrics["output_tokens_total"] > 0
        assert metrics["speedup"] * metrics["concurrent_wall_ms"] == pytest.approx(metrics["solo_sum_ms"], rel=1e-9)
        assert 0 < metrics["parallel_efficiency_pct"] <= 200
    assert leftover_processes(tmp_path) == []


def test_the_real_server_killed_mid_stream_fails_the_run_with_no_orphan(tmp_path: Path) -> None:
    """The real model streams 3 tokens and holds the stream open (faults.hang_after_tokens,
    which the server logs), so the kill surely lands mid-stream, whatever the machine's speed.
    Only the job's 2nd generation request hangs: the 1st is the untimed warm-up."""
    killed: list[int] = []
    striker = threading.Thread(target=kill_server_mid_stream, args=(tmp_path, killed))
    striker.start()
    done = run_cfexp(
        tmp_path, "scenario=single_inference", "num_predict=32", "+backend.settings.faults={hang_after_tokens:3,hang_every_n:2}",
        timeout=600,
    )
    striker.join()
    assert killed, "the server was never seen mid-stream"
    assert done.returncode == 1
    assert "exited with code -9 during the job" in done.stderr and "Traceback" not in done.stderr
    (run,) = runs_of(tmp_path)
    assert run.info.status == "FAILED"
    (call,) = read_records(tmp_path / "run" / "records.raw.jsonl").calls
    assert call.error_kind is not None and call.error_kind.value == "incomplete_stream"
    assert call.http_status == 200
    assert call.content_chunks == 3 and call.text  # what came before the kill is kept
    assert leftover_processes(tmp_path) == []


def kill_server_mid_stream(tmp_path: Path, found: list[int]) -> None:
    """SIGKILL this test's llama.cpp server once its log says the stream is held open."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        logs = (tmp_path / "run" / "servers").glob("*.log")
        if any("hanging (faults.hang_after_tokens)" in log.read_text(errors="replace") for log in logs):
            for proc in psutil.process_iter(["pid", "cmdline"]):
                cmdline = " ".join(proc.info["cmdline"] or [])
                if "cfexp.serving" in cmdline and str(tmp_path) in cmdline:
                    os.kill(proc.pid, signal.SIGKILL)
                    found.append(proc.pid)
                    return
        time.sleep(0.1)
