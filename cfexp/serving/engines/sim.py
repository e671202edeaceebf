"""The simulator engine: a timing model instead of a model.

Every duration is model time * a jitter factor * ``time_scale``, slept against
absolute deadlines (so sleep overshoot never accumulates), and the counters
report the durations actually measured. Formulas (see docs/serving.md):

- offloaded fraction ``f = min(num_gpu, n_layers) / n_layers`` (num_gpu < 0 = all)
- load: ``load_base_s + load_s_per_1k_ctx * num_ctx / 1024`` on a slot's first
  use and whenever num_ctx or the offloaded layers change
- per-token time ``(1 - f) / cpu_rate + f / gpu_rate``, for prefill and decode:
  a linear mix of per-token *times*, because each layer's share of a token's
  time is spent either on the CPU or on the GPU
- prefill: prompt tokens not in the slot's prefix cache * prefill per-token time
- decode: one decode step per token; token i is sent at the end of step i, so
  ``eval_duration = eval_count * decode per-token time``
- jitter: log-normal with mean 1 and coefficient of variation ``jitter_cv``,
  drawn independently for the load, the prefill and every decode step
- optional optimum (``optimum_num_gpu`` / ``optimum_num_ctx`` set): the decode
  per-token time is divided by ``floor + (1 - floor) * exp(-d)``,
  ``d = log2(num_ctx / optimum_num_ctx)^2 + ((L - optimum_num_gpu) / optimum_width)^2``
  with ``L`` the offloaded layers (an unset optimum adds nothing to ``d``)

Prompt tokens are estimated as ``ceil(chars / 4)`` of the rendered prompt. The
request's ``temperature``, ``top_p``, ``top_k``, ``repeat_penalty`` and ``seed``
are accepted and ignored: the text depends only on the settings' seed and the
prompt.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from cfexp.serving.engines.base import (
    DoneReason,
    GenerationEvent,
    GenerationStats,
    LoadedModel,
    ModelInfo,
    PreparedGeneration,
    TokenPiece,
    canonical_model_name,
    effective_num_predict,
)
from cfexp.serving.engines.simtext import seed_for, token_pieces
from cfexp.serving.request import GenerationRequest, RequestError
from cfexp.serving.settings import SimSettings
from cfexp.serving.templates import render_prompt

# Characters per token of the prompt estimate (a common rule of thumb for English).
CHARS_PER_TOKEN = 4
# Roughly the size of gemma3:270m, so /api/tags and /api/ps look plausible.
_SIM_SIZE_BYTES = 291_554_304


def estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def _common_prefix(a: str, b: str) -> int:
    limit = min(len(a), len(b))
    index = 0
    while index < limit and a[index] == b[index]:
        index += 1
    return index


def _sleep_until(deadline_ns: int) -> None:
    remaining = deadline_ns - time.monotonic_ns()
    if remaining > 0:
        time.sleep(remaining / 1e9)


@dataclass
class _Slot:
    """What one simulated instance has loaded (None = nothing yet)."""

    num_ctx: int | None = None
    layers: int | None = None
    # Text whose KV cache the slot holds: the last prompt plus its output.
    cached_text: str = ""


class SimEngine:
    """The simulator (see the module docstring for the timing model)."""

    name = "sim"

    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.slots = settings.slots
        started = datetime.now(UTC).isoformat()
        self._base_model = ModelInfo(
            name=canonical_model_name(settings.model_name),
            family="cfexp-sim",
            parameter_size="270M",
            quantization_level="SIM",
            size_bytes=_SIM_SIZE_BYTES,
            digest=hashlib.sha256(settings.model_name.encode()).hexdigest(),
            context_length=32768,
            n_layers=settings.n_layers,
            modified_at=started,
        )
        self._models: dict[str, ModelInfo] = {self._base_model.name: self._base_model}
        self._slots = [_Slot() for _ in range(settings.slots)]
        self._lock = threading.Lock()  # guards _models and the request sequence
        self._sequence = itertools.count()

    # -- models ---------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        with self._lock:
            return list(self._models.values())

    def loaded(self) -> list[LoadedModel]:
        result: list[LoadedModel] = []
        for slot in self._slots:
            if slot.num_ctx is not None and slot.layers is not None:
                vram = self._base_model.size_bytes * slot.layers // self.settings.n_layers
                result.append(LoadedModel(self._base_model, slot.num_ctx, vram))
                break  # one model, however many slots hold it
        return result

    def find_model(self, name: str) -> ModelInfo | None:
        with self._lock:
            return self._models.get(canonical_model_name(name))

    def pull(self, name: str) -> ModelInfo | None:
        """Any name can be pulled: it becomes another name for the simulated model."""
        canonical = canonical_model_name(name)
        with self._lock:
            if canonical not in self._models:
                digest = hashlib.sha256(canonical.encode()).hexdigest()
                self._models[canonical] = replace(self._base_model, name=canonical, digest=digest)
            return self._models[canonical]

    # -- generation -----------------------------------------------------------

    def _layers(self, num_gpu: int) -> int:
        """Offloaded layers for a num_gpu value (negative = all, like Ollama's -1)."""
        n_layers = self.settings.n_layers
        return n_layers if num_gpu < 0 else min(num_gpu, n_layers)

    def token_seconds(self, cpu_tok_s: float, gpu_tok_s: float, layers: int) -> float:
        """Model time of one token with ``layers`` of the model offloaded."""
        fraction = layers / self.settings.n_layers
        return (1.0 - fraction) / cpu_tok_s + fraction / gpu_tok_s

    def optimum_factor(self, layers: int, num_ctx: int) -> float:
        """The decode rate's multiplier from the optional optimum term (1 when it is off)."""
        settings = self.settings
        if settings.optimum_num_gpu is None and settings.optimum_num_ctx is None:
            return 1.0
        distance = 0.0
        if settings.optimum_num_ctx is not None:
            distance += math.log2(num_ctx / settings.optimum_num_ctx) ** 2
        if settings.optimum_num_gpu is not None:
            distance += ((layers - settings.optimum_num_gpu) / settings.optimum_width) ** 2
        floor = settings.optimum_floor
        return floor + (1.0 - floor) * math.exp(-distance)

    def decode_seconds(self, layers: int, num_ctx: int) -> float:
        """Model time of one decode step (before jitter and time_scale)."""
        base = self.token_seconds(self.settings.decode_cpu_tok_s, self.settings.decode_gpu_tok_s, layers)
        return base / self.optimum_factor(layers, num_ctx)

    def load_seconds(self, num_ctx: int) -> float:
        return self.settings.load_base_s + self.settings.load_s_per_1k_ctx * num_ctx / 1024

    def prepare(self, request: GenerationRequest) -> PreparedGeneration:
        model = self.find_model(request.model)
        if model is None:
            raise RequestError(404, f"model '{request.model}' not found", code="model_not_found")
        prompt_text = render_prompt(request)
        prompt_tokens = estimate_tokens(prompt_text)
        num_ctx = request.options.num_ctx
        if request.api == "ollama" and num_ctx is None:
            # Like Ollama, no num_ctx means the default, not "whatever is loaded".
            num_ctx = self.settings.n_ctx
        num_gpu = request.options.num_gpu
        if request.api == "ollama" and num_gpu is None:
            num_gpu = self.settings.n_gpu_layers
        _check_fits(prompt_tokens, num_ctx or self.settings.n_ctx)
        return PreparedGeneration(
            request=request,
            model=model,
            prompt_text=prompt_text,
            prompt_tokens=prompt_tokens,
            num_ctx=num_ctx,
            num_gpu=num_gpu,
        )

    def _jitter(self, rng: random.Random) -> float:
        cv = self.settings.jitter_cv
        if cv == 0:
            return 1.0
        sigma = math.sqrt(math.log1p(cv * cv))
        return rng.lognormvariate(-sigma * sigma / 2, sigma)  # mean exactly 1

    def _model_ns(self, seconds: float, rng: random.Random) -> int:
        return round(seconds * self._jitter(rng) * self.settings.time_scale * 1e9)

    def generate(self, prepared: PreparedGeneration, slot: int) -> Generator[GenerationEvent, None, None]:
        settings = self.settings
        state = self._slots[slot]
        with self._lock:
            rng = random.Random(f"{settings.seed}/{next(self._sequence)}")
        num_ctx = prepared.num_ctx or state.num_ctx or settings.n_ctx
        num_gpu = prepared.num_gpu
        layers = self._layers(num_gpu) if num_gpu is not None else state.layers
        if layers is None:
            layers = self._layers(settings.n_gpu_layers)
        _check_fits(prepared.prompt_tokens, num_ctx)

        t_start = time.monotonic_ns()
        load_ns = 0
        if (state.num_ctx, state.layers) != (num_ctx, layers):
            _sleep_until(t_start + self._model_ns(self.load_seconds(num_ctx), rng))
            state.num_ctx, state.layers, state.cached_text = num_ctx, layers, ""
            load_ns = time.monotonic_ns() - t_start
        if prepared.request.load_only:
            yield GenerationStats(0, 0, 0, load_ns, 0, 0, "load")
            return

        cached = 0
        if settings.prompt_cache:
            common = _common_prefix(state.cached_text, prepared.prompt_text)
            # llama.cpp always re-evaluates at least the last prompt token.
            cached = min(common // CHARS_PER_TOKEN, prepared.prompt_tokens - 1)
        evaluated = prepared.prompt_tokens - cached
        t_prefill = time.monotonic_ns()
        prefill_s = evaluated * self.token_seconds(
            settings.prefill_cpu_tok_s, settings.prefill_gpu_tok_s, layers
        )
        _sleep_until(t_prefill + self._model_ns(prefill_s, rng))
        t_decode = time.monotonic_ns()
        prompt_eval_ns = t_decode - t_prefill

        room = num_ctx - prepared.prompt_tokens
        limit, by_context = effective_num_predict(
            prepared.request.options.num_predict, settings.default_num_predict, room
        )
        asked = prepared.request.options.num_predict is not None and prepared.request.options.num_predict >= 0
        step_s = self.decode_seconds(layers, num_ctx)
        deadline = t_decode
        generated: list[str] = []
        state.cached_text = prepared.prompt_text  # a cut stream still leaves the prompt cached
        for piece in itertools.islice(token_pieces(seed_for(settings.seed, prepared.prompt_text)), limit):
            deadline += self._model_ns(step_s, rng)
            _sleep_until(deadline)
            generated.append(piece)
            yield TokenPiece(piece)
        eval_ns = time.monotonic_ns() - t_decode
        state.cached_text = prepared.prompt_text + "".join(generated)
        # A simulated model "chooses" to stop at the default length; an explicit
        # num_predict or a full context is a cut ("length"), as in Ollama.
        done_reason: DoneReason = "length" if (asked or by_context) else "stop"
        yield GenerationStats(
            prompt_tokens=prepared.prompt_tokens,
            prompt_eval_count=evaluated,
            eval_count=len(generated),
            load_duration_ns=load_ns,
            prompt_eval_duration_ns=prompt_eval_ns,
            eval_duration_ns=eval_ns,
            done_reason=done_reason,
        )

    def close(self) -> None:
        """Nothing to free."""


def _check_fits(prompt_tokens: int, num_ctx: int) -> None:
    if prompt_tokens >= num_ctx:
        raise RequestError(
            400,
            f"prompt is too long: {prompt_tokens} tokens do not fit the context <num_ctx={num_ctx}>; "
            "shorten the prompt or raise num_ctx",
            code="context_length_exceeded",
        )
