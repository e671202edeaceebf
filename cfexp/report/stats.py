"""Statistics of the report: pure functions over arrays of per-run values.

Every test and interval is scipy's: scipy.stats' own arithmetic, re-done
step for step on the scipy.special functions it calls (Student's t, the
normal, Boost's hypergeometric), so that a report need not import
scipy.stats (half a second) for the same numbers, bit for bit (the tests
compare them with scipy.stats); see the end of this module. The only
formulas of our own are the definitions that have no scipy function (Cohen's
d, Cliff's delta from the Mann–Whitney U statistic, Holm's step-down
adjustment), each a few lines, documented with its source in docs/reports.md.

A statistic that needs more runs than it has is ``None`` (shown as "n<3" or
"—"), never a number computed from too little.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import special

# The fewest runs per group for a test, an effect size or a confidence interval.
MIN_N_TEST = 3
CONFIDENCE = 0.95
# Two groups without any spread: no test is possible (not "p = 0").
NO_VARIANCE = "no variance"


@dataclass(frozen=True)
class Summary:
    """One metric over the runs of one group."""

    n: int
    mean: float | None
    median: float | None
    std: float | None  # sample standard deviation (ddof=1); None for n < 2
    cv: float | None  # std / |mean|; None when undefined
    ci_low: float | None  # 95 % CI of the mean, Student's t; None for n < 3
    ci_high: float | None
    p50: float | None
    p95: float | None
    p99: float | None


def _clean(values: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    finite: np.ndarray = array[np.isfinite(array)]
    return finite


def describe(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> Summary:
    """n, mean, median, std, CV, t-based CI of the mean, p50/p95/p99 (linear interpolation)."""
    return describe_many([values], confidence)[0]


def describe_many(groups: Sequence[Sequence[float] | np.ndarray], confidence: float = CONFIDENCE) -> list[Summary]:
    """:func:`describe` of each group, every interval from one call of :func:`t_interval`.

    Each interval is Student's, ``scipy.stats.t.interval(confidence, n - 1,
    loc=mean, scale=sem)`` with ``sem = std(ddof=1) / sqrt(n)`` (what
    ``scipy.stats.sem`` computes), elementwise: the same numbers as one call
    per group. scipy's distribution methods cost about a millisecond per call
    whatever the size of their arguments; the per-config table describes
    hundreds of groups, the figures' error bars a few dozen more.
    """
    summaries: list[Summary] = []
    tested: list[tuple[int, int, float, float]] = []  # (group, n, mean, std): intervals from the t distribution
    for values in groups:
        x = _clean(values)
        n = len(x)
        if n == 0:
            summaries.append(Summary(0, None, None, None, None, None, None, None, None, None))
            continue
        mean = float(np.mean(x))
        p50, p95, p99 = (float(v) for v in np.percentile(x, [50, 95, 99]))
        std = cv = low = None
        if n >= 2:
            std = float(np.std(x, ddof=1))
            cv = std / abs(mean) if mean != 0 else None
        if n >= MIN_N_TEST and std is not None:
            # With 2 runs the interval is mean ± 12.7 SEs from one degree of freedom: not shown ("n<3").
            if std == 0:
                low = mean
            else:
                tested.append((len(summaries), n, mean, std))
        summaries.append(Summary(n, mean, float(np.median(x)), std, cv, low, low, p50, p95, p99))
    if tested:
        lows, highs = t_interval(
            confidence, np.array([n - 1 for _, n, _, _ in tested]), loc=np.array([m for _, _, m, _ in tested]),
            scale=np.array([s / n**0.5 for _, n, _, s in tested]),  # scipy.stats.sem: std(ddof=1) / n ** 0.5
        )
        for (i, _, _, _), low, high in zip(tested, lows, highs, strict=True):
            summaries[i] = replace(summaries[i], ci_low=float(low), ci_high=float(high))
    return summaries


def t_interval(
    confidence: float, df: np.ndarray, loc: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``scipy.stats.t.interval(confidence, df, loc=loc, scale=scale)`` for df > 0 and scale > 0, elementwise.

    The same arithmetic as scipy's: the quantiles of the tail probabilities
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` from
    ``scipy.special.stdtrit`` (what ``t.ppf`` calls), times ``scale``, plus
    ``loc``, NaN where scipy's would be (df or scale not positive, loc NaN);
    without the distribution object's per-call overhead.
    """
    df, loc, scale = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (df, loc, scale)))
    valid = (df > 0) & (scale > 0) & (loc == loc)
    low = np.where(valid, special.stdtrit(df, (1.0 - confidence) / 2) * scale + loc, np.nan)
    high = np.where(valid, special.stdtrit(df, (1.0 + confidence) / 2) * scale + loc, np.nan)
    return low, high


