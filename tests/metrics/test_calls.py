"""derive_call on hand-computed records (docs/metrics.md, "Per call")."""

from __future__ import annotations

import math

import pytest

from cfexp.metrics.calls import FIELDS, derive_call, inter_token_gaps_ms, output_tokens, percentile
from tests.metrics.factory import MS, call


def test_hand_computed_call() -> None:
    """The invariant: e2e − ttft == Σ itl (both span first token to last token).

    ttft = 1250 − 1000 = 250 ms; e2e = 1350 − 1000 = 350 ms; gaps 10, 30, 10,
    50 ms (Σ = 100 = e2e − ttft); tpot = 100 / (6 − 1) = 20 ms; client decode
    throughput = 5 tokens / 0.1 s = 50 tok/s; e2e throughput = 6 / 0.35 s.
    """
    d = derive_call(call())
    assert d.ttft_ms == 250.0
    assert d.e2e_ms == 350.0
    assert d.tpot_ms == 20.0
    assert d.itl_ms_mean == 25.0
    assert d.itl_ms_p50 == 20.0  # sorted 10, 10, 30, 50: halfway between 10 and 30
    assert d.itl_ms_p95 == pytest.approx(47.0)  # rank 2.85: 30 + 0.85 * 20
    assert d.itl_ms_max == 50.0
    assert d.throughput_tok_s == pytest.approx(50.0)
    assert d.e2e_throughput_tok_s == pytest.approx(6 / 0.35)
    assert d.server_throughput_tok_s == pytest.approx(50.0)  # 6 / 0.12 s
    assert (d.server_prompt_eval_ms, d.server_load_ms) == (30.0, 5.0)
    assert (d.output_tokens, d.output_tokens_server, d.prompt_tokens) == (6, 6, 40)
    assert d.e2e_ms is not None and d.ttft_ms is not None
    assert d.e2e_ms - d.ttft_ms == pytest.approx(math.fsum(inter_token_gaps_ms(call().chunk_times_ns)))


def test_ttft_starts_at_the_send_and_the_connect_is_its_own_figure() -> None:
    """The factory's call begins at 990 ms, connects 992 → 994 ms, writes its request at 1000 ms."""
    d = derive_call(call())
    assert d.ttft_ms == 250.0  # from t_send_ns, not from the call's start
    assert d.connect_ms == 2.0
    # A kept-alive connection: no connect, and no 0 either (the mean would fall).
    assert derive_call(call(t_connect_start_ns=None, t_connect_end_ns=None)).connect_ms is None


def test_the_end_of_turn_token_is_not_an_output_token() -> None:
    """A reply that stopped by itself: the server counted 6 = 5 content tokens + end of turn."""
    d = derive_call(call(finish_reason="stop"))
    assert (d.output_tokens, d.output_tokens_server) == (5, 6)
    assert d.tpot_ms == 25.0  # 100 ms over 4 gaps, not 5
    assert d.throughput_tok_s == pytest.approx(40.0)
    assert output_tokens(call(finish_reason="length")) == 6
    assert output_tokens(call(finish_reason="stop", server_eval_count=0)) == 0


@pytest.mark.parametrize(
    ("counters", "expected"),
    [
        ({"server_eval_count": 7}, 7),  # Ollama
        ({"server_eval_count": None, "server_completion_tokens": 8}, 8),  # OpenAI usage
        ({"server_eval_count": None, "server_timings_predicted_n": 9}, 9),  # llama.cpp timings only
        ({"server_eval_count": None}, None),  # the server did not say
    ],
)
def test_output_tokens_come_from_whichever_counter_the_server_sent(counters: dict[str, int | None], expected: int | None) -> None:
    assert output_tokens(call(**counters)) == expected


def test_llama_cpp_timings_give_the_server_side_numbers_and_the_cache() -> None:
    d = derive_call(call(
        api="openai", server_eval_count=None, server_eval_duration_ns=None, server_prompt_eval_count=None,
        server_prompt_eval_duration_ns=None, server_load_duration_ns=None, server_prompt_tokens=300,
        server_completion_tokens=6, server_timings_prompt_n=5, server_timings_cache_n=295,
        server_timings_prompt_ms=12.5, server_timings_predicted_n=6, server_timings_predicted_ms=200.0,
    ))  # fmt: skip
    assert (d.prompt_tokens, d.prompt_tokens_evaluated, d.prompt_tokens_cached) == (300, 5, 295)
    assert d.server_prompt_eval_ms == 12.5
    assert d.server_throughput_tok_s == pytest.approx(30.0)
    assert d.server_load_ms is None


def test_ollama_does_not_say_how_many_prompt_tokens_it_evaluated() -> None:
    d = derive_call(call())
    assert d.prompt_tokens == 40 and d.prompt_tokens_evaluated is None and d.prompt_tokens_cached is None


def test_failed_call_has_no_metrics() -> None:
    assert all(v is None for v in derive_call(call(success=False)).as_dict().values())
    assert set(derive_call(call()).as_dict()) == set(FIELDS)


@pytest.mark.parametrize("tokens", [1, 0, None])
def test_tpot_and_decode_throughput_need_two_tokens(tokens: int | None) -> None:
    d = derive_call(call(server_eval_count=tokens))
    assert d.tpot_ms is None and d.throughput_tok_s is None
    assert d.ttft_ms == 250.0  # client timings do not depend on the count
    assert d.itl_ms_mean == 25.0


def test_missing_token_count_is_not_replaced_by_chunks() -> None:
    d = derive_call(call(server_eval_count=None))
    assert d.e2e_throughput_tok_s is None and d.output_tokens is None


def test_single_chunk_has_no_itl() -> None:
    d = derive_call(call(chunk_times_ns=[1_250 * MS], t_last_token_ns=1_250 * MS, server_eval_count=1))
    assert d.itl_ms_mean is None and d.itl_ms_p95 is None
    assert d.e2e_ms == d.ttft_ms == 250.0
    assert d.throughput_tok_s is None


def test_server_counters_absent_or_unusable() -> None:
    d = derive_call(call(server_eval_count=None, server_eval_duration_ns=0, server_prompt_eval_duration_ns=None,
                         server_load_duration_ns=None))  # fmt: skip
    assert d.server_throughput_tok_s is None
    assert d.server_prompt_eval_ms is None and d.server_load_ms is None


def test_all_tokens_in_one_read_has_no_decode_throughput() -> None:
    """First and last token at the same instant: the rate is undefined, not infinite."""
    d = derive_call(call(t_last_token_ns=1_250 * MS, chunk_times_ns=[1_250 * MS] * 3))
    assert d.throughput_tok_s is None
    assert d.itl_ms_max == 0.0


def test_percentile_is_numpy_linear() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert [percentile(values, q) for q in (0, 25, 50, 100)] == [1.0, 1.75, 2.5, 4.0]
    assert percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)
