"""The Hydra task: one job = one experiment configuration measured once.

validate → servers up → agent process → records → metrics → MLflow → return
metrics (for sweepers). Every outcome is recorded: a job that fails still
leaves a FAILED MLflow run with its error as an artifact, a status file for
the sweep summary, and no process running. Only KeyboardInterrupt stops the
sweep (after marking the run KILLED).
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cfexp.app import artifacts, status
from cfexp.app.agent_spec import instance_launch_options
from cfexp.app.hydra_job import is_multirun, job_place, keep_secrets_out_of_files, settings_tree
from cfexp.app.measure import JobOutcome, measure
from cfexp.app.progress import key_metrics
from cfexp.app.provenance import run_tags, server_settings_tags
from cfexp.backends.base import ServerInstance
from cfexp.backends.pool import POOL, launch_specs
from cfexp.config.validate import to_settings
from cfexp.errors import CfexpError, ConfigError
from cfexp.tracking.jobs import JobRun
from cfexp.tracking.tags import OUT_OF_RANGE_TAG, WARNINGS_TAG

log = logging.getLogger(__name__)


def run_job(cfg: DictConfig) -> dict[str, float] | None:
    """Hydra task function. Returns the run's metrics (None when it failed)."""
    hydra_cfg = HydraConfig.get()
    place = job_place(hydra_cfg)
    job_dir, overrides = place.output_dir, place.overrides
    try:
        settings = to_settings(cfg)
    except ConfigError as exc:
        log.error("%s", exc)
        status.write(job_dir, status.INVALID_CONFIG, overrides, error=str(exc))
        return None

    keep_secrets_out_of_files(settings, hydra_cfg)  # also when the job is skipped
    config = settings_tree(settings)
    if settings.resume and (earlier := JobRun.finished_before(settings, config)) is not None:
        # Before any server starts; the earlier metrics still feed a sweeper.
        log.info("resume: this config already has FINISHED run %s; skipped", earlier.run_id)
        status.write(job_dir, status.SKIPPED, overrides, run_id=earlier.run_id, metrics=key_metrics(earlier.metrics))
        return earlier.metrics
    job = JobRun.start(settings, config, place)
    instances: list[ServerInstance] = []
    try:
        launches = launch_specs(settings, instance_launch_options(settings))
        instances = POOL.acquire(settings, _servers_dir(hydra_cfg, job_dir), launches)
        job.set_tags(run_tags(settings, instances))
        log_offsets = artifacts.server_log_offsets(instances)
        try:
            outcome = measure(settings, instances, job_dir, job.run_id)
            # What the servers ran with (a baseline: their own defaults), asked while they run.
            job.set_tags(server_settings_tags(settings, instances))
        finally:
            artifacts.copy_server_logs(instances, log_offsets, job_dir)
        job.set_tags({**outcome.tags, **_warning_tags(outcome)})
        job.log_metrics(outcome.metrics)  # with every tag, in one write
        job.log_job_artifacts(job_dir)
        if outcome.failure:
            log.error("job failed: %s", outcome.failure)
            job.fail(outcome.failure)
            status.write(job_dir, status.FAILED, overrides, error=outcome.failure, run_id=job.run_id,
                         metrics=key_metrics(outcome.metrics))
            return None
        job.finish()
        status.write(job_dir, status.FINISHED, overrides, run_id=job.run_id, metrics=key_metrics(outcome.metrics))
        return outcome.metrics
    except CfexpError as exc:
        log.error("%s", exc)
        POOL.close()  # a server may be broken: never reuse it
        job.log_job_artifacts(job_dir)
        job.fail(str(exc))
        status.write(job_dir, status.FAILED, overrides, error=str(exc), run_id=job.run_id)
        return None
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (cfexp.signals.Terminated)
        POOL.close()
        reason = str(exc) or "interrupted by the user (Ctrl-C)"
        job.kill(reason)
        status.write(job_dir, status.KILLED, overrides, error=reason, run_id=job.run_id)
        raise
    except Exception as exc:  # a bug in cfexp: still recorded, still cleaned up
        log.exception("unexpected error")
        POOL.close()
        job.fail(f"unexpected error: {exc!r}\n\n{traceback.format_exc()}")
        status.write(job_dir, status.FAILED, overrides, error=repr(exc), run_id=job.run_id)
        return None
    finally:
        POOL.release(instances)


def _warning_tags(outcome: JobOutcome) -> dict[str, str]:
    """What makes the run's numbers doubtful, for the report and the MLflow UI."""
    outcome.metrics["measurement_warnings"] = float(len(outcome.warnings))
    tags = {WARNINGS_TAG: " | ".join(outcome.warnings)} if outcome.warnings else {}
    if outcome.out_of_range:
        tags[OUT_OF_RANGE_TAG] = ",".join(outcome.out_of_range)
    for warning in outcome.warnings:
        log.warning("measurement warning: %s", warning)
    return tags


def _servers_dir(hydra_cfg: Any, job_dir: Path) -> Path:
    """Server logs live beside the jobs that may share them (in parallel jobs: their own)."""
    if is_multirun(hydra_cfg) and POOL.shared_across_jobs:
        return Path(hydra_cfg.sweep.dir) / "servers"
    return job_dir / "servers"
