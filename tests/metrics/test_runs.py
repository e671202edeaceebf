"""Per-run summaries on hand-worked values (docs/metrics.md, "Per run").

Each expected value is worked out in the comment above it, so a summary that
used the median for p95, counted failed calls or divided by the wrong total
fails here.
"""

from __future__ import annotations

import pytest

from cfexp.agents.records import IngestRecord, ReadyRecord
from cfexp.metrics.runs import (
    ProcessMeasurement,
    report_quality,
    startup_ms,
    summarize_calls,
    summarize_ingest,
    summarize_process,
)
from tests.metrics.factory import MS, measured


def _ttft(ms: float, **changes: object) -> dict[str, object]:
    return {"t_first_token_ns": 1_000 * MS + round(ms * MS), **changes}


def test_mean_p50_p95_over_successful_calls_only() -> None:
    # TTFTs 100, 200, 300, 400 ms on success (the chunks then start at the first token)
    # and one failed call whose partial 5 s must not count.
    calls = []
    for ttft in (100.0, 200.0, 300.0, 400.0):
        first = 1_000 * MS + round(ttft * MS)
        calls.append(measured(t_first_token_ns=first, chunk_times_ns=[first, 1_350 * MS + first - 1_250 * MS],
                              t_last_token_ns=1_350 * MS + first - 1_250 * MS))  # fmt: skip
    calls.append(measured(success=False, t_first_token_ns=6_000 * MS))
    m = summarize_calls(calls)
    assert (m["calls_total"], m["calls_failed"]) == (5.0, 1.0)
    # mean (100 + 200 + 300 + 400) / 4 = 250; p50: rank 1.5 → 250; p95: rank 2.85 → 300 + 0.85 × 100 = 385
    assert m["ttft_ms"] == pytest.approx(250.0)
    assert m["ttft_ms_p50"] == pytest.approx(250.0)
    assert m["ttft_ms_p95"] == pytest.approx(385.0)
    # 4 successful calls × 6 tokens (finish_reason length: no end-of-turn token to take away)
    assert m["output_tokens_total"] == 24.0
    assert m["calls_with_load"] == 0.0  # 5 ms loads are not a model load


def test_one_call_has_a_mean_but_no_percentiles() -> None:
    m = summarize_calls([measured()])
    assert m["ttft_ms"] == 250.0 and "ttft_ms_p95" not in m


def test_the_first_call_is_reported_apart_from_the_warm_ones() -> None:
    # The process's first call is the one that began first, wherever it is listed:
    # TTFT 400 ms (cold); the others 100 and 200 ms → warm mean 150.
    calls = [
        measured(**_ttft(100.0, t_start_ns=2_000 * MS)),
        measured(**_ttft(400.0, t_start_ns=500 * MS)),
        measured(**_ttft(200.0, t_start_ns=3_000 * MS)),
    ]
    m = summarize_calls(calls)
    assert m["first_call_ttft_ms"] == pytest.approx(400.0)
    assert m["warm_ttft_ms"] == pytest.approx(150.0)
    assert m["ttft_ms"] == pytest.approx(700.0 / 3)  # the all-calls mean is still there


def test_one_call_is_a_first_call_without_warm_ones() -> None:
    m = summarize_calls([measured()])
    assert m["first_call_ttft_ms"] == 250.0 and "warm_ttft_ms" not in m


def test_a_failed_first_call_gives_no_first_call_figure() -> None:
    calls = [measured(success=False, t_start_ns=500 * MS), measured(**_ttft(100.0)), measured(**_ttft(300.0))]
    m = summarize_calls(calls)
    assert "first_call_ttft_ms" not in m
    assert m["warm_ttft_ms"] == pytest.approx(200.0)


def test_a_measured_call_that_paid_a_load_is_counted() -> None:
    m = summarize_calls([measured(server_load_duration_ns=2_500 * MS), measured()])
    assert m["calls_with_load"] == 1.0
    assert m["server_load_ms"] == pytest.approx((2_500 + 5) / 2)


def test_process_summary_cpu_per_token_and_startup() -> None:
    ready = ReadyRecord(run_id="r", language="python", runtime="asyncio", agent_version="0", t_ready_ns=1_180 * MS)
    process = ProcessMeasurement(t_spawn_ns=1_000 * MS, peak_rss_mb=61.5, cpu_ms=300.0, wall_ms=4_000.0)
    m = summarize_process(process, ready, output_tokens_total=24.0)
    # startup 1180 − 1000 = 180 ms; CPU per token 300 ms × 1000 / 24 tokens = 12500 µs
    assert m == {
        "agent_wall_ms": 4_000.0, "agent_startup_ms": 180.0, "agent_peak_rss_mb": 61.5,
        "agent_cpu_ms": 300.0, "agent_cpu_us_per_token": pytest.approx(12_500.0),
    }  # fmt: skip


def test_process_summary_leaves_out_what_was_not_measured() -> None:
    process = ProcessMeasurement(t_spawn_ns=0, peak_rss_mb=None, cpu_ms=None, wall_ms=10.0)
    assert summarize_process(process, None, output_tokens_total=0.0) == {"agent_wall_ms": 10.0}
    assert startup_ms(None, 0) is None
    no_tokens = ProcessMeasurement(t_spawn_ns=0, peak_rss_mb=None, cpu_ms=5.0, wall_ms=10.0)
    assert "agent_cpu_us_per_token" not in summarize_process(no_tokens, None, output_tokens_total=0.0)


def test_ingest_sums_over_agents() -> None:
    ingest = [IngestRecord(run_id="r", agent=f"agent_{i}", files=3, bytes=100 * (i + 1),
                           files_by_type={"csv": 3}, t_start_ns=0, t_end_ns=1) for i in range(2)]  # fmt: skip
    assert summarize_ingest(ingest) == {"ingest_files": 6.0, "ingest_bytes": 300.0}
    assert summarize_ingest([]) == {}


def test_report_quality_is_the_mean_over_report_calls() -> None:
    good = measured(step="report", text="# Title\n## Findings\n- throughput latency")
    plain = measured(step="report", text="words")
    analysis = measured(step="analysis", text="# ignored heading")
    both = report_quality([good, plain, analysis])
    alone = report_quality([good])
    assert both["report_quality_structure"] == pytest.approx(alone["report_quality_structure"] / 2)
    assert both["report_section_count"] == pytest.approx(1.0)  # (2 + 0) / 2
    assert report_quality([analysis]) == {}
