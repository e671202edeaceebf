"""Writes a report folder: report.md, CSV tables and PNG figures.

Everything is sorted, so the same runs give the same files; the only line
that changes between two generations is the one starting with
:data:`TIMESTAMP_PREFIX`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from cfexp.errors import CfexpError, ConfigError
from cfexp.filenames import safe_name
from cfexp.metrics import catalog
from cfexp.report import markdown as md
from cfexp.report import plots, study_store, success, tables
from cfexp.report.aside import draw_aside
from cfexp.report.load import ORDER_TAG, SEED_TAG, RunSet, design_differences, load_runs, short

if TYPE_CHECKING:
    from cfexp.report.study import StudyTables

log = logging.getLogger(__name__)

TIMESTAMP_PREFIX = "Generated: "
# Environment tags shown per provenance (hardware, software, what was served).
ENV_TAGS = (
    "host", "env.cpu", "env.cpu_count", "env.memory_gb", "env.os", "env.python", "env.cfexp_version",
    "backend", "backend_version", "model", "model_digest", "code_version", "rustc", "env.packages",
)
PLOTTED = tuple(catalog.plotted())
# Per-run lists (out of range, warnings) show at most this many rows in report.md; their CSVs have all.
MAX_LISTED = 50
# Optuna trial states as the study section words them.
_STATES = {"COMPLETE": "complete", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting", "PRUNED": "pruned"}


@dataclass(frozen=True)
class ReportOptions:
    experiment: str
    tracking_uri: str
    out_dir: Path | None = None  # None = reports/<experiment>
    filter_string: str = ""
    # Scope: () = the latest sweep of the experiment; else these sweeps (parent run ids).
    sweeps: tuple[str, ...] = ()
    all_runs: bool = False  # every run of the experiment, whatever its sweep
    alpha: float = 0.05
    success_rule: success.SuccessRule = field(default_factory=success.SuccessRule)
    # The user named the success metric (then it must be logged by the runs).
    success_metric_given: bool = False
    # The Optuna storage of the studies; None = the one each sweep's parent run names.
    study_storage: str | None = None


def generate_report(options: ReportOptions) -> Path:
    """Load the runs, compute, write; returns the path of report.md."""
    if not 0 < options.alpha < 1:
        raise ConfigError(f"<alpha={options.alpha}> must be between 0 and 1 (e.g. 0.05)")
    out = options.out_dir or Path("reports") / safe_name(options.experiment)  # a name, never a path
    created = not out.exists()
    _require_writable(out)  # before reading a large store
    try:
        runset = load_runs(
            options.tracking_uri, options.experiment, options.filter_string, options.sweeps, options.all_runs
        )
        success.check_rule(options.success_rule, runset.used, options.success_metric_given)
    except CfexpError:
        if created:
            shutil.rmtree(out, ignore_errors=True)  # a mistake leaves no empty report folder behind
        raise
    try:
        return write_report(runset, options, out)
    except OSError as exc:
        raise ConfigError(f"cannot write the report into <out={out}>: {exc.strerror or exc}. {_OUT_HINT}") from exc


_OUT_HINT = "Give --out a folder you can write (e.g. --out /tmp/report), or fix the permissions of this one."


def _require_writable(out: Path) -> None:
    """One clear paragraph, before any work, when the output folder cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out, prefix=".cfexp-write-check-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot write the report into <out={out}>: {exc.strerror or exc}. No report was written. {_OUT_HINT}"
        ) from exc


def write_report(runset: RunSet, options: ReportOptions, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("*.png"), *out.glob("*.csv")]:
        stale.unlink()  # a previous report's figures must not pass for this one's
    lines = _header(runset, options)
    lines += _environment(runset)
    every_used = runset.used  # a new frame per access: taken once
    provenances = sorted(every_used["provenance"].unique())
    if len(provenances) > 1:
        lines += [
            "> **Mixed input**: these runs are " + " and ".join(provenances) + ". They are never pooled: "
            "each provenance has its own section below, and no test compares across them.", "",
        ]
    designs = runset.designs
    if len(designs) > 1:
        lines += _mixed_designs(runset)
    for design in designs:
        for provenance in provenances:
            used = every_used[(every_used["design"] == design.id) & (every_used["provenance"] == provenance)]
            if used.empty:
                continue
            prefix = (f"{design.id}_" if len(designs) > 1 else "") + (
                f"{provenance}_" if len(provenances) > 1 else "")
            title = (f"Design {design.id}: " if len(designs) > 1 else "") + (
                f"{provenance} runs" if len(designs) > 1 else f"{provenance.capitalize()} runs")
            removed = runset.out_of_range[runset.out_of_range["run_id"].isin(set(used["run_id"]))]
            lines += _section(used, design.factors, options, out, prefix, title, removed)
    names = study_store.study_names(runset.runs)
    for index, name in enumerate(names):
        lines += _study(runset, name, options, out, "study_" if len(names) == 1 else f"study{index + 1}_")
    lines += _appendix(runset, out)
    path = out / "report.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


