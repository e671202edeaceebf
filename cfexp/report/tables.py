"""The report's tables, computed from the used runs of one provenance (pure).

Each function returns a DataFrame that is written as a CSV and rendered in
report.md, sorted so the same runs give the same rows.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd

from cfexp.metrics import catalog
from cfexp.report.load import WARNING_SEPARATOR, short, sort_key
from cfexp.report.stats import NO_VARIANCE, compare, describe, describe_many, holm, trend, wilson

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
# Metrics tested for a trend against the run order: the catalogue's plotted (main) ones and
# the multi-agent efficiency.
TREND_METRICS: tuple[str, ...] = (*catalog.plotted(), "parallel_efficiency_pct")
NO_DIFFERENCE = "no significant difference"


def present_metrics(used: pd.DataFrame) -> list[str]:
    return [m for m in METRICS if f"metrics.{m}" in used.columns and used[f"metrics.{m}"].notna().any()]


def grid_coverage(used: pd.DataFrame, factors: list[str]) -> tuple[int, int]:
    """(configs with finished runs, combinations of the factors' levels a full grid has).

    A factor whose level another factor's level fixes (``language`` by
    ``runtime``) adds no combinations of its own.
    """
    if not factors or used.empty:
        return (int(used["config"].nunique()), int(used["config"].nunique()))
    independent = [
        f for f in factors
        if not any(g != f and (used.groupby(g)[f].nunique() <= 1).all() and used[g].nunique() > used[f].nunique()
                   for g in factors)
    ]
    combinations_ = 1
    for f in independent:
        combinations_ *= int(used[f].nunique())
    return int(used["config"].nunique()), combinations_


def config_stats(used: pd.DataFrame, factors: list[str], removed: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per config and metric: n, mean, median, std, CV, 95 % CI, p50/p95/p99, warnings, run ids.

    ``removed``: the values taken out as outside their physical range (counted
    per config and metric in ``out_of_range``; they are in no other column).
    ``warned_runs``: runs of the config with at least one measurement warning.
    """
    gone = removed if removed is not None and not removed.empty else pd.DataFrame(columns=["run_id", "metric"])
    metrics = sorted(set(present_metrics(used)) | (set(gone["metric"]) & set(METRICS)), key=METRICS.index)
    config_of = used.set_index("run_id")["config"]
    counts = gone.assign(config=gone["run_id"].map(config_of)).groupby(["config", "metric"]).size().to_dict()
    # The configs in the order of their first run (groupby's sort=False), each as row positions: numpy
    # arrays are sliced per config, not the frame (hundreds of configs, each a few metrics).
    codes, configs = pd.factorize(used["config"])
    order = np.argsort(codes, kind="stable")
    order = order[codes[order] >= 0]  # a missing config is in no group, as with groupby
    bounds = np.cumsum(np.bincount(codes[codes >= 0], minlength=len(configs)))
    members = np.split(order, bounds[:-1]) if len(configs) else []
    first = {c: used[c].to_numpy() for c in factors}
    run_id = used["run_id"].to_numpy()
    warning_counts = used["warnings"].to_numpy()
    values = {m: used[f"metrics.{m}"].to_numpy(dtype=float) for m in metrics if f"metrics.{m}" in used.columns}
    cells = [(config, rows, metric) for config, rows in zip(configs, members, strict=True) for metric in metrics]
    summaries = describe_many([values[m][rows] if m in values else np.array([]) for _, rows, m in cells])
    table = []
    for (config, rows, metric), summary in zip(cells, summaries, strict=True):
        out_of_range = int(counts.get((config, metric), 0))
        if summary.n == 0 and out_of_range == 0:
            continue
        table.append({
            "config": config, **{short(c): first[c][rows[0]] for c in factors}, "metric": metric,
            **summary.__dict__, "out_of_range": out_of_range,
            "warned_runs": int((warning_counts[rows] > 0).sum()), "warnings": int(warning_counts[rows].sum()),
            "run_ids": " ".join(sorted(run_id[rows])),
        })
    return pd.DataFrame(table)


