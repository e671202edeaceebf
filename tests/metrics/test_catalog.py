"""The metric catalogue is the one list: code, MLflow names, docs and directions follow it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cfexp.errors import ConfigError
from cfexp.metrics import catalog
from cfexp.metrics.calls import FIELDS
from cfexp.metrics.catalog import Direction, Scope
from cfexp.metrics.runs import summarize_calls
from tests.metrics.factory import measured

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
BEGIN, END = "<!-- catalogue:begin -->", "<!-- catalogue:end -->"


def test_the_per_call_fields_are_the_catalogues_call_metrics() -> None:
    assert FIELDS == catalog.CALL_METRICS


def test_every_name_a_run_summary_logs_is_in_the_catalogue() -> None:
    names = summarize_calls([measured(), measured(finish_reason="stop")])
    unknown = [name for name in names if catalog.lookup(name) is None]
    assert unknown == []


@pytest.mark.parametrize(
    ("name", "direction"),
    [
        ("ttft_ms", Direction.LOWER),
        ("ttft_ms_p95", Direction.LOWER),
        ("throughput_tok_s", Direction.HIGHER),
        ("parallel_efficiency_pct", Direction.HIGHER),
        ("agent_1_ttft_ms_concurrent", Direction.LOWER),
        ("proc_server0_rss_mb_max", Direction.NONE),
        ("output_tokens", Direction.NONE),
        ("no_such_metric", Direction.NONE),
    ],
)
def test_directions_come_from_the_catalogue(name: str, direction: Direction) -> None:
    assert catalog.direction(name) is direction


def test_families_and_summaries_resolve_to_their_entry() -> None:
    lookup = catalog.lookup
    assert lookup("agent_12_solo_before_ms") is catalog.BY_NAME["agent_<i>_solo_before_ms"]
    assert lookup("sys_core3_cpu_pct_mean") is catalog.BY_NAME["sys_core<i>_cpu_pct"]
    assert lookup("gpu0_power_w_max") is catalog.BY_NAME["gpu<i>_power_w"]
    assert lookup("speedup_p95") is None  # only per-call metrics have percentiles
    assert lookup("agent_x_solo_ms") is None


def test_a_neutral_metric_has_no_better_side() -> None:
    with pytest.raises(ConfigError, match="output_tokens"):
        catalog.higher_is_better("output_tokens")
    assert catalog.higher_is_better("throughput_tok_s") and not catalog.higher_is_better("ttft_ms")
    with pytest.raises(ValueError):
        _ = Direction.NONE.optuna
    assert Direction.LOWER.optuna == "minimize"


def test_every_entry_is_complete_and_named_once() -> None:
    names = [m.name for m in catalog.METRICS]
    assert len(names) == len(set(names))
    for metric in catalog.METRICS:
        assert metric.unit and metric.definition, metric.name
        assert not (metric.reported and metric.direction is Direction.NONE), metric.name
    assert {m.scope for m in catalog.METRICS} == set(Scope)


def test_docs_metrics_md_holds_the_generated_table() -> None:
    """Regenerate with: python -m cfexp.metrics.catalog (paste between the markers)."""
    text = DOCS.read_text()
    assert BEGIN in text and END in text
    between = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert between == catalog.markdown_table()