def _scope(runset: RunSet) -> str:
    scope = runset.scope
    widen = "`--all` for every run, `--sweep ID…` to choose"
    if scope.kind == "latest":
        text = (f"Scope: the latest sweep `{scope.sweeps[0]}` of the {scope.sweeps_in_experiment} sweep(s) in the "
                f"experiment")
        return text + (f"; {scope.runs_left_out} other run(s) not included ({widen})." if scope.runs_left_out
                       else " (it holds every run).")
    if scope.kind == "sweeps":
        return (f"Scope: the sweep(s) asked for ({', '.join(f'`{s}`' for s in scope.sweeps)}); "
                f"{scope.runs_left_out} other run(s) of the experiment not included.")
    if scope.kind == "all":
        outside = int((runset.runs["parent_run_id"] == "").sum())
        return (f"Scope: every run of the experiment (`--all`): {len(scope.sweeps)} sweep(s)"
                + (f" and {outside} run(s) outside any sweep." if outside else "."))
    return "Scope: every run (the experiment has no sweep)."


def _sweeps(runset: RunSet) -> str:
    ids = sorted(set(runset.runs["parent_run_id"]) - {""})
    parents = runset.parents.set_index("run_id") if "run_id" in runset.parents.columns else pd.DataFrame()
    described = []
    for run_id in ids:
        text = f"`{run_id}`"
        if run_id in parents.index:
            order = parents.at[run_id, ORDER_TAG] if ORDER_TAG in parents.columns else None
            seed = parents.at[run_id, SEED_TAG] if SEED_TAG in parents.columns else None
            if isinstance(order, str) and order:
                text += f" (order {order}" + (f", seed {seed}" if isinstance(seed, str) and seed else "") + ")"
        described.append(text)
    return ", ".join(described) or "none"


def _header(runset: RunSet, options: ReportOptions) -> list[str]:
    runs = runset.runs
    source = [f"experiment `{options.experiment}`"]
    if options.filter_string:
        source.append(f"filter `{options.filter_string}`")
    warned = int((runset.used["warnings"] > 0).sum())
    lines = [
        f"# cfexp report: {options.experiment}",
        "",
        f"{TIMESTAMP_PREFIX}{time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        "",
        f"Source: {', '.join(source)} in `{options.tracking_uri}`.",
        "",
        _scope(runset),
        "",
        f"**{len(runs)} runs**: {int(runs['used'].sum())} finished and used; "
        f"{int((~runs['used']).sum())} failed, killed or unfinished, listed in the appendix and excluded "
        f"from every statistic. Sweeps (parent runs): {_sweeps(runset)}.",
        "",
    ]
    if len(runset.designs) == 1:
        factors = runset.designs[0].factors
        lines += ["Swept factors (a config is one combination of them; its runs are its repetitions): "
                  + (", ".join(f"`{short(f)}`" for f in factors) or "none — every run is the same config") + ".", ""]
    if warned:
        lines += [f"**Measurement warnings**: {warned} used run(s) carry warnings (a load inside a measured call, "
                  "a truncated prompt, drift, a value out of range): counted per config below, listed in the "
                  "appendix.", ""]
    if not runset.out_of_range.empty:
        lines += [f"**Out of range**: {len(runset.out_of_range)} metric value(s) outside their physical range "
                  "are excluded from every statistic, comparison and rate; they are listed in the appendix.", ""]
    lines += [
        "Statistics: per-run values (each run's mean over its calls) are the observations. "
        "Methods and their assumptions: docs/reports.md.",
        "",
    ]
    return lines


