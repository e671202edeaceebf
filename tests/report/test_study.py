"""The study section's numbers on constructed studies, where the answers are known."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState
from scipy import stats

from cfexp.report import ReportOptions, generate_report, plots
from cfexp.report.stats import compare, compare_to_reference
from cfexp.report.study import study_tables
from cfexp.report.study_store import StoredStudy
from cfexp.report.success import against_baseline
from tests.report import hand
from tests.report.conftest import NewStore

STUDY = "cfexp-test"
SPACE = {"gpu_layers": CategoricalDistribution([6, 12, 80]), "temperature": FloatDistribution(0.2, 1.2)}


def test_one_trial_run_is_tested_against_the_baselines_spread() -> None:
    """With one candidate run: t = (x − mean) / (s·√(1 + 1/n)) on n − 1 degrees of freedom."""
    baseline = [100.0, 101.0, 99.0]  # mean 100, s = 1
    for x in (110.0, 101.0, 99.0):
        expected = stats.t.sf((x - 100.0) / math.sqrt(1 + 1 / 3), df=2)
        assert compare_to_reference(baseline, [x], alternative="greater").p == pytest.approx(expected)
    assert against_baseline(baseline, [110.0], True, 0.05).success_gated is True  # p ≈ 0.0065
    clear = against_baseline(baseline, [101.0], True, 0.05)  # better than the mean, within the noise
    assert (clear.success_gated, clear.better_mean, clear.test) == (False, True, "student")
    lower = against_baseline(baseline, [90.0], False, 0.05)  # lower is better: 90 is clearly lower
    assert lower.success_gated is True and lower.better_mean is True
    few = against_baseline([100.0, 101.0], [150.0], True, 0.05)
    assert (few.success_gated, few.note, few.better_mean) == (None, "n<3", True)  # untested, not a failure
    repeated = against_baseline(baseline, [110.0, 111.0, 109.0], True, 0.05)  # >= 3 runs each: Welch
    assert repeated.test == "welch" and repeated.success_gated is True


def test_constant_groups_are_untested_not_p_zero() -> None:
    """Two groups without spread give no test (no p = 0 and no winner), whichever way they differ."""
    for a, b in (([5.0] * 3, [4.0] * 3), ([5.0] * 3, [6.0] * 3), ([5.0] * 3, [5.0] * 3)):
        for alternative in ("greater", "less", "two-sided"):
            c = compare(a, b, alternative=alternative)
            assert (c.welch_p, c.mannwhitney_p, c.note) == (None, None, "no variance")
            assert c.diff == b[0] - a[0]
    for x in (4.0, 6.0):
        r = compare_to_reference([5.0] * 3, [x], alternative="greater")
        assert (r.p, r.note) == (None, "no variance")
    verdict = against_baseline([5.0] * 3, [6.0], True, 0.05)
    assert (verdict.success_gated, verdict.better_mean, verdict.note) == (None, True, "no variance")


def _trial(number: int, state: TrialState, gpu: int, temperature: float, values: list[float] | None,
           baseline: bool = False) -> optuna.trial.FrozenTrial:
    trial = optuna.trial.create_trial(
        state=state, values=values, params={"gpu_layers": gpu, "temperature": temperature}, distributions=SPACE,
        user_attrs={"cfexp.baseline": True} if baseline else {"error": "agent crashed"} if values is None else {},
    )
    trial.number = number
    return trial


@pytest.fixture
def constructed() -> tuple[StoredStudy, pd.DataFrame]:
    """3 baseline runs near (100 tok/s, 50 ms); searched: 2 clearly better, 1 barely, 1 worse, 1 failed."""
    rows = [  # number, state, gpu, temperature, throughput, ttft, baseline
        (0, TrialState.COMPLETE, 80, 0.8, 100.0, 50.0, True),
        (1, TrialState.COMPLETE, 80, 0.8, 101.0, 51.0, True),
        (2, TrialState.COMPLETE, 80, 0.8, 99.0, 49.0, True),
        (3, TrialState.COMPLETE, 12, 0.5, 130.0, 40.0, False),  # better on both: a success on both
        (4, TrialState.COMPLETE, 12, 0.9, 140.0, 60.0, False),  # faster, but a worse TTFT
        (5, TrialState.COMPLETE, 6, 0.7, 100.5, 49.5, False),  # better means, within the noise
        (6, TrialState.COMPLETE, 6, 1.1, 80.0, 70.0, False),  # worse on both
        (7, TrialState.FAIL, 6, 0.3, None, None, False),  # failed: counted, never a value
    ]
    trials, runs = [], []
    for number, state, gpu, temperature, tput, ttft, baseline in rows:
        values = None if tput is None else [tput, ttft]
        trials.append(_trial(number, state, gpu, temperature, values, baseline))
        runs.append({
            "run_id": f"run{number:02d}", "status": "FINISHED" if values else "FAILED",
            "tags.trial.study": STUDY, "tags.trial.number": str(number),
            "metrics.throughput_tok_s": tput, "metrics.ttft_ms": ttft,
        })
    runs.append({"run_id": "other", "status": "FINISHED", "tags.trial.study": "another-study",
                 "tags.trial.number": "3", "metrics.throughput_tok_s": 1e9, "metrics.ttft_ms": 0.0})
    stored = StoredStudy(STUDY, "sqlite:///x.db", ["throughput_tok_s", "ttft_ms"], ["maximize", "minimize"], trials)
    return stored, pd.DataFrame(runs)


def test_the_success_rate_of_a_constructed_study(constructed: tuple[StoredStudy, pd.DataFrame]) -> None:
    stored, runs = constructed
    t = study_tables(stored, runs, alpha=0.05)
    assert list(t.trials["run_id"]) == [f"run{n:02d}" for n in range(8)]  # not the other study's run
    assert t.trials.loc[7, "state"] == "FAIL" and math.isnan(t.trials.loc[7, "value throughput_tok_s"])
    verdicts = t.verdicts.set_index(["trial", "metric"])
    assert verdicts.loc[(3, "throughput_tok_s"), "success_gated"] and verdicts.loc[(3, "ttft_ms"), "success_gated"]
    assert not verdicts.loc[(5, "throughput_tok_s"), "success_gated"]
    assert verdicts.loc[(5, "throughput_tok_s"), "better_mean"]
    assert set(verdicts["baseline_run_ids"]) == {"run00 run01 run02"}
    rates = t.rates.set_index("objective")
    # throughput: 3 and 4 significantly better of 4 completed searched trials; 5 only on the mean
    tput = rates.loc["throughput_tok_s"]
    assert (tput["gated_successes"], tput["gated_n"], tput["naive_successes"], tput["naive_n"]) == (2, 4, 3, 4)
    assert (tput["searched_trials"], tput["failed"], tput["untested"]) == (5, 1, 0)
    wilson = stats.binomtest(2, 4).proportion_ci(method="wilson")
    assert (tput["gated_ci_low"], tput["gated_ci_high"]) == pytest.approx((wilson.low, wilson.high))
    ttft = rates.loc["ttft_ms"]
    assert (ttft["gated_successes"], ttft["naive_successes"]) == (1, 2)  # trials 3; 3 and 5
    both = rates.loc["all objectives"]
    assert (both["gated_successes"], both["gated_n"], both["naive_successes"]) == (1, 4, 2)


def test_pareto_front_importances_and_history(constructed: tuple[StoredStudy, pd.DataFrame], tmp_path: Path) -> None:
    stored, runs = constructed
    t = study_tables(stored, runs, alpha=0.05)
    # Trial 3 dominates the baseline and 5; 4 has the best throughput; nothing beats 3 on TTFT.
    assert list(t.best["trial"]) == [3, 4] and list(t.best["run_id"]) == ["run03", "run04"]
    assert sorted(t.importances["param"]) == ["gpu_layers", "temperature"]
    for metric in stored.metrics:
        assert t.importances[f"importance {metric}"].sum() == pytest.approx(1.0)
    again = study_tables(stored, runs, alpha=0.05)
    pd.testing.assert_frame_equal(t.importances, again.importances)  # seeded: the same every time
    name = plots.optimization_history(t.trials, stored.metrics, stored.directions, [3, 4], tmp_path, "h.png")
    assert name == "h.png" and (tmp_path / "h.png").stat().st_size > 0


def test_without_enough_baseline_runs_nothing_is_tested(constructed: tuple[StoredStudy, pd.DataFrame]) -> None:
    stored, runs = constructed
    two = StoredStudy(stored.name, stored.storage, stored.metrics, stored.directions,
                      [t for t in stored.trials if t.number != 2])
    rates = study_tables(two, runs, alpha=0.05).rates.set_index("objective")
    assert (rates.loc["throughput_tok_s", "gated_n"], rates.loc["throughput_tok_s", "untested"]) == (0, 4)
    assert rates.loc["throughput_tok_s", "naive_n"] == 4


def test_the_report_shows_a_study_from_its_storage(constructed: tuple[StoredStudy, pd.DataFrame],
                                                   tmp_path: Path, new_store: NewStore) -> None:
    """A store made with cfexp's Tracker and an Optuna SQLite storage, as a search leaves them."""
    stored, _ = constructed
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(storage=storage, study_name=STUDY, directions=stored.directions)
    study.set_user_attr("cfexp.objectives", stored.metrics)
    study.add_trials(stored.trials)
    uri, tracker = new_store(tmp_path)
    parent = tracker.start_run("search", "sweep", {"cfexp.sweep": "parent", "optuna.study": STUDY,
                                                   "optuna.storage": storage})
    run_ids = {}
    for trial in study.trials:
        run = tracker.start_run("search", f"trial {trial.number}", {
            "provenance": "simulated", "trial.study": STUDY, "trial.number": str(trial.number)}, parent_run_id=parent)
        tracker.log_params(run, {**trial.params, "trial.study": STUDY, "trial.number": trial.number})
        if trial.values:
            tracker.log_metrics(run, dict(zip(stored.metrics, trial.values, strict=True)))
        tracker.end_run(run, "FINISHED" if trial.values else "FAILED")
        run_ids[trial.number] = run
    tracker.end_run(parent, "FINISHED")

    text = generate_report(ReportOptions("search", uri, out_dir=tmp_path / "report")).read_text()
    assert f"## Optuna study `{STUDY}`" in text
    assert "8 trials in the study, 8 with a run among these runs (0 without: not shown). Of these: " \
           "7 complete, 1 failed; 3 baseline runs." in text
    assert f"| 3 | `{run_ids[3]}` |" in text and f"| 4 | `{run_ids[4]}` |" in text  # the Pareto front
    # The success rates are in report.md itself, gated and naive, with their Wilson intervals
    # (throughput: trials 3, 4 significant, 5 better on the mean; TTFT: 3; 3 and 5; both: 3; 3 and 5).
    section = text.split("### Optimization success rate against the baseline", 1)[1]
    for objective, gated, naive in (("throughput_tok_s", 2, 3), ("ttft_ms", 1, 2), ("all objectives", 1, 2)):
        row = f"| {objective} | 5 | 1 | {hand.rate_cell(gated, 4)} | 0 | {hand.rate_cell(naive, 4)} |"
        assert row in section, row
    verdicts = pd.read_csv(tmp_path / "report" / "study_success.csv")
    for _, v in verdicts.iterrows():  # t = (x − mean) / (s·√(1 + 1/3)) on 2 degrees of freedom, one-sided
        baseline = {"throughput_tok_s": (100.0, 1.0), "ttft_ms": (50.0, 1.0)}[v["metric"]]
        t = (v["value"] - baseline[0]) / (baseline[1] * math.sqrt(1 + 1 / 3))
        expected = stats.t.sf(t, 2) if v["direction"] == "maximize" else stats.t.cdf(t, 2)
        assert v["p_one_sided"] == pytest.approx(expected), (v["trial"], v["metric"])
    trials = pd.read_csv(tmp_path / "report" / "study_trials.csv")
    failed = trials[trials["trial"] == 7].iloc[0]
    assert failed["state"] == "FAIL" and failed["run_id"] == run_ids[7]
    assert pd.isna(failed["value throughput_tok_s"]) and failed["error"] == "agent crashed"
    assert (tmp_path / "report" / "study_history.png").is_file()

    # A storage that is gone: the section says so, the rest of the report is made.
    (tmp_path / "optuna.db").unlink()
    text = generate_report(ReportOptions("search", uri, out_dir=tmp_path / "gone")).read_text()
    assert "The study could not be read: cannot open <storage=" in text and "### Per-config statistics" in text