def comparisons(used: pd.DataFrame, factors: list[str], alpha: float = 0.05) -> pd.DataFrame:
    """Level against level of each categorical swept factor, pooled over the rest of the grid.

    Two-sided Welch and Mann–Whitney tests; Holm's adjustment over every row
    of the table (one family per report section); ``better`` names the better
    level (by the catalogue's direction) when the Holm-adjusted p < alpha.
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
        table["welch_p_holm"] = holm(_optional(table["welch_p"]))
        table["better"] = [
            _better(r, alpha, str(r["a"]), str(r["b"]), catalog.direction(r["metric"])) for _, r in table.iterrows()
        ]
    return table


def _optional(column: pd.Series) -> list[float | None]:
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v) for v in column]


def _better(row: pd.Series, alpha: float, a: str, b: str, direction: catalog.Direction) -> str:
    """The better of a and b when the Holm-adjusted p < alpha; else why none is named."""
    p = row["welch_p_holm"]
    if p is None or (isinstance(p, float) and np.isnan(p)):
        return row["note"] or "untested"
    if p >= alpha:
        return NO_DIFFERENCE
    if direction is catalog.Direction.NONE:
        return "—"
    b_higher = row["diff"] > 0
    return b if b_higher == (direction is catalog.Direction.HIGHER) else a


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
    table["welch_p_holm"] = holm(_optional(table["welch_p"]))
    table["winner"] = [
        _better(r, alpha, "Python", "Rust", catalog.direction(r["metric"])) for _, r in table.iterrows()
    ]
    return table


def contention(used: pd.DataFrame) -> pd.DataFrame:
    """Runs with a contended agent (the runs' agent_<i>_contended), per config and overall.

    The rate and its Wilson interval are over **runs**: the agents of one run
    share its server and its moment, so they are not independent trials (an
    interval over agents would be too narrow). Contended agents / agents is
    shown beside, without an interval.
    """
    flags = sorted(c for c in used.columns if c.startswith("metrics.agent_") and c.endswith("_contended"))
    if not flags:
        return pd.DataFrame()
    rows = []
    multi = used[used[flags].notna().any(axis=1)]
    groups = [(str(k), g) for k, g in multi.groupby("config", sort=False)] + [("all configs", multi)]
    for name, group in groups:
        if group.empty:
            continue
        values = group[flags].to_numpy(dtype=float)
        agents = np.isfinite(values).sum(axis=1)
        contended = np.nansum(values, axis=1)
        p = wilson(int((contended > 0).sum()), len(group))
        efficiency = describe(_column(group, "metrics.parallel_efficiency_pct"))
        drift = describe(_column(group, "metrics.drift_pct"))
        rows.append({
            "config": name, "runs": p.n, "runs_contended": p.successes,
            "rate": p.rate, "ci_low": p.ci_low, "ci_high": p.ci_high,
            "agents": int(agents.sum()), "agents_contended": int(contended.sum()),
            "parallel_efficiency_pct_mean": efficiency.mean, "parallel_efficiency_n": efficiency.n,
            "drift_pct_mean": drift.mean, "warned_runs": int((group["warnings"] > 0).sum()),
            "run_ids": " ".join(sorted(group["run_id"])) if name != "all configs" else "",
        })
    return pd.DataFrame(rows)


def _column(group: pd.DataFrame, column: str) -> np.ndarray:
    return group[column].to_numpy(dtype=float) if column in group.columns else np.array([])


MULTI_AGENT_COLUMNS = ("agents", "speedup", "parallel_efficiency_pct", "overlap_efficiency_pct", "drift_pct")


def multi_agent_runs(used: pd.DataFrame, removed: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per multi-agent run: speedup, efficiencies, drift, contended agents, measurement warnings.

    A value removed as out of range (``removed``) is shown here with its run,
    named in ``out_of_range``: this table lists runs, it ranks nothing.
    """
    present = [c for c in MULTI_AGENT_COLUMNS if f"metrics.{c}" in used.columns]
    if "parallel_efficiency_pct" not in present and "speedup" not in present:
        return pd.DataFrame()
    gone = removed if removed is not None and not removed.empty else pd.DataFrame(columns=["run_id", "metric", "value"])
    raw = {(r["run_id"], r["metric"]): r["value"] for _, r in gone.iterrows()}
    has_value = used[[f"metrics.{c}" for c in present]].notna().any(axis=1)
    multi = used[has_value | used["run_id"].isin(set(gone["run_id"]))]
    flags = sorted(c for c in used.columns if c.startswith("metrics.agent_") and c.endswith("_contended"))
    rows = []
    for _, run in multi.iterrows():
        contended = [run[f] for f in flags if pd.notna(run[f])]
        values = {c: raw.get((run["run_id"], c), run[f"metrics.{c}"]) for c in present}
        if pd.isna(values.get("parallel_efficiency_pct", math.nan)) and pd.isna(values.get("speedup", math.nan)):
            continue
        rows.append({
            "config": run["config"], "run_id": run["run_id"], **values,
            "out_of_range": ",".join(c for c in present if (run["run_id"], c) in raw),
            "contended_agents": int(sum(contended)) if contended else None,
            "warnings": int(run["warnings"]),
            "measurement_warnings": run["warning_text"],
        })
    return pd.DataFrame(rows)


def trends(used: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Run-order check: Spearman's rho of each main metric's per-config residuals against run position.

    Residual = the run's value minus the mean of its config (configs with at
    least 2 runs; a lone run's residual is 0 by construction). Position = the
    run's place in its sweep (``position``). Holm's adjustment over the
    metrics of the table; ``trend`` says which way the values move when the
    adjusted p < alpha.
    """
    rows = []
    for metric in [m for m in TREND_METRICS if f"metrics.{m}" in used.columns]:
        column = f"metrics.{metric}"
        data = used.dropna(subset=[column, "position"])
        sizes = data.groupby("config")[column].transform("size")
        data = data[sizes >= 2]
        if data.empty:
            continue
        residual = data[column] - data.groupby("config")[column].transform("mean")
        t = trend(data["position"].to_numpy(dtype=float), residual.to_numpy(dtype=float))
        sources = sorted(set(data["position_source"]))
        rows.append({
            "metric": metric, "runs": t.n, "configs": int(data["config"].nunique()),
            "position": " and ".join(sources), "rho": t.rho, "p": t.p, "method": t.method,
        })
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["p_holm"] = holm(_optional(table["p"]))
    table["trend"] = [_direction(r, alpha) for _, r in table.iterrows()]
    return table


def _direction(row: pd.Series, alpha: float) -> str:
    p = row["p_holm"]
    if p is None or (isinstance(p, float) and np.isnan(p)):
        return f"untested ({row['method']})"
    if p >= alpha:
        return "none detected"
    return "values rise with position" if row["rho"] > 0 else "values fall with position"


def warning_list(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run with measurement warnings, one row per run, its sentences joined by "; "."""
    warned = runs[runs["warnings"] > 0]
    return pd.DataFrame([
        {"run_id": r["run_id"], "status": r["status"], "provenance": r["provenance"], "design": r["design"],
         "config": r["config"], "warnings": int(r["warnings"]),
         "measurement_warnings": "; ".join(s.strip() for s in str(r["warning_text"]).split(WARNING_SEPARATOR)
                                           if s.strip())}
        for _, r in warned.iterrows()
    ], columns=["run_id", "status", "provenance", "design", "config", "warnings", "measurement_warnings"])


__all__ = [
    "COMPARED", "METRICS", "NO_DIFFERENCE", "NO_VARIANCE", "TREND_METRICS", "comparisons", "config_stats",
    "contention", "headline", "multi_agent_runs", "present_metrics", "trends", "warning_list",
]
