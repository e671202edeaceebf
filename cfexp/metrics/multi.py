"""Multi-agent metrics: speedup, balance-free parallel efficiency, drift, contention.

Pure functions over the agents' phases (docs/multi-agent.md). In a multi-agent
job every agent runs alone ("solo") before and/or after the concurrent phase,
on the same instance with the same warm state; ``solo_i`` is the mean of its
solo workflow times, ``wall`` the concurrent phase's first start to last end.

- ``speedup = Σ solo_i / wall``: how many agents' worth of work ran at once
  (≤ N; N when nothing interfered and the agents are equal);
- ``parallel_efficiency_pct = max_i solo_i / wall × 100``: 100 when the
  concurrent phase took no longer than its longest agent alone — no
  interference, whatever the balance between the agents; ``Σ solo / max solo``
  down to 100/N when the server serialised them;
- ``overlap_efficiency_pct = Σ concurrent_i / (N × wall) × 100``: the
  original study's ratio, kept under its own name (it mostly measures balance);
- ``drift_pct``: per agent ``|after − before| / mean`` of its two solos, the
  run's value is the largest: what the machine did on its own during the job,
  the noise floor of every comparison above.

Contention, one rule, per agent and step: the agent is *contended* when for
some step its concurrent TTFT exceeds the highest of its solo TTFTs for that
step by more than ``threshold_pct`` + its drift (in %), or its concurrent
decode throughput falls below the lowest solo throughput by more than the same
margin. The solo calls' spread and the drift are the noise floor; the
threshold is what the user calls interference.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from cfexp.agents.records import AgentRecord
from cfexp.metrics.calls import MeasuredCall
from cfexp.metrics.catalog import BY_NAME

#: Relative noise (in %) always allowed before a value counts as out of its physical range.
MIN_TOLERANCE_PCT = 2.0


@dataclass(frozen=True)
class AgentPhase:
    """One agent's workflow in one phase (solo or concurrent), as its records tell it."""

    name: str
    instance: int
    success: bool
    t_start_ns: int
    t_end_ns: int
    calls: tuple[MeasuredCall, ...] = ()

    @property
    def duration_ms(self) -> float:
        return (self.t_end_ns - self.t_start_ns) / 1e6

    def values(self, metric: str, step: str | None = None) -> list[float]:
        """The metric over this phase's successful calls (of one step, when given)."""
        return [
            float(value)
            for call in self.calls
            if call.success and (step is None or call.record.step == step)
            and (value := getattr(call.metrics, metric)) is not None
        ]  # fmt: skip

    def mean(self, metric: str) -> float | None:
        values = self.values(metric)
        return statistics.fmean(values) if values else None

    @property
    def steps(self) -> list[str]:
        return list(dict.fromkeys(call.record.step for call in self.calls if call.success))


def agent_phases(agents: Iterable[AgentRecord], calls: Sequence[MeasuredCall]) -> dict[str, AgentPhase]:
    """Per agent name: its workflow span and its calls, from one agent process's records."""
    return {
        agent.agent: AgentPhase(
            name=agent.agent,
            instance=agent.instance,
            success=agent.success,
            t_start_ns=agent.t_start_ns,
            t_end_ns=agent.t_end_ns,
            calls=tuple(call for call in calls if call.record.agent == agent.agent),
        )
        for agent in agents
    }


@dataclass(frozen=True)
class ContentionRule:
    # Interference the user cares about, beyond the noise floor, in %.
    threshold_pct: float = 25.0
    # A run whose drift exceeds this gets a measurement warning, in %.
    drift_warn_pct: float = 10.0


@dataclass
class MultiAgentResult:
    metrics: dict[str, float] = field(default_factory=dict)
    # Why the run's numbers are doubtful, one sentence each (empty when they are not).
    warnings: list[str] = field(default_factory=list)
    # Metrics outside their physical range: reported, never ranked.
    out_of_range: list[str] = field(default_factory=list)


def drift_pct(solos: Sequence[AgentPhase]) -> float | None:
    """|last − first| / mean of an agent's solo times, in %; None with fewer than two."""
    if len(solos) < 2:
        return None
    first, last = solos[0].duration_ms, solos[-1].duration_ms
    mean = statistics.fmean(s.duration_ms for s in solos)
    return abs(last - first) / mean * 100 if mean > 0 else None


def is_contended(concurrent: AgentPhase, solos: Sequence[AgentPhase], margin_pct: float) -> bool:
    """The documented rule (module docstring), per step the agent called concurrently."""
    factor = margin_pct / 100
    for step in concurrent.steps:
        solo_ttft = [v for s in solos for v in s.values("ttft_ms", step)]
        solo_rate = [v for s in solos for v in s.values("throughput_tok_s", step)]
        ttft = concurrent.values("ttft_ms", step)
        rate = concurrent.values("throughput_tok_s", step)
        if solo_ttft and ttft and statistics.fmean(ttft) > max(solo_ttft) * (1 + factor):
            return True
        if solo_rate and rate and statistics.fmean(rate) < min(solo_rate) * (1 - factor):
            return True
    return False


