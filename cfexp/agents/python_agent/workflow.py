"""The agent workflows: single_inference, single_agent, multi_agent.

Each agent of the spec runs as its own asyncio task; ``asyncio.gather`` starts
them together and nothing (no lock, no shared queue) serialises them: agents
only share the record writer, whose writes are synchronous single lines. Each
agent has its own HTTP client, i.e. its own kept-alive connection.

    single_inference:  call(single_inference)
    single_agent / multi_agent, per agent:
        ingest corpus -> call(analysis) -> parse -> call(report)

A workflow stops at its first failed call and always ends with an ``agent``
record. The text rules live in :mod:`prompts`, the HTTP call in :mod:`client`.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic_ns
from typing import Any

import httpx

from cfexp.agents.python_agent.client import CallRequest, stream_call
from cfexp.agents.python_agent.prompts import (
    FILE_TYPES,
    CorpusFile,
    PromptTemplate,
    ascii_lower,
    build_messages,
    data_summary,
    format_items,
    parse_analysis,
)
from cfexp.agents.records import AgentRecord, CallRecord, IngestRecord, RecordWriter
from cfexp.agents.spec import AgentSpec, Spec, nonce_text
from cfexp.errors import ConfigError
from cfexp.vocab import Scenario, Step


@dataclass(frozen=True)
class Persona:
    # A label for people and logs; prompts use only `instructions`.
    role: str
    instructions: str


@dataclass(frozen=True)
class AgentData:
    """The data files, loaded once before ``ready``."""

    prompts: dict[Step, PromptTemplate]
    personas: dict[str, Persona]
    corpus_dir: Path


def load_data(spec: Spec) -> AgentData:
    """Read prompts.json and personas.json; raises ConfigError (exit 2) when unusable."""
    data_dir = Path(spec.data_dir)
    prompts_raw = _read_json(data_dir / "prompts.json")
    personas_raw = _read_json(data_dir / "personas.json")
    try:
        prompts = {
            step: PromptTemplate(system=prompts_raw[step]["system"], user=prompts_raw[step]["user"])
            for step in Step
        }
        personas = {
            name: Persona(role=p["role"], instructions=p["instructions"])
            for name, p in personas_raw.items()
        }
    except (KeyError, TypeError) as exc:
        raise ConfigError(
            f"malformed data files <data_dir={data_dir}>: missing {exc}; "
            "see docs/record-schema.md section 5"
        ) from exc
    for agent in spec.agents:
        if agent.persona not in personas:
            raise ConfigError(
                f"unknown persona <{agent.name}.persona={agent.persona}>: "
                f"personas.json has {', '.join(sorted(personas))}"
            )
    corpus_dir = data_dir / "corpus"
    if not corpus_dir.is_dir() and spec.scenario != Scenario.single_inference:
        raise ConfigError(f"no corpus folder <path={corpus_dir}>: data_dir must be cfexp/data")
    return AgentData(prompts=prompts, personas=personas, corpus_dir=corpus_dir)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load data file <path={path}>: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"data file is not a JSON object <path={path}>")
    return value


# --------------------------------------------------------------------- ingest


def _walk(folder: Path, prefix: str) -> list[tuple[str, Path]]:
    """Regular files below ``folder`` as ('a/b.csv', path); symlinks are not followed."""
    found: list[tuple[str, Path]] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            relative = f"{prefix}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                found += _walk(Path(entry.path), relative + "/")
            elif entry.is_file(follow_symlinks=False):
                found.append((relative, Path(entry.path)))
    return found


def read_corpus(corpus_dir: Path) -> list[CorpusFile]:
    """Every file whose name ends in ``.csv``/``.json``/``.md`` (any case), read in full."""
    files = []
    for relative, path in _walk(corpus_dir, ""):
        name = relative.rsplit("/", 1)[-1]
        kind = next((k for k in FILE_TYPES if ascii_lower(name).endswith("." + k)), None)
        if kind is None:
            continue
        content = path.read_bytes()
        text = content.decode("utf-8", errors="replace") if kind == "csv" else None
        files.append(CorpusFile(path=relative, size_bytes=len(content), kind=kind, text=text))
    return files


# ------------------------------------------------------------------ workflows


@dataclass
class RunContext:
    spec: Spec
    data: AgentData
    # By agent name: each agent's calls go over its own kept-alive connection.
    clients: dict[str, httpx.AsyncClient]
    writer: RecordWriter


@dataclass
class _AgentState:
    agent: AgentSpec
    t_start_ns: int
    calls: int = 0
    failed: CallRecord | None = None
    findings: list[str] = field(default_factory=list)
    recommendations: list[str] = field(default_factory=list)


async def run_all(ctx: RunContext) -> bool:
    """Run every agent of the spec concurrently; True when all succeeded."""
    results = await asyncio.gather(*(run_agent(ctx, agent) for agent in ctx.spec.agents))
    return all(results)


async def run_agent(ctx: RunContext, agent: AgentSpec) -> bool:
    state = _AgentState(agent=agent, t_start_ns=monotonic_ns())
    persona = ctx.data.personas[agent.persona]
    values = {"persona_instructions": persona.instructions}
    if ctx.spec.scenario == Scenario.single_inference:
        await _call(ctx, state, Step.single_inference, values)
    else:
        values["data_summary"] = _ingest(ctx, agent)
        analysis = await _call(ctx, state, Step.analysis, values)
        if analysis is not None:
            parsed = parse_analysis(analysis)
            state.findings, state.recommendations = parsed.findings, parsed.recommendations
            values["analysis"] = analysis
            values["findings"] = format_items(parsed.findings)
            values["recommendations"] = format_items(parsed.recommendations)
            await _call(ctx, state, Step.report, values)
    failed = state.failed
    ctx.writer.write(
        AgentRecord(
            run_id=ctx.spec.run_id,
            agent=agent.name,
            persona=agent.persona,
            instance=agent.instance,
            success=failed is None,
            error_kind=failed.error_kind if failed else None,
            error=failed.error if failed else None,
            t_start_ns=state.t_start_ns,
            t_end_ns=monotonic_ns(),
            findings=state.findings,
            recommendations=state.recommendations,
            calls=state.calls,
        )
    )
    return failed is None


def _ingest(ctx: RunContext, agent: AgentSpec) -> str:
    # Synchronous on purpose: ~20 small files take about a millisecond, less
    # than handing them to a thread would cost.
    t_start_ns = monotonic_ns()
    files = read_corpus(ctx.data.corpus_dir)
    summary = data_summary(files)
    ctx.writer.write(
        IngestRecord(
            run_id=ctx.spec.run_id,
            agent=agent.name,
            files=len(files),
            bytes=sum(f.size_bytes for f in files),
            files_by_type={kind: sum(1 for f in files if f.kind == kind) for kind in FILE_TYPES},
            t_start_ns=t_start_ns,
            t_end_ns=monotonic_ns(),
        )
    )
    return summary


async def _call(
    ctx: RunContext, state: _AgentState, step: Step, values: dict[str, str]
) -> str | None:
    """One call; returns its text, or None (and marks the workflow failed) on failure."""
    spec, agent = ctx.spec, state.agent
    call_index = state.calls
    nonce = None
    if spec.cache_nonce is not None:
        nonce = nonce_text(spec.cache_nonce, agent.name, call_index)
    request = CallRequest(
        run_id=spec.run_id,
        agent=agent,
        call_index=call_index,
        step=step,
        messages=build_messages(ctx.data.prompts[step], values, nonce or ""),
        num_predict=spec.num_predict,
        timeout_s=spec.call_timeout_s,
        prompt_nonce=nonce,
    )
    record = await stream_call(ctx.clients[agent.name], request)
    state.calls += 1
    ctx.writer.write(record)
    if not record.success:
        state.failed = record
        return None
    return record.text