def _mixed_designs(runset: RunSet) -> list[str]:
    designs = runset.designs
    differences = design_differences(designs)
    lines = [
        f"> **Mixed designs**: these runs come from {len(designs)} designs (groups of sweeps whose fixed, "
        "non-swept config or whose grid differ). A comparison pooled over them would set configs apart by more "
        "than the factor compared, so each design has its own section below, no test crosses designs, and no "
        "winner is declared across them. `--sweep ID…` reports chosen sweeps.", "",
    ]
    rows = [[d.id, " ".join(f"`{s}`" if s else "(runs outside any sweep)" for s in d.sweeps),
             int(runset.runs["design"].eq(d.id).sum()),
             ", ".join(f"`{short(f)}`" for f in d.factors) or "none"] for d in designs]
    lines += [md.table(["design", "sweeps", "runs", "swept factors"], rows), ""]
    if differences:
        rows = [[f"`{short(k)}`", *(v[d.id] for d in designs)] for k, v in differences.items()]
        lines += ["What sets them apart:", "", md.table(["key", *(d.id for d in designs)], rows), ""]
    return lines


def _environment(runset: RunSet) -> list[str]:
    runs = runset.runs
    rows = []
    for provenance, group in sorted(runs.groupby("provenance"), key=lambda kv: str(kv[0])):
        for tag in ENV_TAGS:
            column = f"tags.{tag}"
            if column not in group.columns:
                continue
            values = sorted(group[column].dropna().astype(str).unique())
            if values:
                rows.append([provenance, tag, "; ".join(f"`{v}`" for v in values)])
    frame = pd.DataFrame(rows, columns=["provenance", "tag", "values"])
    return ["## Environment and provenance", "", md.table(["provenance", "tag", "values"], rows), ""] if len(
        frame
    ) else ["## Environment and provenance", "", "No environment tags recorded.", ""]


def _csv(frame: pd.DataFrame, out: Path, name: str) -> str:
    frame.to_csv(out / name, index=False, float_format="%.10g")
    return name


def _section(
    used: pd.DataFrame, factors: list[str], options: ReportOptions, out: Path, prefix: str, title: str,
    removed: pd.DataFrame,
) -> list[str]:
    lines = [f"## {title} ({len(used)} runs, {used['config'].nunique()} configs)", ""]

    order = tables.trends(used, options.alpha)
    figures = draw_aside(lambda: [
        *(plots.distributions(used, m, out, prefix) for m in PLOTTED if m in tables.present_metrics(used)),
        plots.throughput_vs_ttft(used, factors, out, prefix),
        plots.efficiency(used, factors, out, prefix),
        *(plots.versus_parameter(used, factors, m, out, prefix) for m in ("throughput_tok_s", "ttft_ms")),
        plots.run_order(used, list(order["metric"]) if not order.empty else [], out, prefix),
    ])  # drawn by a child process while the tables below are computed (cfexp/report/aside.py)
    flagged = order[order["trend"].str.startswith("values")] if not order.empty else order
    for _, row in flagged.iterrows():
        lines += [f"> **Run-order trend**: `{row['metric']}` {row['trend'].removeprefix('values ')} in the sweep "
                  f"(Spearman ρ = {md.num(row['rho'], 3)} between each run's deviation from its config's mean and "
                  f"its position; Holm p = {md.pvalue(row['p_holm'])}). Runs early in the sweep differ from later "
                  "ones (cold start, warming, drift): read every comparison below with that in mind, and see "
                  "\"Run order\".", ""]

    present, full = tables.grid_coverage(used, factors)
    if present < full:
        lines += [f"> **Incomplete grid**: {present} of the {full} combinations of the swept factors have finished "
                  "runs (failed jobs, or runs that do not form a full grid). A comparison pooled over the other "
                  "factors then sets levels against each other over different mixes of them: read the per-config "
                  "rows.", ""]

    stats = tables.config_stats(used, factors, removed)
    lines += ["### Per-config statistics", "",
              "n: runs with a value; the 95 % CI of the mean needs at least 3 runs (\"n<3\"). "
              "Out of range: values excluded as outside the metric's physical range (appendix). "
              "Runs with warnings: runs whose measurement_warnings tag says their numbers are doubtful (appendix).",
              "", f"Full table with run ids: `{_csv(stats, out, f'{prefix}configs.csv')}`.", ""]
    for metric in [m for m in tables.METRICS if m in set(stats.get("metric", []))]:
        part = stats[stats["metric"] == metric]
        lines += [f"#### {metric}", "", md.config_table(part), ""]

    head = tables.headline(used, options.alpha)
    if not head.empty:
        lines += ["### Rust vs Python", "",
                  "The original's headline table, with each difference's Welch 95 % CI and a winner only "
                  f"when the Holm-adjusted two-sided Welch p < {options.alpha} "
                  "(pooled over the other factors of the grid).", "",
                  md.headline_table(head), "", f"CSV: `{_csv(head, out, f'{prefix}headline.csv')}`.", ""]

    comparisons = tables.comparisons(used, factors, options.alpha)
    if not comparisons.empty:
        lines += ["### Comparisons along the swept dimensions", "",
                  "Level b against level a of each factor, pooled over the rest of the grid. Two-sided Welch "
                  "t-test (p), adjusted with Holm over every row of this table, Mann–Whitney U, effect sizes; "
                  f"\"better\": the better level by the metric's direction when the Holm p < {options.alpha}. "
                  "\"n<3\": too few runs; \"no variance\": both groups constant; no test.", "",
                  md.comparison_table(comparisons), "",
                  f"CSV: `{_csv(comparisons, out, f'{prefix}comparisons.csv')}`.", ""]

    lines += _success(used, factors, options, out, prefix)
    lines += _multi_agent(used, removed, out, prefix)

    if not order.empty:
        lines += ["### Run order", "",
                  "Does a main metric drift with the run's position in its sweep (cold start, warming, a "
                  "server filling up)? Spearman's rank correlation between each run's deviation from its "
                  "config's mean and its position (the `sweep.position` tag, else its start time within the "
                  f"sweep); configs with at least 2 runs; Holm over the metrics of this table, alpha "
                  f"{options.alpha}.", "",
                  md.trend_table(order), "", f"CSV: `{_csv(order, out, f'{prefix}run_order.csv')}`.", ""]

    drawn = figures()
    if drawn:
        lines += ["### Figures", ""] + [f"![{f}]({f})\n" for f in drawn]
    return lines


