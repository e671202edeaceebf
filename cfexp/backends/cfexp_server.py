"""Starts cfexp's own server (``python -m cfexp.serving``) for the ``llamacpp`` and ``sim`` backends.

``llamacpp`` (the real embedded model) and ``sim`` (the simulator) share one
launcher: the server binds port 0, prints ``CFEXP_SERVING_READY port=N`` once
it is listening with its engine loaded, and is then health-checked. Port 0
means no window in which another process can take the port between our check
and its bind.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import httpx

from cfexp.backends.base import LaunchSpec, ServerInstance
from cfexp.backends.model_files import embedded_gguf
from cfexp.backends.net import tls_context
from cfexp.backends.process import ManagedProcess
from cfexp.errors import ServerStartError

READY_MARKER = "CFEXP_SERVING_READY"
_READY_PORT = re.compile(r"port=(\d+)")


def engine_settings(launch: LaunchSpec) -> dict[str, object]:
    """The settings JSON the serving process is started with.

    A launch without ctx or gpu_layers (``options_mode=server_defaults``)
    leaves ``n_ctx`` / ``n_gpu_layers`` out: the engine's own defaults
    (:mod:`cfexp.serving.settings`), as ``cfexp serve`` with no flag.
    """
    settings: dict[str, object] = {"model_name": launch.model_name, "slots": launch.slots}
    if launch.ctx is not None:
        settings["n_ctx"] = launch.ctx
    if launch.gpu_layers is not None:
        settings["n_gpu_layers"] = launch.gpu_layers
    if launch.backend == "sim":
        settings["n_layers"] = launch.n_layers
    if launch.backend == "llamacpp":
        settings["n_threads"] = launch.threads
        settings["model_path"] = launch.model_file or str(embedded_gguf())
    settings.update(launch.settings)  # the user's backend.settings win
    return settings


class CfexpServerBackend:
    """Starts ``python -m cfexp.serving --engine <sim|llamacpp>`` instances."""

    def __init__(self, engine: str) -> None:
        self.engine = engine

    def start(self, launch: LaunchSpec, index: int, run_dir: Path, timeout_s: float) -> ServerInstance:
        run_dir.mkdir(parents=True, exist_ok=True)
        ground_truth = run_dir / f"server{index}_ground_truth.jsonl"
        argv = [
            sys.executable,
            "-m",
            "cfexp.serving",
            "--engine",
            self.engine,
            "--host",
            launch.host,
            "--port",
            "0",
            "--settings",
            json.dumps(engine_settings(launch), sort_keys=True),
            "--ground-truth",
            str(ground_truth),
            "--die-with-parent",
        ]
        process = ManagedProcess(
            name=f"{self.engine}-server{index}",
            argv=argv,
            log_path=run_dir / f"server{index}.log",
            ready_marker=READY_MARKER,
        )
        what = f"<backend={launch.backend} instance={index}>"
        line = process.wait_ready(timeout_s)
        if line is None:
            alive = process.alive()
            process.stop()
            reason = (
                f"did not become ready within {timeout_s:.0f} s (raise timeouts.server_start_s)"
                if alive
                else f"exited with code {process.popen.returncode}"
            )
            raise ServerStartError(
                f"the {self.engine} server {what} {reason}. Its last log lines:\n{process.tail()}"
            )
        match = _READY_PORT.search(line)
        if match is None:
            process.stop()
            raise ServerStartError(f"the {self.engine} server {what} printed a bad ready line: {line!r}")
        base_url = f"http://{launch.host}:{match.group(1)}"
        try:
            version = httpx.get(f"{base_url}/api/version", timeout=10, verify=tls_context()).json().get("version")
        except (httpx.HTTPError, ValueError) as exc:
            process.stop()
            raise ServerStartError(
                f"the {self.engine} server {what} at {base_url} failed its health check: {exc}"
            ) from exc
        return ServerInstance(
            index=index,
            backend=launch.backend,
            api=launch.api,
            base_url=base_url,
            launch=launch,
            process=process,
            version=str(version),
            ground_truth_path=ground_truth,
        )
