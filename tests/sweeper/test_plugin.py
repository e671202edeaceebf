"""The sweeper inside one process: discovery, and sweeps of a toy task.

The toy task computes its metrics from ``x`` and ``y`` at once (``loss`` is
smallest at x=2, y=1), so these sweeps exercise the sweeper — search space,
trials, failures, storage, resume — in milliseconds per trial. The sweeps of
the real cfexp task are in test_e2e_sweeper.py.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import optuna
import pytest
from hydra import version
from hydra._internal.hydra import Hydra
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig
from optuna.trial import TrialState

from hydra_plugins.cfexp_sweeper._errors import SweepError
from hydra_plugins.cfexp_sweeper.cfexp_sweeper import CfexpOptunaSweeper

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ToyTrial:
    study: Optional[str] = None  # noqa: UP045 (OmegaConf needs Optional)
    number: Optional[int] = None  # noqa: UP045


@dataclass
class ToySchema:
    x: float = 0.0
    y: int = 1
    mode: str = "ok"
    repetition: int = 0
    trial: ToyTrial = field(default_factory=ToyTrial)


ConfigStore.instance().store(name="toy_schema", node=ToySchema)


def toy_task(cfg: DictConfig) -> dict[str, float] | None:
    if cfg.mode == "fail":
        return None
    if cfg.mode == "raise":
        raise RuntimeError("boom")
    metrics = {
        "loss": (cfg.x - 2.0) ** 2 + (cfg.y - 1) ** 2,
        "size": cfg.x + cfg.y,
        "trial_number": float(cfg.trial.number),
        "repetition": float(cfg.repetition),
    }
    if cfg.mode == "nometric":
        del metrics["loss"]
    return metrics


Sweep = Callable[..., None]


@pytest.fixture
def sweep(tmp_path: Path) -> Iterator[Sweep]:
    """sweep("x=interval(0,4)", ...): a multirun of the toy task, storage in tmp_path."""
    version.setbase("1.3")

    def run(*overrides: str, storage: str | None = None) -> None:
        GlobalHydra.instance().clear()
        hydra_ = Hydra.create_main_hydra_file_or_module(
            calling_file=__file__, calling_module=None, config_path="conf", job_name="toy"
        )
        try:
            hydra_.multirun(
                config_name="toy",
                task_function=toy_task,
                overrides=[
                    f"hydra.sweep.dir={tmp_path}/multirun",
                    f"hydra.sweeper.storage={storage or storage_url(tmp_path)}",
                    *overrides,
                ],
                with_log_configuration=False,
            )
        finally:
            GlobalHydra.instance().clear()

    yield run


def storage_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/optuna.db"


def the_study(tmp_path: Path, storage: str | None = None) -> optuna.Study:
    url = storage or storage_url(tmp_path)
    (name,) = optuna.get_all_study_names(url)
    return optuna.load_study(study_name=name, storage=url)


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.trials]


# -- discovery ---------------------------------------------------------------------


def test_hydra_discovers_the_sweeper_and_its_config() -> None:
    # Discovery executes the module again, so compare names, not class objects.
    found = {f"{p.__module__}.{p.__name__}" for p in Plugins.instance().discover(Sweeper)}
    assert f"{CfexpOptunaSweeper.__module__}.CfexpOptunaSweeper" in found
    node = ConfigStore.instance().load("hydra/sweeper/cfexp_optuna.yaml").node
    assert node._target_ == "hydra_plugins.cfexp_sweeper.cfexp_sweeper.CfexpOptunaSweeper"


def test_discovery_imports_nothing_heavy() -> None:
    """Hydra imports the facade at every start: it must not pull in Optuna or MLflow."""
    code = (
        "import sys, hydra_plugins.cfexp_sweeper.cfexp_sweeper, hydra_plugins.cfexp_sweeper.config;"
        "print(sorted(m for m in ('optuna', 'mlflow', 'cfexp.tracking') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# -- sweeps ------------------------------------------------------------------------


def test_a_seeded_tpe_sweep_starts_from_the_baseline_and_improves_on_it(sweep: Sweep, tmp_path: Path) -> None:
    sweep("x=interval(0,4)", "y=range(0,4)", "hydra.sweeper.n_trials=12",
          "+hydra.sweeper.sampler_options.n_startup_trials=4")
    study = the_study(tmp_path)
    assert states(study) == ["COMPLETE"] * 12
    first = study.trials[0]
    assert first.params == {"x": 0.0, "y": 1} and first.user_attrs["cfexp.baseline"] is True
    assert study.best_value < first.value / 4  # baseline loss 4.0
    for trial in study.trials:  # every job got its own trial number (trial.number override)
        assert trial.user_attrs["metrics"]["trial_number"] == trial.number
        assert f"trial.study='{study.study_name}'" in trial.user_attrs["overrides"]
    summary = json.loads((tmp_path / "multirun" / "optuna_study.json").read_text())
    assert summary["study_name"] == study.study_name and summary["best_trials"][0]["number"] == study.best_trial.number


def test_the_baseline_runs_first_with_repetitions_and_is_never_enqueued_twice(sweep: Sweep, tmp_path: Path) -> None:
    """4 baseline repetitions, 2 trials per run: the second run finishes the baseline, then searches."""
    command = ("x=interval(0,4)", "y=range(0,4)", "hydra.sweeper.n_trials=2", "hydra.sweeper.baseline_repetitions=4")
    sweep(*command)
    study = the_study(tmp_path)
    assert states(study) == ["COMPLETE", "COMPLETE", "WAITING", "WAITING"]  # the rest of the baseline waits
    for _ in range(2):
        sweep(*command)
    study = the_study(tmp_path)
    assert states(study) == ["COMPLETE"] * 6
    baseline = [bool(t.user_attrs.get("cfexp.baseline")) for t in study.trials]
    assert baseline == [True] * 4 + [False] * 2
    for trial in study.trials[:4]:  # the config's own values, each run with its repetition index
        assert trial.params == {"x": 0.0, "y": 1}
        assert trial.user_attrs["metrics"]["repetition"] == trial.user_attrs["cfexp.baseline_repetition"]
        assert "repetition=" + str(trial.number) in trial.user_attrs["overrides"]
    assert [t.user_attrs["metrics"]["repetition"] for t in study.trials[4:]] == [0, 0]  # searched: default
    summary = json.loads((tmp_path / "multirun" / "optuna_study.json").read_text())
    assert summary["baseline_trials"] == [0, 1, 2, 3]


def test_a_searched_repetition_key_is_left_to_the_search(sweep: Sweep, tmp_path: Path) -> None:
    sweep("x=interval(0,4)", "repetition=7", "hydra.sweeper.n_trials=2", "hydra.sweeper.baseline_repetitions=2")
    study = the_study(tmp_path)
    assert [t.user_attrs["metrics"]["repetition"] for t in study.trials] == [7, 7]


def test_rerunning_the_command_resumes_the_study(sweep: Sweep, tmp_path: Path) -> None:
    for _ in range(2):
        sweep("x=interval(0,4)", "y=range(0,4)", "hydra.sweeper.n_trials=3")
    study = the_study(tmp_path)
    assert [t.number for t in study.trials] == list(range(6))  # n_trials = new trials per run
    assert [bool(t.user_attrs.get("cfexp.baseline")) for t in study.trials] == [True] + [False] * 5
    # The seed is offset by the earlier trials: the second run does not replay the first.
    assert study.trials[1].params != study.trials[4].params


def test_two_objectives_give_a_pareto_front(sweep: Sweep, tmp_path: Path) -> None:
    sweep("x=interval(0,4)", "y=range(0,4)", "hydra.sweeper.n_trials=6",
          "hydra.sweeper.objectives=[{metric:loss,direction:minimize},{metric:size,direction:maximize}]")
    study = the_study(tmp_path)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    assert study.metric_names == ["loss", "size"]
    assert study.best_trials
    summary = json.loads((tmp_path / "multirun" / "optuna_study.json").read_text())
    assert {t["number"] for t in summary["best_trials"]} == {t.number for t in study.best_trials}
    assert set(summary["best_trials"][0]["values"]) == {"loss", "size"}


@pytest.mark.parametrize("sampler", ["random", "cmaes", "nsgaii", "tpe"])
def test_each_sampler_runs(sweep: Sweep, tmp_path: Path, sampler: str) -> None:
    sweep("x=interval(0,4)", "y=range(0,4)", "hydra.sweeper.n_trials=3", f"hydra.sweeper.sampler={sampler}")
    assert states(the_study(tmp_path)) == ["COMPLETE"] * 3


def test_grid_runs_each_point_once_across_runs(sweep: Sweep, tmp_path: Path) -> None:
    grid = ("x=choice(1.0,2.0)", "y=range(0,3)", "hydra.sweeper.sampler=grid")
    sweep(*grid, "hydra.sweeper.n_trials=4")
    sweep(*grid, "hydra.sweeper.n_trials=10")  # only the 2 points left run
    sweep(*grid, "hydra.sweeper.n_trials=10")  # nothing left
    study = the_study(tmp_path)
    assert sorted((t.params["x"], t.params["y"]) for t in study.trials) == [
        (x, y) for x in (1.0, 2.0) for y in range(3)
    ]
    assert study.best_trial.params == {"x": 2.0, "y": 1}


def test_constraints_are_recorded_and_the_best_trial_is_feasible(sweep: Sweep, tmp_path: Path) -> None:
    sweep("x=interval(0,4)", "y=range(0,4)", "hydra.sweeper.n_trials=8", "hydra.sweeper.constraints=['size <= 2']")
    study = the_study(tmp_path)
    for trial in study.trials:  # Optuna's own constraint record: <= 0 is feasible
        assert trial.constraints == {"size <= 2": pytest.approx(trial.user_attrs["metrics"]["size"] - 2)}
    assert any(t.constraints["size <= 2"] > 0 for t in study.trials)  # some were infeasible
    assert all(t.user_attrs["metrics"]["size"] <= 2 for t in study.best_trials)


def test_a_journal_storage_works(sweep: Sweep, tmp_path: Path) -> None:
    url = f"journal:{tmp_path}/optuna.log"
    sweep("x=interval(0,4)", "hydra.sweeper.n_trials=2", storage=url)
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(f"{tmp_path}/optuna.log"))
    (name,) = optuna.get_all_study_names(storage)
    assert len(optuna.load_study(study_name=name, storage=storage).trials) == 2


# -- failures ------------------------------------------------------------------------


def test_failed_jobs_are_failed_trials_not_zeros(sweep: Sweep, tmp_path: Path) -> None:
    sweep("y=range(0,2)", "mode=ok,fail,raise", "hydra.sweeper.sampler=grid", "hydra.sweeper.max_failure_rate=1")
    study = the_study(tmp_path)
    by_mode: dict[str, list[Any]] = {}
    for trial in study.trials:
        by_mode.setdefault(trial.params["mode"], []).append(trial)
    assert {t.state for t in by_mode["ok"]} == {TrialState.COMPLETE}
    assert {t.state for t in by_mode["fail"] + by_mode["raise"]} == {TrialState.FAIL}
    assert all(t.values is None for t in by_mode["fail"] + by_mode["raise"])
    assert "returned no metrics" in by_mode["fail"][0].user_attrs["error"]
    assert "RuntimeError: boom" in by_mode["raise"][0].user_attrs["error"]


def test_too_many_failures_stop_the_sweep(sweep: Sweep, tmp_path: Path) -> None:
    with pytest.raises(SweepError, match=r"stopping the sweep: 2 of 2 trials failed \(100% > .*max_failure_rate=0.5"):
        sweep("x=interval(0,4)", "mode=fail,raise", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=6")
    assert states(the_study(tmp_path)) == ["FAIL", "FAIL"]  # told, not left RUNNING


def test_a_missing_metric_stops_the_sweep_and_lists_the_metrics_produced(sweep: Sweep, tmp_path: Path) -> None:
    with pytest.raises(SweepError, match=r"does not produce the metric\(s\) loss .* It produces: repetition, size, trial_number"):
        sweep("x=interval(0,4)", "mode=nometric")
    assert states(the_study(tmp_path)) == ["FAIL"]


def test_a_metric_missing_after_others_had_it_fails_that_trial_only(sweep: Sweep, tmp_path: Path) -> None:
    """cfexp leaves out what it cannot measure: once measured, a missing metric is one failed trial."""
    sweep("x=interval(0,4)", "mode=ok,nometric", "hydra.sweeper.n_trials=6", "hydra.sweeper.max_failure_rate=1")
    study = the_study(tmp_path)
    assert study.trials[0].state == TrialState.COMPLETE  # the baseline, mode=ok
    missing = [t for t in study.trials if t.params["mode"] == "nometric"]
    assert missing and all(t.state == TrialState.FAIL for t in missing)
    assert missing[0].user_attrs["error"] == "loss not measured by this job"


def test_a_value_the_schema_rejects_stops_the_sweep_before_any_trial(sweep: Sweep, tmp_path: Path) -> None:
    with pytest.raises(SweepError, match="could not be converted to Integer"):
        sweep("x=interval(0,4)", "y=choice(1,lots)")
    assert not (tmp_path / "optuna.db").exists()


def test_a_storage_that_cannot_be_opened_is_named(sweep: Sweep, tmp_path: Path) -> None:
    with pytest.raises(SweepError, match=r"cannot open the Optuna storage <storage=sqlite:////nonexistent/x.db>"):
        sweep("x=interval(0,4)", storage="sqlite:////nonexistent/x.db")
    with pytest.raises(SweepError, match="does not exist"):
        sweep("x=interval(0,4)", storage=f"journal:{tmp_path}/nope/x.log")


def test_a_study_with_other_objectives_is_refused(sweep: Sweep, tmp_path: Path) -> None:
    sweep("x=interval(0,4)", "hydra.sweeper.n_trials=1", "hydra.sweeper.study_name=mine")
    with pytest.raises(SweepError, match=r"<study_name=mine> .* optimises \[minimize loss\], but this sweep asks for \[maximize loss\]"):
        sweep("x=interval(0,4)", "hydra.sweeper.study_name=mine",
              "hydra.sweeper.objectives=[{metric:loss,direction:maximize}]")
    with pytest.raises(SweepError, match="load_if_exists=false"):
        sweep("x=interval(0,4)", "hydra.sweeper.study_name=mine", "hydra.sweeper.load_if_exists=false")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("hydra.sweeper.n_trials=0",), r"<n_trials=0> must be at least 1"),
        (("hydra.sweeper.baseline_repetitions=0",), r"<baseline_repetitions=0> must be at least 1"),
        (("hydra.sweeper.trial_key=nowhere",), "no node 'nowhere'"),
        (("hydra.sweeper.sampler=cmaes", "hydra.sweeper.constraints=['size <= 2']"), "ignores constraints"),
        (("+hydra.sweeper.sampler_options.nope=1",), "TPESampler takes consider_prior"),
        (("hydra.sweeper.sampler=grid",), "needs discrete values, but <x>"),
        (("hydra.sweeper.constraints=['size == 2']",), "metric <= number"),
    ],
)
def test_bad_settings_are_explained(sweep: Sweep, overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(SweepError, match=message):
        sweep("x=interval(0,4)", *overrides)


@pytest.mark.parametrize(("sampler", "package"), [("gp", "torch"), ("cmaes", "cmaes")])
def test_a_sampler_without_its_package_names_it(
    sweep: Sweep, sampler: str, package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whether or not the package is installed here, the sweeper must say so when it is not.
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == package else real_find_spec(name, *a)
    )
    with pytest.raises(SweepError, match=f"<sampler={sampler}> needs .*the package `{package}` is not installed"):
        sweep("x=interval(0,4)", f"hydra.sweeper.sampler={sampler}")


def test_the_search_is_announced_before_its_first_trial(sweep: Sweep, capsys: pytest.CaptureFixture[str]) -> None:
    sweep("x=interval(0,4)", "y=choice(0,1,2)", "mode=ok", "hydra.sweeper.n_trials=2")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("cfexp search of experiment toy: 2 trial(s), one job each (Optuna study ")
    assert lines[0].endswith("new; sampler tpe, seed 1)")
    assert lines[1] == "  searched: x interval(0, 4); y choice(0, 1, 2)"
    assert lines[2] == "  objectives: minimize loss"
    assert lines[3] == "  fixed: mode=ok"
    assert lines[4] == "  estimated duration: unknown (no earlier FINISHED run in experiment toy)"
