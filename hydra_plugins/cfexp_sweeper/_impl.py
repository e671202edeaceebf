"""The sweep: ask Optuna for trials, run them as Hydra jobs, tell Optuna the results.

Each trial is an ordinary job launched through Hydra's configured launcher
(the same code path as ``-m key=a,b``), ``n_jobs`` at a time. Its overrides
are the fixed ones from the command line, the trial's parameters, and
``<trial_key>.study=… <trial_key>.number=…`` so the job (and its MLflow run)
knows which trial it is.

- A job that returns metrics is a COMPLETE trial with the objectives' values.
- A job that fails (returns None, or raised) is a FAILED trial — never a
  zero. The sweep goes on unless more than ``max_failure_rate`` of this
  run's trials failed.
- A finished job without a needed metric, while no trial of the study ever
  had it (the objective names a metric the task does not produce), a search
  space the config schema rejects, a storage that cannot be opened, a study
  with other objectives: the sweep stops with a :class:`SweepError` saying
  what to change. (A metric missing once after others had it — not
  measurable for that config — fails that trial only.)
"""

from __future__ import annotations

import functools
import json
import logging
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.errors import HydraException
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import Trial, TrialState

from cfexp.errors import ConfigError
from cfexp.metrics import catalog
from hydra_plugins.cfexp_sweeper import _parent
from hydra_plugins.cfexp_sweeper import config as sweeper_config
from hydra_plugins.cfexp_sweeper._errors import SweepError
from hydra_plugins.cfexp_sweeper._objectives import (
    Constraint,
    MissingMetricError,
    Objective,
    TrialResult,
    evaluate,
    parse_constraint,
)
from hydra_plugins.cfexp_sweeper._space import (
    SearchSpace,
    baseline_params,
    parse_search_space,
    quote,
    suggest,
)
from hydra_plugins.cfexp_sweeper._study import (
    default_storage,
    derive_study_name,
    describe_storage,
    make_sampler,
    open_storage,
    open_study,
)

log = logging.getLogger(__name__)

# Written into the sweep folder (and the MLflow parent run) when the sweep ends.
SUMMARY_FILE = "optuna_study.json"
# cfexp's per-job status file (cfexp.app.status.STATUS_FILE), read for run ids and errors.
_STATUS_FILE = "cfexp_status.json"
# User attributes of a baseline trial: the flag, and which repetition of the baseline it is.
BASELINE_ATTR = "cfexp.baseline"
BASELINE_REPETITION_ATTR = "cfexp.baseline_repetition"