def multi_agent_metrics(
    concurrent: Mapping[str, AgentPhase],
    solos: Mapping[str, Sequence[AgentPhase]],
    rule: ContentionRule,
    solo_labels: Sequence[str] = ("before", "after"),
) -> MultiAgentResult:
    """Run-level metrics of a multi-agent job (empty when no agent ran).

    ``solos[name]`` holds the agent's solo phases in the order they ran, named
    by ``solo_labels`` (``before``, ``after``); without a solo for every agent
    only the concurrent phase's own metrics are given.
    """
    result = MultiAgentResult()
    if not concurrent:
        return result
    agents = list(concurrent.values())
    count = len(agents)
    wall_ms = (max(a.t_end_ns for a in agents) - min(a.t_start_ns for a in agents)) / 1e6
    m = result.metrics
    m["agents"] = float(count)
    m["concurrent_wall_ms"] = wall_ms
    m["overlap_efficiency_pct"] = sum(a.duration_ms for a in agents) / (count * wall_ms) * 100
    for agent in agents:
        prefix = f"{agent.name}_"
        m[prefix + "concurrent_ms"] = agent.duration_ms
        m[prefix + "instance"] = float(agent.instance)
        _phase_means(m, prefix, "concurrent", [agent])
    if set(solos) != set(concurrent) or not all(solos.values()):
        return result

    solo_ms = {name: statistics.fmean(s.duration_ms for s in phases) for name, phases in solos.items()}
    drifts = {name: drift_pct(phases) for name, phases in solos.items()}
    m["solo_sum_ms"] = sum(solo_ms.values())
    m["solo_max_ms"] = max(solo_ms.values())
    m["speedup"] = m["solo_sum_ms"] / wall_ms
    m["parallel_efficiency_pct"] = m["solo_max_ms"] / wall_ms * 100
    known_drifts = [d for d in drifts.values() if d is not None]
    if known_drifts:
        m["drift_pct"] = max(known_drifts)
    contended = 0
    for name, phases in solos.items():
        prefix = f"{name}_"
        m[prefix + "solo_ms"] = solo_ms[name]
        for label, phase in zip(solo_labels, phases, strict=False):
            m[f"{prefix}solo_{label}_ms"] = phase.duration_ms
        drift = drifts[name]
        if drift is not None:
            m[prefix + "drift_pct"] = drift
        _phase_means(m, prefix, "solo", phases)
        flag = is_contended(concurrent[name], phases, rule.threshold_pct + (drift or 0.0))
        m[prefix + "contended"] = float(flag)
        contended += flag
    m["contention_rate_pct"] = contended / count * 100
    _check_ranges(result, count, m.get("drift_pct"), rule)
    return result


def _phase_means(metrics: dict[str, float], prefix: str, phase: str, phases: Sequence[AgentPhase]) -> None:
    """Per-token comparisons between phases: TTFT, decode rate, TPOT, tokens (mean per phase)."""
    for metric in ("ttft_ms", "throughput_tok_s", "tpot_ms"):
        values = [v for p in phases for v in p.values(metric)]
        if values:
            metrics[f"{prefix}{metric}_{phase}"] = statistics.fmean(values)
    tokens = [sum(p.values("output_tokens")) for p in phases if p.values("output_tokens")]
    if tokens:
        metrics[f"{prefix}output_tokens_{phase}"] = statistics.fmean(tokens)


def _check_ranges(result: MultiAgentResult, count: int, drift: float | None, rule: ContentionRule) -> None:
    """Flag values outside their physical range (beyond the run's noise floor) and large drift."""
    m = result.metrics
    tolerance = max(MIN_TOLERANCE_PCT, drift or 0.0) / 100
    bounds = {
        "speedup": (None, float(count)),
        "parallel_efficiency_pct": (100.0 / count, BY_NAME["parallel_efficiency_pct"].high),
    }
    for name, (low, high) in bounds.items():
        value = m[name]
        if high is not None and value > high * (1 + tolerance):
            result.out_of_range.append(name)
            result.warnings.append(f"{name}={value:.3g} is above its physical maximum {high:g} (agents={count})")
        elif low is not None and value < low * (1 - tolerance):
            result.out_of_range.append(name)
            result.warnings.append(
                f"{name}={value:.3g} is below {low:.3g}, slower than running the agents one after another"
            )
    if drift is not None and drift > rule.drift_warn_pct:
        result.warnings.append(
            f"drift_pct={drift:.3g}: an agent's two solo runs differ by more than {rule.drift_warn_pct:g} %, "
            "so the machine changed during the job; speedup and efficiency carry that much noise"
        )
