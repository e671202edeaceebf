"""Multi-agent metrics: true parallel efficiency, the original's overlap ratio, contention.

Pure functions over records (calls already derived by
:func:`cfexp.metrics.calls.derive_call`).

The original study's "parallel efficiency" divided the sum of the agents'
durations *measured while they ran concurrently* by twice the wall time: 50 %
when fully serialized, and otherwise mostly a measure of how balanced the two
durations were. Here:

- ``speedup = Σ solo_i / wall`` where ``solo_i`` is agent i's workflow time
  when it ran alone on its instance in the same job, and ``wall`` the
  concurrent phase's wall time (first agent start to last agent end);
- ``parallel_efficiency_pct = speedup / N × 100``: 100 % when N equal agents
  together take as long as one of them alone (perfect overlap), 100/N % when
  the server serializes them;
- ``overlap_efficiency_pct = Σ concurrent_i / (N × wall) × 100``: the
  original's ratio, kept under its own name to compare with published numbers.

Contention, one rule, per agent: an agent is *contended* when its concurrent
mean TTFT exceeds its solo mean TTFT by more than ``threshold_pct`` percent,
or its concurrent mean decode throughput is lower than solo by more than
``threshold_pct`` percent. ``contention_rate_pct`` is the share of contended
agents (per run here; over a sweep in the report).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AgentTiming:
    """One agent workflow, as its records tell it."""

    name: str
    instance: int
    success: bool
    t_start_ns: int
    t_end_ns: int
    # Means over the agent's successful calls (None when it had none).
    ttft_ms: float | None
    throughput_tok_s: float | None

    @property
    def duration_ms(self) -> float:
        return (self.t_end_ns - self.t_start_ns) / 1e6


def _mean(values: Iterable[Any]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return statistics.fmean(present) if present else None


def agent_timings(records: Iterable[Mapping[str, Any]], derived_calls: Iterable[Mapping[str, Any]]) -> dict[str, AgentTiming]:
    """Per agent name: its workflow span and its calls' mean TTFT and throughput."""
    calls = [c for c in derived_calls if c.get("success")]
    timings: dict[str, AgentTiming] = {}
    for record in records:
        if record.get("kind") != "agent":
            continue
        name = str(record["agent"])
        mine = [c for c in calls if c.get("agent") == name]
        timings[name] = AgentTiming(
            name=name,
            instance=int(record.get("instance", 0)),
            success=bool(record.get("success")),
            t_start_ns=int(record["t_start_ns"]),
            t_end_ns=int(record["t_end_ns"]),
            ttft_ms=_mean(c.get("ttft_ms") for c in mine),
            throughput_tok_s=_mean(c.get("throughput_tok_s") for c in mine),
        )
    return timings


def is_contended(concurrent: AgentTiming, solo: AgentTiming, threshold_pct: float) -> bool:
    """The documented rule: TTFT worse, or throughput lower, by more than the threshold."""
    factor = threshold_pct / 100.0
    slower_start = (
        concurrent.ttft_ms is not None
        and solo.ttft_ms is not None
        and concurrent.ttft_ms > solo.ttft_ms * (1 + factor)
    )
    slower_decode = (
        concurrent.throughput_tok_s is not None
        and solo.throughput_tok_s is not None
        and concurrent.throughput_tok_s < solo.throughput_tok_s * (1 - factor)
    )
    return slower_start or slower_decode


def multi_agent_metrics(
    concurrent: Mapping[str, AgentTiming],
    solo: Mapping[str, AgentTiming] | None,
    threshold_pct: float,
) -> dict[str, float]:
    """Run-level metrics of a multi-agent job (empty when no agent finished)."""
    if not concurrent:
        return {}
    agents = list(concurrent.values())
    count = len(agents)
    wall_ms = (max(a.t_end_ns for a in agents) - min(a.t_start_ns for a in agents)) / 1e6
    metrics: dict[str, float] = {
        "agents": float(count),
        "concurrent_wall_ms": wall_ms,
        "overlap_efficiency_pct": sum(a.duration_ms for a in agents) / (count * wall_ms) * 100,
    }
    for agent in agents:
        prefix = f"{agent.name}_"
        metrics[prefix + "concurrent_ms"] = agent.duration_ms
        metrics[prefix + "instance"] = float(agent.instance)
        if agent.ttft_ms is not None:
            metrics[prefix + "ttft_ms_concurrent"] = agent.ttft_ms
        if agent.throughput_tok_s is not None:
            metrics[prefix + "throughput_tok_s_concurrent"] = agent.throughput_tok_s
    if not solo or set(solo) != set(concurrent):
        return metrics
    solo_sum_ms = sum(s.duration_ms for s in solo.values())
    speedup = solo_sum_ms / wall_ms
    metrics["solo_sum_ms"] = solo_sum_ms
    metrics["speedup"] = speedup
    metrics["parallel_efficiency_pct"] = speedup / count * 100
    contended = 0
    for name, alone in solo.items():
        prefix = f"{name}_"
        metrics[prefix + "solo_ms"] = alone.duration_ms
        if alone.ttft_ms is not None:
            metrics[prefix + "ttft_ms_solo"] = alone.ttft_ms
        if alone.throughput_tok_s is not None:
            metrics[prefix + "throughput_tok_s_solo"] = alone.throughput_tok_s
        flag = is_contended(concurrent[name], alone, threshold_pct)
        metrics[prefix + "contended"] = float(flag)
        contended += flag
    metrics["contention_rate_pct"] = contended / count * 100
    return metrics
