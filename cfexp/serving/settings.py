"""Engine settings: the ``--settings`` JSON, parsed into typed dataclasses.

One flat JSON object per engine (plus a nested ``faults`` object shared by both
engines). Every key is checked here, before anything starts: an unknown key or
a value of the wrong type or range raises :class:`~cfexp.errors.ConfigError`
naming the key, the value and what is allowed, and the CLI exits with code 2.
The tables in ``docs/serving.md`` describe every field; the comments above each
field here say the same in short.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cfexp.errors import ConfigError

#: Engine names, as given to ``--engine``.
ENGINES = ("sim", "llamacpp")


@dataclass(frozen=True)
class FaultSettings:
    """Faults to inject, for tests of the harness's failure handling.

    All default to "no fault". This is the seam for more kinds of faults: add a
    field here, plan it in :mod:`cfexp.serving.faults`, act on it in
    :mod:`cfexp.serving.exchange`.
    """

    # HTTP status (500, 502, 503 or 504) sent instead of a reply on every Nth generation request.
    fail_status: int | None = None
    # N for fail_status: 1 = every generation request, 3 = the 3rd, 6th, ...
    fail_every_n: int = 1
    # Close the connection after this many content chunks (no final object).
    drop_after_tokens: int | None = None
    # N for drop_after_tokens: which generation requests are cut (1 = all).
    drop_every_n: int = 1
    # Write one line that is not valid JSON after this many content chunks, then go on.
    malformed_after_tokens: int | None = None
    # N for malformed_after_tokens: which generation requests get the bad line (1 = all).
    malformed_every_n: int = 1
    # Stop sending after this many content chunks and keep the connection open
    # (0 = never answer at all), until the client gives up or the server stops.
    hang_after_tokens: int | None = None
    # N for hang_after_tokens: which generation requests hang (1 = all).
    hang_every_n: int = 1


@dataclass(frozen=True)
class SimSettings:
    """The simulator's model and timing model (formulas in docs/serving.md)."""

    # Model name served (Ollama "name:tag"; a name without a tag means ":latest").
    model_name: str = "cfexp-sim:latest"
    # Loaded context length (Ollama num_ctx) at start; requests may reload with another.
    n_ctx: int = 4096
    # Layers offloaded to the "GPU" at start (Ollama num_gpu); >= n_layers or < 0 = all.
    n_gpu_layers: int = 999
    # Transformer layers of the simulated model (Gemma 3 270M has 18).
    n_layers: int = 18
    # Independent model instances serving in parallel; more requests wait FIFO.
    slots: int = 1
    # Load time: load_base_s + load_s_per_1k_ctx * num_ctx / 1024.
    load_base_s: float = 0.5
    load_s_per_1k_ctx: float = 0.05
    # Prompt evaluation rates (tokens/s) with no layer / every layer offloaded.
    prefill_cpu_tok_s: float = 400.0
    prefill_gpu_tok_s: float = 4000.0
    # Decode rates (tokens/s) with no layer / every layer offloaded.
    decode_cpu_tok_s: float = 25.0
    decode_gpu_tok_s: float = 120.0
    # An optional optimum of the decode rate, so a search has a known best config
    # (off while both are None). The rate is multiplied by
    # floor + (1 - floor) * exp(-(log2(num_ctx / optimum_num_ctx)^2 + ((L - optimum_num_gpu) / width)^2)),
    # L = offloaded layers; an unset optimum contributes no term.
    optimum_num_gpu: int | None = None
    optimum_num_ctx: int | None = None
    # The optimum's width along the offloaded layers, in layers.
    optimum_width: float = 4.0
    # The multiplier far from the optimum: keeps a bad config slow, not endless.
    optimum_floor: float = 0.25
    # Coefficient of variation of the log-normal jitter on every duration (0 = none).
    jitter_cv: float = 0.05
    # Wall-clock time = model time * time_scale (0.01 makes tests 100x faster).
    time_scale: float = 1.0
    # Tokens generated when a request gives no num_predict / max_tokens.
    default_num_predict: int = 128
    # Seed of the jitter and of the generated words.
    seed: int = 0
    # Simulate llama.cpp's per-slot prefix cache (a repeated prompt evaluates ~1 token).
    prompt_cache: bool = True
    # Count the end-of-turn token in eval_count / completion_tokens when the reply
    # stops by itself (done_reason "stop"), as Ollama and llama-server do.
    count_end_of_turn: bool = True
    # The model stops by itself after this many tokens when num_predict and the
    # context allow; None = only a request without num_predict stops by itself,
    # at default_num_predict.
    natural_stop_tokens: int | None = None
    # Continuous batching: with k requests active on the instance, every prefill
    # and decode step takes x (1 + batch_slowdown * (k - 1)). 0 = independent slots.
    batch_slowdown: float = 0.0
    # A machine that slows down: every duration x (1 + drift_per_s * model seconds
    # since the server started).
    drift_per_s: float = 0.0
    # Send the final message's extensions: llama.cpp's "timings" object and
    # "prompt_truncated_tokens" (false = exactly Ollama's / OpenAI's shapes).
    timings: bool = True
    faults: FaultSettings = field(default_factory=FaultSettings)


