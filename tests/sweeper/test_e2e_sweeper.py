"""End to end: `python -m cfexp -m hydra/sweeper=cfexp_optuna …` on the simulator.

The real command as a subprocess (Hydra, the sweeper, servers, agent
processes, MLflow and Optuna stores in a temporary folder), then a look at
what the Optuna study and MLflow recorded. The simulator runs at a fast
time_scale with no jitter; its optional optimum (docs/serving.md) gives the
search a known answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from cfexp.report import ReportOptions, generate_report
from tests.app.test_e2e_sim import client_for, leftover_processes, run_cfexp, runs_of

pytestmark = pytest.mark.slow

SIM = ("backend=sim", "backend.settings.jitter_cv=0", "scenario=single_inference", "num_predict=16")
OPTUNA = "hydra/sweeper=cfexp_optuna"
# The simulator's decode rate peaks at 12 offloaded layers and a 1024-token context.
OPTIMUM = (
    "+backend.settings.optimum_num_gpu=12",
    "+backend.settings.optimum_num_ctx=1024",
    "+backend.settings.optimum_width=2",
)


def load_study(url: str) -> optuna.Study:
    (name,) = optuna.get_all_study_names(url)
    return optuna.load_study(study_name=name, storage=url)


def children_of(tmp_path: Path) -> list:  # type: ignore[type-arg]
    return [r for r in runs_of(tmp_path) if r.data.tags.get("mlflow.parentRunId")]


def parent_of(tmp_path: Path):  # type: ignore[no-untyped-def]
    return next(r for r in runs_of(tmp_path) if r.data.tags.get("cfexp.sweep") == "parent")


def test_a_grid_search_finds_the_simulators_optimum_in_9_trials(tmp_path: Path) -> None:
    # time_scale 0.1: decode steps of ~2-7 ms, well above scheduling noise on a loaded machine.
    done = run_cfexp(
        tmp_path, "-m", OPTUNA, *SIM, "backend.settings.time_scale=0.1", *OPTIMUM,
        "gpu_layers=choice(6,12,18)", "ctx=choice(512,1024,2048)",
        "hydra.sweeper.sampler=grid", "hydra.sweeper.seed=0", "hydra.sweeper.n_trials=12",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # The default storage, under paths.root_dir.
    study = load_study(f"sqlite:///{tmp_path}/multirun/optuna/optuna.db")
    assert len(study.trials) == 9  # n_trials capped at the grid's 9 points
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert study.best_trial.params == {"gpu_layers": 12, "ctx": 1024}

    # Each trial is an ordinary cfexp job: an MLflow child of the sweep's parent run,
    # tagged with its study and trial number.
    children = children_of(tmp_path)
    assert len(children) == 9
    by_number = {int(r.data.tags["trial.number"]): r for r in children}
    assert set(by_number) == set(range(9))
    assert {r.data.tags["trial.study"] for r in children} == {study.study_name}
    for trial in study.trials:
        run = by_number[trial.number]
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.data.params["gpu_layers"] == str(trial.params["gpu_layers"])
        assert run.data.metrics["throughput_tok_s"] == pytest.approx(trial.value)
        assert "trial." not in run.info.run_name
    parent = parent_of(tmp_path)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["optuna.study"] == study.study_name
    assert parent.data.tags["optuna.best_trials"] == str(study.best_trial.number)
    assert leftover_processes(tmp_path) == []


def test_the_preset_resumes_its_study_and_reports_a_pareto_front(tmp_path: Path) -> None:
    """Two runs of one command: the second continues the study (4 trials, not 2 twice)."""
    storage = f"sqlite:///{tmp_path}/optuna.db"
    command = (
        "-m", "+search=single_agent_options", "backend=sim", "backend.settings.time_scale=0.02",
        "backend.settings.jitter_cv=0", "num_predict=8", "hydra.sweeper.n_trials=2", "hydra.sweeper.seed=0",
        f"hydra.sweeper.storage={storage}",
    )
    first, second = tmp_path / "first", tmp_path / "second"  # each with its own MLflow store
    for root in (first, second):
        done = run_cfexp(root, *command)
        assert done.returncode == 0, done.stderr[-3000:]
    study = load_study(storage)
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    # The preset's 3 baseline runs (the top-level defaults) come first: the first run
    # left the third waiting, the second run ran it before its searched trial.
    assert [bool(t.user_attrs.get("cfexp.baseline")) for t in study.trials] == [True, True, True, False]
    for baseline in study.trials[:3]:
        assert baseline.params == {"gpu_layers": 80, "ctx": 512, "temperature": 0.8}
        assert f"repetition={baseline.number}" in baseline.user_attrs["overrides"]
    assert study.metric_names == ["throughput_tok_s", "ttft_ms"]
    assert study.best_trials  # the Pareto front

    summary = json.loads((second / "multirun" / "optuna_study.json").read_text())
    assert summary["trials"] == 4
    assert {t["number"] for t in summary["best_trials"]} == {t.number for t in study.best_trials}
    assert sorted(int(r.data.tags["trial.number"]) for r in children_of(second)) == [2, 3]
    client = client_for(second)
    artifacts = {a.path for a in client.list_artifacts(parent_of(second).info.run_id)}
    assert "optuna_study.json" in artifacts


def test_a_failing_trial_is_a_failed_trial_and_the_sweep_goes_on(tmp_path: Path) -> None:
    # One choice makes the simulator answer every generation request with HTTP 500.
    done = run_cfexp(
        tmp_path, "-m", OPTUNA, *SIM, "backend.settings.time_scale=0.02",
        "+backend.settings.faults={fail_status:500},{}",
        "hydra.sweeper.sampler=grid", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=2",
    )
    assert done.returncode == 1  # as for any cfexp multirun with a failed job
    assert "1 of 2 job(s) failed" in done.stderr and "Traceback" not in done.stderr
    study = load_study(f"sqlite:///{tmp_path}/multirun/optuna/optuna.db")
    by_choice = {t.params["+backend.settings.faults"]: t for t in study.trials}
    failed, fine = by_choice["{fail_status:500}"], by_choice["{}"]
    assert failed.state == TrialState.FAIL and failed.values is None
    assert "[FAILED]" in failed.user_attrs["error"]
    assert fine.state == TrialState.COMPLETE and fine.value > 0
    children = {int(r.data.tags["trial.number"]): r for r in children_of(tmp_path)}
    assert children[failed.number].info.status == "FAILED"
    assert children[fine.number].info.status == "FINISHED"
    assert leftover_processes(tmp_path) == []


def test_an_objective_the_job_does_not_produce_stops_the_sweep(tmp_path: Path) -> None:
    done = run_cfexp(
        tmp_path, "-m", OPTUNA, *SIM, "backend.settings.time_scale=0.02", "ctx=512,1024",
        "hydra.sweeper.objectives=[{metric:tokens_per_joule,direction:maximize}]", "hydra.sweeper.n_trials=3",
    )
    assert done.returncode == 1
    assert "does not produce the metric(s) tokens_per_joule" in done.stderr
    produced = done.stderr.split("It produces: ", 1)[1].split(".", 1)[0].split(", ")
    assert {"throughput_tok_s", "ttft_ms", "e2e_ms"} <= set(produced)
    assert "Traceback" not in done.stderr
    study = load_study(f"sqlite:///{tmp_path}/multirun/optuna/optuna.db")
    # Stopped after the first trial; the rest of the baseline never ran (it waits in the storage).
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING, TrialState.WAITING]
    parent = parent_of(tmp_path)
    assert parent.info.status == "FAILED" and "tokens_per_joule" in parent.data.tags["error"]
    assert leftover_processes(tmp_path) == []


def test_a_search_with_baseline_repetitions_reports_its_study(tmp_path: Path) -> None:
    """The preset, seeded: 3 baseline runs then 2 searched trials; `cfexp report` gives the study section."""
    done = run_cfexp(
        tmp_path, "-m", "+search=single_agent_options", "backend=sim", "backend.settings.time_scale=0.02",
        "num_predict=8", "hydra.sweeper.n_trials=5", "hydra.sweeper.seed=0",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    study = load_study(f"sqlite:///{tmp_path}/multirun/optuna/optuna.db")
    options = ReportOptions("cfexp", f"sqlite:///{tmp_path}/mlruns/mlflow.db", out_dir=tmp_path / "report")
    text = generate_report(options).read_text()
    out = tmp_path / "report"
    assert f"## Optuna study `{study.study_name}`" in text
    for heading in ("### Pareto front", "### Parameter importances", "### Optimization history",
                    "### Optimization success rate against the baseline"):
        assert heading in text, heading

    # Every trial is traced to its MLflow run; the front is Optuna's, with those runs' ids.
    runs = {r.info.run_id: r for r in children_of(tmp_path)}
    trials = pd.read_csv(out / "study_trials.csv")
    assert list(trials["trial"]) == list(range(5)) and list(trials["baseline"]) == [True] * 3 + [False] * 2
    for _, row in trials.iterrows():
        run = runs[row["run_id"]]
        assert run.data.tags["trial.number"] == str(row["trial"])
        assert run.data.metrics["throughput_tok_s"] == pytest.approx(row["value throughput_tok_s"])
    best = pd.read_csv(out / "study_best.csv")
    assert set(best["trial"]) == {t.number for t in study.best_trials}
    assert set(best["run_id"]) <= set(runs)

    importances = pd.read_csv(out / "study_importances.csv")
    assert sorted(importances["param"]) == ["ctx", "gpu_layers", "temperature"]
    assert (out / "study_history.png").stat().st_size > 0

    # The success rate: the 2 searched trials, each against the 3 baseline runs.
    verdicts = pd.read_csv(out / "study_success.csv")
    assert sorted(set(verdicts["trial"])) == [3, 4] and set(verdicts["test"]) == {"student"}
    assert set(verdicts["n_baseline"]) == {3}
    rates = pd.read_csv(out / "study_success_rates.csv").set_index("objective")
    assert list(rates.index) == ["throughput_tok_s", "ttft_ms", "all objectives"]
    assert set(rates["searched_trials"]) == {2} and set(rates["gated_n"]) == {2} and set(rates["failed"]) == {0}
    for metric, direction in (("throughput_tok_s", "maximize"), ("ttft_ms", "minimize")):
        gated = verdicts[verdicts["metric"] == metric]
        assert rates.loc[metric, "gated_successes"] == int(gated["success_gated"].sum())
        assert (gated["direction"] == direction).all()

    # The same runs give the same study files.
    generate_report(ReportOptions(options.experiment, options.tracking_uri, out_dir=tmp_path / "again"))
    for name in sorted(p.name for p in out.glob("study_*")):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    assert leftover_processes(tmp_path) == []
