"""The study section: an Optuna search's trials, best trials, importances and success rate.

Pure: a :class:`~cfexp.report.study_store.StoredStudy` and the MLflow runs
in, DataFrames out. Every trial is matched to its MLflow run by the run's
``trial.study``/``trial.number`` tags, and every objective value is the
run's metric, so each number traces back to a run id. Trials of the study
with no run among the selected runs are counted, not shown.

- **Best trials**: Optuna's ``best_trials`` (the best trial, or the Pareto
  front of several objectives) over the completed trials; with constraints,
  among the feasible ones.
- **Parameter importances**: Optuna's fANOVA evaluator (seeded: the same
  trials give the same numbers); it needs scikit-learn (installed with
  MLflow); without it, PED-ANOVA, which needs nothing more.
- **Success rate against the baseline**: each completed searched trial (one
  run) against the baseline's runs (trials flagged ``cfexp.baseline``, run
  ``baseline_repetitions`` times) by the significance-gated rule of
  :func:`cfexp.report.success.against_baseline`, beside the naive "better
  than the baseline's mean" rule. Failed trials are counted apart, never as
  values.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
import pandas as pd
from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from cfexp.report.stats import wilson
from cfexp.report.study_store import NUMBER_TAG, STUDY_TAG, StoredStudy
from cfexp.report.success import against_baseline

BASELINE_ATTR = "cfexp.baseline"
# fANOVA's random forest is seeded, so a report is the same every time.
IMPORTANCE_SEED = 0
ALL_OBJECTIVES = "all objectives"


@dataclass
class StudyTables:
    study: StoredStudy
    trials: pd.DataFrame  # one row per trial found among the runs
    best: pd.DataFrame  # the best trial(s) / Pareto front
    importances: pd.DataFrame  # param x objective
    importance_method: str
    verdicts: pd.DataFrame  # searched trial x objective: the success rule's verdict
    rates: pd.DataFrame  # per objective (and all objectives): the success rates
    not_in_runs: int  # trials of the study without a run among the selected runs
    notes: list[str] = field(default_factory=list)

    @property
    def params(self) -> list[str]:
        return [c.removeprefix("param ") for c in self.trials.columns if c.startswith("param ")]


def study_tables(study: StoredStudy, runs: pd.DataFrame, alpha: float) -> StudyTables:
    """Everything the study section shows (``runs``: every selected run, every status)."""
    trials = trials_table(study, runs)
    notes: list[str] = []
    found = set(trials["trial"]) if not trials.empty else set()
    complete = [t for t in study.trials if t.number in found and t.state == TrialState.COMPLETE]
    values = {int(r["trial"]): [r[f"value {m}"] for m in study.metrics] for _, r in trials.iterrows()}
    usable = [t for t in complete if all(_finite(v) for v in values[t.number])]
    if len(usable) < len(complete):
        notes.append(f"{len(complete) - len(usable)} completed trial(s) lack an objective metric in their run "
                     "(not logged, or out of its physical range: see the appendix).")
    memory = _memory_study(study, usable, values)
    best = _best(memory, trials, study)
    importances, method = _importances(memory, study, notes)
    verdicts = success_verdicts(trials, study.metrics, study.directions, alpha)
    if not trials.empty and not trials["baseline"].any():
        notes.append("No baseline trial among these runs (hydra.sweeper.baseline=false, or not selected): "
                     "no success rate.")
    return StudyTables(
        study=study, trials=trials, best=best, importances=importances, importance_method=method,
        verdicts=verdicts, rates=success_rates(trials, verdicts, study.metrics), not_in_runs=len(study.trials)
        - len(found), notes=notes,
    )


def trials_table(study: StoredStudy, runs: pd.DataFrame) -> pd.DataFrame:
    """The study's trials that have a run among ``runs``, by trial number, with the run's values."""
    mine = runs[runs[STUDY_TAG] == study.name] if STUDY_TAG in runs.columns else runs[:0]
    by_number: dict[int, pd.Series] = {}
    run: pd.Series | None
    for _, run in mine.sort_values("run_id").iterrows():
        try:
            by_number.setdefault(int(float(run[NUMBER_TAG])), run)
        except (TypeError, ValueError):
            continue
    rows = []
    for trial in study.trials:
        run = by_number.get(trial.number)
        if run is None:
            continue
        complete = trial.state == TrialState.COMPLETE
        row: dict[str, object] = {
            "trial": trial.number,
            "state": trial.state.name,
            "baseline": bool(trial.user_attrs.get(BASELINE_ATTR)),
            "run_id": run["run_id"],
            "run_status": run["status"],
            "feasible": all(v <= 0 for v in trial.constraints.values()) if complete else None,
        }
        row.update({f"param {k}": v for k, v in sorted(trial.params.items())})
        for metric in study.metrics:
            value = run.get(f"metrics.{metric}")
            row[f"value {metric}"] = float(value) if complete and isinstance(value, (int, float)) and _finite(
                value) else math.nan
        row["error"] = str(trial.user_attrs.get("error", ""))[:200]
        rows.append(row)
    return pd.DataFrame(rows)


def success_verdicts(trials: pd.DataFrame, metrics: list[str], directions: list[str], alpha: float) -> pd.DataFrame:
    """Each completed searched trial against the baseline's completed runs, per objective."""
    if trials.empty or not trials["baseline"].any():
        return pd.DataFrame()
    complete = trials[trials["state"] == TrialState.COMPLETE.name]
    base = complete[complete["baseline"]]
    rows = []
    for _, trial in complete[~complete["baseline"]].iterrows():
        for metric, direction in zip(metrics, directions, strict=True):
            column = f"value {metric}"
            v = against_baseline(base[column].to_numpy(dtype=float), [trial[column]], direction == "maximize", alpha)
            rows.append({
                "trial": trial["trial"], "run_id": trial["run_id"], "metric": metric, "direction": direction,
                "value": trial[column], "baseline_mean": v.mean_baseline, "n_baseline": v.n_baseline,
                "test": v.test, "p_one_sided": v.p_one_sided, "success_gated": v.success_gated,
                "better_mean": v.better_mean, "note": v.note,
                "baseline_run_ids": " ".join(sorted(base.loc[base[column].notna(), "run_id"])),
            })
    return pd.DataFrame(rows)