class CfexpOptunaSweeperImpl(Sweeper):
    def __init__(self, settings: sweeper_config.CfexpOptunaSweeperConf) -> None:
        self.settings = settings
        self.objectives = [Objective(o.metric, _direction(o)) for o in settings.objectives]
        self.constraints: list[Constraint] = []
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Launcher | None = None
        self.job_idx = 0
        self.repetition_key: str | None = None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> CfexpOptunaSweeperImpl:
        """From the keyword arguments Hydra instantiates the sweeper with."""
        given = {key: value for key, value in settings.items() if key != "_target_"}
        # Enums as their names: Hydra's plugin discovery re-executes config.py, so the
        # enum classes Hydra composed with may not be the ones imported here.
        plain = OmegaConf.to_container(OmegaConf.create(given), enum_to_str=True)
        schema = sweeper_config.CfexpOptunaSweeperConf  # the module's current class, see above
        typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), plain))
        assert isinstance(typed, schema)
        return cls(typed)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.job_idx = 0
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    @property
    def sweep_dir(self) -> Path:
        assert self.config is not None
        return Path(str(self.config.hydra.sweep.dir))

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        try:
            return self._sweep(arguments)
        except SweepError as exc:
            self._stop(str(exc))
            raise

    # -- the sweep ---------------------------------------------------------------

    def _sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        assert self.config is not None
        settings = self.settings
        self._check_settings()
        self.constraints = [parse_constraint(text) for text in settings.constraints]
        params_conf = [f"{key}={value}" for key, value in settings.params.items()]
        space = parse_search_space([*params_conf, *arguments], self.config)
        if not space.distributions:
            raise SweepError(
                "nothing to search: give a search space in hydra.sweeper.params or on the command "
                "line, e.g. ctx=choice(512,1024) temperature=interval(0.2,1.2)"
            )
        self._check_trial_key()
        self._check_against_schema(space)
        self.repetition_key = self._usable_repetition_key(space)

        sampler_name = settings.sampler.name
        make = functools.partial(
            make_sampler,
            sampler_name,
            options=dict(settings.sampler_options),
            space=space,
            n_objectives=len(self.objectives),
            constrained=bool(self.constraints),
        )
        make(seed=settings.seed)  # a bad sampler setting stops the sweep before the storage is touched
        url = settings.storage or default_storage(self.config)
        shown = describe_storage(url)
        storage = open_storage(url)
        name = settings.study_name or derive_study_name(space, self.objectives, self.constraints)
        study, existed = open_study(storage, shown, name, self.objectives, settings.load_if_exists)
        # A resumed study must not replay the first run's seeded random phase: the seed
        # is offset by the trials the study already has (still reproducible). Not for
        # grid: its seed orders the grid points, which every run and worker must share.
        offset = 0 if sampler_name == "grid" else len(study.trials)
        study.sampler = make(seed=None if settings.seed is None else settings.seed + offset)
        log.info(
            "Optuna study %s (%s, %d earlier trials) in %s; sampler %s; %s",
            name, "resumed" if existed else "new", len(study.trials), shown, sampler_name,
            ", ".join(str(o) for o in self.objectives),
        )
        log.info("Dashboard: optuna-dashboard %s", shown)

        n_trials = settings.n_trials
        if sampler_name == "grid":
            left = space.grid_size() - _grid_points_done(study, space)
            if left < n_trials:
                log.info("grid: %d point(s) left to run, so %d trial(s) instead of %d", left, left, n_trials)
            n_trials = min(n_trials, left)
        elif settings.baseline and not existed:  # only the worker that created the study
            self._enqueue_baseline(study, space)

        self._announce(space, name, n_trials, len(study.trials) if existed else None)
        returns = self._run_trials(study, space, name, n_trials)
        self._summarize(study, name, shown)
        return returns

    def _run_trials(self, study: optuna.Study, space: SearchSpace, name: str, n_trials: int) -> list[Sequence[JobReturn]]:
        assert self.launcher is not None
        all_returns: list[Sequence[JobReturn]] = []
        ended = failed = 0
        while ended < n_trials:
            trials: list[Trial] = []
            pending: dict[int, Trial] = {}
            try:
                for _ in range(min(self.settings.n_jobs, n_trials - ended)):
                    trials.append(study.ask())
                    pending[trials[-1].number] = trials[-1]
                overrides = [self._job_overrides(trial, space, name) for trial in trials]
                try:
                    returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
                except HydraException as exc:
                    raise SweepError(f"Hydra could not launch the trials: {exc}") from exc
                self.job_idx += len(returns)
                all_returns.append(returns)
                stop: SweepError | None = None
                for trial, ret in zip(trials, returns, strict=True):
                    info = _job_info(ret)
                    try:
                        result = _result(ret, self.objectives, self.constraints, info)
                    except MissingMetricError as exc:
                        if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                            # Produced before: not measurable for this config only (e.g.
                            # throughput_tok_s of a 1-token reply). A failed trial.
                            result = TrialResult(error=f"{', '.join(exc.missing)} not measured by this job")
                        else:  # never produced: the objective names the wrong metric
                            result, stop = TrialResult(error=str(exc)), stop or exc
                    except SweepError as exc:  # told as FAILED, then the sweep stops
                        result, stop = TrialResult(error=str(exc)), stop or exc
                    self._tell(study, trial, result, info, quiet=stop is not None)
                    pending.pop(trial.number)
                    failed += result.failed
                if stop is not None:
                    raise stop
            finally:
                for trial in pending.values():  # interrupted: never leave a trial RUNNING
                    study.tell(trial, state=TrialState.FAIL)
            ended += len(trials)
            rate = failed / ended
            if ended < n_trials and rate > self.settings.max_failure_rate:
                raise SweepError(
                    f"stopping the sweep: {failed} of {ended} trials failed ({rate:.0%} > "
                    f"hydra.sweeper.max_failure_rate={self.settings.max_failure_rate:g}). "
                    "The failed jobs' errors are in their status files and MLflow runs; fix the "
                    "cause, or narrow the search space, or raise max_failure_rate"
                )
        if failed:
            log.warning("%d of %d trials failed (recorded as FAILED trials)", failed, ended)
        return all_returns

    def _job_overrides(self, trial: Trial, space: SearchSpace, name: str) -> list[str]:
        params = {key: suggest(trial, key, dist) for key, dist in space.distributions.items()}
        overrides = space.job_overrides(params)
        repetition = trial.user_attrs.get(BASELINE_REPETITION_ATTR)
        if repetition is not None and self.repetition_key:
            overrides.append(f"{self.repetition_key}={int(repetition)}")
        if self.settings.trial_key:
            key = self.settings.trial_key
            overrides += [f"{key}.study={quote(name)}", f"{key}.number={trial.number}"]
        trial.set_user_attr("overrides", overrides)
        return overrides

    def _tell(
        self, study: optuna.Study, trial: Trial, result: TrialResult, info: Mapping[str, str], quiet: bool = False
    ) -> None:
        for key in ("mlflow_run_id", "job_dir"):
            if info.get(key):
                trial.set_user_attr(key, info[key])
        if result.metrics is not None:
            trial.set_user_attr("metrics", dict(result.metrics))
        if result.values is None:
            error = result.error or "failed"
            trial.set_user_attr("error", error[:1000])
            if not quiet:
                log.warning("trial %d failed: %s", trial.number, error.splitlines()[0])
            study.tell(trial, state=TrialState.FAIL)
            return
        for constraint, value in zip(self.constraints, result.constraints or [], strict=True):
            trial.set_constraint(str(constraint), value)  # feasible when <= 0
        study.tell(trial, values=result.values)

    def _announce(self, space: SearchSpace, name: str, n_trials: int, earlier: int | None) -> None:
        """What the search is, printed before its first trial (as cfexp's grid sweeper does)."""
        assert self.config is not None
        experiment = str(OmegaConf.select(self.config, "tracking.experiment", default=None) or self.config.hydra.job.name)
        study = f"resumed, {earlier} earlier trial(s)" if earlier is not None else "new"
        lines = [
            f"cfexp search of experiment {experiment}: {n_trials} trial(s), one job each "
            f"(Optuna study {name}, {study}; sampler {self.settings.sampler.name}, seed {self.settings.seed})",
            "  searched: " + "; ".join(f"{key} {_distribution_text(d)}" for key, d in space.distributions.items()),
            f"  objectives: {', '.join(str(o) for o in self.objectives)}",
        ]
        if space.fixed:
            lines.append(f"  fixed: {' '.join(space.fixed.values())}")
        lines.append(f"  estimated duration: {_estimate_text(self.sweep_dir, self.config, experiment, n_trials)}")
        # The command's own output: print, so it reads the same on a terminal and in a file.
        print("\n".join(lines), flush=True)

    def _enqueue_baseline(self, study: optuna.Study, space: SearchSpace) -> None:
        assert self.config is not None
        params = baseline_params(space, self.config)
        if params is None:
            log.info("baseline: the config's own values are not all in the search space; no baseline trial")
            return
        count = self.settings.baseline_repetitions
        log.info("baseline: the first %d trial(s) run the config's own values %s", count, params)
        # Enqueued trials wait in the storage until asked for: a run that ends before all
        # of them ran leaves the rest for the next run of the command (never enqueued twice:
        # only the worker whose open_study created the study enqueues it, see _study.py).
        for repetition in range(count):
            study.enqueue_trial(params, user_attrs={BASELINE_ATTR: True, BASELINE_REPETITION_ATTR: repetition})

    def _summarize(self, study: optuna.Study, name: str, shown: str) -> None:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        best = study.best_trials if complete else []
        metrics = [o.metric for o in self.objectives]
        summary: dict[str, Any] = {
            "study_name": name,
            "storage": shown,
            "objectives": [{"metric": o.metric, "direction": o.direction} for o in self.objectives],
            "trials": len(study.trials),
            "complete": len(complete),
            "failed": len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))),
            "baseline_trials": [t.number for t in study.trials if t.user_attrs.get(BASELINE_ATTR)],
            "best_trials": [
                {
                    "number": t.number,
                    "values": dict(zip(metrics, t.values, strict=True)),
                    "params": t.params,
                    "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
                }
                for t in best
            ],
            "dashboard": f"optuna-dashboard {shown}",
        }
        label = "Pareto front" if len(metrics) > 1 else "best trial"
        log.info("study %s: %d trials, %d complete; %s:", name, summary["trials"], len(complete), label)
        for entry in summary["best_trials"]:
            log.info("  #%d %s %s", entry["number"], entry["values"], entry["params"])
        text = json.dumps(summary, indent=2, default=str)
        try:
            self.sweep_dir.mkdir(parents=True, exist_ok=True)
            (self.sweep_dir / SUMMARY_FILE).write_text(text)
        except OSError as exc:
            log.warning("could not write %s: %s", SUMMARY_FILE, exc)
        assert self.config is not None
        tags = {
            "optuna.study": name,
            "optuna.storage": shown,
            "optuna.best_trials": ",".join(str(t.number) for t in best),
        }
        _parent.annotate(self.sweep_dir, self.config, tags, {SUMMARY_FILE: text})

    # -- checks ------------------------------------------------------------------

    def _check_settings(self) -> None:
        s = self.settings
        problems = []
        if s.n_trials < 1:
            problems.append(f"<n_trials={s.n_trials}> must be at least 1")
        if s.n_jobs < 1:
            problems.append(f"<n_jobs={s.n_jobs}> must be at least 1")
        if s.baseline_repetitions < 1:
            problems.append(f"<baseline_repetitions={s.baseline_repetitions}> must be at least 1")
        if not 0 <= s.max_failure_rate <= 1:
            problems.append(f"<max_failure_rate={s.max_failure_rate}> must be from 0 to 1")
        if not self.objectives:
            problems.append("<objectives=[]> needs at least one {metric: …, direction: …}")
        metrics = [o.metric for o in self.objectives]
        if len(set(metrics)) != len(metrics):
            problems.append(f"<objectives> names a metric twice: {metrics}")
        if problems:
            raise SweepError("invalid hydra.sweeper settings: " + "; ".join(problems))

    def _check_trial_key(self) -> None:
        key = self.settings.trial_key
        assert self.config is not None
        if key and not OmegaConf.is_dict(OmegaConf.select(self.config, key, default=None)):
            raise SweepError(
                f"<hydra.sweeper.trial_key={key}>: the config has no node {key!r} to receive the study "
                f"name and trial number ({key}.study, {key}.number); add one, or set trial_key=null"
            )

    def _usable_repetition_key(self, space: SearchSpace) -> str | None:
        """``repetition_key`` when the config holds a whole number there that the search leaves alone."""
        key = self.settings.repetition_key
        assert self.config is not None
        if not key or any(k.lstrip("+~") == key for k in (*space.distributions, *space.fixed)):
            return None
        try:
            value = OmegaConf.select(self.config, key, default=None)
        except Exception:  # an interpolation that needs Hydra's runtime: not a plain index
            return None
        return key if isinstance(value, int) and not isinstance(value, bool) else None

    def _check_against_schema(self, space: SearchSpace) -> None:
        """Compose a few jobs that use every choice and both ends of every range.

        A value the config schema rejects (a word for an int, an unknown
        option) stops the sweep before any trial, with the schema's message.
        """
        assert self.hydra_context is not None and self.config is not None
        loader = self.hydra_context.config_loader
        for row in space.validation_rows():
            try:
                loader.load_sweep_config(self.config, row)
            except Exception as exc:
                cause = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
                raise SweepError(f"the search space gives a value the config rejects: {exc}{cause}") from exc

    def _stop(self, error: str) -> None:
        """Close the sweep's records before the error reaches Hydra.

        Hydra calls the callbacks' on_multirun_end only after a sweep returns;
        when jobs ran, the sweeper calls it itself so cfexp's callback writes
        its summary and stops the sweep's servers. The parent run then ends
        FAILED with the error.
        """
        assert self.config is not None
        if self.job_idx > 0 and self.hydra_context is not None:
            self.hydra_context.callbacks.on_multirun_end(config=self.config)
        _parent.end_failed(self.sweep_dir, self.config, error)


