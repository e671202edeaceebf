"""Server topology and lifecycle: which instances a job gets, and when they stop.

``topology.lifecycle``:

- ``per_job``: fresh instances for every job, stopped at its end (the original
  study's process isolation and cold start);
- ``per_sweep``: instances kept across the jobs of a sweep (or of any jobs run
  in one process) while their launch parameters match; a job with other
  parameters (ctx, gpu_layers, threads, …) stops them and starts new ones, as
  Ollama reloads a model when num_ctx or num_gpu change;
- ``external``: attach to ``backend.url``; nothing is started or stopped.

Only one set of instances is kept at a time: on a 2-core machine two idle
model servers would only compete for memory and cores.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from cfexp.config.schema import CfexpConfig
from cfexp.errors import ServerDiedError
from cfexp.servers.base import LaunchSpec, ServerBackend, ServerInstance
from cfexp.servers.cfexp_serving import CfexpServingBackend
from cfexp.servers.external import OllamaBackend, OpenAIBackend

log = logging.getLogger(__name__)


def launch_specs(cfg: CfexpConfig, options: list[tuple[int, int]]) -> list[LaunchSpec]:
    """One LaunchSpec per instance, from its (gpu_layers, ctx)."""
    return [launch_spec(cfg, gpu_layers, ctx) for gpu_layers, ctx in options]


def launch_spec(cfg: CfexpConfig, gpu_layers: int, ctx: int) -> LaunchSpec:
    backend = cfg.backend
    return LaunchSpec(
        backend=backend.name,
        api=backend.api,
        host=backend.host,
        url=backend.url,
        model_name=cfg.model.name,
        model_file=cfg.model.file,
        n_layers=cfg.model.n_layers,
        gpu_layers=gpu_layers,
        ctx=ctx,
        threads=backend.threads or max(1, (os.cpu_count() or 1) // cfg.topology.instances),
        slots=backend.slots,
        settings_json=json.dumps(backend.settings, sort_keys=True),
        start_if_absent=backend.start_if_absent and cfg.topology.lifecycle != "external",
        binary=backend.binary,
        models_dir=backend.models_dir,
    )


def backend_for(cfg: CfexpConfig) -> ServerBackend:
    """The registry: backend name -> what starts (or attaches to) its instances."""
    name = cfg.backend.name
    if name in ("sim", "llamacpp") and cfg.backend.url is None:
        return CfexpServingBackend(engine=name)
    if name == "openai":
        return OpenAIBackend(api_key=cfg.backend.api_key)
    # ollama, and sim/llamacpp given a URL (a `cfexp serve` started by hand):
    # both speak Ollama's API, so attaching works the same way.
    return OllamaBackend()


class ServerPool:
    """Hands out running instances to jobs and stops them per the lifecycle."""

    def __init__(self) -> None:
        self._kept: list[ServerInstance] = []

    def acquire(self, cfg: CfexpConfig, servers_dir: Path, launches: list[LaunchSpec]) -> list[ServerInstance]:
        """Running instances, one per LaunchSpec (instance i started with launches[i])."""
        reusable = (
            cfg.topology.lifecycle == "per_sweep"
            and [instance.launch for instance in self._kept] == launches
            and all(instance.alive() for instance in self._kept)
        )
        if reusable:
            return list(self._kept)
        self.close()  # other parameters, or a dead instance: start afresh
        backend = backend_for(cfg)
        started: list[ServerInstance] = []
        try:
            for index, launch in enumerate(launches):
                log.info("starting server instance %d (%s)", index, launch.backend)
                started.append(backend.start(launch, index, servers_dir, cfg.timeouts.server_start_s))
        except BaseException:
            _stop(started)
            raise
        if cfg.topology.lifecycle == "per_sweep":
            self._kept = started
        return started

    def release(self, instances: list[ServerInstance]) -> None:
        """End of a job: stop its instances unless they are kept for the next."""
        kept = {id(instance) for instance in self._kept}
        _stop([instance for instance in instances if id(instance) not in kept])

    def close(self) -> None:
        _stop(self._kept)
        self._kept = []


def check_alive(instances: list[ServerInstance]) -> None:
    """Raise ServerDiedError naming the first instance that exited."""
    for instance in instances:
        if not instance.alive():
            assert instance.process is not None
            raise ServerDiedError(
                f"server {instance.describe()} exited with code {instance.process.popen.returncode} "
                f"during the job. Its last log lines:\n{instance.log_tail()}"
            )


def _stop(instances: list[ServerInstance]) -> None:
    for instance in instances:
        if instance.process is not None:
            instance.process.stop()


# One pool per process: jobs of a sweep run by the basic launcher share it.
POOL = ServerPool()
