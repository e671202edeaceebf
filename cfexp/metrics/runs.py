"""Per-run metrics: what one job logs, computed from its records.

Pure functions: records (already derived per call by
:func:`cfexp.metrics.calls.derive_call`) and what the harness measured of the
agent process go in; a flat ``{name: value}`` dict comes out. Names carry
their unit; a run with several calls gets ``_p50`` and ``_p95`` variants
beside the mean.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cfexp.metrics.calls import percentile

# Per-call fields summarised over a run's successful calls.
CALL_METRICS = (
    "ttft_ms",
    "tpot_ms",
    "e2e_ms",
    "throughput_tok_s",
    "e2e_throughput_tok_s",
    "server_throughput_tok_s",
    "output_tokens",
    "itl_ms_mean",
    "itl_ms_p95",
    "server_prompt_eval_count",
    "server_prompt_eval_ms",
    "server_load_ms",
)


@dataclass(frozen=True)
class ProcessMeasurement:
    """The agent process as the harness measured it from outside."""

    startup_ms: float | None
    # None when not measurable without inflation (see cfexp.agents.runner).
    peak_rss_mb: float | None
    cpu_ms: float | None
    wall_ms: float


def summarize_calls(calls: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Means (and p50/p95 when there are several calls) over successful calls."""
    calls = list(calls)
    ok = [call for call in calls if call.get("success")]
    metrics: dict[str, float] = {
        "calls_total": float(len(calls)),
        "calls_failed": float(len(calls) - len(ok)),
        "output_tokens_total": float(sum(call.get("output_tokens") or 0 for call in ok)),
    }
    for name in CALL_METRICS:
        values = [float(call[name]) for call in ok if call.get(name) is not None]
        if not values:
            continue
        metrics[name] = statistics.fmean(values)
        if len(values) > 1:
            metrics[f"{name}_p50"] = percentile(values, 50)
            metrics[f"{name}_p95"] = percentile(values, 95)
    return metrics


def summarize_process(process: ProcessMeasurement, output_tokens_total: float) -> dict[str, float]:
    metrics = {"agent_wall_ms": process.wall_ms}
    if process.peak_rss_mb is not None:
        metrics["agent_peak_rss_mb"] = process.peak_rss_mb
    if process.startup_ms is not None:
        metrics["agent_startup_ms"] = process.startup_ms
    if process.cpu_ms is not None:
        metrics["agent_cpu_ms"] = process.cpu_ms
    if process.cpu_ms is not None and output_tokens_total > 0:
        # CPU the agent spends per streamed token: its whole CPU time over the
        # tokens it received (start-up included, as a user pays for it too).
        metrics["agent_cpu_us_per_token"] = process.cpu_ms * 1000.0 / output_tokens_total
    return metrics


def summarize_ingest(ingests: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    ingests = list(ingests)
    if not ingests:
        return {}
    return {
        "ingest_files": float(sum(item.get("files", 0) for item in ingests)),
        "ingest_bytes": float(sum(item.get("bytes", 0) for item in ingests)),
    }