@dataclass(frozen=True)
class LlamaSettings:
    """The real embedded model, run through llama-cpp-python's ``Llama``."""

    # GGUF file; None = the embedded Gemma 3 270M (cfexp.backends.model_files).
    model_path: str | None = None
    # Model name served (Ollama "name:tag").
    model_name: str = "gemma3:270m"
    # Loaded context length at start (Ollama num_ctx); requests may reload with another.
    n_ctx: int = 4096
    # Layers offloaded to a GPU at start (Ollama num_gpu); a CPU-only build ignores it.
    n_gpu_layers: int = 0
    # CPU threads per Llama instance (generation and batch).
    n_threads: int = 2
    # Independent Llama instances serving in parallel; more requests wait FIFO.
    slots: int = 1
    # Seed of sampling when a request gives none.
    seed: int = 0
    # Keep each instance's KV cache between requests (llama.cpp's prefix reuse).
    prompt_cache: bool = True
    # llama.cpp batch size for prompt evaluation.
    n_batch: int = 512
    # Sampling defaults when a request does not say: Gemma 3's published ones
    # (what Ollama's gemma3 models use).
    temperature: float = 1.0
    top_k: int = 64
    top_p: float = 0.95
    repeat_penalty: float = 1.0
    # Send the final message's extensions: llama.cpp's "timings" object and
    # "prompt_truncated_tokens" (false = exactly Ollama's / OpenAI's shapes).
    timings: bool = True
    faults: FaultSettings = field(default_factory=FaultSettings)


EngineSettings = SimSettings | LlamaSettings

_Settings = TypeVar("_Settings", SimSettings, LlamaSettings, FaultSettings)

_Check = Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


