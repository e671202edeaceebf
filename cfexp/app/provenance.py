"""Where a number came from: code version, environment, what answered, the model.

Computed once per process (a sweep's jobs share them) and attached to every
run as tags, so every metric traces back to the code and the machine that
produced it.
"""

from __future__ import annotations

import functools
import json
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

import psutil

from cfexp import __version__
from cfexp.backends.base import ServerInstance
from cfexp.backends.identify import UNKNOWN, loaded_state
from cfexp.backends.model_files import expected_sha256, file_sha256
from cfexp.config.schema import CfexpConfig
from cfexp.locations import checkout_root
from cfexp.vocab import Backend

# Backends whose managed instances run llama.cpp on the CPU threads cfexp gives them (LaunchSpec.threads).
THREADED_BACKENDS = frozenset({Backend.llamacpp, Backend.llamaserver})
_PACKAGES = ("hydra-core", "omegaconf", "mlflow", "httpx", "llama-cpp-python", "uvloop")


@functools.cache
def code_version() -> str:
    """``git`` commit of the cfexp checkout (``+dirty`` when changed), else the package version.

    Installed from a wheel there is no checkout: asking git there would name
    whatever repository happens to hold the virtual environment.
    """
    repo = checkout_root()
    if repo is None:
        return f"cfexp-{__version__}"
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True, timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"cfexp-{__version__}"
    return commit + ("+dirty" if dirty else "")


@functools.cache
def environment() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return {
        "host": socket.gethostname(),
        "os": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": str(psutil.cpu_count(logical=True)),
        "memory_gb": f"{psutil.virtual_memory().total / 2**30:.1f}",
        "python": platform.python_version(),
        "cfexp_version": __version__,
        "packages": json.dumps(versions, sort_keys=True),
    }


def model_digest(cfg: CfexpConfig, instances: list[ServerInstance]) -> str:
    """The digest of the model that answered: the file cfexp served, else what the servers report.

    A file cfexp gave a managed server is hashed (the embedded one is verified
    against its SHA256SUMS once, at assembly); otherwise each instance's own
    report (``cfexp.backends.identify``), or ``unknown`` — never another
    model's hash.
    """
    digests = set()
    for instance in instances:
        if instance.managed and instance.launch.backend in (Backend.llamacpp, Backend.llamaserver):
            file = instance.launch.model_file
            digests.add("sha256:" + (expected_sha256()[1] if file is None else file_sha256(Path(file))))
        elif instance.identity is not None:
            digests.add(instance.identity.model_digest)
    return ",".join(sorted(digests)) or UNKNOWN


def provenance(instances: list[ServerInstance]) -> str:
    """simulated when any instance that answered is cfexp's simulator, else measured.

    From what answered, not from a setting: no flag can turn a simulator's
    numbers into measured ones.
    """
    return "simulated" if any(i.identity is not None and i.identity.simulated for i in instances) else "measured"


def server_settings_tags(cfg: CfexpConfig, instances: list[ServerInstance]) -> dict[str, str]:
    """What each instance was started with, and what it ran with, as tags.

    ``launch.num_ctx`` / ``launch.num_gpu``: the context and offloaded layers
    cfexp started the instance with, ``default`` when it set none (the
    server's own default: ``options_mode=server_defaults``, agent_0 of
    ``baseline_vs_chimera``). ``launch.threads``: the CPU threads cfexp
    started a llama.cpp engine with (``backend.threads: 0`` resolved to the
    cores split between the instances), ``default`` for a server that picks
    its own or computes nothing (the simulator, Ollama, one it attached to):
    whether the agents had a core of their own (docs/metrics.md). ``effective.num_ctx`` /
    ``effective.size_vram_bytes``: what the server reports it has loaded at the
    end of the job (Ollama's API: ``/api/ps``; llama-server: ``/props``), or
    ``unknown``. One value per instance, in instance order, joined by commas.
    Tags, not params: they describe the run, they do not define its config.
    """
    states = [loaded_state(i.base_url, cfg.model.name, cfg.backend.api_key) for i in instances]

    def joined(values: list[int | None], missing: str) -> str:
        return ",".join(missing if value is None else str(value) for value in values)

    return {
        "launch.num_ctx": joined([i.launch.ctx for i in instances], "default"),
        "launch.num_gpu": joined([i.launch.gpu_layers for i in instances], "default"),
        "launch.threads": joined([_threads(i) for i in instances], "default"),
        "effective.num_ctx": joined([s.num_ctx for s in states], UNKNOWN),
        "effective.size_vram_bytes": joined([s.size_vram_bytes for s in states], UNKNOWN),
    }


def _threads(instance: ServerInstance) -> int | None:
    """The threads cfexp gave the instance's engine; None where it gave none that the engine uses."""
    takes_threads = instance.backend in THREADED_BACKENDS and instance.managed
    return instance.launch.threads if takes_threads else None


def run_tags(cfg: CfexpConfig, instances: list[ServerInstance]) -> dict[str, str]:
    env = environment()
    engines = sorted({i.identity.engine for i in instances if i.identity is not None})
    return {
        "code_version": code_version(),
        "provenance": provenance(instances),
        "language": str(cfg.language),
        "runtime": str(cfg.runtime.name),
        "runtime_legacy": str(cfg.runtime.legacy).lower(),
        "scenario": str(cfg.scenario.name),
        "backend": str(cfg.backend.name),
        "backend_engine": ",".join(engines) or UNKNOWN,
        "backend_version": ",".join(sorted({str(i.version) for i in instances})) or UNKNOWN,
        "model": cfg.model.name,
        "model_digest": model_digest(cfg, instances),
        "topology": cfg.topology.name,
        "host": env["host"],
        **{f"env.{key}": value for key, value in env.items() if key != "host"},
    }
