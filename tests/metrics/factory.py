"""Typed records built by hand, for metric tests (times in ms, stored in ns)."""

from __future__ import annotations

from typing import Any

from cfexp.agents.records import AgentRecord, CallRecord
from cfexp.metrics.calls import MeasuredCall, derive_call

MS = 1_000_000


def call(**changes: Any) -> CallRecord:
    """A successful Ollama-API call: sent at 1 s, five content chunks, the server counted six tokens.

    ``finish_reason`` "length" (cut by the budget), so all six are reply tokens.
    """
    fields: dict[str, Any] = {
        "run_id": "r",
        "agent": "agent_0",
        "call_index": 0,
        "step": "analysis",
        "api": "ollama",
        "base_url": "http://127.0.0.1:1",
        "instance": 0,
        "model": "m",
        "options": None,
        "prompt_chars": 100,
        "prompt_nonce": None,
        # Call begun 10 ms before its send; a 2 ms connect in between.
        "t_start_ns": 990 * MS,
        "t_connect_start_ns": 992 * MS,
        "t_connect_end_ns": 994 * MS,
        "t_send_ns": 1_000 * MS,
        "success": True,
        "t_first_token_ns": 1_250 * MS,
        "t_last_token_ns": 1_350 * MS,
        "t_end_ns": 1_360 * MS,
        "chunk_times_ns": [1_250 * MS, 1_260 * MS, 1_290 * MS, 1_300 * MS, 1_350 * MS],
        "content_chunks": 5,
        "server_eval_count": 6,
        "server_eval_duration_ns": 120 * MS,
        "server_prompt_eval_count": 40,
        "server_prompt_eval_duration_ns": 30 * MS,
        "server_load_duration_ns": 5 * MS,
        "finish_reason": "length",
    }
    fields.update(changes)
    return CallRecord(**fields)


def measured(**changes: Any) -> MeasuredCall:
    record = call(**changes)
    return MeasuredCall(record, derive_call(record))


def timed_call(agent: str, step: str, ttft_ms: float, rate_tok_s: float, tokens: int = 11) -> MeasuredCall:
    """A call with a chosen TTFT and decode rate (tokens − 1 gaps after the first token)."""
    span_ms = (tokens - 1) / rate_tok_s * 1000
    first = 1_000 * MS + round(ttft_ms * MS)
    last = first + round(span_ms * MS)
    step_ns = (last - first) // (tokens - 1)
    chunks = [first + i * step_ns for i in range(tokens - 1)] + [last]
    return measured(
        agent=agent, step=step, t_first_token_ns=first, t_last_token_ns=last, chunk_times_ns=chunks,
        content_chunks=tokens, server_eval_count=tokens,
    )  # fmt: skip


def agent_record(name: str, start_ms: float, end_ms: float, instance: int = 0, success: bool = True) -> AgentRecord:
    return AgentRecord(
        run_id="r", agent=name, persona="p", instance=instance, success=success, error_kind=None, error=None,
        t_start_ns=round(start_ms * MS), t_end_ns=round(end_ms * MS), findings=[], recommendations=[], calls=2,
    )  # fmt: skip
