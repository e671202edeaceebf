"""One job's measurement: its phases, the warm state before each, the metrics.

A job runs its agent process once or several times against the same running
server instances (docs/multi-agent.md, docs/metrics.md):

    [priming]  [solo_before: agent 0, 1, …]  measured  [solo_after: agent …, 1, 0]

- ``priming`` (``prompt_cache=allow`` only): one untimed run of the whole
  workflow, so every job's measured calls find the server's prefix cache as
  warm as every other job's — not only the first job of a sweep cold;
- ``solo_before`` / ``solo_after`` (``multi_agent``, ``scenario.solo``): each
  agent alone on its instance; the two solos bracket the concurrent phase, so
  their difference (drift) is the noise floor of speedup and efficiency. The
  solos after run in the reverse order of those before (ABBA), so each agent's
  two solos sit equally far from the concurrent phase and a slowdown linear in
  time cancels in their mean for every agent, not only on average over them;
- ``measured``: every agent together (or the one agent), sampled for system
  metrics; its calls are the run's call metrics.

Before every phase, each instance it uses gets warm-up calls with exactly the
options the phase's calls send (:mod:`cfexp.backends.warmup`), so no model load
lands inside a measured call — except the phase right after the priming, which
the priming itself warmed (:func:`needs_warm_up`); a measured call that paid
one anyway is counted and warned about. Metrics come from the records only (``cfexp.metrics``);
this module does the I/O around them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cfexp.agents.records import AgentRecord, IngestRecord, RecordLog, read_records
from cfexp.agents.runner import AgentCommand, AgentProcessResult, python_agent_command, run_agent
from cfexp.agents.spec import Spec
from cfexp.app import artifacts
from cfexp.app.agent_spec import agent_options, build_spec, instance_agents
from cfexp.backends.base import ServerInstance
from cfexp.backends.pool import check_alive
from cfexp.backends.warmup import WarmupTarget, warm_up
from cfexp.config.schema import CfexpConfig
from cfexp.errors import AgentError, CfexpError
from cfexp.metrics.calls import MeasuredCall, measure_calls
from cfexp.metrics.catalog import LOAD_THRESHOLD_MS
from cfexp.metrics.multi import AgentPhase, ContentionRule, agent_phases, multi_agent_metrics
from cfexp.metrics.runs import (
    ProcessMeasurement,
    report_quality,
    summarize_calls,
    summarize_ingest,
    summarize_process,
)
from cfexp.monitoring import SystemSampler
from cfexp.vocab import Language, PromptCache, Scenario, SoloPhases

log = logging.getLogger(__name__)

SYSTEM_METRICS_FILE = "system_metrics.jsonl"
# Every phase but the measured one writes into its own folder below this one.
PHASES_DIR = "phases"
MEASURED = "measured"


@dataclass
class JobOutcome:
    """What a job produced, successful or not."""

    metrics: dict[str, float] = field(default_factory=dict)
    # About the agent binary (Rust: size, profile, rustc).
    tags: dict[str, str] = field(default_factory=dict)
    # None when every call and agent succeeded.
    failure: str | None = None
    # Why the numbers are doubtful (the run's measurement_warnings tag).
    warnings: list[str] = field(default_factory=list)
    # Metrics outside their physical range: reported, never ranked.
    out_of_range: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Phase:
    """One run of the agent process in a job."""

    label: str  # measured | solo_before | solo_after | priming
    # The agents it runs (indices); None = all of them.
    agents: tuple[int, ...] | None
    folder: Path

    @property
    def solo(self) -> bool:
        return self.label.startswith("solo_")


@dataclass
class AgentRun:
    """One agent process run and the records it left."""

    phase: Phase
    result: AgentProcessResult
    log: RecordLog
    calls: list[MeasuredCall]


def plan_phases(cfg: CfexpConfig, job_dir: Path) -> list[Phase]:
    """The phases of a job, in the order they run (module docstring)."""
    phases: list[Phase] = []
    if cfg.prompt_cache == PromptCache.allow:
        phases.append(Phase("priming", None, job_dir / PHASES_DIR / "priming"))
    solo = cfg.scenario.solo if cfg.scenario.name == Scenario.multi_agent else None
    agents = range(cfg.scenario.agents)
    if solo in (SoloPhases.before, SoloPhases.both):
        phases += [Phase("solo_before", (i,), job_dir / PHASES_DIR / f"solo_before_agent_{i}") for i in agents]
    phases.append(Phase(MEASURED, None, job_dir))
    if solo in (SoloPhases.after, SoloPhases.both):
        # Mirrored (module docstring): agent i's solos are then centred on the concurrent phase.
        phases += [
            Phase("solo_after", (i,), job_dir / PHASES_DIR / f"solo_after_agent_{i}") for i in reversed(agents)
        ]
    return phases


def agent_command(cfg: CfexpConfig) -> AgentCommand:
    if cfg.language == Language.python:
        return python_agent_command(cfg.runtime.name)
    from cfexp.agents.rust_build import rust_agent_command  # cargo only when asked for

    return rust_agent_command(cfg.runtime.name)


def warmup_targets(cfg: CfexpConfig, instances: Sequence[ServerInstance], phase: Phase) -> list[WarmupTarget]:
    """Each instance the phase uses, with the options its first agent there will send."""
    targets = []
    for instance in instances:
        agents = [i for i in instance_agents(cfg, instance.index) if phase.agents is None or i in phase.agents]
        if agents:
            targets.append(WarmupTarget(instance, agent_options(cfg, agents[0])))
    return targets


def needs_warm_up(cfg: CfexpConfig, phase: Phase, previous: Phase | None) -> bool:
    """Whether ``phase`` gets warm-up calls first (module docstring).

    Not when it runs right after the priming, with the same agents: the
    priming sent exactly its calls, with its options, so the instances are
    loaded as it needs — and a warm-up would replace what the priming left in
    the prefix cache (a one-slot server keeps one prompt), so the measured
    calls of ``prompt_cache=allow`` would run cold. Agents sharing an instance
    with different launch options reload it between them anyway; they keep
    their warm-up, so the phase's first agent is loaded first.
    """
    if not cfg.topology.warmup_calls:
        return False
    if previous is None or previous.label != "priming" or previous.agents != phase.agents:
        return True
    for instance in range(cfg.topology.instances):
        agents = [i for i in instance_agents(cfg, instance) if phase.agents is None or i in phase.agents]
        if len({_launch_options(agent_options(cfg, i)) for i in agents}) > 1:
            return True
    return False


def _launch_options(options: dict[str, object] | None) -> tuple[object, object] | None:
    """What makes a server reload: num_ctx and num_gpu (None = its defaults)."""
    return None if options is None else (options.get("num_ctx"), options.get("num_gpu"))


def measure(cfg: CfexpConfig, instances: list[ServerInstance], job_dir: Path, run_id: str) -> JobOutcome:
    command = agent_command(cfg)
    runs: list[AgentRun] = []
    warmup_loads: list[float] = []
    warmup_problems: list[str] = []
    samples = None
    stopped: CfexpError | None = None
    previous: Phase | None = None
    for phase in plan_phases(cfg, job_dir):
        if needs_warm_up(cfg, phase, previous):
            warmed = warm_up(
                warmup_targets(cfg, instances, phase), cfg.model.name, cfg.topology.warmup_calls,
                min(cfg.timeouts.call_s, cfg.timeouts.run_s), cfg.backend.api_key,
            )  # fmt: skip
            if warmed.load_ms is not None:
                warmup_loads.append(warmed.load_ms)
            warmup_problems += warmed.problems
        spec = build_spec(cfg, instances, run_id, phase.agents)
        sampler = _sampler(cfg, instances) if phase.label == MEASURED else None
        try:
            run = _run(cfg, command, spec, phase, instances, sampler)
        finally:
            if sampler is not None:
                samples = sampler.stop()
        runs.append(run)
        previous = phase
        stopped = run.result.stopped_by
        if stopped is not None:
            break  # a server died: what ran is recorded, nothing more can be measured

    outcome = JobOutcome(tags=command.build_info, warnings=warmup_problems)
    measured = next((r for r in runs if r.phase.label == MEASURED), None)
    if measured is not None:
        outcome.metrics.update(_run_metrics(measured))
    if warmup_loads:
        outcome.metrics["warmup_load_ms"] = max(warmup_loads)
    if samples is not None:
        outcome.metrics.update(samples.summary())
        with (job_dir / SYSTEM_METRICS_FILE).open("w") as out:
            for row in samples.to_rows():
                out.write(json.dumps(row) + "\n")
    if cfg.scenario.name == Scenario.multi_agent and measured is not None:
        _multi_agent(cfg, measured, [r for r in runs if r.phase.solo], outcome)
    _load_warnings(runs, outcome)
    failures = [f"{r.phase.folder.name if r.phase.label != MEASURED else 'measured'}: {why}"
                for r in runs if (why := _failure(r))]  # fmt: skip
    if stopped is not None:
        failures.insert(0, str(stopped))
    outcome.failure = "\n".join(failures) or None
    return outcome


def _sampler(cfg: CfexpConfig, instances: Sequence[ServerInstance]) -> SystemSampler | None:
    if not cfg.topology.sample_interval_s:
        return None
    sampler = SystemSampler(interval_s=cfg.topology.sample_interval_s)
    for instance in instances:
        if instance.process is not None:
            sampler.watch(f"server{instance.index}", instance.process.pid)
    sampler.start()
    return sampler


def _run(
    cfg: CfexpConfig,
    command: AgentCommand,
    spec: Spec,
    phase: Phase,
    instances: list[ServerInstance],
    sampler: SystemSampler | None,
) -> AgentRun:
    result = run_agent(
        command,
        spec,
        phase.folder,
        timeout_s=cfg.timeouts.run_s,
        watch=lambda: check_alive(instances),
        on_spawn=_watch_agent(sampler),
    )
    if result.stopped_by is None:
        try:
            check_alive(instances)  # a server that died at the very end still fails the job
        except CfexpError as exc:
            result.stopped_by = exc
    log_ = read_records(result.records_path)
    if not log_.records and result.stopped_by is None:
        raise AgentError(
            f"the agent wrote no records (exit code {result.exit_code}, signal {result.signal}). "
            f"Its stderr:\n{result.stderr_tail()}"
        )
    calls = measure_calls(log_.calls)
    artifacts.write_records(phase.folder, log_.records, calls)
    artifacts.write_texts(phase.folder, calls)
    return AgentRun(phase=phase, result=result, log=log_, calls=calls)


def _watch_agent(sampler: SystemSampler | None) -> Callable[[int], None]:
    """What to do with the agent's pid once it runs: sample it with the servers."""

    def watch(pid: int) -> None:
        if sampler is not None:
            sampler.watch("agent", pid)

    return watch


