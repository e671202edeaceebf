"""Optimization success rate: does a configured config beat its baseline?

Each candidate config is paired with its baseline: the runs with the same
value of every other factor but the baseline's values of the named keys
(default ``options_mode=server_defaults``: the same grid point with no options
sent, the original's paired "baseline"). Two rules, side by side:

- **significance-gated** (cfexp): a success only when a one-sided Welch
  t-test of the metric (candidate better than baseline) gives p < alpha with
  at least :data:`~cfexp.report.stats.MIN_N_TEST` runs on each side; fewer
  runs -> "n<3", two constant groups -> "no variance": untested, not counted
  in the rate;
- **original rule** (TR109/TR111, kept to compare with the published rates):
  the candidate's first repetition beat the baseline's first repetition by
  any amount (n = 1).

Rates come with Wilson 95 % intervals. Pure: DataFrames in, DataFrames out.

:func:`against_baseline` is the same gated rule for one candidate with fewer
runs than a test of its own needs (an Optuna trial is one run) against a
baseline run at least 3 times: the baseline's runs give the run-to-run spread
(Student's test, :func:`~cfexp.report.stats.compare_to_reference`). The study
section of the report (:mod:`cfexp.report.study`) uses it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cfexp.errors import ConfigError
from cfexp.metrics import catalog
from cfexp.report.load import REPETITION, short, sort_key
from cfexp.report.stats import MIN_N_TEST, Proportion, compare, compare_to_reference, fisher_p, wilson

DEFAULT_BASELINE = {"options_mode": "server_defaults"}
DEFAULT_METRIC = "throughput_tok_s"
# The repetition param as a number, a column of pairs()'s working copy of the runs.
_REPETITION_NUMBER = "_repetition"


@dataclass(frozen=True)
class SuccessRule:
    metric: str = DEFAULT_METRIC
    # None = the catalogue's direction for the metric (docs/metrics.md).
    higher: bool | None = None
    alpha: float = 0.05
    baseline: Mapping[str, str] | None = None  # None = DEFAULT_BASELINE

    @property
    def higher_is_better(self) -> bool:
        return catalog.higher_is_better(self.metric) if self.higher is None else self.higher


def check_rule(rule: SuccessRule, runs: pd.DataFrame, explicit_metric: bool) -> None:
    """Refuse a success rule these runs cannot answer (raises ConfigError with what to do).

    - an explicit metric that no selected run logged (a typo, or a metric of
      other runs), listing the reported metrics they do log;
    - a metric without a better direction in the catalogue, unless
      ``higher`` says which is better;
    - a ``baseline`` naming a key these runs do not have as a param, or a
      value no run took (the values they took are listed).
    """
    logged = sorted(c.removeprefix("metrics.") for c in runs.columns
                    if c.startswith("metrics.") and runs[c].notna().any())
    if explicit_metric and rule.metric not in logged:
        examples = [m for m in catalog.reported() if m in logged] or logged[:10]
        where = "a metric of the catalogue (docs/metrics.md), but" if catalog.lookup(rule.metric) else (
            "not a metric of the catalogue (docs/metrics.md), and")
        raise ConfigError(
            f"<success-metric={rule.metric}> is {where} no selected run logged it. "
            f"Pass one these runs log, e.g. {', '.join(examples) or 'none'}"
        )
    if rule.higher is None and catalog.direction(rule.metric) is catalog.Direction.NONE:
        which = "has no better direction in the catalogue (docs/metrics.md)" if catalog.lookup(rule.metric) else (
            "is not in the catalogue (docs/metrics.md), so its better direction is unknown")
        raise ConfigError(
            f"<success-metric={rule.metric}> {which}: say which is better with --higher-is-better or "
            "--lower-is-better"
        )
    if rule.baseline is None:
        return
    for key, value in rule.baseline.items():
        column = f"params.{key}"
        if column not in runs.columns:
            params = sorted(c.removeprefix("params.") for c in runs.columns if c.startswith("params."))
            raise ConfigError(
                f"<baseline={key}={value}>: the selected runs have no param {key!r}. Name the baseline with "
                f"their params (key=value[,key=value]), e.g. one of: {', '.join(params[:15])}"
            )
        taken = sorted({str(v) for v in runs[column].dropna()}, key=sort_key)
        if str(value) not in taken:
            raise ConfigError(
                f"<baseline={key}={value}>: no selected run has {key}={value}; the runs have {key} = "
                f"{', '.join(taken[:20])}. Pass one of these values to --baseline"
            )


def pairs(used: pd.DataFrame, factors: list[str], rule: SuccessRule) -> pd.DataFrame:
    """One row per candidate config: its baseline, both rules' verdicts, run ids."""
    baseline = {f"params.{k}": str(v) for k, v in (rule.baseline or DEFAULT_BASELINE).items()}
    metric = f"metrics.{rule.metric}"
    if metric not in used.columns or not set(baseline) <= set(used.columns):
        return pd.DataFrame()
    keys = [c for c in factors if c not in baseline]
    group_cols = keys + list(baseline)
    rows = []
    # Only the columns read below: a copy of every column of thousands of runs costs more than the tests.
    needed = [*group_cols, metric, "run_id", *([REPETITION] if REPETITION in used.columns else [])]
    frame = used[list(dict.fromkeys(needed))].copy()
    for column in group_cols:
        frame[column] = frame[column].fillna("-").astype(str)
    if REPETITION in frame.columns:  # parsed once here, not in each group
        frame[_REPETITION_NUMBER] = pd.to_numeric(frame[REPETITION], errors="coerce").astype(float)
    grouped = {k if isinstance(k, tuple) else (k,): g for k, g in frame.groupby(group_cols, sort=False)}
    base_values = tuple(baseline.values())
    for key in sorted(grouped, key=lambda k: tuple(sort_key(v) for v in k)):
        own = key[len(keys):]
        if own == base_values:
            continue
        base = grouped.get(key[: len(keys)] + base_values)
        if base is None:
            continue
        candidate = grouped[key]
        comparison = compare(
            base[metric].dropna().to_numpy(dtype=float), candidate[metric].dropna().to_numpy(dtype=float),
            alternative="greater" if rule.higher_is_better else "less", effects=False,
        )
        gated: bool | None = None
        if comparison.tested and comparison.welch_p is not None:
            gated = comparison.welch_p < rule.alpha
        rows.append({
            **{short(c): v for c, v in zip(keys, key[: len(keys)], strict=True)},
            **{short(c): v for c, v in zip(list(baseline), own, strict=True)},
            "n_candidate": comparison.n_b,
            "n_baseline": comparison.n_a,
            "mean_candidate": comparison.mean_b,
            "mean_baseline": comparison.mean_a,
            "p_one_sided": comparison.welch_p,
            "success_gated": gated,
            "note": comparison.note,
            "success_original": _original(base, candidate, metric, rule.higher_is_better),
            "run_ids_candidate": " ".join(sorted(candidate["run_id"])),
            "run_ids_baseline": " ".join(sorted(base["run_id"])),
        })
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Verdict:
    """One candidate against its baseline on one metric, by the gated rule and by the naive one."""

    n_candidate: int
    n_baseline: int
    mean_candidate: float | None
    mean_baseline: float | None
    test: str  # "welch" (>= 3 runs each), "student" (the baseline's spread), "" (untested)
    p_one_sided: float | None
    success_gated: bool | None  # None: untested (too few baseline runs)
    better_mean: bool | None  # the naive rule: the candidate's mean beats the baseline's, by any amount
    note: str


