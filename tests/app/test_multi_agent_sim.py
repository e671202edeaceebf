"""Multi-agent physics on the simulator (one slot per instance, no jitter).

Each agent takes ~0.7 s alone (two calls: prefill + 40 tokens each), far above
the few milliseconds of process and parsing overhead, so the expected
efficiencies hold on a loaded 2-core machine:

- 2 agents, 1 instance: the server serializes them: ~50 %;
- 2 agents, 2 instances: they overlap: ~100 %;
- 4 agents, 2 instances: two per instance, serialized in pairs: ~50 %.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.app.test_e2e_sim import leftover_processes, run_cfexp, runs_of

pytestmark = pytest.mark.slow

SIM = (
    "backend=sim",
    "backend.settings.time_scale=1.0",
    "backend.settings.jitter_cv=0",
    "+backend.settings.decode_gpu_tok_s=120",
    "scenario=multi_agent",
    "num_predict=40",
)


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
        tmp_path, *SIM, "topology=dual", "scenario.agents=4", "scenario.solo_baseline=true", timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = runs_of(tmp_path)
    metrics = run.data.metrics
    assert 40 <= metrics["parallel_efficiency_pct"] <= 62, metrics
    assert [metrics[f"agent_{i}_instance"] for i in range(4)] == [0, 1, 0, 1]


def test_hetero_agents_get_their_own_options_and_baseline_sends_none(tmp_path: Path) -> None:
    done = run_cfexp(
        tmp_path, "-m", "backend=sim", "backend.settings.time_scale=0.02", "scenario=multi_agent",
        "num_predict=8", "topology=dual", "scenario.solo_baseline=false",
        "scenario.mode=chimera_hetero", "+scenario.per_agent={agent_1:{ctx:1024,gpu_layers:100}}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    import json

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
