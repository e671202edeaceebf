"""From a validated config and running servers to the agent's spec.

The spec is the agent contract's input (docs/record-schema.md): the same
document for a Python or a Rust agent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cfexp.config.schema import CfexpConfig
from cfexp.servers.base import ServerInstance

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SPEC_SCHEMA_VERSION = 1


def agent_options(cfg: CfexpConfig, index: int) -> dict[str, Any] | None:
    """Options agent ``index`` sends with each call; None = server defaults (baseline).

    multi_agent modes: ``baseline_vs_chimera`` gives agent_0 server defaults
    and the others the configured options; ``chimera_hetero`` applies
    ``scenario.per_agent`` on top of the configured options.
    """
    scenario = cfg.scenario
    if cfg.options_mode == "server_defaults":
        return None
    if scenario.name == "multi_agent" and scenario.mode == "baseline_vs_chimera" and index == 0:
        return None
    gpu_layers, ctx, temperature = cfg.gpu_layers, cfg.ctx, cfg.temperature
    override = scenario.per_agent.get(f"agent_{index}") if scenario.mode == "chimera_hetero" else None
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
        options["seed"] = cfg.seed
    return options


def instance_launch_options(cfg: CfexpConfig) -> list[tuple[int, int]]:
    """(gpu_layers, ctx) each server instance starts with: those of its first agent.

    Agents sharing an instance with other options make it reload per request,
    as Ollama does; an instance no agent uses gets the top-level options.
    """
    count = cfg.topology.instances
    launch = []
    for instance in range(count):
        first_agent = next((i for i in range(cfg.scenario.agents) if i % count == instance), None)
        options = agent_options(cfg, first_agent) if first_agent is not None else None
        if options is None:
            launch.append((cfg.gpu_layers, cfg.ctx))
        else:
            launch.append((int(options["num_gpu"]), int(options["num_ctx"])))
    return launch


def build_spec(
    cfg: CfexpConfig,
    instances: list[ServerInstance],
    run_id: str,
    only_agent: int | None = None,
) -> dict[str, Any]:
    """The spec of all agents, or of agent ``only_agent`` alone (its solo run)."""
    personas = cfg.scenario.personas
    indices = range(cfg.scenario.agents) if only_agent is None else [only_agent]
    agents = [
        {
            "name": f"agent_{i}",
            "persona": personas[i % len(personas)],
            "base_url": instances[i % len(instances)].base_url,
            "api": instances[i % len(instances)].api,
            "model": cfg.model.name,
            "options": agent_options(cfg, i),
            "instance": instances[i % len(instances)].index,
            "api_key": cfg.backend.api_key,
        }
        for i in indices
    ]
    return {
        "schema_version": SPEC_SCHEMA_VERSION,
        "run_id": run_id,
        "scenario": cfg.scenario.name,
        "data_dir": str(DATA_DIR),
        "num_predict": cfg.num_predict,
        "call_timeout_s": cfg.timeouts.call_s,
        "defeat_prompt_cache": cfg.defeat_prompt_cache,
        "agents": agents,
    }
