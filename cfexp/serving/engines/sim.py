"""The simulator engine: a timing model instead of a model.

Every duration is model time * a jitter factor * ``time_scale``, slept against
absolute deadlines (so sleep overshoot never accumulates), and the counters
report the durations actually measured. Formulas (see docs/serving.md):

- offloaded fraction ``f = min(num_gpu, n_layers) / n_layers`` (num_gpu < 0 = all)
- load: ``load_base_s + load_s_per_1k_ctx * num_ctx / 1024`` on the first
  request and whenever num_ctx or the offloaded layers change; the instance is
  shared by every slot (:mod:`cfexp.serving.engines.instance`), so a reload
  waits for the requests running on other slots, as Ollama's does
- per-token time ``(1 - f) / cpu_rate + f / gpu_rate``, for prefill and decode:
  a linear mix of per-token *times*, because each layer's share of a token's
  time is spent either on the CPU or on the GPU
- prefill: prompt tokens not in the slot's prefix cache * prefill per-token time
- decode: one decode step per token; token i is sent at the end of step i; a
  reply that stops by itself takes one more step, its end-of-turn token's
- batching: with k requests holding the instance (past its load, not yet
  finished), a prefill or decode step takes ``x (1 + batch_slowdown * (k - 1))``
  (k read at the step's start)
- drift: every duration ``x (1 + drift_per_s * model seconds since the start)``
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
from collections import Counter
from collections.abc import Generator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from cfexp.serving.engines.base import (
    GenerationEvent,
    GenerationStats,
    LoadedModel,
    ModelInfo,
    PreparedGeneration,
    TokenPiece,
    canonical_model_name,
    load_only_stats,
    log_truncation,
    plan_truncation,
)
from cfexp.serving.engines.instance import Config, InstanceGate, Passage
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
    """One slot's state: its share of the instance's KV cache."""

    # Text whose KV cache the slot holds: the last prompt plus its output.
    cached_text: str = ""


@dataclass
class _Accounting:
    """The simulator's model time for one request (ground truth ``sim``)."""

    reloaded: bool = False
    load_model_s: float = 0.0
    prefill_model_s: float = 0.0
    prefill_active: int = 0
    decode_model_s: float = 0.0
    decode_steps_by_active: Counter[int] = field(default_factory=Counter)
    drift_first: float | None = None
    drift_last: float | None = None

    def drift(self, factor: float) -> float:
        if self.drift_first is None:
            self.drift_first = factor
        self.drift_last = factor
        return factor

    def as_json(self) -> dict[str, Any]:
        return {
            "reloaded": self.reloaded,
            "load_model_s": self.load_model_s,
            "prefill_model_s": self.prefill_model_s,
            "prefill_active": self.prefill_active,
            "decode_model_s": self.decode_model_s,
            "decode_steps_by_active": {str(k): n for k, n in sorted(self.decode_steps_by_active.items())},
            "drift_first": self.drift_first,
            "drift_last": self.drift_last,
        }


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
        # One instance shared by every slot: nothing loaded until the first request.
        self._gate = InstanceGate()
        self._lock = threading.Lock()  # guards _models and the request sequence
        self._sequence = itertools.count()
        # The origin of drift_per_s's model seconds.
        self._t_started_ns = time.monotonic_ns()

    # -- models ---------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        with self._lock:
            return list(self._models.values())

    def loaded(self) -> list[LoadedModel]:
        config = self._gate.loaded
        if config is None:
            return []
        num_ctx, layers = config
        vram = self._base_model.size_bytes * layers // self.settings.n_layers
        return [LoadedModel(self._base_model, num_ctx, vram)]

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

    def drift_factor(self, at_ns: int) -> float:
        """``1 + drift_per_s * model seconds`` from the engine's start to ``at_ns``."""
        settings = self.settings
        if settings.drift_per_s == 0 or settings.time_scale == 0:
            return 1.0  # with time_scale 0 no model time passes
        model_s = (at_ns - self._t_started_ns) / 1e9 / settings.time_scale
        return 1.0 + settings.drift_per_s * max(0.0, model_s)

    def _batch_factor(self) -> tuple[int, float]:
        """(requests active on the instance, the step-time multiplier they cause).

        Active = holding the instance (counted when they pass the gate, so a
        request that passed before another is seen by it at once).
        """
        active = max(1, self._gate.users)
        return active, 1.0 + self.settings.batch_slowdown * (active - 1)

    def reply_length(self, num_predict: int | None, room: int) -> tuple[int, bool]:
        """(content tokens, whether the model then stops by itself with an end-of-turn token).

        A cap (num_predict, or the context left) that comes first is a cut
        ("length"); the model stops by itself only before the cap, so that the
        end-of-turn token, counted like any token, fits under it.
        """
        settings = self.settings
        asked = num_predict is not None and num_predict >= 0
        cap = min(num_predict, room) if asked and num_predict is not None else room
        if settings.natural_stop_tokens is not None:
            natural: int | None = settings.natural_stop_tokens
        else:
            # Without the setting, only a request that sets no length stops by itself.
            natural = None if asked else settings.default_num_predict
        if natural is not None and natural < cap:
            return natural, True
        return max(0, cap), False

    def _truncated(self, prepared: PreparedGeneration, num_ctx: int) -> tuple[str, int, int]:
        """(prompt text the model gets, its tokens, prompt tokens dropped) under the truncation rule."""
        request = prepared.request
        plan = plan_truncation(prepared.prompt_tokens, num_ctx, request.options.num_predict)
        if plan is None:
            return prepared.prompt_text, prepared.prompt_tokens, 0
        text = prepared.prompt_text
        # Whole estimated tokens of CHARS_PER_TOKEN characters from each end.
        head = text[: plan.head * CHARS_PER_TOKEN]
        tail = text[len(text) - plan.tail * CHARS_PER_TOKEN :] if plan.tail else ""
        log_truncation(request.request_id, num_ctx, prepared.prompt_tokens, plan)
        return head + tail, plan.kept, plan.dropped

    def generate(self, prepared: PreparedGeneration, slot: int) -> Generator[GenerationEvent, None, None]:
        settings = self.settings
        with self._lock:
            rng = random.Random(f"{settings.seed}/{next(self._sequence)}")
        wanted: Config | None = None
        if prepared.num_ctx is not None or prepared.num_gpu is not None:
            wanted = (
                prepared.num_ctx if prepared.num_ctx is not None else settings.n_ctx,
                self._layers(prepared.num_gpu if prepared.num_gpu is not None else settings.n_gpu_layers),
            )
        default = (settings.n_ctx, self._layers(settings.n_gpu_layers))
        account = _Accounting()

        def load(config: Config) -> None:
            t_load = time.monotonic_ns()
            seconds = self.load_seconds(config[0]) * account.drift(self.drift_factor(t_load))
            _sleep_until(t_load + self._model_ns(seconds, rng))
            account.reloaded, account.load_model_s = True, seconds
            for other in self._slots:  # a new instance: every slot's cache is gone
                other.cached_text = ""

        with self._gate.use(wanted, default, load) as passage:
            if prepared.request.load_only:
                yield load_only_stats(passage.load_ns, account.as_json())
                return
            yield from self._generate(prepared, self._slots[slot], passage, rng, account)

    def _generate(
        self,
        prepared: PreparedGeneration,
        state: _Slot,
        passage: Passage,
        rng: random.Random,
        account: _Accounting,
    ) -> Generator[GenerationEvent, None, None]:
        settings = self.settings
        num_ctx, layers = passage.config
        prompt_text, prompt_tokens, dropped = self._truncated(prepared, num_ctx)
        cached = 0
        if settings.prompt_cache:
            common = _common_prefix(state.cached_text, prompt_text)
            # llama.cpp always re-evaluates at least the last prompt token.
            cached = min(common // CHARS_PER_TOKEN, prompt_tokens - 1)
        evaluated = prompt_tokens - cached

        t_prefill = time.monotonic_ns()
        account.prefill_active, slowdown = self._batch_factor()
        per_token = self.token_seconds(settings.prefill_cpu_tok_s, settings.prefill_gpu_tok_s, layers)
        prefill_s = evaluated * per_token * slowdown * account.drift(self.drift_factor(t_prefill))
        account.prefill_model_s = prefill_s
        _sleep_until(t_prefill + self._model_ns(prefill_s, rng))
        t_decode = time.monotonic_ns()
        prompt_eval_ns = t_decode - t_prefill

        content, natural = self.reply_length(prepared.request.options.num_predict, num_ctx - prompt_tokens)
        # A reply that stops by itself takes one more step: the end-of-turn token's.
        steps = content + (1 if natural else 0)
        step_s = self.decode_seconds(layers, num_ctx)
        pieces = token_pieces(seed_for(settings.seed, prompt_text))
        deadline = t_decode
        generated: list[str] = []
        state.cached_text = prompt_text  # a cut stream still leaves the prompt cached
        for step in range(steps):
            active, slowdown = self._batch_factor()
            seconds = step_s * slowdown * account.drift(self.drift_factor(deadline))
            account.decode_model_s += seconds
            account.decode_steps_by_active[active] += 1
            deadline += self._model_ns(seconds, rng)
            _sleep_until(deadline)
            if step < content:
                piece = next(pieces)
                generated.append(piece)
                yield TokenPiece(piece)
        eval_ns = time.monotonic_ns() - t_decode
        state.cached_text = prompt_text + "".join(generated)
        yield GenerationStats(
            prompt_tokens=prompt_tokens,
            prompt_evaluated=evaluated,
            eval_count=content + (1 if natural and settings.count_end_of_turn else 0),
            load_duration_ns=passage.load_ns,
            prompt_eval_duration_ns=prompt_eval_ns,
            eval_duration_ns=eval_ns,
            # A num_predict or a full context that cuts the reply is "length", as in Ollama.
            done_reason="stop" if natural else "length",
            prompt_truncated_tokens=dropped,
            eval_steps=steps,
            detail=account.as_json(),
        )

    def close(self) -> None:
        """Nothing to free."""
