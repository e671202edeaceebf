"""What the HTTP layer needs from an engine: the ``Engine`` protocol and its data.

An engine turns a :class:`~cfexp.serving.request.GenerationRequest` into token
pieces and final counters. It is used in two steps, so a request that cannot be
served is refused *before* it waits in the queue:

1. ``prepare(request)`` — cheap, runs on the request's thread before admission:
   resolves the model, renders and counts the prompt (raises ``RequestError``
   with a 4xx status for an unknown model). A prompt longer than the context
   is not refused: ``generate`` truncates it (:func:`plan_truncation`), once
   the context it runs with is known.
2. ``generate(prepared, slot)`` — runs after admission, on the slot the queue
   gave: yields :class:`TokenPiece` items, then exactly one
   :class:`GenerationStats` as the last item. A slot is used by one request at
   a time, so engines keep per-slot state (loaded parameters, KV cache)
   without locks.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from cfexp.serving.request import GenerationRequest

logger = logging.getLogger(__name__)

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
    """The engine's counters for one request (durations in nanoseconds).

    Counted as real servers count: ``prompt_tokens`` is the whole prompt the
    model was given (after any truncation), cached or not (Ollama's
    ``prompt_eval_count``, OpenAI's ``usage.prompt_tokens``); the tokens
    really evaluated are ``prompt_evaluated`` (llama.cpp's ``timings.prompt_n``).
    ``eval_count`` includes the end-of-turn token when the reply stopped by
    itself, as Ollama and llama-server count it.
    """

    # Tokens of the prompt the model was given (after truncation), cached + evaluated.
    prompt_tokens: int
    # Prompt tokens evaluated for this request (the rest came from the prefix cache).
    prompt_evaluated: int
    # Tokens generated, the end-of-turn token included when the reply stopped by itself.
    eval_count: int
    # Time from reaching the engine until the model was ready for this request:
    # its own (re)load, and waiting for another request's load or for in-flight
    # requests to finish before a reload (as Ollama's load_duration).
    load_duration_ns: int
    prompt_eval_duration_ns: int
    eval_duration_ns: int
    done_reason: DoneReason
    # Prompt tokens dropped to fit the context (0 = the prompt was used whole).
    prompt_truncated_tokens: int = 0
    # Decode steps that eval_duration covers (for per-token rates): the
    # simulator's eval_count steps; llama.cpp's sampled tokens - 1, the first
    # being sampled from the prompt's logits.
    eval_steps: int = 0
    # Engine-specific accounting for the ground truth (the simulator's model time).
    detail: dict[str, Any] | None = None

    @property
    def cached_prompt_tokens(self) -> int:
        return max(0, self.prompt_tokens - self.prompt_evaluated)


def load_only_stats(load_ns: int, detail: dict[str, Any] | None = None) -> GenerationStats:
    """The counters of a request that only loaded the model (Ollama's empty prompt)."""
    return GenerationStats(0, 0, 0, load_ns, 0, 0, "load", detail=detail)


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


#: Prompt tokens kept at the start when a prompt is truncated: Ollama's default
#: ``num_keep`` (for Gemma 3: BOS and the opening of the first user turn).
TRUNCATE_KEEP_HEAD = 4


@dataclass(frozen=True)
class Truncation:
    """Which prompt tokens a too-long prompt keeps: the first ``head``, the last ``tail``."""

    head: int
    tail: int
    dropped: int

    @property
    def kept(self) -> int:
        return self.head + self.tail


def plan_truncation(prompt_tokens: int, num_ctx: int, num_predict: int | None) -> Truncation | None:
    """How to cut a prompt that leaves no room in the context; None when it fits.

    The rule (docs/serving.md, "Prompts longer than the context"): a prompt of
    ``num_ctx`` tokens or more keeps ``num_ctx - reserve`` tokens, the first
    :data:`TRUNCATE_KEEP_HEAD` and the most recent ones, where ``reserve``, the
    room left for the reply, is ``num_predict`` capped at half the context
    (half the context when num_predict is absent or negative; at least 1).
    """
    if prompt_tokens < num_ctx:
        return None
    half = num_ctx // 2
    reserve = half if num_predict is None or num_predict < 0 else min(num_predict, half)
    kept = num_ctx - max(1, reserve)
    head = min(TRUNCATE_KEEP_HEAD, kept)
    return Truncation(head=head, tail=kept - head, dropped=prompt_tokens - kept)


def log_truncation(request_id: str, num_ctx: int, prompt_tokens: int, plan: Truncation) -> None:
    """The server log's line for a truncated prompt (Ollama's words and fields)."""
    logger.warning(
        "request %s: truncating input prompt limit=%d prompt=%d keep=%d new=%d dropped=%d",
        request_id,
        num_ctx,
        prompt_tokens,
        plan.head,
        plan.kept,
        plan.dropped,
    )