# Range rules beyond the type: (check, what is allowed).
_RULES: dict[str, tuple[_Check, str]] = {
    "n_ctx": (lambda v: _is_int(v) and 16 <= v <= 1 << 20, "a whole number of tokens from 16 to 1048576"),
    "n_layers": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "slots": (lambda v: _is_int(v) and 1 <= v <= 64, "a whole number from 1 to 64"),
    "n_threads": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "n_batch": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "default_num_predict": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "time_scale": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "jitter_cv": (lambda v: _is_number(v) and 0 <= v <= 5, "a number from 0 to 5"),
    "load_base_s": (lambda v: _is_number(v) and v >= 0, "a number of seconds >= 0"),
    "load_s_per_1k_ctx": (lambda v: _is_number(v) and v >= 0, "a number of seconds >= 0"),
    "prefill_cpu_tok_s": (lambda v: _is_number(v) and v > 0, "a number of tokens/s > 0"),
    "prefill_gpu_tok_s": (lambda v: _is_number(v) and v > 0, "a number of tokens/s > 0"),
    "decode_cpu_tok_s": (lambda v: _is_number(v) and v > 0, "a number of tokens/s > 0"),
    "decode_gpu_tok_s": (lambda v: _is_number(v) and v > 0, "a number of tokens/s > 0"),
    "temperature": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "top_k": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "top_p": (lambda v: _is_number(v) and 0 <= v <= 1, "a number from 0 to 1"),
    "repeat_penalty": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "fail_status": (lambda v: v is None or v in (500, 502, 503, 504), "null, 500, 502, 503 or 504"),
    "fail_every_n": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "drop_after_tokens": (lambda v: v is None or (_is_int(v) and v >= 0), "null or a whole number >= 0"),
    "drop_every_n": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "malformed_after_tokens": (lambda v: v is None or (_is_int(v) and v >= 0), "null or a whole number >= 0"),
    "malformed_every_n": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "hang_after_tokens": (lambda v: v is None or (_is_int(v) and v >= 0), "null or a whole number >= 0"),
    "hang_every_n": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "model_name": (lambda v: isinstance(v, str) and v.strip() != "", "a non-empty model name"),
    "optimum_num_gpu": (lambda v: v is None or (_is_int(v) and v >= 0), "null or a whole number of layers >= 0"),
    "optimum_num_ctx": (
        lambda v: v is None or (_is_int(v) and 16 <= v <= 1 << 20),
        "null or a whole number of tokens from 16 to 1048576",
    ),
    "optimum_width": (lambda v: _is_number(v) and v > 0, "a number of layers > 0"),
    "natural_stop_tokens": (
        lambda v: v is None or (_is_int(v) and v >= 0),
        "null or a whole number of tokens >= 0",
    ),
    "batch_slowdown": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "drift_per_s": (lambda v: _is_number(v) and v >= 0, "a number >= 0 (per model second)"),
    "optimum_floor": (lambda v: _is_number(v) and 0 < v <= 1, "a number above 0, at most 1"),
}

# Type rules for keys without a range rule, by the field's declared type.
_TYPE_RULES: dict[str, tuple[_Check, str]] = {
    "int": (_is_int, "a whole number"),
    "float": (_is_number, "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "str | None": (lambda v: v is None or isinstance(v, str), "a string or null"),
}


def _build(cls: type[_Settings], raw: dict[str, Any], where: str) -> _Settings:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            allowed = ", ".join(sorted(fields))
            raise ConfigError(f"unknown {where} setting <{key}={value!r}>: allowed keys are {allowed}")
        if key == "faults":
            if not isinstance(value, dict):
                raise ConfigError(f"{where} setting <faults={value!r}> must be a JSON object")
            values[key] = _build(FaultSettings, value, "faults")
            continue
        check, allowed_text = _RULES.get(key) or _TYPE_RULES[str(fields[key].type)]
        if not check(value):
            raise ConfigError(f"bad {where} setting <{key}={value!r}>: expected {allowed_text}")
        if str(fields[key].type) == "float" and _is_int(value):
            value = float(value)
        values[key] = value
    return cls(**values)


def read_settings_argument(text: str) -> dict[str, Any]:
    """The raw JSON object of ``--settings``: inline JSON or ``@path/to/file.json``."""
    source = "--settings"
    if text.startswith("@"):
        path = Path(text[1:])
        source = f"--settings file <path={path}>"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read {source}: {exc.strerror}") from exc
    if not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a JSON object, got {type(raw).__name__}")
    return raw


def parse_settings(engine: str, raw: dict[str, Any]) -> EngineSettings:
    """Validated settings for ``engine`` (raises ConfigError)."""
    if engine == "sim":
        return _build(SimSettings, raw, "sim")
    if engine == "llamacpp":
        return _build(LlamaSettings, raw, "llamacpp")
    raise ConfigError(f"unknown engine <engine={engine}>: choose one of {', '.join(ENGINES)}")
