"""cfexp: a declarative experiment manager for benchmarking LLM agents."""

from __future__ import annotations

import functools


@functools.cache
def _installed_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("cfexp")
    except metadata.PackageNotFoundError:  # imported from a checkout that was never installed
        return "0+unknown"


def __getattr__(name: str) -> str:
    # ``cfexp.__version__`` is the installed distribution's (pyproject.toml, its one place),
    # looked up only when asked: importlib.metadata costs the agent's start-up tens of ms.
    if name == "__version__":
        return _installed_version()
    raise AttributeError(f"module 'cfexp' has no attribute {name!r}")
