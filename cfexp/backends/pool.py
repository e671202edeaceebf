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

The pool lives in one process. Jobs of a sweep share it only when they run in
the process that launched the sweep (Hydra's basic launcher, one job after
another). A job run elsewhere (``hydra/launcher=submitit_local``,
``submitit_slurm``, ``ray``) cannot reach servers another process started and
runs in parallel with others: there ``per_sweep`` works as ``per_job``, and
the job's log says so. Managed real servers also hold the host lock
(:mod:`cfexp.backends.host_lock`) from their start until they stop, so two
parallel jobs on one host never measure each other's load.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cfexp.backends.base import LaunchSpec, ServerBackend, ServerInstance
from cfexp.backends.cfexp_server import CfexpServerBackend
from cfexp.backends.external import OllamaBackend, OpenAIBackend
from cfexp.backends.host_lock import HostLock, lock_needed
from cfexp.backends.identify import identify
from cfexp.backends.llama_server import LlamaServerBackend
from cfexp.config.schema import CfexpConfig
from cfexp.errors import ServerDiedError
from cfexp.vocab import Lifecycle

log = logging.getLogger(__name__)


def launch_specs(cfg: CfexpConfig, options: list[tuple[int | None, int | None]]) -> list[LaunchSpec]:
    """One LaunchSpec per instance, from its (gpu_layers, ctx); None = the backend's default."""
    return [launch_spec(cfg, index, gpu_layers, ctx) for index, (gpu_layers, ctx) in enumerate(options)]


def instance_url(cfg: CfexpConfig, index: int) -> str | None:
    """Where instance ``index`` is: ``backend.urls[index]``, else ``backend.url`` with
    port + index (a managed Ollama's instances listen side by side), else None (cfexp picks)."""
    backend = cfg.backend
    if backend.urls:
        return backend.urls[index].rstrip("/")
    if backend.url is None:
        return None
    url = httpx.URL(backend.url.rstrip("/"))
    if index == 0:
        return str(url)
    return str(url.copy_with(port=(url.port or 11434) + index))


