"""Secrets never leave the process: redaction of API keys wherever config is written.

A key given on the command line (``backend.api_key=sk-…``) would otherwise
reach run names, tags, params, status files and Hydra's own ``.hydra/``
copies. (The safer habit is ``backend.api_key=${oc.env:OPENAI_API_KEY}``: then
only the interpolation is ever written.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

MASK = "***"
# Shorter "secrets" are not masked inside free text (logs, Hydra's files): masking
# every "1" of a log would destroy it and protect nothing.
MIN_SCRUB_LEN = 4
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


def secret_values_in(node: Any) -> list[str]:
    """The literal values of every secret-named key in a (resolved) config container."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if is_secret_key(str(key)) and isinstance(value, str) and value and not value.startswith("${"):
                found.append(value)
            else:
                found.extend(secret_values_in(value))
    elif isinstance(node, list):
        for item in node:  # e.g. Hydra's overrides list: "backend.api_key=sk-…"
            found.extend(secret_values([item]) if isinstance(item, str) else secret_values_in(item))
    return found


_LOG_SECRETS: set[str] = set()


def mask_in_logs(secrets: Iterable[str]) -> None:
    """Mask these values in every log record created from now on, by any
    logger of this process (Hydra's included).

    A record factory rather than a handler filter: Hydra re-configures logging
    (new handlers) when it launches jobs, and a factory outlives that.
    """
    new = {s for s in secrets if len(s) >= MIN_SCRUB_LEN and s != MASK}
    if not new:
        return
    if not _LOG_SECRETS:
        logging.setLogRecordFactory(_masking_factory(logging.getLogRecordFactory()))
    _LOG_SECRETS.update(new)


def _masking_factory(make: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def longest_first() -> list[str]:
        return sorted(_LOG_SECRETS, key=len, reverse=True)

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it later, as usual
            return record
        scrubbed = scrub(message, longest_first())
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return record

    return factory
