"""Independent calculations for the report's value tests: textbook formulas, written out.

Only scipy's t and normal distributions are used (for tail areas and
quantiles); the statistics themselves are computed here from their
definitions, not by the functions the report calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import fmean, variance

from scipy import stats

Z95 = float(stats.norm.ppf(0.975))  # 1.959964…


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Welch's t statistic of mean(b) − mean(a) and its Welch–Satterthwaite degrees of freedom."""
    va, vb = variance(a) / len(a), variance(b) / len(b)
    t = (fmean(b) - fmean(a)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return t, df


def welch_p_two_sided(a: Sequence[float], b: Sequence[float]) -> float:
    t, df = welch(a, b)
    return 2 * float(stats.t.sf(abs(t), df))


def welch_p_greater(a: Sequence[float], b: Sequence[float]) -> float:
    """One-sided: H1 mean(b) > mean(a)."""
    t, df = welch(a, b)
    return float(stats.t.sf(t, df))


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Student's 95 % interval of the mean: mean ± t(0.975, n−1)·s/√n."""
    n = len(values)
    half = float(stats.t.ppf(0.975, n - 1)) * math.sqrt(variance(values) / n)
    return fmean(values) - half, fmean(values) + half


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson's score interval: (p + z²/2n ± z·√(p(1−p)/n + z²/4n²)) / (1 + z²/n)."""
    p, z2 = k / n, Z95**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_cell(k: int, n: int) -> str:
    """The report's rendering of a rate with its interval: "k/n = r% [low, high]"."""
    low, high = wilson(k, n)
    return f"{k}/{n} = {100 * k / n:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"
