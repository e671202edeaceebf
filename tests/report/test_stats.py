"""cfexp.report.stats on hand-made data against known values."""

from __future__ import annotations

import subprocess
import sys
import warnings

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


def _samples() -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs of samples: sizes from 1 to 5,000, ties, outliers, near-constant data, integers."""
    rng = np.random.default_rng(2026)
    pairs = [(np.asarray(A), np.asarray(B)), (np.array([1.0, 2.0, 3.0]), np.array([2.0, 3.0, 4.0]))]
    for n1, n2 in ((3, 3), (3, 9), (5, 8), (8, 8), (9, 9), (9, 12), (20, 7), (40, 60), (100, 100), (5000, 5000)):
        pairs.append((rng.normal(100, 5, n1), rng.normal(102, 9, n2)))
        pairs.append((rng.lognormal(0, 1, n1), rng.lognormal(0.2, 1, n2)))
        pairs.append((rng.integers(0, 4, n1).astype(float), rng.integers(0, 5, n2).astype(float)))  # many ties
    pairs.append((np.array([1e9, 1e9, 1e9 + 1e-6]), np.array([1e9, 1e9 + 1e-6, 1e9])))  # scipy warns
    pairs.append((np.array([5.0, 5.0, 5.0, 7.0]), np.array([5.0, 5.0, 5.0, 5.0])))  # one constant group
    return pairs


def _same(ours: float, theirs: object) -> None:
    assert ours == float(theirs) or (np.isnan(ours) and np.isnan(float(theirs))), (ours, theirs)  # type: ignore[arg-type]


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_the_tests_are_scipys_bit_for_bit(alternative: str) -> None:
    from cfexp.report.stats import _mannwhitneyu, _ttest_ind

    for a, b in _samples():
        for equal_var in (False, True):
            with warnings.catch_warnings(record=True) as ours_caught:
                warnings.simplefilter("always")
                ours = _ttest_ind(a, b, equal_var=equal_var, alternative=alternative)
                low, high = _ttest_ind(a, b, equal_var=equal_var).confidence_interval(0.95)
            with warnings.catch_warnings(record=True) as scipys_caught:
                warnings.simplefilter("always")
                theirs = sps.ttest_ind(a, b, equal_var=equal_var, alternative=alternative)
                interval = sps.ttest_ind(a, b, equal_var=equal_var).confidence_interval(0.95)
            _same(ours.pvalue, theirs.pvalue)
            _same(low, interval.low)
            _same(high, interval.high)
            # The same RuntimeWarnings: "near-constant data" is read from them.
            assert [str(w.message) for w in ours_caught] == [str(w.message) for w in scipys_caught]
        u, p = _mannwhitneyu(a, b, alternative=alternative)
        expected = sps.mannwhitneyu(a, b, alternative=alternative)
        _same(u, expected.statistic)
        _same(p, expected.pvalue)
    # A reference group against one run (compare_to_reference).
    rng = np.random.default_rng(5)
    for n in (3, 4, 10, 50):
        a, b = rng.normal(10, 1, n), np.array([12.5])
        _same(_ttest_ind(b, a, equal_var=True, alternative=alternative).pvalue,
              sps.ttest_ind(b, a, equal_var=True, alternative=alternative).pvalue)


def test_spearman_wilson_and_fisher_are_scipys_bit_for_bit() -> None:
    from cfexp.report.stats import _fisher_two_sided, _spearmanr, _wilson_interval

    rng = np.random.default_rng(9)
    for n in (5, 8, 9, 30, 1000, 10_000):
        x = np.arange(n, dtype=float)
        for y in (rng.normal(0, 1, n), rng.normal(0, 1, n) + 0.01 * x, rng.integers(0, 3, n).astype(float)):
            rho, p = _spearmanr(x, y)
            expected = sps.spearmanr(x, y)
            _same(rho, expected.statistic)
            _same(p, expected.pvalue)
    for n in (1, 2, 5, 18, 50, 333):
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
            assert _wilson_interval(k, n, 0.95) == (float(ci.low), float(ci.high))
    tables = [[[13, 5], [7, 11]], [[0, 5], [3, 4]], [[5, 0], [0, 5]], [[1, 9], [11, 3]], [[10, 10], [10, 10]],
              [[0, 0], [3, 4]], [[50, 3], [2, 45]], [[3, 50], [45, 2]], [[7, 12], [9, 9]], [[1, 0], [0, 0]]]
    tables += [rng.integers(0, 30, (2, 2)).tolist() for _ in range(200)]
    for table in tables:
        _same(_fisher_two_sided(table), sps.fisher_exact(table).pvalue)


def test_the_report_does_not_import_scipy_stats() -> None:
    code = ("import sys, numpy as np; from cfexp.report import stats as s; "
            "c = s.compare(np.arange(20.0), np.arange(20.0) + 3); "
            "s.wilson(3, 9); s.fisher_p(s.wilson(13, 18), s.wilson(7, 18)); s.trend(np.arange(30.0), np.arange(30.0)); "
            "s.compare_to_reference(np.arange(5.0), [9.0]); "
            "print('scipy.stats' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
