"""The report's numbers, asserted as numbers, on a store whose results can be worked out by hand.

One sweep: language (asyncio = Python, tokio = Rust) x options_mode x gpu_layers
(60, 80), 3 repetitions each, every value chosen (below) so that:

- the success rule's verdicts depend on the test being one-sided (Python at
  gpu 80 beats its baseline with one-sided p = 0.035, two-sided 0.070) and on
  the direction (Rust at gpu 60 is *worse* than its baseline: a flipped
  direction would call it a success);
- the comparisons' Holm adjustment decides a winner: Rust's TTFT is lower
  than Python's with raw Welch p = 0.042 < 0.05, but 4 tests of the table's 5
  have p at least as large, so Holm's p is 4 x 0.042 = 0.17: no winner;
- Python's and Rust's peak RSS are constants: "no variance", no test, no winner;
- one config has 2 runs of tpot_ms: no confidence interval ("n<3").

Every expected value is computed in the test from its textbook definition
(:mod:`tests.report.hand`), not by the functions the report uses.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from cfexp.report import ReportOptions, generate_report
from tests.report import hand
from tests.report.conftest import EXPERIMENT, copy_store

RUNTIME = {"python": "asyncio", "rust": "tokio"}
# (language, options_mode, gpu_layers) -> throughput_tok_s of repetitions 0, 1, 2
THROUGHPUT = {
    ("python", "server_defaults", 60): [100.0, 102.0, 104.0],
    ("python", "server_defaults", 80): [100.0, 102.0, 104.0],
    ("python", "configured", 60): [101.0, 103.0, 105.0],  # better mean, within the noise: p = 0.29
    ("python", "configured", 80): [104.0, 106.0, 108.0],  # one-sided p = 0.035, two-sided 0.070
    ("rust", "server_defaults", 60): [200.0, 202.0, 204.0],
    ("rust", "server_defaults", 80): [200.0, 202.0, 204.0],
    ("rust", "configured", 60): [196.0, 198.0, 200.0],  # worse than its baseline
    ("rust", "configured", 80): [220.0, 222.0, 224.0],  # clearly better
}
TTFT = {"python": [50.0, 52.0, 54.0], "rust": [48.5, 50.5, 52.5]}  # per config, by repetition
RSS = {"python": 30.0, "rust": 3.0}  # constants
TPOT = [7.0, 9.0]  # python configured gpu 60, repetitions 0 and 1 only
# The order the sweep ran its jobs (sweep.position): a fixed shuffle.
ORDER = [5, 17, 2, 11, 22, 8, 14, 0, 20, 3, 9, 23, 6, 15, 1, 12, 19, 4, 10, 21, 7, 16, 13, 18]


def _label(language: str, mode: str, gpu: int) -> str:
    return f"language={language} options_mode={mode} gpu_layers={gpu}"


@pytest.fixture(scope="module")
def report(_empty_store: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp("values")
    uri, tracker = copy_store(_empty_store, folder)
    parent = tracker.start_run(EXPERIMENT, "sweep", {"cfexp.sweep": "parent"})
    for index, ((language, mode, gpu), throughput) in enumerate(THROUGHPUT.items()):
        for rep in range(3):
            position = ORDER[index * 3 + rep]
            run = tracker.start_run(EXPERIMENT, f"{language} {mode} {gpu} {rep}",
                                    {"provenance": "simulated", "sweep.position": str(position)}, parent)
            tracker.log_params(run, {
                "language": language, "runtime.name": RUNTIME[language], "options_mode": mode,
                "gpu_layers": gpu, "repetition": rep, "ctx": 512, "paths.root_dir": str(folder),
            })
            metrics = {"throughput_tok_s": throughput[rep], "ttft_ms": TTFT[language][rep],
                       "agent_peak_rss_mb": RSS[language]}
            if (language, mode, gpu) == ("python", "configured", 60) and rep < 2:
                metrics["tpot_ms"] = TPOT[rep]
            tracker.log_metrics(run, metrics)
            tracker.end_run(run, "FINISHED")
    tracker.end_run(parent, "FINISHED")
    out = folder / "report"
    text = generate_report(ReportOptions(EXPERIMENT, uri, out_dir=out)).read_text()
    return text, out


def _pooled(metric: dict[tuple[str, str, int], list[float]], which: int, level: str) -> list[float]:
    return [v for key, values in metric.items() if key[which] == level for v in values]


def test_per_config_table_n_mean_and_ci(report: tuple[str, Path]) -> None:
    text, out = report
    configs = pd.read_csv(out / "configs.csv")
    assert len(configs[configs["metric"] == "throughput_tok_s"]) == 8
    for key, values in THROUGHPUT.items():
        row = configs[(configs["config"] == _label(*key)) & (configs["metric"] == "throughput_tok_s")].iloc[0]
        low, high = hand.mean_ci(values)  # mean ± 4.3027 · 2/√3
        assert (row["n"], row["mean"]) == (3, pytest.approx(sum(values) / 3))
        assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert "| language=python options_mode=configured gpu_layers=60 | 3 | 103 | 103 | 2 | 0.0194 | [98.03, 108] |" \
        in text
    tpot = configs[configs["metric"] == "tpot_ms"]
    assert list(tpot["n"]) == [2] and tpot["mean"].iloc[0] == 8.0
    assert tpot["ci_low"].isna().all() and tpot["ci_high"].isna().all()  # no interval from 2 runs
    assert "| language=python options_mode=configured gpu_layers=60 | 2 | 8 | 8 | 1.414 | 0.177 | n<3 |" in text


def test_comparison_table_raw_and_holm_p_effect_sizes_and_winner(report: tuple[str, Path]) -> None:
    text, out = report
    table = pd.read_csv(out / "comparisons.csv").set_index(["factor", "metric"])
    python, rust = _pooled(THROUGHPUT, 0, "python"), _pooled(THROUGHPUT, 0, "rust")
    configured, defaults = _pooled(THROUGHPUT, 1, "configured"), _pooled(THROUGHPUT, 1, "server_defaults")
    ttft_python, ttft_rust = TTFT["python"] * 4, TTFT["rust"] * 4
    ttft_by_mode = TTFT["python"] * 2 + TTFT["rust"] * 2  # the same for both modes
    raw = {
        ("language", "throughput_tok_s"): hand.welch_p_two_sided(python, rust),
        ("language", "ttft_ms"): hand.welch_p_two_sided(ttft_python, ttft_rust),
        ("options_mode", "throughput_tok_s"): hand.welch_p_two_sided(configured, defaults),
        ("options_mode", "ttft_ms"): hand.welch_p_two_sided(ttft_by_mode, ttft_by_mode),
        ("options_mode", "agent_peak_rss_mb"): 1.0,  # the same values on both sides
    }
    assert raw[("language", "ttft_ms")] == pytest.approx(0.04244, abs=1e-4)
    for key, p in raw.items():
        assert table.loc[key, "welch_p"] == pytest.approx(p, rel=1e-6), key
    # Holm over the 5 tested rows, smallest first: 5·p1, then max(previous, 4·p2), ...
    ordered = sorted(raw, key=raw.__getitem__)
    expected, running = {}, 0.0
    for rank, key in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - rank) * raw[key]))
        expected[key] = running
    assert ordered[:2] == [("language", "throughput_tok_s"), ("language", "ttft_ms")]
    assert expected[("language", "ttft_ms")] == pytest.approx(4 * raw[("language", "ttft_ms")])
    for key, p in expected.items():
        assert table.loc[key, "welch_p_holm"] == pytest.approx(p, rel=1e-6), key
    # Raw p < 0.05 but Holm p = 0.17: no winner. Throughput: Rust, higher being better.
    assert table.loc[("language", "ttft_ms"), "better"] == "no significant difference"
    assert table.loc[("language", "throughput_tok_s"), "better"] == "rust"
    # Constant groups: no test, no winner.
    rss = table.loc[("language", "agent_peak_rss_mb")]
    assert rss["note"] == "no variance" and pd.isna(rss["welch_p"]) and rss["better"] == "no variance"
    # Effect sizes of Rust's TTFT against Python's: d = −1.5 / √(32/11); Cliff's δ = (3 − 6) / 9.
    ttft = table.loc[("language", "ttft_ms")]
    assert ttft["cohens_d"] == pytest.approx(-1.5 / math.sqrt(32 / 11))
    assert ttft["cliffs_delta"] == pytest.approx(-1 / 3)
    assert "| language | ttft_ms | python | rust | 12/12 | 52 | 50.5 | -1.5 [" in text
    assert "| 0.0424 | 0.1698 |" in text


def test_headline_is_its_own_family_and_constants_have_no_winner(report: tuple[str, Path]) -> None:
    _, out = report
    head = pd.read_csv(out / "headline.csv").set_index("metric")
    p_ttft = hand.welch_p_two_sided(TTFT["python"] * 4, TTFT["rust"] * 4)
    # Two tested metrics here: Holm's p of the larger is max(2·p_small, p_ttft) = p_ttft < 0.05.
    assert head.loc["ttft_ms", "welch_p_holm"] == pytest.approx(p_ttft, rel=1e-6)
    assert head.loc["ttft_ms", "winner"] == "Rust"  # lower is better
    assert head.loc["throughput_tok_s", "winner"] == "Rust"  # higher is better
    assert head.loc["agent_peak_rss_mb", "winner"] == "no variance"  # not "Rust with p = 0"
    assert pd.isna(head.loc["agent_peak_rss_mb", "welch_p"])


def test_success_table_gated_and_original_counts_with_wilson_intervals(report: tuple[str, Path]) -> None:
    text, out = report
    pairs = pd.read_csv(out / "success.csv")
    by = {(r["language"], int(r["gpu_layers"])): r for _, r in pairs.iterrows()}
    for language in ("python", "rust"):
        for gpu in (60, 80):
            base, cand = THROUGHPUT[(language, "server_defaults", gpu)], THROUGHPUT[(language, "configured", gpu)]
            p = hand.welch_p_greater(base, cand)  # one-sided: the candidate's throughput is higher
            row = by[(language, gpu)]
            assert row["p_one_sided"] == pytest.approx(p, rel=1e-6)
            assert bool(row["success_gated"]) is (p < 0.05)
            assert bool(row["success_original"]) is (cand[0] > base[0])
    assert by[("python", 80)]["p_one_sided"] == pytest.approx(0.03524, abs=1e-4)  # two-sided would be 0.070
    assert by[("rust", 60)]["p_one_sided"] == pytest.approx(0.96476, abs=1e-4)  # worse: no success
    rates = pd.read_csv(out / "success_rates.csv").set_index("group")
    # gated: Python 1/2 (gpu 80), Rust 1/2 (gpu 80); original: Python 2/2, Rust 1/2 (196 < 200 at gpu 60)
    for group, (gated, original) in {"python": (1, 2), "rust": (1, 1)}.items():
        row = rates.loc[group]
        assert (row["gated_successes"], row["gated_n"], row["untested"]) == (gated, 2, 0)
        assert (row["original_successes"], row["original_n"]) == (original, 2)
        assert (row["gated_ci_low"], row["gated_ci_high"]) == pytest.approx(hand.wilson(gated, 2))
        assert (row["original_ci_low"], row["original_ci_high"]) == pytest.approx(hand.wilson(original, 2))
    assert f"| python | 2 | {hand.rate_cell(1, 2)} | 0 | {hand.rate_cell(2, 2)} |" in text
    assert f"| rust | 2 | {hand.rate_cell(1, 2)} | 0 | {hand.rate_cell(1, 2)} |" in text
    assert "1/2 = 50.0% [9.5, 90.5]" in text  # Wilson for 1 of 2, as printed in tables
