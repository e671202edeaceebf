"""cfexp's numbers stay right under the behaviours of real servers, reproduced by the simulator.

Each behaviour measured on a real Ollama (docs/metrics.md, docs/serving.md) is
switched on in the simulator, and a real `python -m cfexp` job is checked:

- reload on an option change: warm-ups with the phase's options keep every
  model load out of the measured calls (and without them, the first call pays
  it and the run says so);
- the prefix cache: `prompt_cache=defeat` leaves nothing but the chat
  template's first tokens to reuse, in every phase; `allow` primes every job;
- provenance: a simulator is tagged simulated behind every backend kind;
- a server that dies mid-job leaves the calls that finished, their metrics,
  the records and the server's log.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.app.test_backends_and_faults import sim_server  # noqa: F401  (fixture)
from tests.app.test_e2e_sim import client_for, leftover_processes, run_cfexp, runs_of

pytestmark = pytest.mark.slow

# Loads of 0.5 s + 0.05 s per 1k ctx at half speed: every load is >= 250 ms,
# well above the 100 ms at which a measured call counts as having paid one.
SLOW_LOADS = ("backend=sim", "backend.settings.time_scale=0.5", "backend.settings.jitter_cv=0")


def _calls(records: Path) -> list[dict[str, object]]:
    return [r for line in records.read_text().splitlines() if (r := json.loads(line))["kind"] == "call"]


@pytest.mark.parametrize(("warmup_calls", "loads"), [(1, 0.0), (0, 1.0)])
def test_warm_ups_with_the_phase_options_keep_loads_out_of_measured_calls(
    tmp_path: Path, warmup_calls: int, loads: float
) -> None:
    done = run_cfexp(
        tmp_path, *SLOW_LOADS, "scenario=single_inference", "num_predict=4", "ctx=1024",
        f"topology.warmup_calls={warmup_calls}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = runs_of(tmp_path)
    assert run.data.metrics["calls_with_load"] == loads
    if loads:
        assert "paid a model load" in run.data.tags["measurement_warnings"]
        assert run.data.metrics["measurement_warnings"] >= 1
    else:
        assert "measurement_warnings" not in run.data.tags
        assert run.data.metrics["warmup_load_ms"] >= 250


def test_agents_with_other_options_on_one_instance_reload_inside_the_phase_and_say_so(tmp_path: Path) -> None:
    """The original's baseline_vs_chimera on one instance: agent_0 sends no options (the server's
    defaults), agent_1 ctx 512: the instance reloads between them, as Ollama does."""
    done = run_cfexp(
        tmp_path, *SLOW_LOADS, "scenario=multi_agent", "scenario.mode=baseline_vs_chimera",
        "topology=single", "num_predict=4", "scenario.solo=null", "+backend.settings.n_ctx=4096",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = runs_of(tmp_path)
    assert run.data.metrics["calls_with_load"] >= 1
    assert "paid a model load" in run.data.tags["measurement_warnings"]


def test_defeat_leaves_only_the_template_to_reuse_in_every_phase(tmp_path: Path) -> None:
    """The solo and concurrent phases send the same prompts; with a cache on, only a fresh
    nonce per agent process keeps the concurrent phase from reusing the solo phase's prefix."""
    done = run_cfexp(
        tmp_path, "backend=sim", "backend.settings.time_scale=0.02", "backend.settings.prompt_cache=true",
        "scenario=multi_agent", "topology=single", "num_predict=4", "prompt_cache=defeat",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    job = tmp_path / "run"
    phases = [job / "records.jsonl", *sorted(job.glob("phases/*/records.jsonl"))]
    assert len(phases) == 5  # concurrent + 2 agents × (before, after)
    calls = [call for path in phases for call in _calls(path)]
    nonces = [call["prompt_nonce"] for call in calls]
    assert all(nonces) and len(set(nonces)) == len(nonces)
    for call in calls:
        assert call["prompt_tokens_cached"] is not None
        # Only the chat template's first tokens and the nonce's first word are shared.
        assert call["prompt_tokens_cached"] <= 16, call
        assert call["prompt_tokens_evaluated"] >= call["prompt_tokens"] - 16


def test_allow_primes_every_job_so_its_measured_calls_are_all_warm(tmp_path: Path) -> None:
    """The priming sends the measured call, and no warm-up comes between them: the slot still
    holds it. (The simulator, like cfexp's llamacpp server and a one-slot Ollama, keeps one prompt
    per slot: single_agent's report call would find its analysis call's prompt there instead.
    llama-server keeps earlier prompts in host memory: tests/app/test_real_server_contract.py.)"""
    done = run_cfexp(
        tmp_path, "-m", "backend=sim", "backend.settings.time_scale=0.02", "backend.settings.prompt_cache=true",
        "scenario=single_inference", "num_predict=4", "prompt_cache=allow", "repetition=0,1",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    cached_by_job = []
    for job in sorted(p for p in (tmp_path / "multirun").iterdir() if p.name.isdigit()):
        priming = _calls(job / "phases" / "priming" / "records.jsonl")
        measured = _calls(job / "records.jsonl")
        assert priming and all(call["prompt_nonce"] is None for call in priming + measured)
        for call in measured:
            assert call["prompt_tokens_cached"] >= call["prompt_tokens"] - 1, call  # all but the last token
        cached_by_job.append([(call["step"], call["prompt_tokens_cached"]) for call in measured])
    assert len(cached_by_job) == 2
    assert cached_by_job[0] == cached_by_job[1]  # the first job is warm like the others


def test_a_simulator_is_simulated_behind_every_backend_kind(sim_server: str, tmp_path: Path) -> None:  # noqa: F811
    """Provenance comes from what answered: cfexp's simulator says so on /api/version."""
    setups = {
        "managed": ("backend=sim", "backend.settings.time_scale=0.02"),
        "ollama": ("backend=ollama", f"backend.url={sim_server}", "model=gemma3_270m"),
        "openai": ("backend=openai", f"backend.url={sim_server}", "model=gemma3_270m"),
        "external": ("backend=llamacpp", f"backend.url={sim_server}", "topology.lifecycle=external"),
    }
    for name, overrides in setups.items():
        folder = tmp_path / name
        done = run_cfexp(folder, *overrides, "scenario=single_inference", "num_predict=4")
        assert done.returncode == 0, (name, done.stderr[-3000:])
        (run,) = runs_of(folder)
        tags = run.data.tags
        assert tags["provenance"] == "simulated", name
        assert tags["backend_engine"] == "cfexp-sim", name
        assert tags["model_digest"].startswith("sha256:"), name  # the simulator's own, as it reports it


def test_two_instances_need_two_distinct_servers(sim_server: str, tmp_path: Path) -> None:  # noqa: F811
    same = run_cfexp(tmp_path, "backend=ollama", f"backend.urls=[{sim_server},{sim_server}]",
                     "topology=dual", "topology.lifecycle=external", "model=gemma3_270m")  # fmt: skip
    assert same.returncode == 2 and "names one server twice" in same.stderr
    one = run_cfexp(tmp_path, "backend=openai", f"backend.url={sim_server}", "topology=dual")
    assert one.returncode == 2 and "backend.urls" in one.stderr
    assert "Traceback" not in same.stderr + one.stderr


def test_a_server_that_dies_mid_job_leaves_a_complete_record(tmp_path: Path) -> None:
    """The report call is cut by a SIGKILL to the server: the analysis call's metrics, the
    failed call, records.jsonl and the server's own log still reach the FAILED run."""
    done_event = threading.Event()

    def kill_after_first_call() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not done_event.is_set():
            for path in tmp_path.glob("run/records.raw.jsonl"):
                if any(json.loads(line)["kind"] == "call" for line in path.read_text().splitlines() if line.strip()):
                    for proc in psutil.process_iter(["pid", "cmdline"]):
                        cmdline = " ".join(proc.info["cmdline"] or [])
                        if "cfexp.serving" in cmdline and str(tmp_path) in cmdline:
                            os.kill(proc.pid, signal.SIGKILL)
                            return
            time.sleep(0.02)

    striker = threading.Thread(target=kill_after_first_call)
    striker.start()
    try:
        done = run_cfexp(
            tmp_path, "backend=sim", "backend.settings.time_scale=0.3", "scenario=single_agent", "num_predict=16",
            "topology.lifecycle=per_job",
        )
    finally:
        done_event.set()
        striker.join()
    assert done.returncode == 1
    (run,) = runs_of(tmp_path)
    assert run.info.status == "FAILED"
    metrics = run.data.metrics
    assert metrics["calls_total"] >= 1 and "ttft_ms" in metrics  # the analysis call finished
    artifacts = {a.path for a in client_for(tmp_path).list_artifacts(run.info.run_id)}
    assert {"records.jsonl", "server_logs", "error.txt"} <= artifacts
    logs = {a.path for a in client_for(tmp_path).list_artifacts(run.info.run_id, "server_logs")}
    assert "server_logs/server0.log" in logs
    assert leftover_processes(tmp_path) == []