def success_rates(trials: pd.DataFrame, verdicts: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Per objective, and over all objectives at once: gated and naive rates with Wilson intervals.

    The rates are over completed searched trials; failed (and unfinished)
    searched trials are counted in their own columns. "All objectives": a
    success when the trial is a success on every objective; untested when it
    is untested on any.
    """
    if verdicts.empty:
        return pd.DataFrame()
    searched = trials[~trials["baseline"]]
    failed = int((searched["state"] == TrialState.FAIL.name).sum())
    other = int((~searched["state"].isin([TrialState.COMPLETE.name, TrialState.FAIL.name])).sum())
    groups: list[tuple[str, list[bool | None], list[bool | None]]] = []
    for metric in metrics:
        part = verdicts[verdicts["metric"] == metric]
        groups.append((metric, _verdicts(part["success_gated"]), _verdicts(part["better_mean"])))
    if len(metrics) > 1:
        gated: list[bool | None] = []
        naive: list[bool | None] = []
        for _, trial in verdicts.groupby("trial", sort=True):
            gated.append(_all(_verdicts(trial["success_gated"])))
            naive.append(_all(_verdicts(trial["better_mean"])))
        groups.append((ALL_OBJECTIVES, gated, naive))
    rows = []
    for name, gated_col, naive_col in groups:
        tested = [v for v in gated_col if v is not None]
        better = [v for v in naive_col if v is not None]
        g, n = wilson(sum(tested), len(tested)), wilson(sum(better), len(better))
        rows.append({
            "objective": name, "searched_trials": len(searched), "complete": len(gated_col),
            "failed": failed, "not_finished": other, "untested": len(gated_col) - len(tested),
            "gated_successes": g.successes, "gated_n": g.n, "gated_rate": g.rate,
            "gated_ci_low": g.ci_low, "gated_ci_high": g.ci_high,
            "naive_successes": n.successes, "naive_n": n.n, "naive_rate": n.rate,
            "naive_ci_low": n.ci_low, "naive_ci_high": n.ci_high,
        })
    return pd.DataFrame(rows)


def _verdicts(column: pd.Series) -> list[bool | None]:
    """A column of yes/no/untested verdicts as Python values (NaN and None: untested)."""
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else bool(v) for v in column]


def _all(verdicts: list[bool | None]) -> bool | None:
    """Yes on every objective; untested when any is untested."""
    return None if any(v is None for v in verdicts) else all(bool(v) for v in verdicts)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _memory_study(study: StoredStudy, usable: list[FrozenTrial], values: dict[int, list[float]]) -> optuna.Study:
    """An in-memory copy of the usable trials, with the runs' values (for best trials and importances)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line in the report's log
    try:
        memory = optuna.create_study(directions=[StudyDirection[d.upper()] for d in study.directions])
    finally:
        optuna.logging.set_verbosity(verbosity)
    memory.add_trials([
        optuna.trial.create_trial(
            params=t.params, distributions=t.distributions, values=[float(v) for v in values[t.number]],
            user_attrs={"trial": t.number}, system_attrs=dict(t.system_attrs),
        )
        for t in usable
    ])
    return memory


def _best(memory: optuna.Study, trials: pd.DataFrame, study: StoredStudy) -> pd.DataFrame:
    completed = memory.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        return pd.DataFrame()
    numbers = sorted(int(t.user_attrs["trial"]) for t in memory.best_trials)
    return trials[trials["trial"].isin(numbers)].reset_index(drop=True)


def _objective(index: int) -> Callable[[FrozenTrial], float]:
    """The importance target of objective ``index``."""

    def target(trial: FrozenTrial) -> float:
        return float(trial.values[index])

    return target


def _importances(memory: optuna.Study, study: StoredStudy, notes: list[str]) -> tuple[pd.DataFrame, str]:
    evaluator: Callable[[], optuna.importance.BaseImportanceEvaluator]
    if importlib.util.find_spec("sklearn") is not None:
        method = f"fANOVA (Optuna's FanovaImportanceEvaluator, seed {IMPORTANCE_SEED})"
        evaluator = lambda: FanovaImportanceEvaluator(seed=IMPORTANCE_SEED)  # noqa: E731
    else:
        method = "PED-ANOVA (Optuna's PedAnovaImportanceEvaluator; fANOVA needs scikit-learn, not installed)"
        evaluator = PedAnovaImportanceEvaluator
    completed = memory.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(completed) < 2:
        notes.append("Parameter importances need at least 2 completed trials.")
        return pd.DataFrame(), method
    columns: dict[str, dict[str, float]] = {}
    for index, metric in enumerate(study.metrics):
        try:
            found = optuna.importance.get_param_importances(
                memory, evaluator=evaluator(), target=_objective(index), normalize=True
            )
        except (ValueError, RuntimeError) as exc:
            notes.append(f"No parameter importances for {metric}: {exc}")
            continue
        columns[metric] = {str(k): float(v) for k, v in found.items()}
    if not columns:
        return pd.DataFrame(), method
    params = sorted({p for values in columns.values() for p in values})
    frame = pd.DataFrame({"param": params, **{f"importance {m}": [v.get(p) for p in params] for m, v in columns.items()}})
    return frame, method