def against_baseline(
    baseline: Sequence[float] | np.ndarray, candidate: Sequence[float] | np.ndarray, higher_is_better: bool,
    alpha: float,
) -> Verdict:
    """The significance-gated rule for one candidate, however few its runs.

    At least :data:`MIN_N_TEST` runs on each side: the one-sided Welch test of
    :func:`pairs`. A candidate with fewer runs (1 for an Optuna trial) against
    at least :data:`MIN_N_TEST` baseline runs: the one-sided Student test with
    the baseline's spread (assumed to be the candidate's too). Fewer baseline
    runs: untested, "n<3"; a constant baseline and candidate: untested, "no
    variance". Success = p < alpha.
    """
    alternative = "greater" if higher_is_better else "less"
    base = np.asarray(baseline, dtype=float)
    cand = np.asarray(candidate, dtype=float)
    base, cand = base[np.isfinite(base)], cand[np.isfinite(cand)]
    if len(cand) >= MIN_N_TEST:
        c = compare(base, cand, alternative=alternative, effects=False)
        test, p, note = ("welch" if c.tested else ""), c.welch_p, c.note
    else:
        r = compare_to_reference(base, cand, alternative=alternative)
        test, p, note = ("student" if r.p is not None else ""), r.p, r.note
    mean_b = float(np.mean(base)) if len(base) else None
    mean_c = float(np.mean(cand)) if len(cand) else None
    better = None
    if mean_b is not None and mean_c is not None:
        better = mean_c > mean_b if higher_is_better else mean_c < mean_b
    return Verdict(
        n_candidate=len(cand), n_baseline=len(base), mean_candidate=mean_c, mean_baseline=mean_b, test=test,
        p_one_sided=p, success_gated=None if p is None else p < alpha, better_mean=better, note=note,
    )


