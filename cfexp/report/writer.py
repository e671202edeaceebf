"""Writes a report folder: report.md, CSV tables and PNG figures.

Everything is sorted, so the same runs give the same files; the only line
that changes between two generations is the one starting with
:data:`TIMESTAMP_PREFIX`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cfexp.filenames import safe_name
from cfexp.metrics import catalog
from cfexp.report import markdown as md
from cfexp.report import plots, study_store, success, tables
from cfexp.report.load import RunSet, load_runs, short
from cfexp.report.study import ALL_OBJECTIVES, StudyTables, study_tables

log = logging.getLogger(__name__)

TIMESTAMP_PREFIX = "Generated: "
# Environment tags shown per provenance (hardware, software, what was served).
ENV_TAGS = (
    "host", "env.cpu", "env.cpu_count", "env.memory_gb", "env.os", "env.python", "env.cfexp_version",
    "backend", "backend_version", "model", "model_digest", "code_version", "rustc", "env.packages",
)
PLOTTED = tuple(catalog.plotted())
# Optuna trial states as the study section words them.
_STATES = {"COMPLETE": "complete", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting", "PRUNED": "pruned"}


@dataclass(frozen=True)
class ReportOptions:
    experiment: str
    tracking_uri: str
    out_dir: Path | None = None  # None = reports/<experiment>
    filter_string: str = ""
    parent_run_id: str | None = None
    alpha: float = 0.05
    success_rule: success.SuccessRule = field(default_factory=success.SuccessRule)
    # The Optuna storage of the studies; None = the one each sweep's parent run names.
    study_storage: str | None = None


def generate_report(options: ReportOptions) -> Path:
    """Load the runs, compute, write; returns the path of report.md."""
    runset = load_runs(options.tracking_uri, options.experiment, options.filter_string, options.parent_run_id)
    out = options.out_dir or Path("reports") / safe_name(options.experiment)  # a name, never a path
    return write_report(runset, options, out)


def write_report(runset: RunSet, options: ReportOptions, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("*.png"), *out.glob("*.csv")]:
        stale.unlink()  # a previous report's figures must not pass for this one's
    lines = _header(runset, options)
    lines += _environment(runset)
    provenances = sorted(runset.used["provenance"].unique())
    if len(provenances) > 1:
        lines += [
            "> **Mixed input**: these runs are " + " and ".join(provenances) + ". They are never pooled: "
            "each provenance has its own section below, and no test compares across them.", "",
        ]
    for provenance in provenances:
        used = runset.used[runset.used["provenance"] == provenance]
        prefix = f"{provenance}_" if len(provenances) > 1 else ""
        lines += _section(used, runset.factors, options, out, prefix, provenance)
    names = study_store.study_names(runset.runs)
    for index, name in enumerate(names):
        lines += _study(runset, name, options, out, "study_" if len(names) == 1 else f"study{index + 1}_")
    lines += _appendix(runset, out)
    path = out / "report.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


def _header(runset: RunSet, options: ReportOptions) -> list[str]:
    runs = runset.runs
    source = [f"experiment `{options.experiment}`"]
    if options.filter_string:
        source.append(f"filter `{options.filter_string}`")
    if options.parent_run_id:
        source.append(f"sweep parent run `{options.parent_run_id}`")
    lines = [
        f"# cfexp report: {options.experiment}",
        "",
        f"{TIMESTAMP_PREFIX}{time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        "",
        f"Source: {', '.join(source)} in `{options.tracking_uri}`.",
        "",
        f"**{len(runs)} runs**: {int(runs['used'].sum())} finished and used; "
        f"{int((~runs['used']).sum())} failed, killed or unfinished, listed in the appendix and excluded "
        "from every statistic. Sweeps (parent runs): "
        + (", ".join(f"`{r}`" for r in sorted(runset.parents["run_id"])) or "none") + ".",
        "",
        "Swept factors (a config is one combination of them; its runs are its repetitions): "
        + (", ".join(f"`{short(f)}`" for f in runset.factors) or "none — every run is the same config") + ".",
        "",
        "Statistics: per-run values (each run's mean over its calls) are the observations. "
        "Methods and their assumptions: docs/reports.md.",
        "",
    ]
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
    used: pd.DataFrame, factors: list[str], options: ReportOptions, out: Path, prefix: str, provenance: str
) -> list[str]:
    lines = [f"## {provenance.capitalize()} runs ({len(used)} runs, {used['config'].nunique()} configs)", ""]

    stats = tables.config_stats(used, factors)
    lines += ["### Per-config statistics", "",
              f"Full table with run ids: `{_csv(stats, out, f'{prefix}configs.csv')}`.", ""]
    for metric in tables.present_metrics(used):
        part = stats[stats["metric"] == metric]
        lines += [f"#### {metric}", "", md.config_table(part), ""]

    head = tables.headline(used, options.alpha)
    if not head.empty:
        lines += ["### Rust vs Python", "",
                  "The original's headline table, with each difference's Welch 95 % CI and a winner only "
                  f"when the Holm-adjusted two-sided Welch p < {options.alpha} "
                  "(pooled over the other factors of the grid).", "",
                  md.headline_table(head), "", f"CSV: `{_csv(head, out, f'{prefix}headline.csv')}`.", ""]

    comparisons = tables.comparisons(used, factors)
    if not comparisons.empty:
        lines += ["### Comparisons along the swept dimensions", "",
                  "Level b against level a of each factor, pooled over the rest of the grid. Two-sided Welch "
                  "t-test (p), adjusted with Holm over every row of this table, Mann–Whitney U, effect sizes. "
                  "\"n<3\": too few runs, no test.", "",
                  md.comparison_table(comparisons), "",
                  f"CSV: `{_csv(comparisons, out, f'{prefix}comparisons.csv')}`.", ""]

    lines += _success(used, factors, options, out, prefix)

    contention = tables.contention(used)
    if not contention.empty:
        lines += ["### Multi-agent contention over the sweep", "",
                  "An agent is contended when its concurrent TTFT or throughput is worse than solo by more "
                  "than `scenario.contention_threshold_pct` (docs/multi-agent.md); the rate is over agents "
                  "of all runs of a config.", "",
                  md.contention_table(contention), "",
                  f"CSV: `{_csv(contention, out, f'{prefix}contention.csv')}`.", ""]

    figures = [plots.distributions(used, m, out, prefix) for m in PLOTTED if m in tables.present_metrics(used)]
    figures += [
        plots.throughput_vs_ttft(used, factors, out, prefix),
        plots.efficiency(used, factors, out, prefix),
        *(plots.versus_parameter(used, factors, m, out, prefix) for m in ("throughput_tok_s", "ttft_ms")),
    ]
    drawn = [f for f in figures if f]
    if drawn:
        lines += ["### Figures", ""] + [f"![{f}]({f})\n" for f in drawn]
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
        f"**Significance-gated**: one-sided Welch t-test p < {rule.alpha} with >= 3 runs on each side. "
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
    columns = ["run_id", "run_name", "status", "provenance", "config", "used", *runset.factors]
    if "params.repetition" in runs.columns and "params.repetition" not in columns:
        columns.append("params.repetition")
    if "tags.error" in runs.columns:
        columns.append("tags.error")
    _csv(runs[columns], out, "runs.csv")
    lines = ["## Appendix: run ids", "", "Every run, its status and config: `runs.csv`.", ""]
    excluded = runset.excluded
    if not excluded.empty:
        lines += ["### Failed, killed or unfinished runs (excluded from statistics)", ""]
        error = excluded["tags.error"] if "tags.error" in excluded.columns else pd.Series("", index=excluded.index)
        rows = [[r["run_id"], r["status"], r["config"], str(e)[:200] if isinstance(e, str) else ""]
                for (_, r), e in zip(excluded.iterrows(), error, strict=True)]
        lines += [md.table(["run id", "status", "config", "error"], rows), ""]
    lines += ["### Runs per config (used)", ""]
    rows = [[provenance, config, len(g), " ".join(f"`{i}`" for i in sorted(g["run_id"]))]
            for (provenance, config), g in runset.used.groupby(["provenance", "config"], sort=False)]
    lines += [md.table(["provenance", "config", "n", "run ids"], rows), ""]
    return lines
