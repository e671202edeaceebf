"""The agent contract's input: the spec the harness writes (docs/record-schema.md §1).

The harness builds a :class:`Spec` (``cfexp.app.agent_spec``) and writes it
with :meth:`Spec.write`; every agent reads it back and validates it — the
Python agent with :meth:`Spec.load`, the Rust agent with its own mirror
(``rust/cfexp-agent/src/spec.rs``). :data:`SCHEMA_VERSION` is the one version
of the whole contract (spec and records).

Kept import-light on purpose (json, dataclasses, the vocabularies): the agent
imports it before its ``ready`` record, whose latency is measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from cfexp.errors import ConfigError
from cfexp.vocab import PYTHON_RUNTIMES, Api, Runtime, Scenario, words

#: The version of the agent contract: the spec and every record carry it.
SCHEMA_VERSION = 3

# Model options an agent may send (Ollama names); anything else is a spec error,
# so a typo cannot silently become "server defaults".
OPTION_KEYS = ("num_gpu", "num_ctx", "temperature", "top_p", "top_k", "repeat_penalty", "seed")


_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_U64 = (1 << 64) - 1


def nonce_hash(data: bytes) -> int:
    """64-bit FNV-1a, then MurmurHash3's fmix64 finaliser (FNV-1a alone barely
    changes its top bits for a different last byte): a well-mixed hash both
    agent languages compute alike in a few lines."""
    value = _FNV_OFFSET
    for byte in data:
        value = ((value ^ byte) * _FNV_PRIME) & _U64
    value ^= value >> 33
    value = (value * 0xFF51AFD7ED558CCD) & _U64
    value ^= value >> 33
    value = (value * 0xC4CEB9FE1A85EC53) & _U64
    return value ^ (value >> 33)


def nonce_text(salt: str, agent: str, call_index: int) -> str:
    """The cache-defeating prefix of a call's first message (docs/record-schema.md §5).

    Unique per agent process (the harness draws ``salt`` afresh for each), agent
    and call, so no measured prompt shares a prefix with any earlier one. Its
    first characters after ``Request`` are 12 hex digits of a hash of all
    three (the top 48 bits of :func:`nonce_hash` of ``{salt}-{n}-{call_index}``), so two
    calls of one process — another call of the same agent, or another agent —
    share no more than two prompts of different processes do: the word. With
    the salt itself there, they shared it (16 Gemma tokens) in every call after
    an agent's first. A plain sentence: of the forms measured, the one the
    embedded Gemma 3 270M copies into its reply least often
    (benchmarks/nonce_echo.py, docs/benchmarks.md "Prompt cache and the
    nonce"). The Rust agent's ``spec::nonce_text`` is identical.
    """
    n = agent.removeprefix("agent_")
    digest = nonce_hash(f"{salt}-{n}-{call_index}".encode()) >> 16
    return f"Request {digest:012x}-{n}-{call_index}.\n"


@dataclass(frozen=True)
class AgentSpec:
    """One concurrent agent of a job (``spec.agents[i]``)."""

    name: str
    persona: str
    base_url: str
    api: Api
    model: str
    options: dict[str, Any] | None
    instance: int
    # repr=False: a logged or printed spec never shows the key.
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Spec:
    """What one agent process is asked to do (``spec.json``)."""

    run_id: str
    scenario: Scenario
    data_dir: str
    num_predict: int
    call_timeout_s: float
    # Salt of the cache-defeating nonce (see nonce_text); None = no nonce.
    cache_nonce: str | None
    agents: tuple[AgentSpec, ...]
    schema_version: int = SCHEMA_VERSION
    # Python agent only (asyncio | uvloop); other agents ignore it. The
    # command line's --runtime wins over it.
    runtime: Runtime | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object the harness writes (with ``api_key`` as given)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["agents"] = [{f.name: getattr(a, f.name) for f in fields(a)} for a in self.agents]
        return out

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, raw: Any) -> Spec:
        """Validate a decoded spec; raises :class:`ConfigError` naming the bad field."""
        return _SpecReader(raw).read()

    @classmethod
    def load(cls, path: Path) -> Spec:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read the spec <path={path}>: {exc}") from exc
        except ValueError as exc:
            raise ConfigError(f"the spec is not valid JSON <path={path}>: {exc}") from exc
        return cls.from_dict(raw)


class _SpecReader:
    """Field-by-field validation with messages that show the bad value."""

    _TOP: ClassVar[frozenset[str]] = frozenset(f.name for f in fields(Spec))
    _AGENT: ClassVar[frozenset[str]] = frozenset(f.name for f in fields(AgentSpec))

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def read(self) -> Spec:
        raw = self._object(self.raw, "spec")
        self._known(raw, self._TOP, "spec")
        version = self._get(raw, "schema_version", int, "spec")
        if version != SCHEMA_VERSION:
            raise ConfigError(
                f"unsupported <schema_version={version}>: this agent reads "
                f"{SCHEMA_VERSION}; rebuild the agent and the harness from one commit"
            )
        scenario = Scenario(self._choice(raw, "scenario", words(Scenario), "spec"))
        num_predict = self._get(raw, "num_predict", int, "spec")
        if num_predict < 1:
            raise ConfigError(f"<num_predict={num_predict}> must be at least 1")
        timeout = self._get(raw, "call_timeout_s", (int, float), "spec")
        if not timeout > 0:
            raise ConfigError(f"<call_timeout_s={timeout}> must be positive")
        runtime = raw.get("runtime")
        python_runtimes = tuple(r.value for r in PYTHON_RUNTIMES)
        if runtime is not None and runtime not in python_runtimes:
            raise ConfigError(f"<runtime={runtime!r}> must be one of {', '.join(python_runtimes)} or null")
        cache_nonce = self._get(raw, "cache_nonce", (str, type(None)), "spec")
        # ASCII only: str.isalnum() alone takes any script's letters and digits
        # (and Rust's is_alphanumeric differs from it beyond ASCII).
        if cache_nonce is not None and not (cache_nonce.isascii() and cache_nonce.isalnum()):
            raise ConfigError(
                f"<cache_nonce={cache_nonce!r}> must be null or a non-empty ASCII alphanumeric salt"
            )
        agents_raw = raw.get("agents")
        if not isinstance(agents_raw, list) or not agents_raw:
            raise ConfigError("<agents> must be a non-empty list of agent objects")
        agents = tuple(self._agent(a, f"agents[{i}]") for i, a in enumerate(agents_raw))
        if scenario != Scenario.multi_agent and len(agents) != 1:
            raise ConfigError(
                f"<scenario={scenario}> runs exactly one agent, got {len(agents)}: "
                "use scenario multi_agent for several"
            )
        names = [a.name for a in agents]
        if len(set(names)) != len(names):
            raise ConfigError(f"agent names must be unique <names={names}>")
        return Spec(
            schema_version=version,
            run_id=self._get(raw, "run_id", str, "spec"),
            scenario=scenario,
            data_dir=self._get(raw, "data_dir", str, "spec"),
            num_predict=num_predict,
            call_timeout_s=float(timeout),
            cache_nonce=cache_nonce,
            agents=agents,
            runtime=Runtime(runtime) if runtime is not None else None,
        )

    def _agent(self, raw: Any, where: str) -> AgentSpec:
        raw = self._object(raw, where)
        self._known(raw, self._AGENT, where)
        base_url = self._get(raw, "base_url", str, where)
        if not base_url.startswith(("http://", "https://")) or base_url.endswith("/"):
            raise ConfigError(
                f"<{where}.base_url={base_url}> must be an http(s) URL without a trailing slash"
            )
        options = raw.get("options")
        if options is not None:
            # A null value means "not set": the key is not sent.
            given = self._object(options, f"{where}.options")
            options = {key: value for key, value in given.items() if value is not None}
            for key, value in options.items():
                if key not in OPTION_KEYS:
                    raise ConfigError(
                        f"unknown model option <{where}.options.{key}>: "
                        f"allowed are {', '.join(OPTION_KEYS)}"
                    )
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ConfigError(f"<{where}.options.{key}={value!r}> must be a number")
        api_key = raw.get("api_key")
        if api_key is not None and not isinstance(api_key, str):
            # Never echo the value: it is a secret.
            raise ConfigError(f"<{where}.api_key> must be a string or null")
        return AgentSpec(
            name=self._get(raw, "name", str, where),
            persona=self._get(raw, "persona", str, where),
            base_url=base_url,
            api=Api(self._choice(raw, "api", words(Api), where)),
            model=self._get(raw, "model", str, where),
            options=options,
            instance=self._get(raw, "instance", int, where),
            api_key=api_key,
        )

    @staticmethod
    def _object(value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ConfigError(f"<{where}> must be a JSON object, got {type(value).__name__}")
        return value

    @staticmethod
    def _known(raw: dict[str, Any], allowed: frozenset[str], where: str) -> None:
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise ConfigError(f"unknown field(s) in <{where}>: {', '.join(unknown)}")

    @staticmethod
    def _get(raw: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
        if key not in raw:
            raise ConfigError(f"missing field <{where}.{key}>")
        value = raw[key]
        # bool is an int in Python; a spec saying `"num_predict": true` is still wrong.
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            raise ConfigError(f"<{where}.{key}={value!r}> has the wrong type")
        return value

    def _choice(self, raw: dict[str, Any], key: str, allowed: tuple[str, ...], where: str) -> str:
        value = self._get(raw, key, str, where)
        if value not in allowed:
            raise ConfigError(f"<{where}.{key}={value}> must be one of {', '.join(allowed)}")
        return str(value)
