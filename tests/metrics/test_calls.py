"""derive_call on hand-computed records (docs/record-schema.md section 4)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from cfexp.metrics.calls import DERIVED_FIELDS, derive_call, inter_token_gaps_ms, percentile

MS = 1_000_000


def record(**changes: Any) -> dict[str, Any]:
    """A successful call: sent at 1 s, five content chunks, six tokens (server count)."""
    base: dict[str, Any] = {
        "kind": "call",
        "success": True,
        "t_send_ns": 1_000 * MS,
        "t_first_token_ns": 1_250 * MS,
        "t_last_token_ns": 1_350 * MS,
        "chunk_times_ns": [1_250 * MS, 1_260 * MS, 1_290 * MS, 1_300 * MS, 1_350 * MS],
        "output_tokens": 6,
        "server_eval_count": 6,
        "server_eval_duration_ns": 120 * MS,
        "server_prompt_eval_duration_ns": 30 * MS,
        "server_load_duration_ns": 5 * MS,
    }
    return base | changes


def test_hand_computed_call() -> None:
    """The invariant: e2e − ttft == Σ itl (both span first token to last token).

    ttft = 1250 − 1000 = 250 ms; e2e = 1350 − 1000 = 350 ms; gaps 10, 30, 10,
    50 ms (Σ = 100 = e2e − ttft); tpot = 100 / (6 − 1) = 20 ms; client decode
    throughput = 5 tokens / 0.1 s = 50 tok/s; e2e throughput = 6 / 0.35 s.
    """
    d = derive_call(record())
    assert d["ttft_ms"] == 250.0
    assert d["e2e_ms"] == 350.0
    assert d["tpot_ms"] == 20.0
    assert d["itl_ms_mean"] == 25.0
    assert d["itl_ms_p50"] == 20.0  # sorted 10, 10, 30, 50: halfway between 10 and 30
    assert d["itl_ms_p95"] == pytest.approx(47.0)  # rank 2.85: 30 + 0.85 * 20
    assert d["itl_ms_max"] == 50.0
    assert d["throughput_tok_s"] == pytest.approx(50.0)
    assert d["e2e_throughput_tok_s"] == pytest.approx(6 / 0.35)
    assert d["server_throughput_tok_s"] == pytest.approx(50.0)
    assert (d["server_prompt_eval_ms"], d["server_load_ms"]) == (30.0, 5.0)
    gaps = inter_token_gaps_ms(record()["chunk_times_ns"])
    assert d["e2e_ms"] - d["ttft_ms"] == pytest.approx(math.fsum(gaps))


def test_every_field_is_always_present() -> None:
    assert set(derive_call(record())) == set(DERIVED_FIELDS)
    assert set(derive_call({})) == set(DERIVED_FIELDS)


def test_failed_call_has_no_metrics() -> None:
    assert all(v is None for v in derive_call(record(success=False)).values())


@pytest.mark.parametrize("tokens", [1, 0, None])
def test_tpot_and_decode_throughput_need_two_tokens(tokens: int | None) -> None:
    d = derive_call(record(output_tokens=tokens))
    assert d["tpot_ms"] is None and d["throughput_tok_s"] is None
    assert d["ttft_ms"] == 250.0  # client timings do not depend on the count
    assert d["itl_ms_mean"] == 25.0


def test_missing_token_count_is_not_replaced_by_chunks() -> None:
    d = derive_call(record(output_tokens=None))
    assert d["e2e_throughput_tok_s"] is None


def test_single_chunk_has_no_itl() -> None:
    d = derive_call(
        record(chunk_times_ns=[1_250 * MS], t_last_token_ns=1_250 * MS, output_tokens=1)
    )
    assert d["itl_ms_mean"] is None and d["itl_ms_p95"] is None
    assert d["e2e_ms"] == d["ttft_ms"] == 250.0
    assert d["throughput_tok_s"] is None


def test_server_counters_absent_or_unusable() -> None:
    d = derive_call(
        record(
            server_eval_count=None,
            server_eval_duration_ns=0,
            server_prompt_eval_duration_ns=None,
            server_load_duration_ns=True,  # a bool is not a count
        )
    )
    assert d["server_throughput_tok_s"] is None
    assert d["server_prompt_eval_ms"] is None and d["server_load_ms"] is None


def test_all_tokens_in_one_read_has_no_decode_throughput() -> None:
    """First and last token at the same instant: the rate is undefined, not infinite."""
    d = derive_call(record(t_last_token_ns=1_250 * MS, chunk_times_ns=[1_250 * MS] * 3))
    assert d["throughput_tok_s"] is None
    assert d["itl_ms_max"] == 0.0


def test_percentile_is_numpy_linear() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert [percentile(values, q) for q in (0, 25, 50, 100)] == [1.0, 1.75, 2.5, 4.0]
    assert percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)