def launch_spec(cfg: CfexpConfig, index: int, gpu_layers: int | None, ctx: int | None) -> LaunchSpec:
    backend = cfg.backend
    return LaunchSpec(
        backend=backend.name,
        api=backend.api,
        host=backend.host,
        url=instance_url(cfg, index),
        model_name=cfg.model.name,
        model_file=cfg.model.file,
        n_layers=cfg.model.n_layers,
        gpu_layers=gpu_layers,
        ctx=ctx,
        threads=backend.threads or max(1, (os.cpu_count() or 1) // cfg.topology.instances),
        slots=backend.slots,
        settings_json=json.dumps(backend.settings, sort_keys=True),
        start_if_absent=backend.start_if_absent and cfg.topology.lifecycle != Lifecycle.external,
        external=cfg.topology.lifecycle == Lifecycle.external,
        binary=backend.binary,
        models_dir=backend.models_dir.replace("{index}", str(index)) if backend.models_dir else None,
    )


def backend_for(cfg: CfexpConfig) -> ServerBackend:
    """The registry: backend name -> what starts (or attaches to) its instances."""
    name = cfg.backend.name
    if name in ("sim", "llamacpp") and cfg.backend.url is None:
        return CfexpServerBackend(engine=name)
    if name == "openai":
        return OpenAIBackend(api_key=cfg.backend.api_key)
    if name == "llamaserver":  # started (built on first use) or attached to at backend.url
        return LlamaServerBackend(cache_dir=Path(cfg.paths.cache_dir))
    # ollama, and sim/llamacpp given a URL (a `cfexp serve` started by hand):
    # both speak Ollama's API, so attaching works the same way.
    return OllamaBackend()


@dataclass
class _EarlyStart:
    """Servers started in a thread before the first job asks for them (see ``ServerPool.start_early``)."""

    launches: list[LaunchSpec]
    started: list[ServerInstance] = field(default_factory=list)
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def run(self, pool: ServerPool, cfg: CfexpConfig, servers_dir: Path) -> None:
        try:
            self.started = pool._start(cfg, servers_dir, self.launches)
        except BaseException as exc:  # handed to the job that asks for these servers
            self.error = exc
        finally:
            self.done.set()
        # The kernel's PR_SET_PDEATHSIG (the no-orphan guarantee) fires when the
        # *thread* that started a child ends: this one lives as long as they do.
        for instance in self.started:
            if instance.process is not None:
                instance.process.wait_ended()


class ServerPool:
    """Hands out running instances to jobs and stops them per the lifecycle."""

    def __init__(self) -> None:
        self._kept: list[ServerInstance] = []
        self._early: _EarlyStart | None = None
        # The process that launched the current multirun (set by the sweep callback).
        self._sweep_pid: int | None = None
        # Whether the current job runs outside that process, and under which launcher.
        self._out_of_process = False
        self._launcher = "basic"
        self._lock: HostLock | None = None

    def sweep_started(self) -> None:
        """Called in the process that launches a multirun, before any job."""
        self._sweep_pid = os.getpid()

    def job_started(self, multirun: bool, launcher: str) -> None:
        """Called in the job's process before it runs: which process is this?"""
        self._out_of_process = multirun and self._sweep_pid != os.getpid()
        self._launcher = launcher

    @property
    def shared_across_jobs(self) -> bool:
        """Whether a sweep's jobs may use instances this pool started (see module doc)."""
        return not self._out_of_process

    def start_early(self, cfg: CfexpConfig, servers_dir: Path, launches: list[LaunchSpec]) -> None:
        """Start, in a thread, the servers the first job will most likely ask for.

        The launching process opens the tracking store before the first job,
        and importing MLflow takes ~3 s of one core; a server's start (a model
        load: seconds) runs in its own process, on the other core, meanwhile.
        The first :meth:`acquire` waits for this start: it hands these
        instances to its job when it asks for the same launches (a failed start
        is that job's failure, recorded in its run), and stops them otherwise.
        Only for a ``per_sweep`` lifecycle or a single run: a ``per_job``
        sweep's servers start with their job, each the same way.
        """
        self.close()  # what an earlier run in this process kept
        early = _EarlyStart(list(launches))
        self._early = early
        threading.Thread(
            target=early.run, args=(self, cfg, servers_dir), name="cfexp-servers-early", daemon=True
        ).start()

    def _take_early(self, launches: list[LaunchSpec]) -> list[ServerInstance] | None:
        """The early-started instances if they are the ones asked for; else None (they are stopped)."""
        early, self._early = self._early, None
        if early is None:
            return None
        early.done.wait()
        if early.error is not None and early.launches == launches:
            raise early.error
        if early.launches != launches or not all(instance.alive() for instance in early.started):
            log.info("servers started before the first job were not the ones it needs: stopped")
            _stop(early.started)
            self._release_lock()
            return None
        log.info("servers started while the tracking store opened: %s",
                 ", ".join(instance.describe() for instance in early.started))
        return early.started

    def acquire(self, cfg: CfexpConfig, servers_dir: Path, launches: list[LaunchSpec]) -> list[ServerInstance]:
        """Running instances, one per LaunchSpec (instance i started with launches[i])."""
        keep = cfg.topology.lifecycle == "per_sweep"
        if keep and self._out_of_process:
            log.info(
                "topology.lifecycle=per_sweep: this job runs in its own process (hydra/launcher=%s), "
                "apart from the other jobs of the sweep; its servers start and stop with it (per_job)",
                self._launcher,
            )
            keep = False
        reusable = (
            keep
            and [instance.launch for instance in self._kept] == launches
            and all(instance.alive() for instance in self._kept)
        )
        if reusable:
            return list(self._kept)
        started = self._take_early(launches)
        if started is None:
            self.close()  # other parameters, or a dead instance: start afresh
            started = self._start(cfg, servers_dir, launches)
        if keep:
            self._kept = started
        return started

    def _start(self, cfg: CfexpConfig, servers_dir: Path, launches: list[LaunchSpec]) -> list[ServerInstance]:
        backend = backend_for(cfg)
        started: list[ServerInstance] = []
        try:
            if lock_needed(cfg):
                self._lock = self._lock or HostLock()
                self._lock.acquire(holder=str(servers_dir))
            for index, launch in enumerate(launches):
                log.info("starting server instance %d (%s)", index, launch.backend)
                instance = backend.start(launch, index, servers_dir, cfg.timeouts.server_start_s)
                started.append(instance)
                instance.identity = identify(instance.base_url, cfg.model.name, cfg.backend.api_key)
        except BaseException:
            _stop(started)
            self._release_lock()
            raise
        return started

    def release(self, instances: list[ServerInstance]) -> None:
        """End of a job: stop its instances unless they are kept for the next."""
        kept = {id(instance) for instance in self._kept}
        _stop([instance for instance in instances if id(instance) not in kept])
        if not self._kept:
            self._release_lock()

    def close(self) -> None:
        early, self._early = self._early, None
        if early is not None:  # started early, and no job asked for them
            early.done.wait()
            _stop(early.started)
        _stop(self._kept)
        self._kept = []
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()


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
