"""Markdown rendering of the report's tables (pure: DataFrames in, text out)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import pandas as pd

# One row of a table: column -> value.
Row = Mapping[str, Any]


def num(value: object, digits: int = 4) -> str:
    """4 significant digits; "—" for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def pvalue(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    p = float(cast(float, value))  # a DataFrame cell: a number here (None and NaN are handled above)
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def interval(low: object, high: object) -> str:
    if low is None or high is None or any(isinstance(v, float) and math.isnan(v) for v in (low, high)):
        return "—"
    return f"[{num(low)}, {num(high)}]"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def frame_rows(frame: pd.DataFrame, columns: Sequence[tuple[str, Callable[[Row], object]]]) -> str:
    """A markdown table from a DataFrame: (header, row -> cell) per column.

    Each row is a mapping column -> value holding what ``DataFrame.iterrows``
    would give (both read ``DataFrame.values``: Python objects when the
    columns' types differ, numpy scalars when they share one), without a
    Series built per row: the per-config tables have thousands of rows.
    """
    names = list(frame.columns)
    rows = [dict(zip(names, values, strict=True)) for values in frame.to_numpy()]
    return table([h for h, _ in columns], [[f(r) for _, f in columns] for r in rows])


def _untested(note: object) -> bool:
    return note in ("n<3", "no variance")


def ci_cell(row: Row) -> str:
    """The 95 % CI of a mean, or "n<3" (no interval from fewer than 3 runs)."""
    if int(row["n"]) < 3:
        return "n<3"
    return interval(row["ci_low"], row["ci_high"])


def config_table(stats: pd.DataFrame) -> str:
    return frame_rows(stats, [
        ("config", lambda r: r["config"]),
        ("n", lambda r: r["n"]),
        ("mean", lambda r: num(r["mean"])),
        ("median", lambda r: num(r["median"])),
        ("std", lambda r: num(r["std"])),
        ("CV", lambda r: num(r["cv"], 3)),
        ("95% CI of mean", ci_cell),
        ("p50", lambda r: num(r["p50"])),
        ("p95", lambda r: num(r["p95"])),
        ("p99", lambda r: num(r["p99"])),
        ("out of range", lambda r: r["out_of_range"] or ""),
        ("runs with warnings", lambda r: r["warned_runs"] or ""),
    ])


def comparison_table(comparisons: pd.DataFrame) -> str:
    return frame_rows(comparisons, [
        ("factor", lambda r: r["factor"]),
        ("metric", lambda r: r["metric"]),
        ("a", lambda r: r["a"]),
        ("b", lambda r: r["b"]),
        ("n a/b", lambda r: f"{r['n_a']}/{r['n_b']}"),
        ("mean a", lambda r: num(r["mean_a"])),
        ("mean b", lambda r: num(r["mean_b"])),
        ("b − a [95% CI]", lambda r: f"{num(r['diff'])} {interval(r['diff_ci_low'], r['diff_ci_high'])}"),
        ("Welch p", lambda r: r["note"] if _untested(r["note"]) else pvalue(r["welch_p"])),
        ("Holm p", lambda r: r["note"] if _untested(r["note"]) else pvalue(r["welch_p_holm"])),
        ("MWU p", lambda r: r["note"] if _untested(r["note"]) else pvalue(r["mannwhitney_p"])),
        ("Cohen's d", lambda r: num(r["cohens_d"], 3)),
        ("Cliff's δ", lambda r: num(r["cliffs_delta"], 3)),
        ("better", lambda r: r["better"]),
    ])


def headline_table(head: pd.DataFrame) -> str:
    return frame_rows(head, [
        ("metric", lambda r: r["metric"] + (" (higher better)" if r["higher_is_better"] else " (lower better)")),
        ("Python mean (n)", lambda r: f"{num(r['mean_a'])} ({r['n_a']})"),
        ("Rust mean (n)", lambda r: f"{num(r['mean_b'])} ({r['n_b']})"),
        ("winner", lambda r: r["winner"]),
        ("Rust − Python [95% CI]", lambda r: f"{num(r['diff'])} {interval(r['diff_ci_low'], r['diff_ci_high'])}"),
        ("relative", lambda r: "—" if not r["mean_a"] else f"{100 * r['diff'] / abs(r['mean_a']):+.1f}%"),
        ("Holm p", lambda r: r["note"] if _untested(r["note"]) else pvalue(r["welch_p_holm"])),
    ])


def rate_cell(successes: object, n: object, rate: object, low: object, high: object) -> str:
    if not n:
        return "—"
    # DataFrame cells: numbers whenever n is set.
    rate_, low_, high_ = (float(cast(float, v)) for v in (rate, low, high))
    return f"{successes}/{n} = {100 * rate_:.1f}% [{100 * low_:.1f}, {100 * high_:.1f}]"


def success_table(rates: pd.DataFrame) -> str:
    return frame_rows(rates, [
        ("group", lambda r: r["group"]),
        ("configs", lambda r: r["configs"]),
        ("significance-gated (cfexp) [Wilson 95% CI]", lambda r: rate_cell(
            r["gated_successes"], r["gated_n"], r["gated_rate"], r["gated_ci_low"], r["gated_ci_high"])),
        ("untested (n<3, no variance)", lambda r: r["untested"]),
        ("original rule (n=1, any gain) [Wilson 95% CI]", lambda r: rate_cell(
            r["original_successes"], r["original_n"], r["original_rate"], r["original_ci_low"],
            r["original_ci_high"])),
    ])


def contention_table(frame: pd.DataFrame) -> str:
    return frame_rows(frame, [
        ("config", lambda r: r["config"]),
        ("runs with a contended agent [Wilson 95% CI]", lambda r: rate_cell(
            r["runs_contended"], r["runs"], r["rate"], r["ci_low"], r["ci_high"])),
        ("contended agents", lambda r: f"{r['agents_contended']}/{r['agents']}"),
        ("parallel efficiency % (mean)", lambda r: num(r["parallel_efficiency_pct_mean"])),
        ("drift % (mean)", lambda r: num(r["drift_pct_mean"])),
        ("runs with warnings", lambda r: f"{r['warned_runs']}/{r['runs']}"),
    ])


def multi_agent_runs_table(frame: pd.DataFrame) -> str:
    return frame_rows(frame, [
        ("config", lambda r: r["config"]),
        ("run id", lambda r: f"`{r['run_id']}`"),
        ("parallel efficiency %", lambda r: _flagged(r, "parallel_efficiency_pct")),
        ("speedup", lambda r: _flagged(r, "speedup")),
        ("drift %", lambda r: num(r.get("drift_pct"))),
        ("measurement warnings", lambda r: r["measurement_warnings"].replace(" | ", "; ")),
    ])


def _flagged(row: Row, metric: str) -> str:
    """A per-run value, marked when it is out of range (excluded from every statistic)."""
    text = num(row.get(metric))
    return text + " (out of range, excluded)" if metric in str(row.get("out_of_range", "")).split(",") else text


def trend_table(frame: pd.DataFrame) -> str:
    return frame_rows(frame, [
        ("metric", lambda r: r["metric"]),
        ("runs (configs)", lambda r: f"{r['runs']} ({r['configs']})"),
        ("position from", lambda r: r["position"]),
        ("Spearman ρ", lambda r: num(r["rho"], 3)),
        ("p", lambda r: pvalue(r["p"])),
        ("Holm p", lambda r: pvalue(r["p_holm"])),
        ("p from", lambda r: r["method"]),
        ("trend", lambda r: r["trend"]),
    ])


def out_of_range_table(frame: pd.DataFrame) -> str:
    return frame_rows(frame, [
        ("run id", lambda r: f"`{r['run_id']}`"),
        ("config", lambda r: r["config"]),
        ("metric", lambda r: r["metric"]),
        ("value", lambda r: num(r["value"])),
        ("why", lambda r: r["reason"]),
    ])


def warnings_table(frame: pd.DataFrame) -> str:
    return frame_rows(frame, [
        ("run id", lambda r: f"`{r['run_id']}`"),
        ("status", lambda r: r["status"]),
        ("config", lambda r: (f"{r['design']}: " if r["design"] else "") + str(r["config"])),
        ("warnings", lambda r: r["warnings"]),
        ("measurement warnings", lambda r: r["measurement_warnings"]),
    ])


def trials_table(frame: pd.DataFrame, params: Sequence[str], metrics: Sequence[str]) -> str:
    """Trials (best trials, Pareto front) with their run ids, parameters and objective values."""
    return frame_rows(frame, [
        ("trial", lambda r: r["trial"]),
        ("run id", lambda r: f"`{r['run_id']}`"),
        ("baseline", lambda r: "yes" if r["baseline"] else ""),
        *((p, lambda r, p=p: num(r[f"param {p}"])) for p in params),
        *((m, lambda r, m=m: num(r[f"value {m}"])) for m in metrics),
    ])


def importance_table(frame: pd.DataFrame, metrics: Sequence[str]) -> str:
    return frame_rows(frame, [
        ("parameter", lambda r: r["param"]),
        *((f"importance for {m}", lambda r, m=m: num(r.get(f"importance {m}"), 3)) for m in metrics),
    ])


def study_success_table(rates: pd.DataFrame) -> str:
    return frame_rows(rates, [
        ("objective", lambda r: r["objective"]),
        ("searched trials", lambda r: r["searched_trials"]),
        ("failed", lambda r: r["failed"]),
        ("significance-gated [Wilson 95% CI]", lambda r: rate_cell(
            r["gated_successes"], r["gated_n"], r["gated_rate"], r["gated_ci_low"], r["gated_ci_high"])),
        ("untested (n<3, no variance)", lambda r: r["untested"]),
        ("better than the baseline mean [Wilson 95% CI]", lambda r: rate_cell(
            r["naive_successes"], r["naive_n"], r["naive_rate"], r["naive_ci_low"], r["naive_ci_high"])),
    ])