def _distribution_text(distribution: optuna.distributions.BaseDistribution) -> str:
    """``choice(512, 1024)``, ``interval(0.2, 1.2)``, ``int 0..30``."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return f"choice({', '.join(str(c) for c in distribution.choices)})"
    if isinstance(distribution, optuna.distributions.FloatDistribution):
        return f"interval({distribution.low:g}, {distribution.high:g}){' log' if distribution.log else ''}"
    if isinstance(distribution, optuna.distributions.IntDistribution):
        return f"int {distribution.low}..{distribution.high}{' log' if distribution.log else ''}"
    return str(distribution)


def _estimate_text(sweep_dir: Path, config: DictConfig, experiment: str, n_trials: int) -> str:
    """Median duration of the experiment's earlier FINISHED runs x trials, when there are any."""
    from cfexp.tracking.resume import finished_durations_s

    try:
        found = _parent.tracker_and_run(sweep_dir, config)
        durations = finished_durations_s(found[0], experiment) if found is not None else []
    except Exception as exc:  # an estimate is a courtesy
        log.debug("no duration estimate: %s", exc)
        durations = []
    if not durations:
        return f"unknown (no earlier FINISHED run in experiment {experiment})"
    median = statistics.median(durations)
    minutes = round(median * n_trials / 60)
    total = f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
    return f"about {total} (median {median:.1f} s of {len(durations)} earlier FINISHED run(s) x {n_trials} trials)"


