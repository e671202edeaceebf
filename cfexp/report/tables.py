"""The report's tables, computed from the used runs of one provenance (pure).

Each function returns a DataFrame that is written as a CSV and rendered in
report.md, sorted so the same runs give the same rows.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from cfexp.metrics import catalog
from cfexp.report.load import short, sort_key
from cfexp.report.stats import compare, describe, holm, wilson

# Metrics of the per-config tables and comparisons: the catalogue's reported ones.
METRICS: tuple[str, ...] = tuple(catalog.reported())
# Categorical factors compared level against level.
COMPARED = (
    "params.language",
    "params.runtime.name",
    "params.topology.name",
    "params.options_mode",
    "params.scenario.mode",
    "params.scenario.name",
)
# At most this many levels are compared pairwise; more are compared with the first.
MAX_PAIRWISE_LEVELS = 5


def present_metrics(used: pd.DataFrame) -> list[str]:
    return [m for m in METRICS if f"metrics.{m}" in used.columns and used[f"metrics.{m}"].notna().any()]


def config_stats(used: pd.DataFrame, factors: list[str]) -> pd.DataFrame:
    """Per config and metric: n, mean, median, std, CV, 95 % CI, p50/p95/p99, run ids."""
    rows = []
    for config, group in used.groupby("config", sort=False):
        base = {short(c): group[c].iloc[0] for c in factors}
        run_ids = " ".join(sorted(group["run_id"]))
        for metric in present_metrics(used):
            summary = describe(group[f"metrics.{metric}"].to_numpy(dtype=float))
            if summary.n == 0:
                continue
            rows.append({"config": config, **base, "metric": metric, **summary.__dict__, "run_ids": run_ids})
    return pd.DataFrame(rows)


def comparisons(used: pd.DataFrame, factors: list[str]) -> pd.DataFrame:
    """Level against level of each categorical swept factor, pooled over the rest of the grid.

    Two-sided Welch and Mann–Whitney tests; Holm's adjustment over every row
    of the table (one family per report section).
    """
    rows = []
    for factor in [f for f in COMPARED if f in factors]:
        levels = sorted(used[factor].unique(), key=sort_key)
        if len(levels) <= MAX_PAIRWISE_LEVELS:
            level_pairs = list(combinations(levels, 2))
        else:
            level_pairs = [(levels[0], other) for other in levels[1:]]
        for metric in present_metrics(used):
            column = f"metrics.{metric}"
            for a, b in level_pairs:
                x = used.loc[used[factor] == a, column].dropna().to_numpy(dtype=float)
                y = used.loc[used[factor] == b, column].dropna().to_numpy(dtype=float)
                if len(x) == 0 or len(y) == 0:
                    continue
                c = compare(x, y)
                rows.append({"factor": short(factor), "metric": metric, "a": a, "b": b, **c.__dict__})
    table = pd.DataFrame(rows)
    if not table.empty:
        table["welch_p_holm"] = holm(list(table["welch_p"].where(table["welch_p"].notna(), None)))
    return table


def headline(used: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """The original's "Rust vs Python" table, with a CI and a tested winner."""
    language = "params.language"
    if language not in used.columns or set(used[language].unique()) != {"python", "rust"}:
        return pd.DataFrame()
    rows = []
    for metric in present_metrics(used):
        column = f"metrics.{metric}"
        python = used.loc[used[language] == "python", column].dropna().to_numpy(dtype=float)
        rust = used.loc[used[language] == "rust", column].dropna().to_numpy(dtype=float)
        if len(python) == 0 or len(rust) == 0:
            continue
        c = compare(python, rust)
        rows.append({"metric": metric, "higher_is_better": catalog.higher_is_better(metric), **c.__dict__})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["welch_p_holm"] = holm(list(table["welch_p"].where(table["welch_p"].notna(), None)))
    table["winner"] = [_winner(r, alpha) for _, r in table.iterrows()]
    return table


def _winner(row: pd.Series, alpha: float) -> str:
    p = row["welch_p_holm"]
    if p is None or (isinstance(p, float) and np.isnan(p)):
        return row["note"] or "untested"
    if p >= alpha:
        return "no significant difference"
    rust_higher = row["diff"] > 0
    return "Rust" if rust_higher == row["higher_is_better"] else "Python"


def contention(used: pd.DataFrame) -> pd.DataFrame:
    """Contended agents over the sweep (the runs' agent_<i>_contended), per config and overall."""
    flags = sorted(c for c in used.columns if c.startswith("metrics.agent_") and c.endswith("_contended"))
    if not flags:
        return pd.DataFrame()
    rows = []
    multi = used[used[flags].notna().any(axis=1)]
    groups = [(str(k), g) for k, g in multi.groupby("config", sort=False)] + [("all configs", multi)]
    for name, group in groups:
        values = group[flags].to_numpy(dtype=float).ravel()
        values = values[np.isfinite(values)]
        if len(values) == 0:
            continue
        p = wilson(int(values.sum()), len(values))
        efficiency = describe(group.get("metrics.parallel_efficiency_pct", pd.Series(dtype=float)).to_numpy(dtype=float))
        rows.append({
            "config": name, "runs": len(group), "agents": p.n, "contended": p.successes,
            "rate": p.rate, "ci_low": p.ci_low, "ci_high": p.ci_high,
            "parallel_efficiency_pct_mean": efficiency.mean,
            "run_ids": " ".join(sorted(group["run_id"])) if name != "all configs" else "",
        })
    return pd.DataFrame(rows)
