"""The run-order trend check: cold starts early in a sweep are caught, from sweep.position or start times."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cfexp.report import ReportOptions, generate_report
from cfexp.report.stats import trend
from tests.report.conftest import EXPERIMENT, NewStore

# 2 configs x 6 repetitions, run alternately (A B A B …). A cold start: the first runs of the
# sweep are slower, by less and less (the server's caches and the CPU warming up).
NOISE = [3.0, -2.0, 1.0, -4.0, 2.0, 0.0, -1.0, 4.0, -3.0, 1.0, 0.0, -2.0]
COLD = [400.0, 260.0, 150.0, 80.0, 30.0, 10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
BASE = {"asyncio": 1000.0, "uvloop": 1400.0}


def _sweep(new_store: NewStore, folder: Path, cold: bool, tagged: bool) -> str:
    """One sweep; the job at position i starts at 10_000 + i ms. Untagged runs are created out of order."""
    uri, tracker = new_store(folder)
    parent = tracker.start_run(EXPERIMENT, "sweep", {"cfexp.sweep": "parent"}, start_time_ms=9_000)
    jobs = [(i, ("asyncio", "uvloop")[i % 2]) for i in range(12)]
    for position, runtime in (jobs if tagged else jobs[::-1]):  # creation order must not matter
        tags = {"provenance": "simulated", **({"sweep.position": str(position)} if tagged else {})}
        run = tracker.start_run(EXPERIMENT, f"{runtime} {position}", tags, parent, start_time_ms=10_000 + position)
        tracker.log_params(run, {"runtime.name": runtime, "repetition": position // 2})
        ttft = BASE[runtime] + NOISE[position] + (COLD[position] if cold else 0.0)
        tracker.log_metrics(run, {"ttft_ms": ttft, "e2e_ms": ttft + 5000.0, "throughput_tok_s": 50.0 + NOISE[position]})
        tracker.end_run(run, "FINISHED")
    tracker.end_run(parent, "FINISHED")
    return uri


def _residuals(cold: bool) -> tuple[list[int], list[float]]:
    values = [BASE[("asyncio", "uvloop")[i % 2]] + NOISE[i] + (COLD[i] if cold else 0.0) for i in range(12)]
    means = {k: sum(values[k::2]) / 6 for k in (0, 1)}
    return list(range(12)), [v - means[i % 2] for i, v in enumerate(values)]


@pytest.mark.parametrize("tagged", [True, False], ids=["sweep.position", "start time"])
def test_a_cold_start_early_in_the_sweep_is_caught(new_store: NewStore, tmp_path: Path, tagged: bool) -> None:
    uri = _sweep(new_store, tmp_path, cold=True, tagged=tagged)
    text = generate_report(ReportOptions(EXPERIMENT, uri, out_dir=tmp_path / "r")).read_text()
    order = pd.read_csv(tmp_path / "r" / "run_order.csv").set_index("metric")
    position, residual = _residuals(cold=True)
    expected = trend(position, residual)
    assert expected.rho == pytest.approx(-0.748, abs=1e-3) and expected.p == pytest.approx(0.0051, abs=1e-4)
    source = "sweep.position" if tagged else "start time"
    for metric in ("ttft_ms", "e2e_ms"):
        row = order.loc[metric]
        assert (row["runs"], row["configs"], row["position"]) == (12, 2, source)
        assert row["rho"] == pytest.approx(expected.rho) and row["p"] == pytest.approx(expected.p)
        assert row["trend"] == "values fall with position"
    # Holm over the three metrics: the two smallest (equal) p's times 3 and 2.
    assert order.loc["ttft_ms", "p_holm"] == pytest.approx(3 * expected.p)
    assert order.loc["throughput_tok_s", "trend"] == "none detected"
    assert "> **Run-order trend**: `ttft_ms` fall with position in the sweep (Spearman ρ = -0.748" in text
    assert "> **Run-order trend**: `throughput_tok_s`" not in text
    runs = pd.read_csv(tmp_path / "r" / "runs.csv")
    assert sorted(runs["position"]) == list(range(12)) and set(runs["position_source"]) == {source}


def test_no_trend_no_warning(new_store: NewStore, tmp_path: Path) -> None:
    uri = _sweep(new_store, tmp_path, cold=False, tagged=True)
    text = generate_report(ReportOptions(EXPERIMENT, uri, out_dir=tmp_path / "r")).read_text()
    order = pd.read_csv(tmp_path / "r" / "run_order.csv")
    assert set(order["trend"]) == {"none detected"} and "Run-order trend" not in text
    assert "### Run order" in text


def test_the_trend_test_is_spearmans_with_an_exact_p_for_few_runs() -> None:
    # 6 runs in perfect order: rho = -1; exactly 2 of the 720 orderings are as extreme.
    exact = trend(range(6), [6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    assert (exact.rho, exact.method) == (-1.0, "exact permutation") and exact.p == pytest.approx(2 / 720)
    assert trend(range(4), [4.0, 3.0, 2.0, 1.0]).p is None  # n<5: untested
    assert trend(range(6), [1.0] * 6).method == "no variance"
