"""What every backend hands to the rest of cfexp: running server instances.

A backend turns a :class:`LaunchSpec` (the parameters that, when changed,
need a new server process, as Ollama reloads a model when num_ctx or num_gpu
change) into a :class:`ServerInstance`. Backends are registered by name in
:mod:`cfexp.backends.registry`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from cfexp.backends.process import ManagedProcess

if TYPE_CHECKING:
    from cfexp.backends.identify import ServerIdentity


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a server instance is started with. Equal specs can share one."""

    backend: str
    api: str
    host: str
    url: str | None
    model_name: str
    model_file: str | None
    n_layers: int
    # Layers offloaded and context length the server starts with; None = not set:
    # the backend's own default, what a user gets with no flag (the baseline of
    # options_mode=server_defaults; docs/reproduce-tr.md, "Server defaults").
    gpu_layers: int | None
    ctx: int | None
    threads: int
    slots: int
    # Engine settings as canonical JSON, so the spec stays hashable.
    settings_json: str = "{}"
    # Start the server when nothing answers at url (ollama, llamaserver): backend.start_if_absent,
    # never under topology.lifecycle=external (then `external` says why, for the message).
    start_if_absent: bool = True
    external: bool = False
    # The server program, for backends that run one; None = the backend's default.
    binary: str | None = None
    models_dir: str | None = None

    @property
    def settings(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.settings_json)
        return loaded


@dataclass
class ServerInstance:
    """One server the agents can stream from."""

    index: int
    backend: str
    api: str
    base_url: str
    launch: LaunchSpec
    # The process cfexp started, or None for a server it only attached to.
    process: ManagedProcess | None = None
    version: str | None = None
    # Sim only: where the server writes the time it sent each chunk.
    ground_truth_path: Path | None = None
    # What the server says it is and serves (cfexp.backends.identify), once it answered.
    identity: ServerIdentity | None = None

    @property
    def managed(self) -> bool:
        return self.process is not None

    @property
    def port(self) -> int | None:
        return httpx.URL(self.base_url).port

    def alive(self) -> bool:
        return self.process is None or self.process.alive()

    def describe(self) -> str:
        pid = f" pid={self.process.pid}" if self.process else ""
        return f"<instance={self.index} backend={self.backend} url={self.base_url}{pid}>"

    def log_tail(self, lines: int = 10) -> str:
        return self.process.tail(lines) if self.process else "(not managed by cfexp)"


class ServerBackend(Protocol):
    """Starts (or attaches to) one server instance."""

    def start(self, launch: LaunchSpec, index: int, run_dir: Path, timeout_s: float) -> ServerInstance:
        """Return a healthy instance or raise a SetupError saying what to do."""
        ...
