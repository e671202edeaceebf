"""Hydra callback: the sweep's parent run, the failure summary, server shutdown.

- ``on_multirun_start``: create the parent MLflow run and write its id into
  the sweep folder, where every job (in any process) finds it.
- ``on_multirun_end`` / ``on_run_end``: stop servers kept for the sweep, read
  every job's status file, print a summary of what failed, close the parent
  run, and remember the outcome so ``python -m cfexp`` exits non-zero.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cfexp.app import status
from cfexp.redact import redact_overrides
from cfexp.servers.pool import POOL
from cfexp.tracking.jobs import PARENT_FILE, flatten, swept_keys, tracker_for

log = logging.getLogger(__name__)


class Outcome:
    """What the last run or sweep of this process ended with (read by __main__)."""

    exit_code = 0


def _mlruns_dir(config: DictConfig) -> Path:
    try:
        return Path(config.paths.mlruns_dir)
    except Exception:  # interpolation needs Hydra's runtime info, absent this early
        return Path(os.getcwd()) / "mlruns"


class CfexpCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        tracker = tracker_for(config.tracking.uri, _mlruns_dir(config))
        overrides = redact_overrides(config.hydra.overrides.task)
        run_id = tracker.start_run(
            config.tracking.experiment,
            run_name=f"sweep {sweep_dir.name}: {' '.join(overrides)}",
            tags={"cfexp.sweep": "parent", "overrides": " ".join(overrides), "sweep_dir": str(sweep_dir)},
        )
        tracker.log_params(run_id, flatten({"sweep": {"overrides": overrides}}))
        (sweep_dir / PARENT_FILE).write_text(
            json.dumps(
                {"run_id": run_id, "tracking_uri": tracker.uri, "swept_keys": swept_keys(overrides)},
                indent=2,
            )
        )
        log.info("MLflow parent run %s (%s)", run_id, tracker.uri)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
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
        _report(statuses, failed)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        POOL.close()
        job_dir = Path(config.hydra.runtime.output_dir)
        statuses = [s for s in [_read_one(job_dir)] if s is not None]
        _report(statuses, [s for s in statuses if not s.ok])


def _read_one(job_dir: Path) -> status.JobStatus | None:
    path = job_dir / status.STATUS_FILE
    return status.JobStatus(**json.loads(path.read_text())) if path.exists() else None


def _summary(statuses: list[status.JobStatus]) -> str:
    lines = [f"{len(statuses)} jobs, {sum(not s.ok for s in statuses)} failed"]
    for index, job in enumerate(statuses):
        first_line = (job.error or "").splitlines()[0] if job.error else ""
        lines.append(f"#{index} {job.status:<14} {' '.join(job.overrides) or 'defaults'}  {first_line}")
    return "\n".join(lines)


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
        first_line = (job.error or "").splitlines()[0] if job.error else ""
        print(f"  - [{job.status}] {' '.join(job.overrides) or 'defaults'}: {first_line}", file=sys.stderr)