def _grid_points_done(study: optuna.Study, space: SearchSpace) -> int:
    """Distinct grid points among the study's finished trials (failed ones count, as in GridSampler)."""
    grid = space.grid()
    done = set()
    finished = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
    for trial in study.get_trials(deepcopy=False, states=finished):
        if set(trial.params) == set(grid) and all(trial.params[k] in grid[k] for k in grid):
            done.add(tuple(trial.params[k] for k in sorted(grid)))
    return len(done)


def _job_info(ret: JobReturn) -> dict[str, str]:
    """The job's folder, and from cfexp's status file its MLflow run id and error."""
    info: dict[str, str] = {}
    try:
        if ret.hydra_cfg is None:
            return info
        job_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir", default=None)
        if job_dir is None:
            return info
        info["job_dir"] = str(job_dir)
        status_file = Path(str(job_dir)) / _STATUS_FILE
        if status_file.exists():
            status = json.loads(status_file.read_text())
            info["mlflow_run_id"] = status.get("run_id") or ""
            if status.get("error"):
                info["error"] = f"[{status.get('status')}] {status['error']}"
    except Exception as exc:  # the status file is a courtesy, never a reason to stop
        log.debug("no job info: %s", exc)
    return info


def _result(
    ret: JobReturn, objectives: Sequence[Objective], constraints: Sequence[Constraint], info: Mapping[str, str]
) -> TrialResult:
    try:
        returned = ret.return_value
    except Exception as exc:  # the task raised: Hydra kept the exception in the JobReturn
        return TrialResult(error=f"the job raised {type(exc).__name__}: {exc}")
    result = evaluate(returned, objectives, constraints)
    if result.failed and info.get("error"):
        return TrialResult(metrics=result.metrics, error=info["error"])
    return result


def _direction(objective: sweeper_config.ObjectiveConfig) -> str:
    """The objective's Optuna direction: as configured, else the metric catalogue's."""
    if objective.direction is not None:
        return str(objective.direction.name)
    try:
        return catalog.direction(objective.metric).optuna
    except (ValueError, ConfigError) as exc:
        raise SweepError(
            f"<objectives.metric={objective.metric}> has no better direction in cfexp's metric "
            "catalogue (docs/metrics.md): give it one, e.g. {metric: …, direction: minimize}"
        ) from exc