def _multi_agent(used: pd.DataFrame, removed: pd.DataFrame, out: Path, prefix: str) -> list[str]:
    contention = tables.contention(used)
    runs = tables.multi_agent_runs(used, removed)
    if contention.empty and runs.empty:
        return []
    lines = ["### Multi-agent contention and efficiency", ""]
    if not contention.empty:
        lines += ["An agent is contended when its concurrent TTFT or throughput is worse than solo by more "
                  "than `scenario.contention_threshold_pct` plus its drift (docs/multi-agent.md). The rate is "
                  "the share of **runs** with a contended agent, with a Wilson 95 % interval over runs: the "
                  "agents of one run share its server and its moment, so they are not independent trials "
                  "(contended agents / agents is shown beside, without an interval).", "",
                  md.contention_table(contention), "",
                  f"CSV: `{_csv(contention, out, f'{prefix}contention.csv')}`.", ""]
    if not runs.empty:
        warned = runs[runs["warnings"] > 0]
        lines += [f"Per run (speedup, efficiencies, drift, contended agents, warnings): "
                  f"`{_csv(runs, out, f'{prefix}multi_agent_runs.csv')}`."]
        if warned.empty:
            lines += ["No multi-agent run carries a measurement warning.", ""]
        else:
            lines += [f"{len(warned)} of {len(runs)} runs carry measurement warnings, beside their efficiency:",
                      "", md.multi_agent_runs_table(warned.head(MAX_LISTED)),
                      *_more(len(warned), f"{prefix}multi_agent_runs.csv"), ""]
    return lines


def _success(used: pd.DataFrame, factors: list[str], options: ReportOptions, out: Path, prefix: str) -> list[str]:
    rule = options.success_rule
    pairs = success.pairs(used, factors, rule)
    if pairs.empty:
        return []
    by = "language" if "language" in pairs.columns else ("runtime" if "runtime" in pairs.columns else None)
    rates = success.rates(pairs, by)
    baseline = ", ".join(f"{k}={v}" for k, v in (rule.baseline or success.DEFAULT_BASELINE).items())
    lines = [
        "### Optimization success rate", "",
        f"Each config against its baseline (`{baseline}`, all other factors equal), on "
        f"`{rule.metric}` ({'higher' if rule.higher_is_better else 'lower'} is better). "
        f"**Significance-gated**: one-sided Welch t-test p < {rule.alpha} with >= 3 runs on each side "
        "(fewer runs, or two constant groups: untested). "
        "**Original rule** (TR109/TR111, shown for comparison only): the first repetition beat the "
        "baseline's first repetition by any amount, n = 1.", "",
        md.success_table(rates), "",
    ]
    for kind in ("gated", "original"):
        p = success.rate_difference_p(rates, kind)
        if p is not None:
            lines.append(f"Fisher's exact test between the two {by} rates ({kind}): p = {md.pvalue(p)}.")
    lines += ["", f"Per config: `{_csv(pairs, out, f'{prefix}success.csv')}`; "
              f"rates: `{_csv(rates, out, f'{prefix}success_rates.csv')}`.", ""]
    return lines


