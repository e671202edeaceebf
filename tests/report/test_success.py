"""Optimization success rate: significance-gated against the original rule."""

from __future__ import annotations

import pandas as pd

from cfexp.report.load import prepare
from cfexp.report.success import SuccessRule, pairs, rates


def _runs(rows: list[tuple[str, str, int, float]]) -> pd.DataFrame:
    return pd.DataFrame([
        {"run_id": f"r{i:03d}", "parent_run_id": "sweep", "status": "FINISHED", "params.gpu_layers": g, "params.options_mode": m,
         "params.repetition": str(rep), "metrics.throughput_tok_s": v, "tags.provenance": "measured"}
        for i, (g, m, rep, v) in enumerate(rows)
    ])


def test_a_lucky_first_run_is_an_original_success_but_not_a_gated_one() -> None:
    rows = [
        # gpu 60: the first configured run beats the first baseline run, the others do not
        ("60", "configured", 0, 105.0), ("60", "configured", 1, 95.0), ("60", "configured", 2, 99.0),
        ("60", "server_defaults", 0, 100.0), ("60", "server_defaults", 1, 101.0), ("60", "server_defaults", 2, 99.5),
        # gpu 80: consistently better
        ("80", "configured", 0, 120.0), ("80", "configured", 1, 121.0), ("80", "configured", 2, 119.0),
        ("80", "server_defaults", 0, 100.0), ("80", "server_defaults", 1, 101.0), ("80", "server_defaults", 2, 99.0),
        # gpu 120: two runs only -> untested
        ("120", "configured", 0, 130.0), ("120", "configured", 1, 131.0),
        ("120", "server_defaults", 0, 100.0), ("120", "server_defaults", 1, 101.0),
    ]
    runset = prepare(_runs(rows), pd.DataFrame(), {})
    table = pairs(runset.used, runset.factors, SuccessRule())
    by_gpu = {r["gpu_layers"]: r for _, r in table.iterrows()}
    assert list(table["gpu_layers"]) == ["60", "80", "120"]  # numeric order
    assert by_gpu["60"]["success_original"] is True and by_gpu["60"]["success_gated"] is False
    assert by_gpu["80"]["success_original"] is True and by_gpu["80"]["success_gated"] is True
    assert by_gpu["120"]["success_gated"] is None and by_gpu["120"]["note"] == "n<3"
    assert by_gpu["120"]["success_original"] is True
    rate = rates(table, None).iloc[0]
    assert (rate["gated_successes"], rate["gated_n"], rate["untested"]) == (1, 2, 1)
    assert (rate["original_successes"], rate["original_n"]) == (3, 3)
    assert rate["gated_ci_low"] < 0.5 < rate["gated_ci_high"]


def test_a_named_baseline_config_and_a_lower_is_better_metric() -> None:
    rows = [(g, "configured", rep, v + rep) for g, v in (("60", 10.0), ("80", 20.0)) for rep in range(3)]
    runset = prepare(_runs(rows), pd.DataFrame(), {})
    rule = SuccessRule(higher=False, baseline={"gpu_layers": "80"})
    table = pairs(runset.used, runset.factors, rule)
    assert len(table) == 1 and table.iloc[0]["gpu_layers"] == "60"
    assert bool(table.iloc[0]["success_gated"]) is True  # 10-12 is lower than 20-22
