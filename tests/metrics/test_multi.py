"""Multi-agent metrics on hand-made phases (docs/multi-agent.md)."""

from __future__ import annotations

import random

import pytest

from cfexp.metrics.calls import MeasuredCall
from cfexp.metrics.multi import (
    AgentPhase,
    ContentionRule,
    agent_phases,
    drift_pct,
    is_contended,
    multi_agent_metrics,
)
from tests.metrics.factory import MS, agent_record, measured, timed_call

RULE = ContentionRule(threshold_pct=25.0, drift_warn_pct=10.0)


def phase(name: str, start_ms: float, end_ms: float, calls: tuple[MeasuredCall, ...] = ()) -> AgentPhase:
    return AgentPhase(name, 0, True, round(start_ms * MS), round(end_ms * MS), calls)


def test_uneven_agents_that_do_not_interfere_are_100_percent_efficient() -> None:
    """A 10 s and a 20 s agent overlapping perfectly: the original's ratio says 75 %."""
    solos = {"a": [phase("a", 0, 10_000)], "b": [phase("b", 0, 20_000)]}
    concurrent = {"a": phase("a", 0, 10_000), "b": phase("b", 0, 20_000)}
    m = multi_agent_metrics(concurrent, solos, RULE).metrics
    assert m["parallel_efficiency_pct"] == pytest.approx(100.0)
    assert m["speedup"] == pytest.approx(1.5)  # 30 s of work in 20 s
    assert m["overlap_efficiency_pct"] == pytest.approx(75.0)


def test_a_serializing_server_gives_100_over_n() -> None:
    solos = {"a": [phase("a", 0, 1000)], "b": [phase("b", 0, 1000)]}
    # Both start at 0; B waits for A, so the phase takes 2000 ms.
    concurrent = {"a": phase("a", 0, 1000), "b": phase("b", 0, 2000)}
    result = multi_agent_metrics(concurrent, solos, RULE)
    assert result.metrics["parallel_efficiency_pct"] == pytest.approx(50.0)
    assert result.metrics["speedup"] == pytest.approx(1.0)
    assert result.metrics["overlap_efficiency_pct"] == pytest.approx(75.0)
    assert result.out_of_range == [] and result.warnings == []


def test_speedup_times_wall_equals_the_sum_of_solo_times() -> None:
    solos = {"a": [phase("a", 0, 700)], "b": [phase("b", 0, 1300)], "c": [phase("c", 0, 900)]}
    concurrent = {"a": phase("a", 10, 900), "b": phase("b", 0, 1500), "c": phase("c", 20, 1400)}
    m = multi_agent_metrics(concurrent, solos, RULE).metrics
    assert m["speedup"] * m["concurrent_wall_ms"] == pytest.approx(m["solo_sum_ms"]) == pytest.approx(2900)
    assert m["parallel_efficiency_pct"] == pytest.approx(1300 / 1500 * 100)


def test_aba_uses_the_mean_of_both_solos_and_logs_each_and_the_drift() -> None:
    solos = {"a": [phase("a", 0, 1000), phase("a", 5000, 6100)]}
    concurrent = {"a": phase("a", 2000, 3050)}
    m = multi_agent_metrics(concurrent, solos, RULE).metrics
    assert (m["a_solo_before_ms"], m["a_solo_after_ms"], m["a_solo_ms"]) == (1000.0, 1100.0, 1050.0)
    # |1100 − 1000| / 1050
    assert m["a_drift_pct"] == pytest.approx(100 / 1050 * 100) == m["drift_pct"]
    assert m["parallel_efficiency_pct"] == pytest.approx(100.0)


def test_aba_stays_within_two_points_of_the_truth_under_linear_drift_where_one_solo_does_not() -> None:
    """A machine 10 % slower at the end of the job than at its start, and no interference:
    the solo before takes 1000 ms, the concurrent phase (mid-job) 1050, the solo after 1100."""
    before, middle, after = 1000.0, 1050.0, 1100.0
    concurrent = {"a": phase("a", 0, middle), "b": phase("b", 0, middle)}
    aba = {n: [phase(n, 0, before), phase(n, 0, after)] for n in ("a", "b")}
    one_sided = {n: [phase(n, 0, before)] for n in ("a", "b")}
    assert multi_agent_metrics(concurrent, aba, RULE).metrics["parallel_efficiency_pct"] == pytest.approx(100, abs=2)
    assert multi_agent_metrics(concurrent, one_sided, RULE).metrics["parallel_efficiency_pct"] < 98


