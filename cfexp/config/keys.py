"""Keys the schema does not know, with the nearest real key.

Hydra rejects ``temprature=0.5`` (the schema is closed) but not the append
form ``+temprature=0.5``: it opens the config to add the key, and the run
would go on with the default temperature, logging a ``temprature`` param. So a
composed config is checked here against :class:`~cfexp.config.schema.CfexpConfig`
(:func:`unknown_keys`, from :func:`cfexp.config.validate.to_settings`), and a
command line Hydra refused gets a "did you mean" hint (:func:`hints_for`).
Open dictionaries (``backend.settings``, ``scenario.per_agent``) take any key.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from cfexp.config.schema import CfexpConfig

# Top-level names that are not schema fields but may start an override.
_NOT_IN_SCHEMA = frozenset({"hydra"})
# Config groups of conf/ that only select files (`+experiment=tr112`): no key of their own.
_SELECTOR_GROUPS = frozenset({"experiment", "search", "ma_config", "smoke_case"})
_OVERRIDE = re.compile(r"^(?:\+\+|\+|~)?(?P<key>[A-Za-z_][\w.]*)(?:@[\w.]+)?(?:=|$)")


@cache
def _fields(schema: type) -> dict[str, Any]:
    """A dataclass's field names and resolved types."""
    hints = typing.get_type_hints(schema)
    return {f.name: hints[f.name] for f in dataclasses.fields(schema)}


def _nested(annotation: Any) -> type | None:
    """The dataclass a field holds, if it is one (not an open dict, not a leaf)."""
    return annotation if dataclasses.is_dataclass(annotation) and isinstance(annotation, type) else None


def _suggest(name: str, known: Iterable[str], prefix: str) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def unknown_key(dotted: str) -> str | None:
    """Why ``dotted`` is not a key of cfexp's config, with the nearest key; None when it is one."""
    schema: type | None = CfexpConfig
    parts = dotted.split(".")
    if parts[0] in _NOT_IN_SCHEMA | _SELECTOR_GROUPS:
        return None
    for depth, part in enumerate(parts):
        if schema is None:  # inside an open dict or a leaf value: not the schema's to judge
            return None
        fields = _fields(schema)
        prefix = ".".join(parts[:depth]) + "." if depth else ""
        if part not in fields:
            return f"<{prefix}{part}> is not a key of cfexp's config{_suggest(part, fields, prefix)}"
        schema = _nested(fields[part])
    return None


def unknown_keys(config: Mapping[str, Any], schema: type = CfexpConfig, prefix: str = "") -> list[str]:
    """Every key of a composed config (``hydra`` aside) that the schema does not define."""
    problems = []
    fields = _fields(schema)
    for key, value in config.items():
        if not prefix and key in _NOT_IN_SCHEMA:
            continue
        if key not in fields:
            problems.append(f"<{prefix}{key}> is not a key of cfexp's config{_suggest(str(key), fields, prefix)}")
        elif (nested := _nested(fields[key])) is not None and isinstance(value, Mapping):
            problems.extend(unknown_keys(value, nested, f"{prefix}{key}."))
    return problems


def hints_for(arguments: Iterable[str]) -> list[str]:
    """For a command line Hydra refused: each override whose key cfexp does not know."""
    hints = []
    for argument in arguments:
        match = _OVERRIDE.match(argument)
        if match is None or argument.startswith("-"):
            continue
        if (problem := unknown_key(match.group("key"))) is not None:
            hints.append(problem)
    return hints
