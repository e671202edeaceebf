"""From a validated config and running servers to the agent's spec.

The spec is the agent contract's input (docs/record-schema.md): the same
:class:`~cfexp.agents.spec.Spec` for a Python or a Rust agent, built here and
written by the runner with ``Spec.write``.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from cfexp.agents.spec import AgentSpec, Spec
from cfexp.backends.base import ServerInstance
from cfexp.config.schema import CfexpConfig
from cfexp.data import DATA_DIR
from cfexp.vocab import Api, MultiMode, OptionsMode, PromptCache, Runtime, Scenario


def agent_options(cfg: CfexpConfig, index: int) -> dict[str, Any] | None:
    """Options agent ``index`` sends with each call; None = server defaults (baseline).

    multi_agent modes: ``baseline_vs_chimera`` gives agent_0 server defaults
    and the others the configured options; ``chimera_hetero`` applies
    ``scenario.per_agent`` on top of the configured options. Agent i's seed is
    ``seed + i``, the same in every phase of the job. An option set to null
    (``top_p=null``) is not sent: the server uses its own value.
    """
    scenario = cfg.scenario
    if cfg.options_mode == OptionsMode.server_defaults:
        return None
    if scenario.name == Scenario.multi_agent and scenario.mode == MultiMode.baseline_vs_chimera and index == 0:
        return None
    gpu_layers, ctx, temperature = cfg.gpu_layers, cfg.ctx, cfg.temperature
    override = scenario.per_agent.get(f"agent_{index}") if scenario.mode == MultiMode.chimera_hetero else None
    if override is not None:
        gpu_layers = override.gpu_layers if override.gpu_layers is not None else gpu_layers
        ctx = override.ctx if override.ctx is not None else ctx
        temperature = override.temperature if override.temperature is not None else temperature
    options: dict[str, Any] = {
        "num_gpu": gpu_layers,
        "num_ctx": ctx,
        "temperature": temperature,
        "top_p": cfg.top_p,
        "top_k": cfg.top_k,
        "repeat_penalty": cfg.repeat_penalty,
    }
    if cfg.seed is not None:
        options["seed"] = cfg.seed + index
    return {key: value for key, value in options.items() if value is not None}


def instance_agents(cfg: CfexpConfig, instance: int) -> list[int]:
    """The agents that use server instance ``instance`` (agent i uses instance i mod N)."""
    return [i for i in range(cfg.scenario.agents) if i % cfg.topology.instances == instance]


def instance_launch_options(cfg: CfexpConfig) -> list[tuple[int | None, int | None]]:
    """(gpu_layers, ctx) each server instance starts with: what its first agent asks for.

    An agent that sends no options (``options_mode=server_defaults``, agent_0
    of ``baseline_vs_chimera``) asks for the server's defaults: its instance
    starts with none set, ``(None, None)``, so the backend's own defaults apply
    (docs/reproduce-tr.md, "Server defaults") — never the options of the
    candidate it is compared with. Agents sharing an instance with other
    options make it reload between their requests, as Ollama does; an
    instance no agent uses gets the top-level options (none with server_defaults).
    """
    launch: list[tuple[int | None, int | None]] = []
    for instance in range(cfg.topology.instances):
        agents = instance_agents(cfg, instance)
        if agents:
            options = agent_options(cfg, agents[0])
            launch.append((None, None) if options is None else (int(options["num_gpu"]), int(options["num_ctx"])))
        elif cfg.options_mode == OptionsMode.server_defaults:
            launch.append((None, None))
        else:
            launch.append((cfg.gpu_layers, cfg.ctx))
    return launch


def build_spec(
    cfg: CfexpConfig,
    instances: Sequence[ServerInstance],
    run_id: str,
    agents: Sequence[int] | None = None,
) -> Spec:
    """The spec of all agents, or of the agents ``agents`` only (a solo phase).

    Each spec gets a fresh nonce salt under ``prompt_cache=defeat``, so no
    prompt of one agent process shares a prefix with any earlier process's:
    the solo and concurrent phases, and every job of a sweep, are equally cold.
    """
    personas = cfg.scenario.personas
    indices = range(cfg.scenario.agents) if agents is None else agents
    runtime = Runtime(cfg.runtime.name)
    return Spec(
        run_id=run_id,
        scenario=cfg.scenario.name,
        data_dir=str(DATA_DIR),
        num_predict=cfg.num_predict,
        call_timeout_s=cfg.timeouts.call_s,
        cache_nonce=secrets.token_hex(6) if cfg.prompt_cache == PromptCache.defeat else None,
        agents=tuple(
            AgentSpec(
                name=f"agent_{i}",
                persona=personas[i % len(personas)],
                base_url=instances[i % len(instances)].base_url,
                api=Api(instances[i % len(instances)].api),
                model=cfg.model.name,
                options=agent_options(cfg, i),
                instance=instances[i % len(instances)].index,
                api_key=cfg.backend.api_key,
            )
            for i in indices
        ),
        runtime=runtime if runtime.language == "python" else None,
    )