def _first(group: pd.DataFrame, metric: str) -> float | None:
    """The value of the group's first repetition (then the smallest run id; runs without a number last)."""
    values = group[metric].to_numpy(dtype=float)
    has = ~np.isnan(values)
    if not has.any():
        return None
    if REPETITION not in group.columns:
        return float(values[has][0])
    repetition = (group[_REPETITION_NUMBER] if _REPETITION_NUMBER in group.columns else pd.to_numeric(
        group[REPETITION], errors="coerce")).to_numpy(dtype=float)[has]
    run_ids = group["run_id"].to_numpy()[has]
    first = min(range(len(run_ids)), key=lambda i: (
        (1, 0.0, run_ids[i]) if np.isnan(repetition[i]) else (0, repetition[i], run_ids[i])))
    return float(values[has][first])


def _original(base: pd.DataFrame, candidate: pd.DataFrame, metric: str, higher: bool) -> bool | None:
    """The original rule: first repetition against first repetition, any improvement."""
    b, c = _first(base, metric), _first(candidate, metric)
    if b is None or c is None:
        return None
    return c > b if higher else c < b


def rates(table: pd.DataFrame, by: str | None) -> pd.DataFrame:
    """Both rules' rates with Wilson 95 % intervals, per value of ``by`` (e.g. language)."""
    if table.empty:
        return pd.DataFrame()
    groups = [("all", table)] if by is None or by not in table.columns else [
        (str(k), g) for k, g in sorted(table.groupby(by), key=lambda kv: sort_key(kv[0]))
    ]
    rows = []
    for name, group in groups:
        gated = group["success_gated"].dropna()
        original = group["success_original"].dropna()
        g, o = wilson(int(gated.sum()), len(gated)), wilson(int(original.sum()), len(original))
        rows.append({
            "group": name,
            "configs": len(group),
            "untested": int(group["success_gated"].isna().sum()),
            "gated_successes": g.successes, "gated_n": g.n, "gated_rate": g.rate,
            "gated_ci_low": g.ci_low, "gated_ci_high": g.ci_high,
            "original_successes": o.successes, "original_n": o.n, "original_rate": o.rate,
            "original_ci_low": o.ci_low, "original_ci_high": o.ci_high,
        })
    return pd.DataFrame(rows)


def rate_difference_p(rate_table: pd.DataFrame, prefix: str) -> float | None:
    """Fisher's exact p between the first two groups' rates (``prefix`` gated/original)."""
    if len(rate_table) != 2:
        return None
    a, b = (
        Proportion(int(r[f"{prefix}_successes"]), int(r[f"{prefix}_n"]), None, None, None)
        for _, r in rate_table.iterrows()
    )
    return fisher_p(a, b)


__all__ = [
    "DEFAULT_BASELINE", "DEFAULT_METRIC", "MIN_N_TEST", "SuccessRule", "Verdict", "against_baseline", "check_rule",
    "pairs", "rate_difference_p",
    "rates",
]
