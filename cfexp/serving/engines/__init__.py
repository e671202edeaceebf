"""Engines behind the HTTP layer, by ``--engine`` name.

``llamacpp`` is imported only when chosen: llama-cpp-python loads a native
library, and the simulator must work without it.
"""

from __future__ import annotations

from cfexp.errors import ConfigError
from cfexp.serving.engines.base import Engine
from cfexp.serving.settings import EngineSettings, LlamaSettings, SimSettings


def build_engine(name: str, settings: EngineSettings) -> Engine:
    """The engine called ``name``, ready to serve (llamacpp: models loaded)."""
    if name == "sim" and isinstance(settings, SimSettings):
        from cfexp.serving.engines.sim import SimEngine

        return SimEngine(settings)
    if name == "llamacpp" and isinstance(settings, LlamaSettings):
        from cfexp.serving.engines.llama import LlamaEngine

        return LlamaEngine(settings)
    raise ConfigError(
        f"unknown engine <engine={name}> (or settings of another engine): choose sim or llamacpp"
    )


__all__ = ["Engine", "build_engine"]
