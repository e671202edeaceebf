"""cfexp's own LLM server: Ollama's and OpenAI's APIs over a simulated or a real engine.

Run it as ``python -m cfexp.serving --engine {sim,llamacpp} ...`` (see
docs/serving.md), or call :func:`main` with the same arguments. It is a
separate process, apart from the rest of cfexp: it imports only
``cfexp.errors`` and ``cfexp.backends.model_files`` from the other layers.
"""

from __future__ import annotations

from cfexp.serving.cli import EXIT_BAD_SETTINGS, EXIT_BIND_FAILED, EXIT_OK, main
from cfexp.serving.server import READY_MARKER
from cfexp.serving.settings import FaultSettings, LlamaSettings, SimSettings

__all__ = [
    "EXIT_BAD_SETTINGS",
    "EXIT_BIND_FAILED",
    "EXIT_OK",
    "FaultSettings",
    "LlamaSettings",
    "READY_MARKER",
    "SimSettings",
    "main",
]
