"""Multi-agent metrics on hand-made timings."""

from __future__ import annotations

import pytest

from cfexp.metrics.multi import AgentTiming, agent_timings, is_contended, multi_agent_metrics

MS = 1_000_000


def timing(name: str, start_ms: float, end_ms: float, ttft: float = 100.0, tput: float = 50.0) -> AgentTiming:
    return AgentTiming(name, 0, True, int(start_ms * MS), int(end_ms * MS), ttft, tput)


def test_two_equal_agents_perfectly_overlapped_are_100_percent_efficient() -> None:
    solo = {"a": timing("a", 0, 1000), "b": timing("b", 0, 1000)}
    concurrent = {"a": timing("a", 0, 1000), "b": timing("b", 5, 1000)}
    metrics = multi_agent_metrics(concurrent, solo, threshold_pct=25)
    assert metrics["speedup"] == pytest.approx(2.0)
    assert metrics["parallel_efficiency_pct"] == pytest.approx(100.0)
    assert metrics["contention_rate_pct"] == 0


def test_a_serializing_server_gives_50_percent_while_the_old_ratio_says_75() -> None:
    """The original's overlap ratio counts the time B waited as work: 75 %, not 50 %."""
    solo = {"a": timing("a", 0, 1000), "b": timing("b", 0, 1000)}
    # Both start at 0; B waits for A, so B's measured duration is 2000 ms.
    concurrent = {"a": timing("a", 0, 1000), "b": timing("b", 0, 2000, ttft=1100)}
    metrics = multi_agent_metrics(concurrent, solo, threshold_pct=25)
    assert metrics["parallel_efficiency_pct"] == pytest.approx(50.0)
    assert metrics["overlap_efficiency_pct"] == pytest.approx(75.0)
    assert metrics["b_contended"] == 1.0 and metrics["a_contended"] == 0.0
    assert metrics["contention_rate_pct"] == pytest.approx(50.0)


def test_speedup_times_wall_equals_the_sum_of_solo_times() -> None:
    solo = {"a": timing("a", 0, 700), "b": timing("b", 0, 1300), "c": timing("c", 0, 900)}
    concurrent = {"a": timing("a", 10, 900), "b": timing("b", 0, 1500), "c": timing("c", 20, 1400)}
    metrics = multi_agent_metrics(concurrent, solo, threshold_pct=25)
    assert metrics["speedup"] * metrics["concurrent_wall_ms"] == pytest.approx(metrics["solo_sum_ms"])
    assert metrics["solo_sum_ms"] == pytest.approx(2900)


def test_without_a_solo_phase_only_the_overlap_ratio_is_reported() -> None:
    metrics = multi_agent_metrics({"a": timing("a", 0, 1000)}, None, threshold_pct=25)
    assert "parallel_efficiency_pct" not in metrics and "overlap_efficiency_pct" in metrics


@pytest.mark.parametrize(
    "ttft, tput, expected",
    [(125.0, 50.0, False), (126.0, 50.0, True), (100.0, 37.5, False), (100.0, 37.4, True), (None, None, False)],
)
def test_the_contention_rule_and_its_threshold(ttft: float | None, tput: float | None, expected: bool) -> None:
    solo = timing("a", 0, 1, ttft=100.0, tput=50.0)
    concurrent = AgentTiming("a", 0, True, 0, 1, ttft, tput)
    assert is_contended(concurrent, solo, threshold_pct=25) is expected


def test_agent_timings_read_agent_records_and_their_calls() -> None:
    records = [
        {"kind": "agent", "agent": "agent_0", "instance": 1, "success": True, "t_start_ns": 0, "t_end_ns": 2 * MS},
    ]
    calls = [
        {"agent": "agent_0", "success": True, "ttft_ms": 10.0, "throughput_tok_s": 30.0},
        {"agent": "agent_0", "success": True, "ttft_ms": 20.0, "throughput_tok_s": 50.0},
        {"agent": "agent_0", "success": False, "ttft_ms": None, "throughput_tok_s": None},
        {"agent": "agent_1", "success": True, "ttft_ms": 99.0, "throughput_tok_s": 99.0},
    ]
    (only,) = agent_timings(records, calls).values()
    assert (only.instance, only.duration_ms, only.ttft_ms, only.throughput_tok_s) == (1, 2.0, 15.0, 40.0)
