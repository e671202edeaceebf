"""Per-run metrics: what one job logs, computed from its records (pure functions).

Typed records and the harness's outside view of the agent process go in; a
flat ``{name: value}`` dict of catalogue names comes out. Per-call metrics are
summarised over the run's successful calls: the mean under the metric's own
name, ``_p50`` and ``_p95`` beside it when there are several calls.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cfexp.agents.records import IngestRecord, ReadyRecord
from cfexp.metrics.calls import FIELDS, MeasuredCall, first_call, percentile
from cfexp.metrics.catalog import LOAD_THRESHOLD_MS
from cfexp.metrics.rubric import score_report
from cfexp.vocab import Step


@dataclass(frozen=True)
class ProcessMeasurement:
    """The agent process as the harness measured it from outside."""

    # CLOCK_MONOTONIC reading just before the agent's exec (cfexp-launch), or the spawn.
    t_spawn_ns: int
    # None when not measurable without inflation (see cfexp.agents.runner).
    peak_rss_mb: float | None
    cpu_ms: float | None
    wall_ms: float


def summarize_calls(calls: Sequence[MeasuredCall]) -> dict[str, float]:
    """Counts over all calls; mean (and p50/p95 with several calls) of each call metric over successful ones."""
    ok = [call.metrics for call in calls if call.success]
    metrics: dict[str, float] = {
        "calls_total": float(len(calls)),
        "calls_failed": float(len(calls) - len(ok)),
        "output_tokens_total": float(sum(m.output_tokens or 0 for m in ok)),
        "calls_with_load": float(sum(m.server_load_ms is not None and m.server_load_ms >= LOAD_THRESHOLD_MS
                                     for m in ok)),
    }  # fmt: skip
    for name in FIELDS:
        values = [float(v) for m in ok if (v := getattr(m, name)) is not None]
        if not values:
            continue
        metrics[name] = statistics.fmean(values)
        if len(values) > 1:
            metrics[f"{name}_p50"] = percentile(values, 50)
            metrics[f"{name}_p95"] = percentile(values, 95)
    metrics.update(first_and_warm_ttft(calls))
    return metrics


def first_and_warm_ttft(calls: Sequence[MeasuredCall]) -> dict[str, float]:
    """The process's first (cold) call's TTFT on its own, and the mean over the calls after it.

    The first call of an agent process is the first to run the HTTP client's
    code paths (and, in Python, to import what they load lazily); it is kept
    apart so that a cold-start cost is seen as such, not spread over the mean.
    Absent when that call failed (``first_call_ttft_ms``) or no later call
    succeeded (``warm_ttft_ms``).
    """
    first = first_call([call.record for call in calls])
    if first is None:
        return {}
    metrics: dict[str, float] = {}
    warm: list[float] = []
    for call in calls:
        ttft = call.metrics.ttft_ms
        if ttft is None:
            continue
        if call.record is first:
            metrics["first_call_ttft_ms"] = ttft
        else:
            warm.append(ttft)
    if warm:
        metrics["warm_ttft_ms"] = statistics.fmean(warm)
    return metrics


def startup_ms(ready: ReadyRecord | None, t_spawn_ns: int) -> float | None:
    """Agent exec to its ready record; None when it never got ready."""
    return (ready.t_ready_ns - t_spawn_ns) / 1e6 if ready is not None else None


def summarize_process(
    process: ProcessMeasurement, ready: ReadyRecord | None, output_tokens_total: float
) -> dict[str, float]:
    metrics = {"agent_wall_ms": process.wall_ms}
    startup = startup_ms(ready, process.t_spawn_ns)
    if startup is not None:
        metrics["agent_startup_ms"] = startup
    if process.peak_rss_mb is not None:
        metrics["agent_peak_rss_mb"] = process.peak_rss_mb
    if process.cpu_ms is not None:
        metrics["agent_cpu_ms"] = process.cpu_ms
        if output_tokens_total > 0:
            # CPU the agent spends per streamed token: its whole CPU time over the
            # tokens it received (start-up included, as a user pays for it too).
            metrics["agent_cpu_us_per_token"] = process.cpu_ms * 1000.0 / output_tokens_total
    return metrics


def summarize_ingest(ingests: Iterable[IngestRecord]) -> dict[str, float]:
    ingests = list(ingests)
    if not ingests:
        return {}
    return {
        "ingest_files": float(sum(item.files for item in ingests)),
        "ingest_bytes": float(sum(item.bytes for item in ingests)),
    }


def report_quality(calls: Sequence[MeasuredCall]) -> dict[str, float]:
    """TR109's keyword rubric on the generated reports, mean over the agents' report calls."""
    reports = [c.record.text for c in calls if c.success and c.record.step == Step.report]
    if not reports:
        return {}
    scores = [score_report(text) for text in reports]
    return {key: statistics.fmean(s[key] for s in scores) for key in scores[0]}