def _run_metrics(run: AgentRun) -> dict[str, float]:
    call_metrics = summarize_calls(run.calls)
    process = ProcessMeasurement(
        t_spawn_ns=run.result.t_spawn_ns,
        peak_rss_mb=run.result.peak_rss_mb,
        cpu_ms=run.result.cpu_ms,
        wall_ms=run.result.wall_ms,
    )
    return {
        **call_metrics,
        **summarize_ingest(run.log.of_kind(IngestRecord)),
        **summarize_process(process, run.log.ready, call_metrics["output_tokens_total"]),
        **report_quality(run.calls),
    }


def _multi_agent(cfg: CfexpConfig, measured: AgentRun, solo_runs: list[AgentRun], outcome: JobOutcome) -> None:
    solos: dict[str, list[AgentPhase]] = {}
    for run in solo_runs:  # in the order they ran: before, then after
        for name, phase in agent_phases(run.log.of_kind(AgentRecord), run.calls).items():
            solos.setdefault(name, []).append(phase)
    labels = ("after",) if cfg.scenario.solo == SoloPhases.after else ("before", "after")
    result = multi_agent_metrics(
        agent_phases(measured.log.of_kind(AgentRecord), measured.calls),
        solos,
        ContentionRule(cfg.scenario.contention_threshold_pct, cfg.scenario.drift_warn_pct),
        solo_labels=labels,
    )
    outcome.metrics.update(result.metrics)
    outcome.warnings += result.warnings
    outcome.out_of_range += result.out_of_range


