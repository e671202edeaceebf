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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cfexp.agents.records import read_records
from cfexp.agents.runner import AgentCommand, AgentProcessResult, python_agent_command, run_agent
from cfexp.app import artifacts, status
from cfexp.app.agent_spec import build_spec
from cfexp.app.provenance import run_tags
from cfexp.config.schema import CfexpConfig
from cfexp.config.validate import to_settings
from cfexp.errors import AgentError, CfexpError, ConfigError
from cfexp.metrics.calls import derive_call
from cfexp.metrics.rubric import score_report
from cfexp.metrics.runs import (
    ProcessMeasurement,
    summarize_calls,
    summarize_ingest,
    summarize_process,
)
from cfexp.servers.base import ServerInstance
from cfexp.servers.pool import POOL, check_alive
from cfexp.tracking.jobs import JobRun

log = logging.getLogger(__name__)


@dataclass
class JobOutcome:
    """What a job produced, successful or not."""

    metrics: dict[str, float] = field(default_factory=dict)
    # About the agent binary (Rust: size, profile, rustc).
    tags: dict[str, str] = field(default_factory=dict)
    # None when every call and agent succeeded.
    failure: str | None = None


def run_job(cfg: DictConfig) -> dict[str, float] | None:
    """Hydra task function. Returns the run's metrics (None when it failed)."""
    hydra_cfg = HydraConfig.get()
    job_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    try:
        settings = to_settings(cfg)
    except ConfigError as exc:
        log.error("%s", exc)
        status.write(job_dir, status.INVALID_CONFIG, overrides, error=str(exc))
        return None

    job = JobRun.start(settings, cfg, overrides, hydra_cfg)
    instances: list[ServerInstance] = []
    try:
        instances = POOL.acquire(settings, _servers_dir(hydra_cfg, job_dir))
        job.set_tags(run_tags(settings, instances))
        outcome = _measure(settings, instances, job_dir, job.run_id)
        job.log_metrics(outcome.metrics)
        job.set_tags(outcome.tags)
        job.log_job_artifacts(job_dir)
        if outcome.failure:
            log.error("job failed: %s", outcome.failure)
            job.fail(outcome.failure)
            status.write(job_dir, status.FAILED, overrides, error=outcome.failure, run_id=job.run_id)
            return None
        job.finish()
        status.write(job_dir, status.FINISHED, overrides, run_id=job.run_id)
        return outcome.metrics
    except CfexpError as exc:
        log.error("%s", exc)
        POOL.close()  # a server may be broken: never reuse it
        job.log_job_artifacts(job_dir)
        job.fail(str(exc))
        status.write(job_dir, status.FAILED, overrides, error=str(exc), run_id=job.run_id)
        return None
    except KeyboardInterrupt:
        POOL.close()
        job.kill("interrupted by the user")
        status.write(job_dir, status.KILLED, overrides, error="interrupted", run_id=job.run_id)
        raise
    except Exception as exc:  # a bug in cfexp: still recorded, still cleaned up
        log.exception("unexpected error")
        POOL.close()
        job.fail(f"unexpected error: {exc!r}\n\n{traceback.format_exc()}")
        status.write(job_dir, status.FAILED, overrides, error=repr(exc), run_id=job.run_id)
        return None
    finally:
        POOL.release(instances)


def _servers_dir(hydra_cfg: Any, job_dir: Path) -> Path:
    """Server logs live beside the jobs that may share them."""
    if hydra_cfg.mode is not None and str(hydra_cfg.mode) == "RunMode.MULTIRUN":
        return Path(hydra_cfg.sweep.dir) / "servers"
    return job_dir / "servers"


def agent_command(cfg: CfexpConfig) -> AgentCommand:
    if cfg.language.name == "python":
        return python_agent_command(cfg.runtime.name)
    from cfexp.agents.rust_build import rust_agent_command  # cargo only when asked for

    return rust_agent_command(cfg.runtime.name)


def _measure(
    cfg: CfexpConfig, instances: list[ServerInstance], job_dir: Path, run_id: str
) -> JobOutcome:
    command = agent_command(cfg)
    spec = build_spec(cfg, instances, run_id=run_id)
    result = run_agent(
        command,
        spec,
        job_dir,
        timeout_s=cfg.timeouts.run_s,
        watch=lambda: check_alive(instances),
    )
    check_alive(instances)  # a server that died at the very end still fails the job
    records, truncated = read_records(result.records_path)
    calls = [{**r, **derive_call(r)} for r in records if r.get("kind") == "call"]
    artifacts.write_records(job_dir, records, calls)
    artifacts.write_texts(job_dir, calls)
    ready = next((r for r in records if r.get("kind") == "ready"), None)
    call_metrics = summarize_calls(calls)
    metrics = {
        **call_metrics,
        **summarize_ingest(r for r in records if r.get("kind") == "ingest"),
        **summarize_process(
            ProcessMeasurement(
                startup_ms=(ready["t_ready_ns"] - result.t_spawn_ns) / 1e6 if ready else None,
                peak_rss_mb=result.peak_rss_mb,
                cpu_ms=result.cpu_ms,
                wall_ms=result.wall_ms,
            ),
            call_metrics["output_tokens_total"],
        ),
        **_report_quality(calls),
    }
    return JobOutcome(
        metrics=metrics, tags=command.build_info, failure=_failure(result, records, calls, truncated)
    )


def _report_quality(calls: list[dict[str, Any]]) -> dict[str, float]:
    """TR109's keyword rubric on the generated report (mean over agents)."""
    reports = [c["text"] for c in calls if c.get("step") == "report" and c.get("success")]
    if not reports:
        return {}
    scores = [score_report(text) for text in reports]
    return {key: sum(s[key] for s in scores) / len(scores) for key in scores[0]}


def _failure(
    result: AgentProcessResult,
    records: list[dict[str, Any]],
    calls: list[dict[str, Any]],
    truncated: bool,
) -> str | None:
    """Why the job failed, in one paragraph; None when it did not."""
    if result.timed_out:
        return f"the agent exceeded timeouts.run_s and was stopped. Its stderr:\n{result.stderr_tail()}"
    if result.signal is not None:
        return f"the agent was killed by signal {result.signal}. Its stderr:\n{result.stderr_tail()}"
    if not records:
        raise AgentError(
            f"the agent wrote no records (exit code {result.exit_code}). Its stderr:\n{result.stderr_tail()}"
        )
    failed = [c for c in calls if not c.get("success")]
    if failed:
        first = failed[0]
        return (
            f"{len(failed)} of {len(calls)} calls failed; first: {first.get('agent')} "
            f"{first.get('step')} <error_kind={first.get('error_kind')} url={first.get('base_url')}> "
            f"{first.get('error')}"
        )
    done = next((r for r in records if r.get("kind") == "done"), None)
    if done is None or truncated:
        return f"the agent ended without its final record (exit code {result.exit_code}). Its stderr:\n{result.stderr_tail()}"
    if result.exit_code != 0 or not done.get("success"):
        return f"the agent reported failure (exit code {result.exit_code}). Its stderr:\n{result.stderr_tail()}"
    return None