def _study(runset: RunSet, name: str, options: ReportOptions, out: Path, prefix: str) -> list[str]:
    """The section of one Optuna study whose trials are among the runs (docs/reports.md)."""
    from cfexp.report.study import study_tables  # optuna and scikit-learn: only for a report with a study

    lines = [f"## Optuna study `{name}`", ""]
    url = options.study_storage or study_store.storage_of(name, runset.parents)
    if url is None:
        return lines + ["No sweep parent run among these runs names the study's storage (select the sweep "
                        "with --parent rather than --filter, or give --study-storage): study section skipped.", ""]
    stored = study_store.read_study(name, url)
    if stored.error:
        return lines + [f"The study could not be read: {stored.error}. Study section skipped.", ""]
    t = study_tables(stored, runset.runs, options.alpha)
    trials = t.trials
    objectives = ", ".join(f"{d} `{m}`" for m, d in zip(stored.metrics, stored.directions, strict=True))
    lines += [f"Storage `{url}`; objectives: {objectives}. {len(stored.trials)} trials in the study, "
              f"{len(trials)} with a run among these runs ({t.not_in_runs} without: not shown)."]
    if trials.empty:
        return lines + ["", "No trial of the study matches these runs' trial numbers: study section skipped.", ""]
    counts = trials["state"].value_counts()
    lines[-1] += (
        " Of these: " + ", ".join(f"{counts[s]} {_STATES.get(s, s.lower())}" for s in sorted(counts.index))
        + f"; {int(trials['baseline'].sum())} baseline runs. Every trial with its run id, parameters and "
        f"values: `{_csv(trials, out, f'{prefix}trials.csv')}`."
    )
    lines.append("")
    lines += [f"> {note}" for note in t.notes] + ([""] if t.notes else [])
    several = len(stored.metrics) > 1
    lines += ["### " + ("Pareto front" if several else "Best trial"), ""]
    if t.best.empty:
        lines += ["No completed (feasible) trial.", ""]
    else:
        lines += [("Trials no other trial beats on every objective" if several else "The best trial")
                  + " (among completed, feasible trials; values are the runs' metrics):", "",
                  md.trials_table(t.best, t.params, stored.metrics), "",
                  f"CSV: `{_csv(t.best, out, f'{prefix}best.csv')}`.", ""]
    lines += ["### Parameter importances", ""]
    if t.importances.empty:
        lines += ["None computed (see the notes above).", ""]
    else:
        lines += [f"Share of each objective's variance over the completed trials explained by each searched "
                  f"parameter: {t.importance_method}. With few trials, read them as hints.", "",
                  md.importance_table(t.importances, stored.metrics), "",
                  f"CSV: `{_csv(t.importances, out, f'{prefix}importances.csv')}`.", ""]
    best = [int(n) for n in t.best["trial"]] if not t.best.empty else []
    figure = plots.optimization_history(trials, stored.metrics, stored.directions, best, out, f"{prefix}history.png")
    if figure:
        lines += ["### Optimization history", "", f"![{figure}]({figure})", ""]
    lines += _study_success(t, options, out, prefix)
    return lines


