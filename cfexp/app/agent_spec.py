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


def model_options(cfg: CfexpConfig) -> dict[str, Any] | None:
    """The options sent with each call; None means server defaults (baseline)."""
    if cfg.options_mode == "server_defaults":
        return None
    options: dict[str, Any] = {
        "num_gpu": cfg.gpu_layers,
        "num_ctx": cfg.ctx,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "top_k": cfg.top_k,
        "repeat_penalty": cfg.repeat_penalty,
    }
    if cfg.seed is not None:
        options["seed"] = cfg.seed
    return options


def build_spec(cfg: CfexpConfig, instances: list[ServerInstance], run_id: str) -> dict[str, Any]:
    personas = cfg.scenario.personas
    agents = [
        {
            "name": f"agent_{i}",
            "persona": personas[i % len(personas)],
            "base_url": instances[i % len(instances)].base_url,
            "api": instances[i % len(instances)].api,
            "model": cfg.model.name,
            "options": model_options(cfg),
            "instance": instances[i % len(instances)].index,
            "api_key": cfg.backend.api_key,
        }
        for i in range(cfg.scenario.agents)
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
