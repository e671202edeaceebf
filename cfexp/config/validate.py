"""Checks a composed config before anything starts.

The structured schema already rejects unknown keys and wrong types while Hydra
composes, and the enums of :mod:`cfexp.vocab` reject unknown words. What they
cannot say — ranges and rules across fields (N external instances need N
distinct URLs) — is checked here, all at once, so one message lists every
problem. Each problem names the key, shows the value
as ``<key=value>`` and says what is allowed.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cfexp.config.keys import unknown_keys
from cfexp.config.schema import CfexpConfig
from cfexp.data import DATA_DIR
from cfexp.errors import ConfigError
from cfexp.vocab import Api, Backend, Lifecycle, MultiMode, Scenario

# Topology names that fix their number of instances (multi takes topology.instances).
TOPOLOGY_INSTANCES = {"single": 1, "dual": 2}


@dataclass(frozen=True)
class _Rule:
    key: str
    check: Callable[[Any], bool]
    allowed: str
    # null is allowed (= not sent), besides what check accepts.
    nullable: bool = False


def _between(low: float, high: float) -> Callable[[Any], bool]:
    return lambda value: low <= value <= high


def _at_least(low: float) -> Callable[[Any], bool]:
    return lambda value: value >= low


def _positive(value: Any) -> bool:
    return bool(value > 0)


def _loopback(value: Any) -> bool:
    """Managed servers are never reachable from other machines (docs/security.md)."""
    if value == "localhost":
        return True
    try:
        return ipaddress.ip_address(str(value)).is_loopback
    except ValueError:
        return False


_RULES = (
    _Rule("backend.threads", _at_least(0), "a whole number >= 0 (0 = auto)"),
    _Rule("backend.slots", _at_least(1), "a whole number >= 1"),
    _Rule(
        "backend.host", _loopback,
        "a loopback address (127.0.0.1, ::1 or localhost): managed servers never listen beyond this machine",
    ),
    _Rule("scenario.agents", _at_least(1), "a whole number >= 1"),
    _Rule("topology.instances", _at_least(1), "a whole number >= 1"),
    _Rule("topology.warmup_calls", _at_least(0), "a whole number >= 0"),
    _Rule("topology.sample_interval_s", _between(0.0, 60.0), "a number of seconds from 0 (off) to 60"),
    _Rule("scenario.contention_threshold_pct", _between(0.0, 1000.0), "a percentage from 0 to 1000"),
    _Rule("scenario.drift_warn_pct", _between(0.0, 1000.0), "a percentage from 0 to 1000"),
    _Rule("model.n_layers", _at_least(1), "a whole number >= 1"),
    _Rule("gpu_layers", _at_least(0), "a whole number >= 0 (999 = all layers)"),
    _Rule("ctx", _between(16, 1 << 20), "a whole number of tokens from 16 to 1048576"),
    _Rule("temperature", _between(0.0, 2.0), "a number from 0 to 2"),
    _Rule("top_p", _between(1e-9, 1.0), "a number above 0 and at most 1, or null (not sent)", nullable=True),
    _Rule("top_k", _at_least(0), "a whole number >= 0, or null (not sent)", nullable=True),
    _Rule("repeat_penalty", _positive, "a number above 0, or null (not sent)", nullable=True),
    _Rule("num_predict", _at_least(1), "a whole number of tokens >= 1"),
    _Rule("repetition", _at_least(0), "a whole number >= 0"),
    _Rule("timeouts.call_s", _positive, "a number of seconds above 0"),
    _Rule("timeouts.run_s", _positive, "a number of seconds above 0"),
    _Rule("timeouts.server_start_s", _positive, "a number of seconds above 0"),
)


def _get(cfg: CfexpConfig, dotted: str) -> Any:
    value: Any = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _is_http_url(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme in ("http", "https") and bool(parsed.hostname)


def _cross_field_problems(cfg: CfexpConfig) -> list[str]:
    problems: list[str] = []
    backend = cfg.backend
    for url in ([backend.url] if backend.url is not None else []) + list(backend.urls):
        if not _is_http_url(url):
            problems.append(f"<backend.url={url}> is not an http(s) URL: give one like http://127.0.0.1:11434")
    problems.extend(_server_address_problems(cfg))
    if backend.name == Backend.llamaserver:
        problems.extend(_llamaserver_problems(cfg))
    if backend.name in (Backend.llamacpp, Backend.llamaserver) and cfg.model.file is not None:
        if Path(cfg.model.file).is_dir():
            problems.append(f"<model.file={cfg.model.file}> is a folder: give the path of a GGUF file inside it")
        elif not Path(cfg.model.file).is_file():
            problems.append(
                f"<model.file={cfg.model.file}> does not exist: give the path of a GGUF "
                "file, or model.file=null for the embedded Gemma 3 270M"
            )
    personas = json.loads((DATA_DIR / "personas.json").read_text())
    unknown = [name for name in cfg.scenario.personas if name not in personas]
    if unknown:
        problems.append(
            f"<scenario.personas={unknown}> unknown: choose from {', '.join(sorted(personas))}"
        )
    if not cfg.scenario.personas:
        problems.append("<scenario.personas=[]> needs at least one persona")
    problems.extend(_multi_agent_problems(cfg))
    return problems


# Backends cfexp starts at the given URL (port + i per instance) when nothing answers there.
_STARTS_AT_URL = (Backend.ollama, Backend.llamaserver)


def attaches_only(cfg: CfexpConfig) -> bool:
    """Whether cfexp only attaches to running servers (it starts none): then N instances need N URLs."""
    backend = cfg.backend
    return (
        cfg.topology.lifecycle == Lifecycle.external
        or backend.name == Backend.openai
        or (backend.name not in _STARTS_AT_URL and (backend.url is not None or bool(backend.urls)))
        or (backend.name in _STARTS_AT_URL and not backend.start_if_absent)
    )


def _server_address_problems(cfg: CfexpConfig) -> list[str]:
    """Where the servers are: a URL for the backends that need one, N distinct URLs for N external instances."""
    backend, topology = cfg.backend, cfg.topology
    problems: list[str] = []
    if backend.name == Backend.openai and backend.url is None and not backend.urls:
        problems.append(
            "<backend.url=None> is required with backend=openai: give the server's base URL, "
            "e.g. backend.url=http://127.0.0.1:8000 (or backend.urls=[…], one per instance)"
        )
    if not attaches_only(cfg):
        return problems  # cfexp starts what does not answer (a managed Ollama: port + i)
    urls = list(backend.urls) or ([backend.url] if backend.url is not None else [])
    if not urls:
        problems.append(
            f"<topology.lifecycle={topology.lifecycle}> <backend={backend.name}> attaches to running servers: "
            "set backend.url (one instance) or backend.urls=[url0,url1,…] (one per instance)"
        )
    elif len(urls) != topology.instances:
        problems.append(
            f"<topology={topology.name}> has {topology.instances} instance(s) but "
            f"<backend.urls={urls}> gives {len(urls)}: servers cfexp attaches to need one "
            f"distinct URL per instance, e.g. backend.urls=[http://127.0.0.1:11434,http://127.0.0.1:11435]"
        )
    elif len({url.rstrip("/") for url in urls}) != len(urls):
        problems.append(
            f"<backend.urls={urls}> names one server twice: {topology.instances} instances need "
            f"{topology.instances} distinct servers, or the run would be a single one tagged {topology.name}"
        )
    return problems


def _llamaserver_problems(cfg: CfexpConfig) -> list[str]:
    problems: list[str] = []
    if cfg.backend.api != Api.openai:
        problems.append(
            f"<backend.api={cfg.backend.api}> with backend=llamaserver: llama-server speaks the OpenAI API "
            "only, use backend.api=openai"
        )
    binary = cfg.backend.binary
    if binary is not None and shutil.which(binary) is None:
        problems.append(
            f"<backend.binary={binary}> is not an executable file nor a command on PATH: give the path of a "
            "llama-server, or backend.binary=null for the one cfexp builds from llama.cpp's source"
        )
    return problems


def _multi_agent_problems(cfg: CfexpConfig) -> list[str]:
    problems: list[str] = []
    scenario, topology = cfg.scenario, cfg.topology
    expected = TOPOLOGY_INSTANCES.get(topology.name)
    if expected is not None and topology.instances != expected:
        problems.append(
            f"<topology.instances={topology.instances}> contradicts <topology={topology.name}> "
            f"({expected} instance(s)): for N instances use topology=multi topology.instances=N"
        )
    if scenario.name != Scenario.multi_agent and scenario.agents != 1:
        problems.append(
            f"<scenario.agents={scenario.agents}> needs scenario=multi_agent ({scenario.name} runs one agent)"
        )
    names = {f"agent_{i}" for i in range(scenario.agents)}
    unknown = sorted(set(scenario.per_agent) - names)
    if unknown:
        problems.append(
            f"<scenario.per_agent={unknown}> names agents that do not exist: this run has "
            f"{', '.join(sorted(names))} (scenario.agents={scenario.agents})"
        )
    if scenario.per_agent and scenario.mode != MultiMode.chimera_hetero:
        problems.append(
            f"<scenario.per_agent> is set but <scenario.mode={scenario.mode}>: per-agent options "
            "apply to scenario.mode=chimera_hetero only"
        )
    for name, override in scenario.per_agent.items():
        if override.ctx is not None and not 16 <= override.ctx <= 1 << 20:
            problems.append(f"<scenario.per_agent.{name}.ctx={override.ctx}> must be from 16 to 1048576")
        if override.gpu_layers is not None and override.gpu_layers < 0:
            problems.append(f"<scenario.per_agent.{name}.gpu_layers={override.gpu_layers}> must be >= 0")
        if override.temperature is not None and not 0 <= override.temperature <= 2:
            problems.append(f"<scenario.per_agent.{name}.temperature={override.temperature}> must be from 0 to 2")
    return problems


def to_settings(cfg: DictConfig) -> CfexpConfig:
    """Turn a composed config into a validated, typed :class:`CfexpConfig`.

    Raises :class:`ConfigError` listing every problem found.
    """
    if unknown := unknown_keys(cfg):  # `+key=value` adds a key the schema would refuse
        raise ConfigError("invalid config: " + "; ".join(unknown) + ". Fix it on the command line or in conf/.")
    try:
        settings = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"the config could not be resolved: {exc}") from exc
    if not isinstance(settings, CfexpConfig):  # composed without the schema
        raise ConfigError("the config was not composed from cfexp's schema (conf/config.yaml)")
    problems = []
    for rule in _RULES:
        value = _get(settings, rule.key)
        if value is None and rule.nullable:
            continue
        if not rule.check(value):
            problems.append(f"<{rule.key}={value}> must be {rule.allowed}")
    problems.extend(_cross_field_problems(settings))
    if problems:
        raise ConfigError(
            "invalid config: "
            + "; ".join(problems)
            + ". Fix it on the command line (key=value) or in conf/."
        )
    return settings
