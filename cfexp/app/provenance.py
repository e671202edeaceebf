"""Where a number came from: code version, environment, model file.

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
from cfexp.config.schema import CfexpConfig
from cfexp.servers.base import ServerInstance
from cfexp.servers.model_files import expected_sha256, sha256_of

_REPO = Path(__file__).resolve().parents[2]
_PACKAGES = ("hydra-core", "omegaconf", "mlflow", "httpx", "llama-cpp-python", "uvloop")


@functools.cache
def code_version() -> str:
    """``git`` commit of the cfexp checkout (``+dirty`` when changed), else the package version."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(_REPO), "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True, timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(_REPO), "status", "--porcelain", "--untracked-files=no"],
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


@functools.cache
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    return sha256_of(Path(path))


def model_digest(cfg: CfexpConfig) -> str:
    """sha256 of the served model file, when cfexp serves it; else unknown."""
    if cfg.backend.name in ("llamacpp", "llamaserver"):
        if cfg.model.file is None:
            return expected_sha256()[1]  # embedded: verified against SHA256SUMS at assembly
        stat = Path(cfg.model.file).stat()
        return _file_digest(cfg.model.file, stat.st_size, stat.st_mtime_ns)
    if cfg.backend.name == "sim":
        return "simulated"
    return "unknown"


def run_tags(cfg: CfexpConfig, instances: list[ServerInstance]) -> dict[str, str]:
    env = environment()
    return {
        "code_version": code_version(),
        "provenance": "simulated" if cfg.backend.simulated else "measured",
        "language": cfg.language.name,
        "runtime": cfg.runtime.name,
        "runtime_legacy": str(cfg.runtime.legacy).lower(),
        "scenario": cfg.scenario.name,
        "backend": cfg.backend.name,
        "backend_version": ",".join(sorted({str(i.version) for i in instances})) or "unknown",
        "model": cfg.model.name,
        "model_digest": model_digest(cfg),
        "topology": cfg.topology.name,
        "host": env["host"],
        **{f"env.{key}": value for key, value in env.items() if key != "host"},
    }
