"""cfexp's closed vocabularies: one enum each, the only list of allowed words.

The config schema types its fields with them (so Hydra rejects an unknown word
while composing), the agent contract uses them (records, spec), and the docs
and the Rust build read them from here. Ground floor: standard library only,
because the Python agent imports it before its ``ready`` record.

Member names equal their values, in lower case: OmegaConf converts a YAML or
command-line string to an enum member *by name*, so ``runtime=tokio`` must
name the member ``tokio``.
"""

from __future__ import annotations

from enum import StrEnum


class Language(StrEnum):
    """The language an agent process is written in."""

    python = "python"
    rust = "rust"


class Runtime(StrEnum):
    """The agent's async runtime; a runtime implies its language."""

    asyncio = "asyncio"
    uvloop = "uvloop"
    tokio = "tokio"
    tokio_localset = "tokio_localset"
    smol = "smol"
    smol_1kb = "smol_1kb"
    async_std = "async_std"

    @property
    def language(self) -> Language:
        return Language.python if self in PYTHON_RUNTIMES else Language.rust


PYTHON_RUNTIMES = (Runtime.asyncio, Runtime.uvloop)
RUST_RUNTIMES = tuple(r for r in Runtime if r not in PYTHON_RUNTIMES)


class Api(StrEnum):
    """The wire protocol an agent speaks to a server."""

    ollama = "ollama"  # POST /api/chat, NDJSON
    openai = "openai"  # POST /v1/chat/completions, SSE


class Backend(StrEnum):
    """Where the LLM runs (docs/serving.md, docs/configuration.md)."""

    llamacpp = "llamacpp"  # cfexp's own server over llama-cpp-python (the embedded default)
    llamaserver = "llamaserver"  # llama.cpp's own llama-server, built from the pinned source
    sim = "sim"  # cfexp's simulator
    ollama = "ollama"  # a real Ollama
    openai = "openai"  # any OpenAI-compatible server


class Scenario(StrEnum):
    """What the agent does (TR108 / TR109 / TR110)."""

    single_inference = "single_inference"
    single_agent = "single_agent"
    multi_agent = "multi_agent"


class Step(StrEnum):
    """One LLM call of a workflow; the keys of prompts.json."""

    single_inference = "single_inference"
    analysis = "analysis"
    report = "report"


class MultiMode(StrEnum):
    """How the agents of a multi_agent run choose their options (docs/multi-agent.md)."""

    baseline_vs_chimera = "baseline_vs_chimera"
    chimera_homo = "chimera_homo"
    chimera_hetero = "chimera_hetero"


class Lifecycle(StrEnum):
    """When managed servers start and stop."""

    per_job = "per_job"
    per_sweep = "per_sweep"
    external = "external"


class HostLockMode(StrEnum):
    """Whether a job holds the host lock while its servers run (``always``/``never``: YAML reads on/off as booleans)."""

    auto = "auto"
    always = "always"
    never = "never"


class OptionsMode(StrEnum):
    """``configured`` sends the options; ``server_defaults`` sends none to a server started with none."""

    configured = "configured"
    server_defaults = "server_defaults"


class PromptCache(StrEnum):
    """Whether a server's prefix cache may serve measured prompts (docs/metrics.md)."""

    defeat = "defeat"  # a nonce no earlier call shared starts every measured prompt
    allow = "allow"  # no nonce; every job is warmed alike first


class SoloPhases(StrEnum):
    """When each agent of a multi_agent job runs alone (docs/multi-agent.md)."""

    before = "before"
    after = "after"
    both = "both"  # before and after the concurrent phase (ABA)


class SweepOrder(StrEnum):
    """The order a sweep runs its jobs in (docs/methodology.md)."""

    grid = "grid"  # Hydra's order: the last swept key varies fastest
    shuffled = "shuffled"  # one seeded random permutation of all jobs
    blocked = "blocked"  # per repetition, every config once, in a fresh seeded order


def words(vocabulary: type[StrEnum]) -> tuple[str, ...]:
    """The allowed words of a vocabulary, in declaration order."""
    return tuple(member.value for member in vocabulary)
