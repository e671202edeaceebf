"""One job's measurement: warm-up, solo phase, the measured run, metrics.

Phases, all against the same running server instances:

1. warm-up (``topology.warmup_calls``): untimed calls to each instance;
2. solo phase (``multi_agent`` with ``scenario.solo_baseline``): each agent
   alone on its instance, in its own agent process, for true parallel
   efficiency and contention;
3. the measured run: the agent process with every agent, sampled for system
   metrics while it runs.

Metrics come from the records only (``cfexp.metrics``); this module does the
I/O around them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfexp.agents.records import read_records
from cfexp.agents.runner import AgentCommand, AgentProcessResult, python_agent_command, run_agent
from cfexp.app import artifacts
from cfexp.app.agent_spec import build_spec
from cfexp.config.schema import CfexpConfig
from cfexp.errors import AgentError
from cfexp.metrics.calls import derive_call
from cfexp.metrics.multi import agent_timings, multi_agent_metrics
from cfexp.metrics.rubric import score_report
from cfexp.metrics.runs import ProcessMeasurement, summarize_calls, summarize_ingest, summarize_process
from cfexp.monitoring import SystemSampler
from cfexp.servers.base import ServerInstance
from cfexp.servers.pool import check_alive
from cfexp.servers.warmup import warm_up

log = logging.getLogger(__name__)

SYSTEM_METRICS_FILE = "system_metrics.jsonl"


@dataclass
class JobOutcome:
    """What a job produced, successful or not."""

    metrics: dict[str, float] = field(default_factory=dict)
    # About the agent binary (Rust: size, profile, rustc).
    tags: dict[str, str] = field(default_factory=dict)
    # None when every call and agent succeeded.
    failure: str | None = None


@dataclass
class AgentRun:
    """One agent process run and the records it left."""

    result: AgentProcessResult
    records: list[dict[str, Any]]
    truncated: bool
    # Call records with their derived metrics.
    calls: list[dict[str, Any]]


def agent_command(cfg: CfexpConfig) -> AgentCommand:
    if cfg.language.name == "python":
        return python_agent_command(cfg.runtime.name)
    from cfexp.agents.rust_build import rust_agent_command  # cargo only when asked for

    return rust_agent_command(cfg.runtime.name)


def measure(cfg: CfexpConfig, instances: list[ServerInstance], job_dir: Path, run_id: str) -> JobOutcome:
    command = agent_command(cfg)
    multi = cfg.scenario.name == "multi_agent"
    warmup_calls = cfg.topology.warmup_calls
    if multi and cfg.scenario.solo_baseline:
        # Solo and concurrent phases must start from the same state: the model
        # loaded. Otherwise the first solo run alone pays the load, and the
        # "speedup" credits the concurrent phase with it.
        warmup_calls = max(warmup_calls, 1)
    warmup_load_ms = None
    if warmup_calls:
        warmup_load_ms = warm_up(instances, cfg.model.name, warmup_calls, cfg.timeouts.call_s)

    solo: dict[str, AgentRun] = {}
    if multi and cfg.scenario.solo_baseline:
        for index in range(cfg.scenario.agents):
            spec = build_spec(cfg, instances, run_id, only_agent=index)
            solo[f"agent_{index}"] = _run(cfg, command, spec, job_dir / f"solo_agent_{index}", instances)

    sampler = SystemSampler(interval_s=cfg.topology.sample_interval_s) if cfg.topology.sample_interval_s else None
    if sampler is not None:
        for instance in instances:
            if instance.process is not None:
                sampler.watch(f"server{instance.index}", instance.process.pid)
        sampler.start()
    try:
        run = _run(cfg, command, build_spec(cfg, instances, run_id), job_dir, instances, sampler)
    finally:
        samples = sampler.stop() if sampler is not None else None

    metrics = _run_metrics(run)
    if warmup_load_ms is not None:
        metrics["warmup_load_ms"] = warmup_load_ms
    if samples is not None:
        metrics.update(samples.summary())
        with (job_dir / SYSTEM_METRICS_FILE).open("w") as out:
            for row in samples.to_rows():
                out.write(json.dumps(row) + "\n")
    if multi:
        solo_timings = {}
        for alone in solo.values():
            solo_timings.update(agent_timings(alone.records, alone.calls))
        metrics.update(
            multi_agent_metrics(
                agent_timings(run.records, run.calls),
                solo_timings or None,
                cfg.scenario.contention_threshold_pct,
            )
        )
    failures = [f"solo {name}: {why}" for name, r in solo.items() if (why := _failure(r))]
    if why := _failure(run):
        failures.insert(0, why)
    return JobOutcome(metrics=metrics, tags=command.build_info, failure="\n".join(failures) or None)


def _run(
    cfg: CfexpConfig,
    command: AgentCommand,
    spec: dict[str, Any],
    job_dir: Path,
    instances: list[ServerInstance],
    sampler: SystemSampler | None = None,
) -> AgentRun:
    result = run_agent(
        command,
        spec,
        job_dir,
        timeout_s=cfg.timeouts.run_s,
        watch=lambda: check_alive(instances),
        on_spawn=(lambda pid: sampler.watch("agent", pid)) if sampler is not None else (lambda pid: None),
    )
    check_alive(instances)  # a server that died at the very end still fails the job
    records, truncated = read_records(result.records_path)
    if not records:
        raise AgentError(
            f"the agent wrote no records (exit code {result.exit_code}, signal {result.signal}). "
            f"Its stderr:\n{result.stderr_tail()}"
        )
    calls = [{**r, **derive_call(r)} for r in records if r.get("kind") == "call"]
    artifacts.write_records(job_dir, records, calls)
    artifacts.write_texts(job_dir, calls)
    return AgentRun(result=result, records=records, truncated=truncated, calls=calls)


def _run_metrics(run: AgentRun) -> dict[str, float]:
    ready = next((r for r in run.records if r.get("kind") == "ready"), None)
    call_metrics = summarize_calls(run.calls)
    return {
        **call_metrics,
        **summarize_ingest(r for r in run.records if r.get("kind") == "ingest"),
        **summarize_process(
            ProcessMeasurement(
                startup_ms=(ready["t_ready_ns"] - run.result.t_spawn_ns) / 1e6 if ready else None,
                peak_rss_mb=run.result.peak_rss_mb,
                cpu_ms=run.result.cpu_ms,
                wall_ms=run.result.wall_ms,
            ),
            call_metrics["output_tokens_total"],
        ),
        **_report_quality(run.calls),
    }


def _report_quality(calls: list[dict[str, Any]]) -> dict[str, float]:
    """TR109's keyword rubric on the generated reports (mean over agents)."""
    reports = [c["text"] for c in calls if c.get("step") == "report" and c.get("success")]
    if not reports:
        return {}
    scores = [score_report(text) for text in reports]
    return {key: sum(s[key] for s in scores) / len(scores) for key in scores[0]}


def _failure(run: AgentRun) -> str | None:
    """Why an agent run failed, in one paragraph; None when it did not."""
    result = run.result
    if result.timed_out:
        return f"the agent exceeded timeouts.run_s and was stopped. Its stderr:\n{result.stderr_tail()}"
    if result.signal is not None:
        return f"the agent was killed by signal {result.signal}. Its stderr:\n{result.stderr_tail()}"
    failed = [c for c in run.calls if not c.get("success")]
    if failed:
        first = failed[0]
        return (
            f"{len(failed)} of {len(run.calls)} calls failed; first: {first.get('agent')} "
            f"{first.get('step')} <error_kind={first.get('error_kind')} url={first.get('base_url')}> "
            f"{first.get('error')}"
        )
    done = next((r for r in run.records if r.get("kind") == "done"), None)
    if done is None or run.truncated:
        return (
            f"the agent ended without its final record (exit code {result.exit_code}). "
            f"Its stderr:\n{result.stderr_tail()}"
        )
    if result.exit_code != 0 or not done.get("success"):
        return f"the agent reported failure (exit code {result.exit_code}). Its stderr:\n{result.stderr_tail()}"
    return None
