"""Per-call derived metrics (docs/record-schema.md section 4): pure functions.

Agents emit raw clock readings and counters; every latency and throughput
number is computed here, once, for every agent language, so the definitions
cannot drift. Fields that are undefined for a call are ``None`` (never 0):
a failed call, a call without server token counts, ``tpot`` for one token.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

DERIVED_FIELDS = (
    "ttft_ms",
    "e2e_ms",
    "tpot_ms",
    "itl_ms_mean",
    "itl_ms_p50",
    "itl_ms_p95",
    "itl_ms_max",
    "throughput_tok_s",
    "e2e_throughput_tok_s",
    "server_throughput_tok_s",
    "server_prompt_eval_ms",
    "server_load_ms",
)

_NS_PER_MS = 1e6
_NS_PER_S = 1e9


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


def _int_or_none(record: Mapping[str, Any], key: str) -> int | None:
    value = record.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def derive_call(record: Mapping[str, Any]) -> dict[str, float | None]:
    """The derived fields of one call record (a decoded JSON object).

    Every key of :data:`DERIVED_FIELDS` is present; a field is ``None`` when
    its definition does not apply. A failed call (``success`` false) gets
    ``None`` everywhere: a partial stream's timings would mix into the
    successful calls' statistics otherwise.
    """
    out: dict[str, float | None] = dict.fromkeys(DERIVED_FIELDS)
    if not record.get("success"):
        return out
    t_send = _int_or_none(record, "t_send_ns")
    t_first = _int_or_none(record, "t_first_token_ns")
    t_last = _int_or_none(record, "t_last_token_ns")
    tokens = _int_or_none(record, "output_tokens")
    if t_send is not None and t_first is not None:
        out["ttft_ms"] = (t_first - t_send) / _NS_PER_MS
    if t_send is not None and t_last is not None:
        out["e2e_ms"] = (t_last - t_send) / _NS_PER_MS
    ttft, e2e = out["ttft_ms"], out["e2e_ms"]
    if tokens is not None and tokens > 1:
        if ttft is not None and e2e is not None:
            out["tpot_ms"] = (e2e - ttft) / (tokens - 1)
        if t_first is not None and t_last is not None and t_last > t_first:
            out["throughput_tok_s"] = (tokens - 1) / ((t_last - t_first) / _NS_PER_S)
    if tokens is not None and e2e is not None and e2e > 0:
        out["e2e_throughput_tok_s"] = tokens / (e2e / 1e3)
    gaps = inter_token_gaps_ms(record.get("chunk_times_ns") or [])
    if gaps:
        out["itl_ms_mean"] = math.fsum(gaps) / len(gaps)
        out["itl_ms_p50"] = percentile(gaps, 50)
        out["itl_ms_p95"] = percentile(gaps, 95)
        out["itl_ms_max"] = max(gaps)
    eval_count = _int_or_none(record, "server_eval_count")
    eval_ns = _int_or_none(record, "server_eval_duration_ns")
    if eval_count is not None and eval_ns is not None and eval_ns > 0:
        out["server_throughput_tok_s"] = eval_count / (eval_ns / _NS_PER_S)
    prompt_eval_ns = _int_or_none(record, "server_prompt_eval_duration_ns")
    if prompt_eval_ns is not None:
        out["server_prompt_eval_ms"] = prompt_eval_ns / _NS_PER_MS
    load_ns = _int_or_none(record, "server_load_duration_ns")
    if load_ns is not None:
        out["server_load_ms"] = load_ns / _NS_PER_MS
    return out