@dataclass(frozen=True)
class Comparison:
    """Group b against group a for one metric (difference = mean(b) − mean(a))."""

    n_a: int
    n_b: int
    mean_a: float | None
    mean_b: float | None
    diff: float | None
    diff_ci_low: float | None  # Welch's 95 % CI of the difference
    diff_ci_high: float | None
    welch_p: float | None
    mannwhitney_p: float | None
    cohens_d: float | None
    cliffs_delta: float | None
    note: str  # why the test is missing ("n<3", "no variance"), "near-constant data", else ""

    @property
    def tested(self) -> bool:
        return self.welch_p is not None


def cohens_d(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float | None:
    """(mean(b) − mean(a)) / pooled SD (ddof=1 in each group); None if undefined."""
    x, y = _clean(a), _clean(b)
    if len(x) < 2 or len(y) < 2:
        return None
    pooled = ((len(x) - 1) * np.var(x, ddof=1) + (len(y) - 1) * np.var(y, ddof=1)) / (len(x) + len(y) - 2)
    if pooled == 0:
        return None
    return float((np.mean(y) - np.mean(x)) / math.sqrt(pooled))


def cliffs_delta(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float | None:
    """P(b > a) − P(b < a) over all pairs, from scipy's Mann–Whitney U: 2·U_b/(n_a·n_b) − 1."""
    x, y = _clean(a), _clean(b)
    if len(x) == 0 or len(y) == 0:
        return None
    u_b, _ = _mannwhitneyu(y, x)
    return _cliffs_delta(u_b, len(x), len(y))


def _cliffs_delta(u_b: float, n_a: int, n_b: int) -> float:
    return float(2.0 * u_b / (n_a * n_b) - 1.0)


def compare(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    alternative: str = "two-sided",
    min_n: int = MIN_N_TEST,
    effects: bool = True,
) -> Comparison:
    """Welch's t-test, Mann–Whitney U, Cohen's d, Cliff's delta and Welch's CI of b − a.

    ``alternative`` is scipy's, for b against a: "greater" tests mean(b) > mean(a).
    With fewer than ``min_n`` runs in either group nothing is tested (note "n<3").
    ``effects=False``: Welch's test alone (its p and note, the same as with
    them); the CI, Mann–Whitney and the effect sizes are None (the success
    rate reads only the p: each of its dozens of pairs skips a second t-test
    and a rank test).
    """
    x, y = _clean(a), _clean(b)
    mean_a = float(np.mean(x)) if len(x) else None
    mean_b = float(np.mean(y)) if len(y) else None
    diff = mean_b - mean_a if mean_a is not None and mean_b is not None else None
    if min(len(x), len(y)) < min_n:
        return Comparison(len(x), len(y), mean_a, mean_b, diff, None, None, None, None, None, None, f"n<{min_n}")
    if np.var(x) == 0 and np.var(y) == 0:
        # Welch's statistic is 0/0 (or ±inf): no spread, nothing to test a difference against.
        return Comparison(
            len(x), len(y), mean_a, mean_b, diff, None, None, None, None, None,
            cliffs_delta(x, y) if effects else None, NO_VARIANCE,
        )
    with warnings.catch_warnings(record=True) as caught:
        # scipy warns on near-constant data (e.g. the simulator without jitter): noted, not raised.
        warnings.simplefilter("always", RuntimeWarning)
        welch = _ttest_ind(y, x, equal_var=False, alternative=alternative)
        if effects:
            # A one-sided test has a one-sided interval: the report shows the two-sided one.
            two_sided = welch if alternative == "two-sided" else _ttest_ind(y, x, equal_var=False)
            ci_low, ci_high = two_sided.confidence_interval(CONFIDENCE)
    note = "near-constant data" if any(issubclass(w.category, RuntimeWarning) for w in caught) else ""
    if not effects:
        return Comparison(len(x), len(y), mean_a, mean_b, diff, None, None, welch.pvalue, None, None, None, note)
    # Its statistic is U of b whatever the alternative: Cliff's delta needs no second test.
    u_b, mannwhitney_p = _mannwhitneyu(y, x, alternative=alternative)
    return Comparison(
        n_a=len(x),
        n_b=len(y),
        mean_a=mean_a,
        mean_b=mean_b,
        diff=diff,
        diff_ci_low=ci_low,
        diff_ci_high=ci_high,
        welch_p=welch.pvalue,
        mannwhitney_p=mannwhitney_p,
        cohens_d=cohens_d(x, y),
        cliffs_delta=_cliffs_delta(u_b, len(x), len(y)),
        note=note,
    )


@dataclass(frozen=True)
class ReferenceTest:
    """A few runs b against a reference group a of at least ``min_n`` runs (difference = mean(b) − mean(a))."""

    n_a: int
    n_b: int
    mean_a: float | None
    mean_b: float | None
    p: float | None  # Student's t-test with the pooled variance; None when untested
    note: str  # "n<3" (too few reference runs), "no variance" (untested), "near-constant data", else ""


def compare_to_reference(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    alternative: str = "two-sided",
    min_n: int = MIN_N_TEST,
) -> ReferenceTest:
    """Student's two-sample t-test (pooled variance) of b against a reference group a.

    For b with fewer runs than a test of its own needs: a's runs estimate the
    run-to-run spread both groups are assumed to share. With one run in b this
    is the test of a new observation against a's prediction interval,
    t = (b − mean(a)) / (s_a·√(1 + 1/n_a)) on n_a − 1 degrees of freedom.
    Needs ``min_n`` runs in a (else note "n<3") and one in b.
    """
    x, y = _clean(a), _clean(b)
    mean_a = float(np.mean(x)) if len(x) else None
    mean_b = float(np.mean(y)) if len(y) else None
    if len(x) < min_n or len(y) == 0:
        return ReferenceTest(len(x), len(y), mean_a, mean_b, None, f"n<{min_n}" if len(x) < min_n else "no run")
    if np.var(x) == 0 and np.var(y) == 0:
        return ReferenceTest(len(x), len(y), mean_a, mean_b, None, NO_VARIANCE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        result = _ttest_ind(y, x, equal_var=True, alternative=alternative)
    note = "near-constant data" if any(issubclass(w.category, RuntimeWarning) for w in caught) else ""
    return ReferenceTest(len(x), len(y), mean_a, mean_b, result.pvalue, note)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment (family-wise error), ``None`` entries passed through.

    Sorted ascending p_(1) ≤ … ≤ p_(m): adjusted p_(i) = max over j ≤ i of
    min(1, (m − j + 1)·p_(j)). statsmodels' ``multipletests(method="holm")``
    computes the same; it is not a dependency of cfexp.
    """
    indexed = [(p, i) for i, p in enumerate(pvalues) if p is not None and math.isfinite(p)]
    m = len(indexed)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(indexed)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class Proportion:
    successes: int
    n: int
    rate: float | None
    ci_low: float | None  # Wilson score interval
    ci_high: float | None


def wilson(successes: int, n: int, confidence: float = CONFIDENCE) -> Proportion:
    """A rate with its Wilson score interval (scipy's binomtest)."""
    if n == 0:
        return Proportion(0, 0, None, None, None)
    low, high = _wilson_interval(successes, n, confidence)
    return Proportion(successes, n, successes / n, low, high)


def fisher_p(a: Proportion, b: Proportion) -> float | None:
    """Two-sided Fisher's exact test of two rates (the original's claimed p < 0.01)."""
    if a.n == 0 or b.n == 0:
        return None
    table = [[a.successes, a.n - a.successes], [b.successes, b.n - b.successes]]
    return _fisher_two_sided(table)


# Fewest runs for the run-order trend test; up to EXACT_TREND_N, its p-value is exact.
MIN_N_TREND = 5
EXACT_TREND_N = 8


@dataclass(frozen=True)
class Trend:
    """Spearman's rank correlation of values against their run order."""

    n: int
    rho: float | None
    p: float | None  # two-sided; None when untested
    method: str  # "exact permutation", "t approximation", or why untested


def trend(position: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray) -> Trend:
    """Spearman's rho of ``values`` against ``position`` and its two-sided p-value.

    Up to :data:`EXACT_TREND_N` pairs the p-value is exact: every one of the
    n! pairings of the values with the positions (``scipy.stats.permutation_test``);
    beyond, scipy's t approximation (``scipy.stats.spearmanr``). Needs
    :data:`MIN_N_TREND` pairs and some spread in both.
    """
    pos, val = np.asarray(position, dtype=float), np.asarray(values, dtype=float)
    keep = np.isfinite(pos) & np.isfinite(val)
    pos, val = pos[keep], val[keep]
    n = len(pos)
    if n < MIN_N_TREND:
        return Trend(n, None, None, f"n<{MIN_N_TREND}")
    if np.ptp(pos) == 0 or np.ptp(val) == 0:
        return Trend(n, None, None, NO_VARIANCE)
    rho, p = _spearmanr(pos, val)
    if n <= EXACT_TREND_N:
        stats = _scipy_stats()
        ranks = stats.rankdata(pos)

        def statistic(v: np.ndarray, axis: int = -1) -> np.ndarray:
            r = stats.rankdata(v, axis=axis)
            rc, pc = r - r.mean(axis=axis, keepdims=True), ranks - ranks.mean()
            return np.asarray((rc * pc).sum(axis=axis) / np.sqrt((rc**2).sum(axis=axis) * (pc**2).sum()))

        result = stats.permutation_test(
            (val,), statistic, permutation_type="pairings", n_resamples=math.inf, vectorized=True,
            alternative="two-sided",
        )
        return Trend(n, rho, float(result.pvalue), "exact permutation")
    return Trend(n, rho, p, "t approximation")


# ------------------------------------------------------------------ scipy.stats' tests from scipy.special
#
# ``import scipy.stats`` costs about half a second (it builds every distribution, and imports
# scipy.sparse, scipy.spatial and scipy.linalg); scipy.special, which its tests call for their
# distributions, a tenth of that. The functions below are scipy.stats' own arithmetic, step for
# step (scipy 1.17: ``ttest_ind``, ``mannwhitneyu``, ``spearmanr``, ``binomtest(...).proportion_ci
# (method="wilson")``, ``fisher_exact`` of a 2x2 table), so that they give the same numbers bit for
# bit (tests/report/test_stats.py compares them with scipy.stats on many inputs); the rare paths
# that need more (Mann-Whitney's exact distribution, the permutation test) import scipy.stats then.


def _scipy_stats() -> Any:
    """scipy.stats, imported on first use (half a second)."""
    from scipy import stats

    return stats


_PRECISION_LOSS = ("Precision loss occurred in moment calculation due to catastrophic cancellation. This occurs "
                   "when the data are nearly identical. Results may be unreliable.")


def _mean_var(x: np.ndarray) -> tuple[Any, Any]:
    """``np.mean(x)`` and scipy's ``_var(x, ddof=1)``, with its RuntimeWarning on catastrophic cancellation."""
    mean = np.mean(x, keepdims=True)
    centred = x - mean
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.max(np.abs(centred), keepdims=True) / np.abs(mean)
        if np.any((relative < np.finfo(mean.dtype).eps * 10) & (len(x) > 1)):
            warnings.warn(_PRECISION_LOSS, RuntimeWarning, stacklevel=3)
        var = np.mean(centred**2)
        n = np.asarray(len(x), dtype=float)
        var *= n / (n - 1)
    return mean[0], var


@dataclass(frozen=True)
class _TTest:
    pvalue: float
    df: float
    standard_error: float
    estimate: float

    def confidence_interval(self, confidence: float) -> tuple[float, float]:
        """The two-sided interval of ``a - b`` (scipy's ``TtestResult.confidence_interval``)."""
        tail = (1 - np.asarray(confidence, dtype=float)) / 2
        low, high = special.stdtrit(self.df, np.stack((tail, 1 - tail)))
        return float(low * self.standard_error + self.estimate), float(high * self.standard_error + self.estimate)


def _ttest_ind(a: np.ndarray, b: np.ndarray, equal_var: bool, alternative: str = "two-sided") -> _TTest:
    """``scipy.stats.ttest_ind(a, b, equal_var=..., alternative=...)`` of two 1-D arrays of finite values
    (>= 2 each; with ``equal_var``, one of them may have 1)."""
    n1, n2 = len(a), len(b)
    df: Any
    m1, v1 = _mean_var(a)
    m2, v2 = _mean_var(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        if equal_var:
            v1, v2 = (np.where(np.asarray(n == 1), 0.0, v) for n, v in ((n1, v1), (n2, v2)))
            df = np.asarray(n1 + n2 - 2.0)
            denom = np.sqrt(((n1 - 1) * v1 + (n2 - 1) * v2) / df * (1.0 / n1 + 1.0 / n2))
        else:
            vn1, vn2 = v1 / n1, v2 / n2
            df = (vn1 + vn2) ** 2 / (vn1**2 / (n1 - 1) + vn2**2 / (n2 - 1))
            df = np.where(np.isnan(df), 1.0, df)
            denom = np.sqrt(vn1 + vn2)
        t = np.divide(m1 - m2, denom)
    if alternative == "less":
        p = special.stdtr(df, t)
    elif alternative == "greater":
        p = special.stdtr(df, -t)
    else:
        p = 2 * special.stdtr(df, -np.abs(t))
    return _TTest(float(p), float(df), float(denom), float(m1 - m2))


def _rank(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks (1-based) and, at the first of each run of equal values, its length (scipy's ``_rankdata``)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    first = np.concatenate(([True], ordered[:-1] != ordered[1:]))
    starts = np.arange(len(values))[first]
    counts = np.diff(starts, append=len(values))
    ranks = np.empty(len(values), dtype=float)
    ranks[order] = np.repeat(np.arange(1, len(values) + 1, dtype=float)[first] + (counts.astype(float) - 1) / 2,
                             counts)
    ties = np.zeros(len(values), dtype=float)
    ties[first] = counts
    return ranks, ties


def _mannwhitneyu(x: np.ndarray, y: np.ndarray, alternative: str = "two-sided") -> tuple[float, float]:
    """(U of x, p) of ``scipy.stats.mannwhitneyu(x, y, alternative=...)`` (method "auto", continuity)."""
    n1, n2 = len(x), len(y)
    ranks, ties = _rank(np.concatenate((x, y)))
    u1 = np.sum(ranks[:n1]) - n1 * (n1 + 1) / 2
    u2 = n1 * n2 - u1
    if alternative == "greater":
        u, factor = u1, 1
    elif alternative == "less":
        u, factor = u2, 1
    else:
        u, factor = np.maximum(u1, u2), 2
    if (n1 <= 8 or n2 <= 8) and not np.any(ties > 1):  # scipy's exact distribution of U
        return float(u1), float(_scipy_stats().mannwhitneyu(x, y, alternative=alternative).pvalue)
    n = n1 + n2
    s = np.sqrt(n1 * n2 / 12 * ((n + 1) - np.sum(ties**3 - ties) / (n * (n - 1))))
    numerator = u - n1 * n2 / 2
    numerator -= 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        z = numerator / s
    p = special.ndtr(-z) * factor
    return float(u1), float(np.clip(p, 0.0, 1.0))


def _spearmanr(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(rho, two-sided p) of ``scipy.stats.spearmanr(x, y)`` for non-constant arrays of >= 3 finite values."""
    ranked = np.column_stack((_rank(x)[0], _rank(y)[0]))
    rs = np.corrcoef(ranked, rowvar=False)
    dof = len(x) - 2
    with np.errstate(divide="ignore"):
        t = rs * np.sqrt((dof / ((rs + 1.0) * (1.0 - rs))).clip(0))
    p = 2 * special.stdtr(dof, -np.abs(t))
    return float(rs[1, 0]), float(p[1, 0])


def _wilson_interval(k: int, n: int, confidence: float) -> tuple[float, float]:
    """``scipy.stats.binomtest(k, n).proportion_ci(confidence, method="wilson")`` (two-sided, no correction)."""
    p = k / n
    z = special.ndtri(0.5 + 0.5 * confidence)
    denom = 2 * (n + z**2)
    center = (2 * n * p + z**2) / denom
    q = 1 - p
    delta = z / denom * math.sqrt(4 * n * p * q + z**2)
    low = 0.0 if k == 0 else center - delta
    high = 1.0 if k == n else center + delta
    return float(low), float(high)


def _fisher_two_sided(table: list[list[int]]) -> float:
    """The p of ``scipy.stats.fisher_exact(table)`` for a 2x2 table (two-sided), from Boost's hypergeometric
    functions in scipy.special as scipy.stats' ``hypergeom`` calls them; scipy.stats itself if they moved."""
    try:
        from scipy.special._ufuncs import _hypergeom_cdf, _hypergeom_pmf, _hypergeom_sf
    except ImportError:  # a scipy that keeps them elsewhere
        return float(_scipy_stats().fisher_exact(table).pvalue)
    c = np.asarray(table, dtype=np.int64)
    if 0 in c.sum(axis=0) or 0 in c.sum(axis=1):
        return 1.0
    n1, n2, n = c[0, 0] + c[0, 1], c[1, 0] + c[1, 1], c[0, 0] + c[1, 0]
    total = n1 + n2
    low_k, high_k = max(n - (total - n1), 0), min(n1, n)  # the support of hypergeom(total, n1, n)

    def pmf(k: int) -> float:
        return 0.0 if not low_k <= k <= high_k else float(np.clip(_hypergeom_pmf(k, n1, n, total), 0, 1))

    def cdf(k: int) -> float:
        if k >= high_k:
            return 1.0
        return 0.0 if k < low_k else float(np.clip(_hypergeom_cdf(k, n1, n, total), 0, 1))

    def sf(k: int) -> float:
        if k < low_k:
            return 1.0
        return 0.0 if k >= high_k else float(np.clip(_hypergeom_sf(k, n1, n, total), 0, 1))

    def search(a: Any, d: float, lo: int, hi: int) -> int:  # scipy's _binary_search_for_binom_tst
        while lo < hi:
            mid = lo + (hi - lo) // 2
            value = a(mid)
            if value < d:
                lo = mid + 1
            elif value > d:
                hi = mid - 1
            else:
                return mid
        return lo if a(lo) <= d else lo - 1

    mode = int((n + 1) * (n1 + 1) / (n1 + n2 + 2))
    pexact, pmode = pmf(c[0, 0]), pmf(mode)
    gamma = 1 + 1e-14
    if np.abs(pexact - pmode) / np.maximum(pexact, pmode) <= 1e-14:
        return 1.0
    if c[0, 0] < mode:
        plower = cdf(c[0, 0])
        if pmf(n) > pexact * gamma:
            return plower
        pvalue = plower + sf(search(lambda k: -pmf(k), -pexact * gamma, mode, n))
    else:
        pupper = sf(c[0, 0] - 1)
        if pmf(0) > pexact * gamma:
            return pupper
        pvalue = pupper + cdf(search(pmf, pexact * gamma, 0, mode))
    return min(pvalue, 1.0)
