"""Per-call metrics (docs/metrics.md, "Per call"): pure functions over a call record.

Agents emit raw clock readings and the server's counters; every latency,
throughput and token number is computed here, once, for every agent language
and every server, so the definitions cannot drift. A field that does not apply
to a call is ``None`` (never 0): a failed call, a server that does not say,
``tpot`` for one token. The fields are exactly the catalogue's call metrics
(:data:`cfexp.metrics.catalog.CALL_METRICS`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from itertools import pairwise

from cfexp.agents.records import CallRecord

_NS_PER_MS = 1e6
_NS_PER_S = 1e9
# The reason a reply ended by itself; real servers then count the end-of-turn token.
_STOPPED_BY_ITSELF = "stop"


@dataclass(frozen=True)
class CallMetrics:
    """The derived fields of one call (names, units and directions: the catalogue)."""

    ttft_ms: float | None = None
    connect_ms: float | None = None
    e2e_ms: float | None = None
    tpot_ms: float | None = None
    itl_ms_mean: float | None = None
    itl_ms_p50: float | None = None
    itl_ms_p95: float | None = None
    itl_ms_max: float | None = None
    throughput_tok_s: float | None = None
    e2e_throughput_tok_s: float | None = None
    output_tokens: int | None = None
    output_tokens_server: int | None = None
    prompt_tokens: int | None = None
    prompt_tokens_evaluated: int | None = None
    prompt_tokens_cached: int | None = None
    prompt_truncated_tokens: int | None = None
    server_prompt_eval_ms: float | None = None
    server_throughput_tok_s: float | None = None
    server_load_ms: float | None = None

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CallMetrics))


@dataclass(frozen=True)
class MeasuredCall:
    """A call record with its derived metrics: what the run summaries take."""

    record: CallRecord
    metrics: CallMetrics

    @property
    def success(self) -> bool:
        return self.record.success


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default method), ``q`` in [0, 100]."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def inter_token_gaps_ms(chunk_times_ns: Sequence[int]) -> list[float]:
    """Gaps between successive content chunks, in ms (empty for fewer than 2 chunks)."""
    return [(b - a) / _NS_PER_MS for a, b in pairwise(chunk_times_ns)]


def server_output_count(record: CallRecord) -> int | None:
    """The server's own count of generated tokens, whichever API reported it."""
    for value in (record.server_eval_count, record.server_completion_tokens, record.server_timings_predicted_n):
        if value is not None:
            return value
    return None


def output_tokens(record: CallRecord) -> int | None:
    """Tokens of the reply without the end-of-turn token (the one definition, docs/metrics.md).

    Every server cfexp knows (Ollama, llama-server, cfexp's own) counts the
    end-of-turn token it sampled when a reply stops by itself
    (``finish_reason`` "stop"), and sends no text for it; a reply cut by the
    token budget (``length``) has none.
    """
    raw = server_output_count(record)
    if raw is None:
        return None
    return raw - 1 if record.finish_reason == _STOPPED_BY_ITSELF and raw > 0 else raw


def derive_call(record: CallRecord) -> CallMetrics:
    """The derived fields of one call; all ``None`` for a failed call.

    A failed call's partial stream would mix its timings into the successful
    calls' statistics otherwise; failures are counted separately.
    """
    if not record.success:
        return CallMetrics()
    t_send, t_first, t_last = record.t_send_ns, record.t_first_token_ns, record.t_last_token_ns
    tokens = output_tokens(record)
    ttft = (t_first - t_send) / _NS_PER_MS if t_first is not None and t_send is not None else None
    e2e = (t_last - t_send) / _NS_PER_MS if t_last is not None and t_send is not None else None
    tpot = throughput = e2e_throughput = None
    if tokens is not None and tokens > 1:
        if ttft is not None and e2e is not None:
            tpot = (e2e - ttft) / (tokens - 1)
        if t_first is not None and t_last is not None and t_last > t_first:
            throughput = (tokens - 1) / ((t_last - t_first) / _NS_PER_S)
    if tokens is not None and e2e is not None and e2e > 0:
        e2e_throughput = tokens / (e2e / 1e3)
    gaps = inter_token_gaps_ms(record.chunk_times_ns)
    return CallMetrics(
        ttft_ms=ttft,
        connect_ms=connect_ms(record),
        e2e_ms=e2e,
        tpot_ms=tpot,
        itl_ms_mean=math.fsum(gaps) / len(gaps) if gaps else None,
        itl_ms_p50=percentile(gaps, 50) if gaps else None,
        itl_ms_p95=percentile(gaps, 95) if gaps else None,
        itl_ms_max=max(gaps) if gaps else None,
        throughput_tok_s=throughput,
        e2e_throughput_tok_s=e2e_throughput,
        output_tokens=tokens,
        output_tokens_server=server_output_count(record),
        prompt_tokens=_first(record.server_prompt_eval_count, record.server_prompt_tokens),
        prompt_tokens_evaluated=record.server_timings_prompt_n,
        prompt_tokens_cached=_first(record.server_timings_cache_n, record.server_cached_tokens),
        prompt_truncated_tokens=record.server_prompt_truncated_tokens,
        server_prompt_eval_ms=_server_prompt_eval_ms(record),
        server_throughput_tok_s=_server_throughput(record),
        server_load_ms=record.server_load_duration_ns / _NS_PER_MS
        if record.server_load_duration_ns is not None else None,
    )  # fmt: skip


def connect_ms(record: CallRecord) -> float | None:
    """The TCP connect (TLS included) the call made; None when it reused a kept-alive connection."""
    start, end = record.t_connect_start_ns, record.t_connect_end_ns
    return (end - start) / _NS_PER_MS if start is not None and end is not None else None


def first_call(records: Sequence[CallRecord]) -> CallRecord | None:
    """The agent process's first call: the one that began first (it runs every code path cold)."""
    return min(records, key=lambda r: r.t_start_ns, default=None)


def _first(*values: int | None) -> int | None:
    return next((v for v in values if v is not None), None)


def _server_prompt_eval_ms(record: CallRecord) -> float | None:
    if record.server_prompt_eval_duration_ns is not None:
        return record.server_prompt_eval_duration_ns / _NS_PER_MS
    return record.server_timings_prompt_ms


def _server_throughput(record: CallRecord) -> float | None:
    """The server's decode rate: Ollama's eval counters, else llama.cpp's timings."""
    count, ns = record.server_eval_count, record.server_eval_duration_ns
    if count is not None and ns is not None and ns > 0:
        return count / (ns / _NS_PER_S)
    count, ms = record.server_timings_predicted_n, record.server_timings_predicted_ms
    if count is not None and ms is not None and ms > 0:
        return count / (ms / 1e3)
    return None


def measure_calls(records: Sequence[CallRecord]) -> list[MeasuredCall]:
    return [MeasuredCall(record, derive_call(record)) for record in records]