def _load_warnings(runs: list[AgentRun], outcome: JobOutcome) -> None:
    """Measured calls (solo phases included) that paid a model load, and truncated prompts."""
    timed = [c for r in runs if r.phase.label != "priming" for c in r.calls if c.success]
    loaded = [c for c in timed if (c.metrics.server_load_ms or 0.0) >= LOAD_THRESHOLD_MS]
    outcome.metrics["calls_with_load"] = float(len(loaded))
    if loaded:
        worst = max(c.metrics.server_load_ms or 0.0 for c in loaded)
        outcome.warnings.append(
            f"{len(loaded)} measured call(s) paid a model load (up to {worst:.0f} ms): their agents' "
            "options differ on one instance (it reloads between them), or the warm-up did not hold"
        )
    truncated = [c for c in timed if c.metrics.prompt_truncated_tokens]
    if truncated:
        dropped = max(c.metrics.prompt_truncated_tokens or 0 for c in truncated)
        outcome.warnings.append(
            f"{len(truncated)} prompt(s) did not fit the context and were truncated by the server "
            f"(up to {dropped} tokens dropped): raise ctx to measure the whole prompt"
        )


def _failure(run: AgentRun) -> str | None:
    """Why an agent run failed, in one paragraph; None when it did not."""
    result = run.result
    if result.stopped_by is not None:
        return None  # said once, first, by measure()
    if result.timed_out:
        return f"the agent exceeded timeouts.run_s and was stopped. Its stderr:\n{result.stderr_tail()}"
    if result.signal is not None:
        return f"the agent was killed by signal {result.signal}. Its stderr:\n{result.stderr_tail()}"
    failed = [c.record for c in run.calls if not c.success]
    if failed:
        first = failed[0]
        return (
            f"{len(failed)} of {len(run.calls)} calls failed; first: {first.agent} "
            f"{first.step} <error_kind={first.error_kind} url={first.base_url}> {first.error}"
        )
    if not run.log.complete:
        return (
            f"the agent ended without its final record (exit code {result.exit_code}). "
            f"Its stderr:\n{result.stderr_tail()}"
        )
    done = run.log.done
    if result.exit_code != 0 or done is None or not done.success:
        return f"the agent reported failure (exit code {result.exit_code}). Its stderr:\n{result.stderr_tail()}"
    return None
