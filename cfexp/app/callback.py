"""Hydra callback: the sweep's parent run, the failure summary, server shutdown.

- ``on_run_start`` / ``on_multirun_start``: check that the output folders can
  be written (else exit 2 before any job); hold the command's output folder
  (a second command running in the same folder exits 2); open the tracking
  store, so that a new local store is created (or an old one upgraded) once,
  under its lock, before any job (a store that cannot be used exits 1 with
  what to do), with the first job's servers starting meanwhile
  (``ServerPool.start_early``); for a sweep, create the parent MLflow run
  and write its id into the sweep folder, where every job finds it.
- ``on_multirun_end`` / ``on_run_end``: stop servers kept for the sweep, read
  every job's status file, print a summary of what failed, close the parent
  run, and remember the outcome so ``python -m cfexp`` exits non-zero.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from cfexp.app import progress, status
from cfexp.app.agent_spec import instance_launch_options
from cfexp.app.hydra_job import GridSize, grid_size, is_multirun, swept_keys
from cfexp.backends.pool import POOL, launch_specs
from cfexp.config.output_dirs import FolderClaim
from cfexp.config.validate import to_settings
from cfexp.errors import TrackingError
from cfexp.redact import mask_in_logs, redact_overrides, secret_values
from cfexp.signals import install_cleanup_handlers
from cfexp.tracking.jobs import start_parent, tracker_for
from cfexp.tracking.store import Tracker, resolve_uri
from cfexp.tracking.sweep_file import PARENT_FILE

log = logging.getLogger(__name__)


class Outcome:
    """What the last run or sweep of this process ended with (read by __main__)."""

    exit_code = 0
    # Hydra composed the config and started the run or sweep (a failure before
    # that is a config or command-line error: exit 2).
    started = False
    # The running sweep's config, for close_interrupted (None outside a multirun).
    sweep_config: DictConfig | None = None
    # For the line printed after each job of a sweep: when it started, how many jobs
    # it has (None: a sweeper that does not say, e.g. Optuna), how many have ended.
    sweep_started_at = 0.0
    sweep_jobs: int | None = None
    swept_keys: set[str] = set()
    jobs_ended = 0


def _mlruns_dir(config: DictConfig) -> Path:
    try:
        return Path(config.paths.mlruns_dir)
    except Exception:  # interpolation needs Hydra's runtime info, absent this early
        return Path(os.getcwd()) / "mlruns"


def _grid(config: DictConfig) -> GridSize | None:
    """The sweep's grid, counted once, when its sweeper is one (cfexp's or Hydra's basic);
    None for an Optuna search, or an override the grid cannot count."""
    target = str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))
    if not target.endswith(("CfexpBasicSweeper", "BasicSweeper")):
        return None
    try:
        return grid_size(OmegaConf.select(config, "hydra.sweeper.params"), list(config.hydra.overrides.task))
    except Exception:  # the sweeper itself reports what it cannot expand
        return None


def _where(config: DictConfig, outputs: Path, sweep: bool, run_id: str | None = None) -> str:
    """Where to look: the outputs, the MLflow run (or the sweep's parent), the UI, the report."""
    mlruns_dir = _mlruns_dir(config)
    uri = resolve_uri(config.tracking.uri, mlruns_dir)
    if sweep and (outputs / PARENT_FILE).exists():
        run_id = json.loads((outputs / PARENT_FILE).read_text())["run_id"]
    default_store = uri == f"sqlite:///{(Path.cwd() / 'mlruns' / 'mlflow.db').resolve()}"  # `cfexp ui`'s
    return progress.Where(
        outputs=str(outputs), experiment=str(config.tracking.experiment), run_id=run_id, tracking_uri=uri,
        mlruns_dir=str(mlruns_dir), sweep=sweep, default_store=default_store,
    ).text()


def _refuse_a_sweep_too_large(config: DictConfig, size: GridSize | None) -> None:
    """Exit 2 before anything starts when a grid sweep has more jobs than
    ``hydra.sweeper.max_jobs`` (a ``range(0,1,0.001)`` typed for ``range(0,1,0.1)``
    would otherwise start 1000 jobs). Another sweeper (Optuna) has no such key."""
    max_jobs = OmegaConf.select(config, "hydra.sweeper.max_jobs", default=None)
    if max_jobs is None or size is None or size.jobs <= int(max_jobs):
        return
    factors = ", ".join(f"{key}: {n}" for key, n in size.levels.items())
    print(
        f"cfexp: this sweep has {size.jobs} jobs ({factors} values), more than "
        f"<hydra.sweeper.max_jobs={max_jobs}>. Nothing was started. To run it as it is, add "
        f"hydra.sweeper.max_jobs={size.jobs} (or null for no limit); otherwise sweep fewer values.",
        file=sys.stderr,
    )
    raise SystemExit(2)


def _require_writable(path: Path, key: str) -> None:
    """Exit 2 with one clear paragraph, before any job or server, when ``path`` cannot be written.

    A SystemExit, because Hydra turns a callback's exceptions into warnings.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".cfexp-write-check-"):
            pass
    except OSError as exc:
        print(
            f"cfexp: cannot write the output folder <{key}={path}>: {exc.strerror or exc}. "
            f"No job was started. Give {key} a folder you can write "
            f"(e.g. {key}=/tmp/cfexp-out), or fix the permissions of the existing one.",
            file=sys.stderr,
        )
        raise SystemExit(2) from exc


def _require_writable_outputs(config: DictConfig, output_dir: str, key: str) -> None:
    _require_writable(Path(output_dir), key)
    if config.tracking.uri is None and not os.environ.get("MLFLOW_TRACKING_URI"):  # the local store
        _require_writable(_mlruns_dir(config), "paths.mlruns_dir")


_CLAIM: FolderClaim | None = None  # this command's hold on its output folder


def _claim_output_folder(folder: Path, key: str) -> None:
    """Hold the command's output folder while it runs; exit 2 if another command runs in it.

    cfexp's default folders are new for every command (``cfexp.unique_dir``);
    an explicit ``hydra.run.dir``/``hydra.sweep.dir`` may name one that a
    running command uses: two commands in one folder would overwrite each
    other's job folders and link their jobs to the wrong sweep.
    """
    global _CLAIM
    _release_output_folder()  # a command run earlier in this process (tests) held its own
    claim = FolderClaim(folder)
    if not claim.take("a cfexp command"):
        print(
            f"cfexp: another cfexp command is running in the output folder <{key}={folder}> "
            f"({claim.holder() or 'its pid is unknown'}): two commands in one folder would overwrite "
            f"each other's job folders and runs. No job was started. Wait until it ends, or give this "
            f"command a folder of its own (leave {key} unset and each command gets a new one).",
            file=sys.stderr,
        )
        raise SystemExit(2)
    _CLAIM = claim


def _release_output_folder() -> None:
    global _CLAIM
    if _CLAIM is not None:
        _CLAIM.release()
        _CLAIM = None


def _start_servers_early(config: DictConfig, servers_dir: Path) -> None:
    """Start the first job's servers while the store opens (``ServerPool.start_early``).

    A single run's config is its job's. A sweep's is its base (swept keys at
    their defaults): when the first job asks for other servers, the early
    ones are stopped. Skipped for a ``per_job`` lifecycle (every job's servers
    start with it), for ``resume`` (the job may be skipped), for launchers that
    run jobs in their own processes, and for a config that does not validate
    (the job reports it).
    """
    try:
        task_config = copy.deepcopy(config)  # as Hydra hands it to the task: without its own node
        with read_write(task_config), open_dict(task_config):
            del task_config["hydra"]
        settings = to_settings(task_config)
        launches = launch_specs(settings, instance_launch_options(settings))
    except Exception as exc:  # an optimisation only: the job itself says what is wrong
        log.debug("servers not started early: %s", exc)
        return
    if settings.resume or settings.topology.lifecycle != "per_sweep":
        return
    POOL.start_early(settings, servers_dir, launches)


def _open_store(config: DictConfig) -> Tracker:
    """The tracking store, opened before any job: a new local store is created (or an
    old one upgraded) here, once, under its lock. Exit 1 with what to do when it cannot be used."""
    try:
        return tracker_for(config.tracking.uri, _mlruns_dir(config))
    except TrackingError as exc:
        POOL.close()  # servers started early for the first job
        print(f"cfexp: {exc}\nNo job was started.", file=sys.stderr)
        raise SystemExit(1) from exc


class CfexpCallback(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        Outcome.started = True
        _require_writable_outputs(config, config.hydra.run.dir, "hydra.run.dir")
        _claim_output_folder(Path(config.hydra.run.dir), "hydra.run.dir")
        _start_servers_early(config, Path(config.hydra.run.dir) / "servers")
        _open_store(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        Outcome.started = True
        grid = _grid(config)
        _refuse_a_sweep_too_large(config, grid)
        _require_writable_outputs(config, config.hydra.sweep.dir, "hydra.sweep.dir")
        sweep_dir = Path(config.hydra.sweep.dir)
        _claim_output_folder(sweep_dir, "hydra.sweep.dir")
        POOL.sweep_started()
        if str(config.hydra.runtime.choices.get("hydra/launcher", "basic")) == "basic":
            _start_servers_early(config, sweep_dir / "servers")  # where the jobs' servers_dir puts them
        tracker = _open_store(config)
        overrides = redact_overrides(config.hydra.overrides.task)
        # Hydra logs each job's overrides as it launches it: mask literal secrets.
        mask_in_logs(v for s in secret_values(config.hydra.overrides.task) for v in (s, *s.split(",")))
        resume = bool(config.get("resume", False))
        try:
            keys = swept_keys(overrides)
            run_id = start_parent(tracker, config.tracking.experiment, sweep_dir, overrides, keys, resume)
        except Exception as exc:  # Hydra would only warn and run every job without a parent
            POOL.close()
            print(
                f"cfexp: could not create the sweep's parent run in {tracker.uri} "
                f"(experiment {config.tracking.experiment!r}): {exc}. No job was started.",
                file=sys.stderr,
            )
            raise SystemExit(1) from exc
        Outcome.sweep_config = config
        Outcome.sweep_started_at, Outcome.jobs_ended = time.monotonic(), 0
        Outcome.sweep_jobs = grid.jobs if grid else None
        Outcome.swept_keys = {key.lstrip("+~") for key in grid.levels} if grid else set()
        log.info("MLflow parent run %s (%s)", run_id, tracker.uri)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        # In the job's process, which may not be the launching one (submitit, Ray):
        # there a per_sweep pool cannot be shared with the other jobs.
        POOL.job_started(
            multirun=is_multirun(config.hydra),
            launcher=str(config.hydra.runtime.choices.get("hydra/launcher", "basic")),
        )
        if not POOL.shared_across_jobs:
            # submitit ignores SIGTERM in its jobs (SLURM's pre-emption warning). cfexp
            # does not checkpoint: SIGTERM stops the job and marks its run KILLED, as in
            # the launching process (which forwards its own SIGTERM: cfexp.__main__).
            install_cleanup_handlers()

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        """After each job of a sweep run by this process: one line with its numbers and the ETA.
        (Launchers that run jobs elsewhere (submitit, Ray) show only the table at the end.)"""
        if not is_multirun(config.hydra) or not POOL.shared_across_jobs:
            return
        job = _read_one(Path(config.hydra.runtime.output_dir))
        if job is None:
            return
        Outcome.jobs_ended += 1
        elapsed = time.monotonic() - Outcome.sweep_started_at
        print(progress.job_line(Outcome.jobs_ended, Outcome.sweep_jobs, job, elapsed, Outcome.swept_keys), flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        Outcome.sweep_config = None  # ended here, not by close_interrupted
        POOL.close()
        sweep_dir = Path(config.hydra.sweep.dir)
        statuses = status.read_all(sweep_dir)
        failed = [s for s in statuses if not s.ok]
        parent_file = sweep_dir / PARENT_FILE
        if parent_file.exists():
            tracker = tracker_for(config.tracking.uri, _mlruns_dir(config))
            run_id = json.loads(parent_file.read_text())["run_id"]
            tracker.set_tags(run_id, {"jobs": str(len(statuses)), "failed_jobs": str(len(failed))})
            tracker.log_text(run_id, _summary(statuses), "sweep_summary.txt")
            tracker.end_run(run_id, "FAILED" if failed else "FINISHED")
        if statuses:
            print(f"\ncfexp: {len(statuses)} job(s), {len(failed)} failed\n{progress.final_table(statuses)}\n"
                  + _where(config, sweep_dir, sweep=True), flush=True)
        _report(statuses, failed)
        _release_output_folder()

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        POOL.close()
        job_dir = Path(config.hydra.runtime.output_dir)
        statuses = [s for s in [_read_one(job_dir)] if s is not None]
        for job in statuses:
            numbers = progress.headline(job.metrics)
            print(f"\ncfexp: {job.status}" + (f" | {numbers}" if numbers else "") + "\n"
                  + _where(config, job_dir, sweep=False, run_id=job.run_id), flush=True)
        _report(statuses, [s for s in statuses if not s.ok])
        _release_output_folder()


def close_unfinished(reason: str, run_status: str) -> None:
    """End a sweep that Hydra left without its end hook: after Ctrl-C or SIGTERM
    (``KILLED``), or after a launcher's error such as a job whose process died
    (``FAILED``). Stops the servers kept for the sweep; the job runs still
    RUNNING under the parent (their process died, or never got to end them)
    end with ``run_status`` and the reason; the parent too, with the summary so far.
    """
    POOL.close()
    _release_output_folder()
    config, Outcome.sweep_config = Outcome.sweep_config, None
    if config is None:
        return
    sweep_dir = Path(config.hydra.sweep.dir)
    parent_file = sweep_dir / PARENT_FILE
    if not parent_file.exists():
        return
    statuses = status.read_all(sweep_dir)
    tracker = tracker_for(config.tracking.uri, _mlruns_dir(config))
    run_id = json.loads(parent_file.read_text())["run_id"]
    running = f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = 'RUNNING'"
    dead = []
    for child in tracker.search_runs(config.tracking.experiment, running):
        dead.append(child.info.run_id)
        tracker.log_text(child.info.run_id, f"the sweep ended before this job did: {reason}", "error.txt")
        tracker.end_run(child.info.run_id, run_status)
    tracker.set_tags(run_id, {"jobs": str(len(statuses)), "failed_jobs": str(sum(not s.ok for s in statuses))})
    tracker.log_text(run_id, f"{reason}\n{_summary(statuses)}", "sweep_summary.txt")
    tracker.end_run(run_id, run_status)
    if run_status == "FAILED":  # after Ctrl-C or SIGTERM, __main__ says what happened
        print(f"\ncfexp: {len(dead)} job run(s) ended without a result (their process died?) and are "
              f"marked FAILED: {', '.join(dead) or 'none'}", file=sys.stderr)
        _report(statuses, [s for s in statuses if not s.ok])


def _read_one(job_dir: Path) -> status.JobStatus | None:
    path = job_dir / status.STATUS_FILE
    return status.JobStatus(**json.loads(path.read_text())) if path.exists() else None


def _summary(statuses: list[status.JobStatus]) -> str:
    lines = [f"{len(statuses)} jobs, {sum(not s.ok for s in statuses)} failed"]
    for index, job in enumerate(statuses):
        lines.append(f"#{_number(job, index)} {job.status:<14} {' '.join(job.overrides) or 'defaults'}  "
                     + _whole(job.error, indent="    "))
    return "\n".join(lines)


def _whole(error: str | None, indent: str) -> str:
    """A job's error whole: its first line, then the rest (a server's or agent's last
    lines) indented under it, so a multi-line message is never cut at its colon."""
    first, *rest = (error or "").splitlines() or [""]
    return "\n".join([first, *(indent + line for line in rest)])


def _number(job: status.JobStatus, index: int) -> str:
    """The job's folder under the sweep (its number in the run order), else its index."""
    return job.folder if job.folder is not None else str(index)


def _report(statuses: list[status.JobStatus], failed: list[status.JobStatus]) -> None:
    if not statuses:
        Outcome.exit_code = 1
        print("cfexp: no job recorded a status (see the log above)", file=sys.stderr)
        return
    if not failed:
        Outcome.exit_code = 0
        return
    invalid = all(s.status == status.INVALID_CONFIG for s in failed)
    Outcome.exit_code = 2 if invalid and len(failed) == len(statuses) else 1
    print(f"\ncfexp: {len(failed)} of {len(statuses)} job(s) failed:", file=sys.stderr)
    for job in failed:
        where = f" #{job.folder}" if job.folder is not None else ""
        print(f"  - [{job.status}]{where} {' '.join(job.overrides) or 'defaults'}: {_whole(job.error, '      ')}",
              file=sys.stderr)
