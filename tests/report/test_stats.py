"""cfexp.report.stats on hand-made data against known values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from cfexp.report.stats import (
    cliffs_delta,
    cohens_d,
    compare,
    describe,
    describe_many,
    fisher_p,
    holm,
    t_interval,
    wilson,
)

A = [10.0, 12.0, 11.0, 13.0, 9.0]
B = [14.0, 15.0, 13.0, 16.0, 17.0]


def test_describe_matches_the_definitions() -> None:
    s = describe([1.0, 2.0, 3.0, 4.0])
    assert (s.n, s.mean, s.median) == (4, 2.5, 2.5)
    assert s.std == pytest.approx(1.2909944, rel=1e-6)
    assert s.cv == pytest.approx(1.2909944 / 2.5, rel=1e-6)
    # t(0.975, 3) = 3.182446; sem = std / 2
    assert s.ci_low == pytest.approx(2.5 - 3.182446 * 1.2909944 / 2, rel=1e-5)
    assert s.p95 == pytest.approx(3.85)


def test_describe_with_one_value_has_no_spread() -> None:
    s = describe([5.0, float("nan")])
    assert (s.n, s.mean, s.std, s.ci_low) == (1, 5.0, None, None)


def test_welch_and_mannwhitney_are_scipys() -> None:
    c = compare(A, B)
    assert c.welch_p == pytest.approx(sps.ttest_ind(B, A, equal_var=False).pvalue)
    assert c.mannwhitney_p == pytest.approx(sps.mannwhitneyu(B, A).pvalue)
    assert c.diff == pytest.approx(4.0)
    assert c.diff_ci_low < 4.0 < c.diff_ci_high
    # Cohen's d: pooled SD of two groups with variance 2.5 each = sqrt(2.5)
    assert c.cohens_d == pytest.approx(4.0 / 2.5**0.5)


def test_one_sided_p_is_half_the_two_sided_in_the_right_direction() -> None:
    two, greater = compare(A, B), compare(A, B, alternative="greater")
    assert greater.welch_p == pytest.approx(two.welch_p / 2)


def test_cliffs_delta_on_a_hand_computed_case() -> None:
    # the 9 pairs (b, a): b > a in 6, b < a in 1 (2 < 3), ties 2 -> (6 - 1) / 9
    assert cliffs_delta([1, 2, 3], [2, 3, 4]) == pytest.approx(5 / 9)
    assert cliffs_delta([1, 2], [3, 4]) == 1.0
    assert cliffs_delta([3, 4], [1, 2]) == -1.0


def test_too_few_runs_are_not_tested() -> None:
    c = compare([1.0, 2.0], [3.0, 4.0, 5.0])
    assert c.welch_p is None and c.note == "n<3" and c.cohens_d is None
    assert cohens_d([1.0], [2.0, 3.0]) is None


def test_holm_on_a_textbook_example() -> None:
    # Holm (1979) as in every textbook: p = 0.01, 0.04, 0.03, 0.005 (m = 4)
    # sorted 0.005, 0.01, 0.03, 0.04 -> 0.02, 0.03, 0.06, 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, None, 0.9]) == [pytest.approx(1.0), None, pytest.approx(1.0)]


def test_wilson_interval() -> None:
    p = wilson(13, 18)
    assert p.rate == pytest.approx(13 / 18)
    # Wilson score interval for 13/18 at 95 %: [0.4913, 0.8750]
    assert (p.ci_low, p.ci_high) == (pytest.approx(0.4913, abs=1e-3), pytest.approx(0.8750, abs=1e-3))
    assert wilson(0, 0).rate is None


def test_fisher_reproduces_the_originals_rate_comparison() -> None:
    # The original claimed p < 0.01 for 13/18 vs 7/18; Fisher's exact test says ~0.09.
    assert fisher_p(wilson(13, 18), wilson(7, 18)) == pytest.approx(0.0937, abs=2e-3)


def test_t_interval_is_scipys_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    df = np.concatenate([np.arange(1, 200), [250.0, 999.0, 5000.0, 1e6, 2.5, 0.5]])
    loc = rng.normal(0, 1e3, len(df))
    scale = rng.lognormal(0, 3, len(df))
    for confidence in (0.5, 0.8, 0.9, 0.95, 0.99, 0.999):
        ours = t_interval(confidence, df, loc=loc, scale=scale)
        theirs = sps.t.interval(confidence, df, loc=loc, scale=scale)
        for mine, scipys in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(mine, scipys)
    # Where scipy has no interval (scale 0, df 0, loc NaN): NaN as scipy gives.
    df, loc, scale = np.array([3.0, 0.0, 3.0]), np.array([1.0, 1.0, np.nan]), np.array([0.0, 1.0, 1.0])
    with np.errstate(invalid="ignore"):  # scipy's own NaN arithmetic
        theirs = sps.t.interval(0.95, df, loc=loc, scale=scale)
    for mine, scipys in zip(t_interval(0.95, df, loc, scale), theirs, strict=True):
        np.testing.assert_array_equal(mine, scipys)


def test_describe_many_gives_each_groups_describe() -> None:
    rng = np.random.default_rng(3)
    groups = [rng.normal(10, 2, n) for n in (0, 1, 2, 3, 4, 10, 100)] + [np.full(5, 2.0)]
    for group, summary in zip(groups, describe_many(groups), strict=True):
        assert summary == describe(group)
        if summary.n >= 3 and summary.std:
            low, high = sps.t.interval(0.95, summary.n - 1, loc=summary.mean, scale=sps.sem(group))
            assert (summary.ci_low, summary.ci_high) == (float(low), float(high))


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_welch_alone_gives_the_same_p_and_note(alternative: str) -> None:
    rng = np.random.default_rng(11)
    cases = [(A, B), ([1.0, 2.0], [3.0, 4.0, 5.0]), ([2.0] * 4, [2.0] * 5),
             ([1e9, 1e9, 1e9 + 1e-6], [1e9, 1e9 + 1e-6, 1e9]),  # near-constant: scipy warns
             (rng.normal(100, 5, 40), rng.normal(102, 9, 60))]
    for a, b in cases:
        full, alone = compare(a, b, alternative=alternative), compare(a, b, alternative=alternative, effects=False)
        assert (alone.n_a, alone.n_b, alone.mean_a, alone.mean_b, alone.diff, alone.welch_p, alone.note,
                alone.tested) == (full.n_a, full.n_b, full.mean_a, full.mean_b, full.diff, full.welch_p, full.note,
                                  full.tested)
        assert alone.mannwhitney_p is alone.cohens_d is alone.cliffs_delta is alone.diff_ci_low is None