def _study_success(t: StudyTables, options: ReportOptions, out: Path, prefix: str) -> list[str]:
    from cfexp.report.study import ALL_OBJECTIVES

    if t.rates.empty:
        return []
    n_base = int(t.verdicts["n_baseline"].max()) if not t.verdicts.empty else 0
    lines = [
        "### Optimization success rate against the baseline", "",
        f"Each completed searched trial (one run) against the baseline's {n_base} completed runs, per objective. "
        f"**Significance-gated**: a one-sided Student t-test of the trial's run against the baseline runs "
        f"(the baseline's spread stands for the trial's) gives p < {options.alpha}; needs >= 3 baseline runs, "
        "else untested. **Better than the baseline mean**: any improvement, no test (noise alone passes about "
        "half the time). Rates are over completed searched trials; failed trials are counted apart, never as "
        "values. No multiple-comparison correction: each test feeds the rate."
        + (f" `{ALL_OBJECTIVES}`: better on every objective at once." if len(t.study.metrics) > 1 else ""), "",
        md.study_success_table(t.rates), "",
        f"Per trial: `{_csv(t.verdicts, out, f'{prefix}success.csv')}`; "
        f"rates: `{_csv(t.rates, out, f'{prefix}success_rates.csv')}`.", "",
    ]
    return lines


def _appendix(runset: RunSet, out: Path) -> list[str]:
    runs = runset.runs
    several = len(runset.designs) > 1
    columns = ["run_id", "run_name", "status", "provenance", *(["design"] if several else []), "config", "used",
               "position", "position_source", "warnings", *runset.factors]
    if "params.repetition" in runs.columns and "params.repetition" not in columns:
        columns.append("params.repetition")
    columns += [c for c in ("tags.error", "tags.measurement_warnings", "tags.out_of_range_metrics") if c in runs]
    _csv(runs[columns], out, "runs.csv")
    lines = ["## Appendix: run ids", "", "Every run, its status, config, position in its sweep and warnings: "
             "`runs.csv`.", ""]
    excluded = runset.excluded
    if not excluded.empty:
        lines += ["### Failed, killed or unfinished runs (excluded from statistics)", ""]
        error = excluded["tags.error"] if "tags.error" in excluded.columns else pd.Series("", index=excluded.index)
        errors = [str(e) if isinstance(e, str) else "" for e in error]
        rows = [[r["run_id"], r["status"], _config(r, several), e.splitlines()[0] if e else ""]
                for (_, r), e in zip(excluded.iterrows(), errors, strict=True)]
        lines += [md.table(["run id", "status", "config", "error (first line)"], rows), ""]
        # A table cell holds one line; the rest of a message (a server's last log lines) follows whole.
        longer = [(r["run_id"], e) for (_, r), e in zip(excluded.iterrows(), errors, strict=True) if "\n" in e]
        if longer:
            lines += ["Their errors in full:", ""]
            for run_id, e in longer:
                lines += [f"- `{run_id}`:", "", "  ```text", *("  " + line for line in e.splitlines()), "  ```", ""]
    if not runset.out_of_range.empty:
        removed = runset.out_of_range
        lines += ["### Values outside their physical range (excluded)", "",
                  "Named by the run's `out_of_range_metrics` tag (the harness's check against the run's own "
                  "bounds, e.g. speedup ≤ agents), or beyond the catalogue's range (docs/metrics.md) by more than "
                  "the run's noise floor. Reported here, never ranked: they are in no statistic, comparison or "
                  "rate.", "", md.out_of_range_table(removed.head(MAX_LISTED)),
                  *_more(len(removed), "out_of_range.csv"), "",
                  f"CSV: `{_csv(removed, out, 'out_of_range.csv')}`.", ""]
    warned = tables.warning_list(runs)
    if not warned.empty:
        if not several:
            warned = warned.assign(design="")
        lines += ["### Measurement warnings", "",
                  "Every run whose numbers the harness flagged as doubtful (its `measurement_warnings` tag), "
                  "with each warning.", "", md.warnings_table(warned.head(MAX_LISTED)),
                  *_more(len(warned), "measurement_warnings.csv"), "",
                  f"CSV: `{_csv(warned, out, 'measurement_warnings.csv')}`.", ""]
    lines += ["### Runs per config (used)", ""]
    keys = ["provenance", "design", "config"]
    rows = [[provenance, *([design] if several else []), config, len(g),
             " ".join(f"`{i}`" for i in sorted(g))]
            for (provenance, design, config), g in runset.used.groupby(keys, sort=False)["run_id"]]
    lines += [md.table(["provenance", *(["design"] if several else []), "config", "n", "run ids"], rows), ""]
    return lines


def _more(total: int, where: str) -> list[str]:
    return ["", f"… and {total - MAX_LISTED} more rows: {where}."] if total > MAX_LISTED else []


def _config(run: pd.Series, several: bool) -> str:
    return (f"{run['design']}: " if several else "") + str(run["config"])
