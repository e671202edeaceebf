"""Multi-agent physics on the simulator (docs/multi-agent.md), no jitter.

Each agent takes ~0.7 s alone (two calls: prefill + 40 tokens each), far above
the few milliseconds of process and parsing overhead, so the expected
efficiencies hold on a loaded 2-core machine:

- 2 agents, 1 instance, 1 slot: the server serializes them: ~50 %;
- 2 agents, 2 instances: they overlap: ~100 %;
- 4 agents, 2 instances: two per instance, serialized in pairs: ~50 %;
- 2 uneven agents (one 4x slower), 2 instances, no interference: ~100 %
  (the original's overlap ratio says ~62 %);
- a machine that slows down by 10 % over the job, no interference: the ABA
  estimate stays within 2 points of 100 %, a solo-before-only one does not,
  and the drift is reported and warned about.

Margins come from the simulator's model, not from luck: the timing model's
durations are exact (jitter 0) and kept to absolute deadlines, so only the
harness's own milliseconds move the figures. On a busy machine those grow
(issue 17.5: these tests are run beside 6 busy processes by
``benchmarks/under_load.py``), so the figures that sit close to their truth
are judged with the harness's own share added, measured from the same run
(:func:`harness_points`), and every prompt takes ~0.3 s to prefill (1000
tok/s), so that the contention rule's 25 % on TTFT is not met by a few
milliseconds of the client's scheduling.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from tests.app.test_e2e_sim import leftover_processes, run_cfexp, runs_of

pytestmark = pytest.mark.slow

SIM = (
    "backend=sim",
    "backend.settings.time_scale=1.0",
    "backend.settings.jitter_cv=0",
    "+backend.settings.decode_gpu_tok_s=120",
    "+backend.settings.prefill_gpu_tok_s=1000",
    "scenario=multi_agent",
    "num_predict=40",
)


def _client_ms(records: Path) -> tuple[dict[str, float], float]:
    """Per agent, its workflow's time outside the server's own time for its calls (the client's and
    the harness's share), and the phase's wall time (first start to last end), in ms."""
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    agents = [r for r in lines if r["kind"] == "agent"]
    server_ms = {a["agent"]: 0.0 for a in agents}
    for call in (r for r in lines if r["kind"] == "call"):
        server_ms[call["agent"]] += call["server_total_duration_ns"] / 1e6
    client = {a["agent"]: (a["t_end_ns"] - a["t_start_ns"]) / 1e6 - server_ms[a["agent"]] for a in agents}
    wall = (max(a["t_end_ns"] for a in agents) - min(a["t_start_ns"] for a in agents)) / 1e6
    return client, wall


def harness_points(run_dir: Path) -> float:
    """How many points of parallel efficiency the client's own time can move in this job.

    With no interference the server's time is the same alone and together, so efficiency =
    (S + c_solo) / (S + c_concurrent): it departs from 100 % by the difference between the
    client's share together and alone, over the concurrent wall. Measured, per agent, from the
    records (solo: the mean of its solo phases), the largest difference in %."""
    concurrent, wall = _client_ms(run_dir / "records.jsonl")
    solos: dict[str, list[float]] = {}
    for phase in sorted((run_dir / "phases").glob("solo_*")):
        for agent, ms in _client_ms(phase / "records.jsonl")[0].items():
            solos.setdefault(agent, []).append(ms)
    return max(abs(concurrent[a] - statistics.fmean(solos[a])) for a in concurrent) / wall * 100


def test_parallel_efficiency_follows_the_topology(tmp_path: Path) -> None:
    done = run_cfexp(
        tmp_path, "-m", *SIM, "topology=single,dual", "topology.lifecycle=per_job", timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {r.data.params.get("topology.name"): r for r in runs_of(tmp_path) if r.data.tags.get("mlflow.parentRunId")}
    single, dual = runs["single"].data.metrics, runs["dual"].data.metrics
    assert 40 <= single["parallel_efficiency_pct"] <= 62, single
    assert dual["parallel_efficiency_pct"] >= 88, dual
    # On one instance the second agent waits: contended; on two nobody is.
    assert single["contention_rate_pct"] >= 50 and dual["contention_rate_pct"] == 0
    for metrics in (single, dual):
        assert metrics["speedup"] * metrics["concurrent_wall_ms"] == pytest.approx(metrics["solo_sum_ms"], rel=1e-9)
        assert metrics["calls_total"] == 4 and metrics["calls_failed"] == 0
    # Agent i uses instance i mod N.
    assert (dual["agent_0_instance"], dual["agent_1_instance"]) == (0, 1)
    assert (single["agent_0_instance"], single["agent_1_instance"]) == (0, 0)
    assert leftover_processes(tmp_path) == []


def test_four_agents_on_two_instances_are_half_efficient(tmp_path: Path) -> None:
    done = run_cfexp(
        tmp_path, *SIM, "topology=dual", "scenario.agents=4", "scenario.solo=before", timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = runs_of(tmp_path)
    metrics = run.data.metrics
    assert 40 <= metrics["parallel_efficiency_pct"] <= 62, metrics
    assert [metrics[f"agent_{i}_instance"] for i in range(4)] == [0, 1, 0, 1]


def test_hetero_agents_get_their_own_options_and_baseline_sends_none(tmp_path: Path) -> None:
    done = run_cfexp(
        tmp_path, "-m", "backend=sim", "backend.settings.time_scale=0.02", "scenario=multi_agent",
        "num_predict=8", "topology=dual", "scenario.solo=null",
        "scenario.mode=chimera_hetero", "+scenario.per_agent={agent_1:{ctx:1024,gpu_layers:100}}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (job_dir,) = [p for p in (tmp_path / "multirun").iterdir() if p.name == "0"]
    calls = [json.loads(line) for line in (job_dir / "records.jsonl").read_text().splitlines()]
    options = {c["agent"]: c["options"] for c in calls if c["kind"] == "call"}
    assert options["agent_0"]["num_ctx"] == 512 and options["agent_0"]["num_gpu"] == 80
    assert options["agent_1"]["num_ctx"] == 1024 and options["agent_1"]["num_gpu"] == 100


def test_an_override_for_a_missing_agent_is_a_clear_error(tmp_path: Path) -> None:
    done = run_cfexp(
        tmp_path, "backend=sim", "scenario=multi_agent", "scenario.mode=chimera_hetero",
        "+scenario.per_agent={agent_7:{ctx:1024}}",
    )
    assert done.returncode == 2
    assert "agent_7" in done.stderr and "agent_0, agent_1" in done.stderr
    assert "Traceback" not in done.stderr


def test_uneven_agents_without_interference_are_100_percent_efficient(tmp_path: Path) -> None:
    """agent_1 runs on the CPU only (gpu_layers 0: 25 tok/s against 120), on its own instance."""
    done = run_cfexp(
        tmp_path, *SIM, "topology=dual", "scenario.mode=chimera_hetero",
        "+scenario.per_agent={agent_1:{gpu_layers:0}}", "scenario.solo=before", timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = runs_of(tmp_path)
    m = run.data.metrics
    assert m["agent_1_solo_ms"] > 3 * m["agent_0_solo_ms"]  # really uneven
    assert m["parallel_efficiency_pct"] == pytest.approx(100, abs=2), m
    assert m["overlap_efficiency_pct"] < 75  # the original's ratio mistakes imbalance for interference
    assert m["contention_rate_pct"] == 0


def test_aba_holds_under_a_machine_that_slows_down_and_reports_the_drift(tmp_path: Path) -> None:
    """Every duration grows by drift_per_s per second since the server started: over this
    job's few seconds, by 10-15 %. No interference (dual), so the truth is 100 %."""
    drifting = (*SIM, "topology=dual", "topology.lifecycle=per_job", "+backend.settings.drift_per_s=0.03",
                "scenario.drift_warn_pct=3")  # fmt: skip
    done = run_cfexp(tmp_path / "aba", *drifting, "scenario.solo=both", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (aba,) = runs_of(tmp_path / "aba")
    done = run_cfexp(tmp_path / "before", *drifting, "scenario.solo=before", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (before,) = runs_of(tmp_path / "before")
    harness = harness_points(tmp_path / "aba" / "run")
    assert aba.data.metrics["parallel_efficiency_pct"] == pytest.approx(100, abs=2 + harness), (
        harness, aba.data.metrics
    )
    assert before.data.metrics["parallel_efficiency_pct"] < 98, before.data.metrics
    assert aba.data.metrics["drift_pct"] > 3
    assert "drift_pct" in aba.data.tags["measurement_warnings"]


def test_two_slots_with_batching_interfere_as_the_model_says(tmp_path: Path) -> None:
    """One instance, 2 slots, each step of two active requests 1.5x slower: the agents
    overlap but each decodes slower, so efficiency falls between 50 % and 100 %."""
    done = run_cfexp(
        tmp_path, *SIM, "topology=single", "backend.slots=2", "+backend.settings.batch_slowdown=0.5",
        "scenario.solo=before", timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = runs_of(tmp_path)
    m = run.data.metrics
    # Mostly decode time, all of it shared: each agent ~1.5x its solo time, so ~67 %.
    assert 58 <= m["parallel_efficiency_pct"] <= 76, m
    assert m["agent_0_throughput_tok_s_concurrent"] < 0.8 * m["agent_0_throughput_tok_s_solo"]
