"""TR109's keyword rubric on known texts, with the lower-case "GPU" quirk."""

from __future__ import annotations

import pytest

from cfexp.metrics.rubric import DATA_TERMS, TECHNICAL_TERMS, score_report

EXAMPLE = """# Technical Report 109
## Results
Throughput and latency (ms) improved; see [1] and Section 2.
- baseline vs GPU
1. median trend
| a | b |
**Note**
"""


def test_hand_scored_example() -> None:
    """technical 2/15 (GPU never matches), data 3/18, structure 6/7 (no ###), citations 4.

    overall = 0.3·2/15 + 0.25·3/18 + 0.25·6/7 + 0.2·min(4/10, 1)
    """
    s = score_report(EXAMPLE)
    assert s["report_quality_technical_depth"] == pytest.approx(2 / 15)
    assert s["report_quality_technical_depth_corrected"] == pytest.approx(3 / 15)
    assert s["report_quality_data_analysis"] == pytest.approx(3 / 18)
    assert s["report_quality_structure"] == pytest.approx(6 / 7)
    assert s["report_quality_citations"] == 4.0
    assert s["report_quality_overall"] == pytest.approx(
        0.3 * 2 / 15 + 0.25 * 3 / 18 + 0.25 * 6 / 7 + 0.2 * 0.4
    )
    assert s["report_quality_overall_corrected"] == pytest.approx(
        0.3 * 3 / 15 + 0.25 * 3 / 18 + 0.25 * 6 / 7 + 0.2 * 0.4
    )
    assert (s["report_word_count"], s["report_section_count"]) == (29.0, 2.0)


def test_gpu_quirk_caps_technical_depth() -> None:
    text = " ".join(TECHNICAL_TERMS)  # every term, "GPU" included, as written
    s = score_report(text)
    assert s["report_quality_technical_depth"] == pytest.approx(14 / 15)
    assert s["report_quality_technical_depth_corrected"] == 1.0


def test_full_marks() -> None:
    text = "\n".join(
        [
            "# T", "## S", "### U", "**b**", "| x |", "1. n", "- d",
            " ".join(TECHNICAL_TERMS).lower(), " ".join(DATA_TERMS),
            "[a] [b] [c] [d] [e] [f] (g) (h) (i) (j) (k) (l)",
        ]
    )  # fmt: skip
    s = score_report(text)
    assert s["report_quality_structure"] == 1.0
    assert s["report_quality_data_analysis"] == 1.0
    assert s["report_quality_citations"] == 12.0  # counted, capped only in overall
    # Lower-cased "gpu" in the text still does not match the faithful "GPU" keyword.
    assert s["report_quality_overall"] == pytest.approx(0.3 * 14 / 15 + 0.25 + 0.25 + 0.2)
    assert s["report_quality_overall_corrected"] == pytest.approx(1.0)


def test_empty_report() -> None:
    assert all(v == 0.0 for v in score_report("").values())


def test_substring_matching_as_the_original() -> None:
    """'metrics' also counts 'metric'; patterns need line starts (multiline)."""
    s = score_report("see the metrics\n  # not a heading")
    assert s["report_quality_data_analysis"] == pytest.approx(1 / 18)
    assert s["report_quality_structure"] == 0.0 and s["report_section_count"] == 0.0