def test_drift_beyond_its_threshold_is_a_warning() -> None:
    solos = {"a": [phase("a", 0, 1000), phase("a", 0, 1300)]}
    result = multi_agent_metrics({"a": phase("a", 0, 1150)}, solos, RULE)
    assert any("drift_pct" in w for w in result.warnings)
    assert drift_pct([phase("a", 0, 1000)]) is None


def test_values_outside_their_physical_range_are_flagged() -> None:
    """Concurrent faster than alone: efficiency 200 % and speedup 4 with 2 agents are drift, not parallelism."""
    solos = {"a": [phase("a", 0, 2000)], "b": [phase("b", 0, 2000)]}
    concurrent = {"a": phase("a", 0, 1000), "b": phase("b", 0, 1000)}
    result = multi_agent_metrics(concurrent, solos, RULE)
    assert set(result.out_of_range) == {"speedup", "parallel_efficiency_pct"}
    assert len(result.warnings) == 2


def test_worse_than_serial_is_flagged_too() -> None:
    solos = {"a": [phase("a", 0, 1000)], "b": [phase("b", 0, 1000)]}
    concurrent = {"a": phase("a", 0, 2500), "b": phase("b", 0, 3000)}
    result = multi_agent_metrics(concurrent, solos, RULE)
    assert result.out_of_range == ["parallel_efficiency_pct"]  # 33 % < 100/2


def test_without_a_solo_phase_only_the_overlap_ratio_is_reported() -> None:
    result = multi_agent_metrics({"a": phase("a", 0, 1000)}, {}, RULE)
    assert "parallel_efficiency_pct" not in result.metrics and "overlap_efficiency_pct" in result.metrics


@pytest.mark.parametrize(
    ("ttft", "rate", "margin", "expected"),
    [
        (124.9, 50.0, 25.0, False),  # within the margin above the highest solo TTFT (100)
        (126.0, 50.0, 25.0, True),
        (100.0, 37.6, 25.0, False),  # just above the lowest solo rate 50 × 0.75
        (100.0, 37.4, 25.0, True),
        (130.0, 50.0, 35.0, False),  # a drift of 10 % widens the band
    ],
)
def test_the_contention_rule_and_its_margin(ttft: float, rate: float, margin: float, expected: bool) -> None:
    solos = [phase("a", 0, 1, (timed_call("a", "analysis", 90.0, 55.0),)),
             phase("a", 0, 1, (timed_call("a", "analysis", 100.0, 50.0),))]  # fmt: skip
    concurrent = phase("a", 0, 1, (timed_call("a", "analysis", ttft, rate),))
    assert is_contended(concurrent, solos, margin) is expected


def test_contention_compares_each_step_with_the_same_step() -> None:
    """A long report prompt's TTFT is not compared with the short analysis prompt's."""
    solos = [phase("a", 0, 1, (timed_call("a", "analysis", 100.0, 50.0), timed_call("a", "report", 400.0, 50.0)))]
    concurrent = phase("a", 0, 1, (timed_call("a", "analysis", 110.0, 50.0), timed_call("a", "report", 420.0, 50.0)))
    assert not is_contended(concurrent, solos, 25.0)


def test_false_positive_rate_without_interference_is_at_most_5_percent() -> None:
    """Every duration jittered log-normally (CV 5 %, the simulator's default), no interference:
    the rule must rarely call an agent contended (docs/multi-agent.md states the measured rate)."""
    rng = random.Random(7)
    sigma = 0.05

    def jittered(value: float) -> float:
        return value * rng.lognormvariate(-sigma * sigma / 2, sigma)

    trials, contended = 400, 0
    for _ in range(trials):
        def run() -> AgentPhase:
            calls = (timed_call("a", "analysis", jittered(300), jittered(40)), timed_call("a", "report", jittered(900), jittered(40)))
            return phase("a", 0, 1, calls)

        solos = [run(), run()]
        contended += is_contended(run(), solos, RULE.threshold_pct + (drift_pct(solos) or 0.0))
    assert contended / trials <= 0.05


def test_agent_phases_read_agent_records_and_their_calls() -> None:
    calls = [measured(agent="agent_0"), measured(agent="agent_0", success=False), measured(agent="agent_1")]
    phases = agent_phases([agent_record("agent_0", 0, 2, instance=1)], calls)
    (only,) = phases.values()
    assert (only.instance, only.duration_ms, len(only.calls)) == (1, 2.0, 2)
    assert only.mean("ttft_ms") == 250.0  # the failed call has none
