"""What the HTTP layer needs from an engine: the ``Engine`` protocol and its data.

An engine turns a :class:`~cfexp.serving.request.GenerationRequest` into token
pieces and final counters. It is used in two steps, so a request that cannot be
served is refused *before* it waits in the queue:

1. ``prepare(request)`` — cheap, runs on the request's thread before admission:
   resolves the model, renders and counts the prompt, checks it fits the
   context (raises ``RequestError`` with a 4xx status otherwise).
2. ``generate(prepared, slot)`` — runs after admission, on the slot the queue
   gave: yields :class:`TokenPiece` items, then exactly one
   :class:`GenerationStats` as the last item. A slot is used by one request at
   a time, so engines keep per-slot state (loaded parameters, KV cache)
   without locks.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Literal, Protocol

from cfexp.serving.request import GenerationRequest

DoneReason = Literal["stop", "length", "load"]


class EngineError(Exception):
    """Generation failed inside the engine (sent as a 500 / an in-stream error)."""


@dataclass(frozen=True)
class ModelInfo:
    """A served model, as /api/tags, /api/show and /v1/models describe it."""

    name: str
    family: str
    parameter_size: str
    quantization_level: str
    size_bytes: int
    digest: str
    # Context length the model was trained with (not the loaded num_ctx).
    context_length: int
    n_layers: int
    # RFC 3339 time, as Ollama writes it.
    modified_at: str
    format: str = "gguf"


@dataclass(frozen=True)
class LoadedModel:
    """A model in memory, for /api/ps."""

    model: ModelInfo
    num_ctx: int
    size_vram_bytes: int


@dataclass(frozen=True)
class PreparedGeneration:
    """A request checked and ready to generate (the result of ``prepare``)."""

    request: GenerationRequest
    model: ModelInfo
    # The prompt as the model sees it (chat template applied).
    prompt_text: str
    prompt_tokens: int
    # Launch parameters this request asks for; None = run with what the slot has
    # loaded (OpenAI requests cannot set them).
    num_ctx: int | None
    num_gpu: int | None
    # Engine-specific: llama.cpp token ids of the prompt.
    token_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class TokenPiece:
    """Text of one generated token (may be several tokens when bytes were split)."""

    text: str


@dataclass(frozen=True)
class GenerationStats:
    """The engine's counters for one request (durations in nanoseconds)."""

    # Tokens in the whole prompt (OpenAI usage.prompt_tokens).
    prompt_tokens: int
    # Prompt tokens actually evaluated: small when the prefix cache hit.
    prompt_eval_count: int
    eval_count: int
    load_duration_ns: int
    prompt_eval_duration_ns: int
    eval_duration_ns: int
    done_reason: DoneReason

    @property
    def cached_prompt_tokens(self) -> int:
        return max(0, self.prompt_tokens - self.prompt_eval_count)


GenerationEvent = TokenPiece | GenerationStats


class Engine(Protocol):
    """A model runner behind the HTTP layer (see the module docstring)."""

    #: "sim" or "llamacpp".
    name: str
    #: Requests served in parallel; the queue hands out slot numbers 0..slots-1.
    slots: int

    def models(self) -> list[ModelInfo]:
        """Every model this engine can serve."""
        ...

    def loaded(self) -> list[LoadedModel]:
        """Models currently in memory (any slot)."""
        ...

    def find_model(self, name: str) -> ModelInfo | None:
        """The served model called ``name`` (``x`` and ``x:latest`` match), or None."""
        ...

    def pull(self, name: str) -> ModelInfo | None:
        """Make ``name`` available; None when this engine cannot."""
        ...

    def prepare(self, request: GenerationRequest) -> PreparedGeneration:
        """Check and render a request; raises RequestError for a client error."""
        ...

    def generate(self, prepared: PreparedGeneration, slot: int) -> Generator[GenerationEvent, None, None]:
        """Token pieces, then one GenerationStats; raises EngineError on failure."""
        ...

    def close(self) -> None:
        """Free the models (called once, at shutdown)."""
        ...


def canonical_model_name(name: str) -> str:
    """Ollama's rule: a name without a tag means ``name:latest``."""
    name = name.strip()
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def same_model(a: str, b: str) -> bool:
    return canonical_model_name(a) == canonical_model_name(b)


def effective_num_predict(requested: int | None, default: int | None, room: int) -> tuple[int, bool]:
    """(tokens to generate at most, whether the context is the limit).

    Ollama's convention: None or a negative num_predict means "no limit" (until
    the model stops or the context is full); the engine's ``default`` applies
    when given. The result never exceeds ``room`` (context left after the prompt).
    """
    wanted = requested if requested is not None and requested >= 0 else default
    if wanted is None or wanted > room:
        return room, True
    return wanted, False
