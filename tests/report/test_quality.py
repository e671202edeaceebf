"""Doubtful numbers: out-of-range values excluded and listed, measurement warnings shown, contention over runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cfexp.report import ReportOptions, generate_report
from tests.report import hand
from tests.report.conftest import EXPERIMENT, NewStore

WARN_RANGE = ("parallel_efficiency_pct=180 is above its physical maximum 100 (agents=2) | "
              "speedup=3.6 is above its physical maximum 2 (agents=2)")
WARN_DRIFT = "drift_pct=5: an agent's two solo runs differ by more than 2 %"
# topology -> runs: (parallel efficiency %, speedup, drift %, agent 0 and 1 contended, quality, tags)
RUNS = {
    "single": [
        (52.0, 1.04, 0.5, (1, 1), 0.5, {}),
        (50.0, 1.00, 0.5, (1, 0), 0.5, {}),
        # the harness found it out of its physical range (speedup > N agents): reported, never ranked
        (180.0, 3.6, 0.5, (0, 0), 0.5, {"out_of_range_metrics": "parallel_efficiency_pct,speedup",
                                        "measurement_warnings": WARN_RANGE}),
    ],
    "dual": [
        (99.0, 1.98, 0.5, (0, 0), 0.5, {}),
        (100.5, 2.01, 0.0, (0, 1), 1.5, {}),  # 100.5 % is within the 2 % noise floor; quality 1.5 is not in [0, 1]
        (104.0, 2.08, 5.0, (0, 0), 0.5, {"measurement_warnings": WARN_DRIFT}),  # within its own drift (5 %)
    ],
}


@pytest.fixture
def multi(tmp_path: Path, new_store: NewStore) -> tuple[str, Path, dict[tuple[str, int], str]]:
    uri, tracker = new_store(tmp_path)
    parent = tracker.start_run(EXPERIMENT, "sweep", {"cfexp.sweep": "parent"})
    ids = {}
    for topology, runs in RUNS.items():
        for rep, (efficiency, speedup, drift, (c0, c1), quality, tags) in enumerate(runs):
            run = tracker.start_run(EXPERIMENT, f"{topology} {rep}", {"provenance": "simulated", **tags}, parent)
            tracker.log_params(run, {"topology.name": topology, "scenario.name": "multi_agent", "repetition": rep})
            tracker.log_metrics(run, {
                "parallel_efficiency_pct": efficiency, "speedup": speedup, "drift_pct": drift, "agents": 2.0,
                "agent_0_contended": c0, "agent_1_contended": c1, "contention_rate_pct": 50.0 * (c0 + c1),
                "report_quality_overall": quality, "ttft_ms": 100.0 + rep,
                "measurement_warnings": float(len(tags.get("measurement_warnings", "").split(" | ")))
                if "measurement_warnings" in tags else 0.0,
            })
            tracker.end_run(run, "FINISHED")
            ids[(topology, rep)] = run
    tracker.end_run(parent, "FINISHED")
    out = tmp_path / "r"
    return generate_report(ReportOptions(EXPERIMENT, uri, out_dir=out)).read_text(), out, ids


def test_out_of_range_values_are_excluded_and_listed(multi: tuple[str, Path, dict[tuple[str, int], str]]) -> None:
    text, out, ids = multi
    removed = pd.read_csv(out / "out_of_range.csv")
    assert sorted(zip(removed["run_id"], removed["metric"], removed["value"], strict=True)) == sorted([
        (ids[("single", 2)], "parallel_efficiency_pct", 180.0),
        (ids[("single", 2)], "speedup", 3.6),
        (ids[("dual", 1)], "report_quality_overall", 1.5),
    ])
    reasons = dict(zip(removed["metric"], removed["reason"], strict=True))
    assert reasons["speedup"] == "run's out_of_range_metrics tag"
    assert reasons["report_quality_overall"] == "outside the catalogue's range [0, 1]"
    configs = pd.read_csv(out / "configs.csv").set_index(["config", "metric"])
    single = configs.loc[("topology=single", "parallel_efficiency_pct")]
    assert (single["n"], single["mean"], single["out_of_range"]) == (2, 51.0, 1)  # 180 is in no statistic
    dual = configs.loc[("topology=dual", "parallel_efficiency_pct")]
    assert (dual["n"], dual["mean"], dual["out_of_range"]) == (3, pytest.approx((99 + 100.5 + 104) / 3), 0)
    comparisons = pd.read_csv(out / "comparisons.csv").set_index("metric")
    row = comparisons.loc["parallel_efficiency_pct"]
    assert (row["a"], row["n_a"], row["b"], row["n_b"], row["note"]) == ("dual", 3, "single", 2, "n<3")
    assert "**Out of range**: 3 metric value(s) outside their physical range are excluded" in text
    assert "### Values outside their physical range (excluded)" in text
    assert f"| `{ids[('single', 2)]}` | topology=single | speedup | 3.6 | run's out_of_range_metrics tag |" in text


def test_measurement_warnings_are_counted_per_config_and_listed(
    multi: tuple[str, Path, dict[tuple[str, int], str]]
) -> None:
    text, out, ids = multi
    configs = pd.read_csv(out / "configs.csv")
    warned = configs.groupby("config")[["warned_runs", "warnings"]].first()
    assert warned.loc["topology=single"].tolist() == [1, 2] and warned.loc["topology=dual"].tolist() == [1, 1]
    assert "**Measurement warnings**: 2 used run(s) carry warnings" in text
    listed = pd.read_csv(out / "measurement_warnings.csv").set_index("run_id")
    assert listed.loc[ids[("single", 2)], "measurement_warnings"] == WARN_RANGE.replace(" | ", "; ")
    assert listed.loc[ids[("dual", 2)], "warnings"] == 1
    # Beside parallel efficiency, in the multi-agent section: the value is shown with its run, flagged.
    assert (f"| topology=single | `{ids[('single', 2)]}` | 180 (out of range, excluded) | "
            "3.6 (out of range, excluded) | 0.5 | parallel_efficiency_pct=180") in text
    assert f"| topology=dual | `{ids[('dual', 2)]}` | 104 | 2.08 | 5 | {WARN_DRIFT} |" in text


def test_contention_rate_is_over_runs_with_a_wilson_interval(
    multi: tuple[str, Path, dict[tuple[str, int], str]]
) -> None:
    text, out, _ = multi
    table = pd.read_csv(out / "contention.csv").set_index("config")
    # single: runs with a contended agent 2 of 3 (agents 3 of 6); dual: 1 of 3 (1 of 6); all: 3 of 6.
    for config, (k, n, agents) in {"topology=single": (2, 3, 3), "topology=dual": (1, 3, 1),
                                   "all configs": (3, 6, 4)}.items():
        row = table.loc[config]
        assert (row["runs_contended"], row["runs"], row["agents_contended"], row["agents"]) == (k, n, agents, 2 * n)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(hand.wilson(k, n))
    assert f"| topology=single | {hand.rate_cell(2, 3)} | 3/6 | 51 | 0.5 | 1/3 |" in text
