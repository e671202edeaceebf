"""Secrets never leave the process: redaction of API keys wherever config is written.

A key given on the command line (``backend.api_key=sk-…``) would otherwise
reach run names, tags, params, status files and Hydra's own ``.hydra/``
copies. (The safer habit is ``backend.api_key=${oc.env:OPENAI_API_KEY}``: then
only the interpolation is ever written.)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MASK = "***"
SECRET_SUFFIXES = ("api_key", "token", "password")


def is_secret_key(key: str) -> bool:
    return key.rsplit(".", 1)[-1].lstrip("+~").endswith(SECRET_SUFFIXES)


def redact_override(override: str) -> str:
    """``backend.api_key=sk-1`` -> ``backend.api_key=***`` (interpolations kept)."""
    key, sep, value = override.partition("=")
    if sep and is_secret_key(key) and value not in ("", "null") and not value.startswith("${"):
        return f"{key}={MASK}"
    return override


def redact_overrides(overrides: Iterable[str]) -> list[str]:
    return [redact_override(o) for o in overrides]


def secret_values(overrides: Iterable[str]) -> list[str]:
    """The literal secrets given in overrides (to scrub from any text)."""
    found = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and is_secret_key(key) and value not in ("", "null") and not value.startswith("${"):
            found.append(value)
    return found


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret masked."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def redact_tree(node: Any) -> Any:
    """A copy of a config container with every secret-named value masked."""
    if isinstance(node, dict):
        return {
            k: (MASK if is_secret_key(str(k)) and v not in (None, "") and not str(v).startswith("${") else redact_tree(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [redact_override(v) if isinstance(v, str) else redact_tree(v) for v in node]
    return node
