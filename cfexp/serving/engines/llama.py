"""The real engine: a GGUF model run through llama-cpp-python's ``Llama``.

One ``Llama`` per slot (each with its own KV cache), used by one request at a
time: the queue guarantees it, so no stream is ever interrupted by another
request. Tokens are generated with ``Llama.generate`` (which reuses the KV
cache for the longest common prompt prefix) and sampled with the request's
options, Gemma 3's published defaults filling the gaps. The slots form one
instance with one loaded configuration (:mod:`cfexp.serving.engines.instance`):
a request with another num_ctx / num_gpu waits for the running ones, then
reloads every slot, as Ollama reloads its runner.

Counters, as Ollama and llama-server report them:

- ``prompt_tokens`` (Ollama ``prompt_eval_count``): the whole prompt, cached
  or not, after truncation.
- ``prompt_evaluated`` (``timings.prompt_n``): prompt tokens actually decoded
  for this request, counted where ``Llama.eval`` is called — llama.cpp's own
  perf counters report ``max(1, n)``, so they cannot tell 0 from 1 on a cache
  hit; the rest of the prompt came from the slot's KV cache (``cache_n``).
- ``prompt_eval_duration`` / ``eval_duration``: llama.cpp's perf timings
  (``llama_perf_context``: decode compute time, reset before each request),
  split at the first sampled token. Sampling and detokenizing are not included.
- ``eval_count``: tokens sampled, the end-of-generation token included when
  the model stopped by itself (``Llama.generate`` yields it; Ollama and
  llama-server count it).
- ``load_duration``: the startup load on the instance's first request, the
  reload (and the wait for it) when num_ctx / num_gpu change, else 0.
"""

from __future__ import annotations

import codecs
import ctypes
import hashlib
import logging
import random
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import llama_cpp
import numpy as np
import numpy.typing as npt
from llama_cpp import _internals

from cfexp.errors import ConfigError, SetupError
from cfexp.serving.engines.base import (
    DoneReason,
    EngineError,
    GenerationEvent,
    GenerationStats,
    LoadedModel,
    ModelInfo,
    PreparedGeneration,
    TokenPiece,
    canonical_model_name,
    effective_num_predict,
    load_only_stats,
    log_truncation,
    plan_truncation,
    same_model,
)
from cfexp.serving.engines.instance import Config, InstanceGate
from cfexp.serving.request import GenerationRequest, RequestError
from cfexp.serving.settings import LlamaSettings
from cfexp.serving.templates import render_prompt

logger = logging.getLogger(__name__)

# GGUF general.file_type -> Ollama's quantization_level names (the common ones).
_FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    32: "BF16",
}


class _CountingLlama(llama_cpp.Llama):
    """``Llama`` that counts the tokens it decodes (prompt and generated)."""

    decoded_tokens: int = 0

    def eval(self, tokens: Sequence[int]) -> None:
        self.decoded_tokens += len(tokens)
        super().eval(tokens)


@dataclass
class _Slot:
    llama: _CountingLlama


def resolve_model_path(settings: LlamaSettings) -> Path:
    """The GGUF file to serve; ConfigError (exit 2) when it does not exist."""
    if settings.model_path is None:
        from cfexp.backends.model_files import embedded_gguf

        return embedded_gguf()
    path = Path(settings.model_path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"the model file does not exist <model_path={settings.model_path}>: "
            "give the path of a GGUF file, or leave model_path out to serve the embedded Gemma 3 270M"
        )
    return path


def _logit_bias(bias: Sequence[tuple[int, float]]) -> llama_cpp.LogitsProcessorList | None:
    """OpenAI's logit_bias as a logits processor: each bias added to its token's logit."""
    if not bias:
        return None
    ids = np.array([token for token, _ in bias], dtype=np.intc)
    values = np.array([value for _, value in bias], dtype=np.single)

    def add_bias(_input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single]) -> npt.NDArray[np.single]:
        scores[ids] += values
        return scores

    return llama_cpp.LogitsProcessorList([add_bias])


def _token_piece(vocab: llama_cpp.llama_vocab_p, token: int) -> bytes:
    """The bytes of one token (``Model.token_to_piece`` truncates at 32 bytes)."""
    buffer = ctypes.create_string_buffer(64)
    size = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
    if size < 0:
        buffer = ctypes.create_string_buffer(-size)
        size = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
    return buffer.raw[: max(size, 0)]


class LlamaEngine:
    """The embedded model (see the module docstring)."""

    name = "llamacpp"

    def __init__(self, settings: LlamaSettings) -> None:
        self.settings = settings
        self.slots = settings.slots
        self.model_path = resolve_model_path(settings)
        try:
            # A vocabulary-only model for tokenizing before admission: the slots'
            # models may be busy or being reloaded.
            params = llama_cpp.llama_model_default_params()
            params.vocab_only = True
            self._vocab_model = _internals.LlamaModel(
                path_model=str(self.model_path), params=params, verbose=False
            )
        except (ValueError, RuntimeError) as exc:
            raise SetupError(
                f"llama.cpp cannot load the model <model_path={self.model_path}>: {exc}"
            ) from exc
        self._n_vocab = int(self._vocab_model.n_vocab())
        self._vocab_lock = threading.Lock()
        self._seed_lock = threading.Lock()
        self._seeds = random.Random(settings.seed)
        self._slots: list[_Slot] = []
        started = time.monotonic_ns()
        for index in range(settings.slots):
            llama = self._load(settings.n_ctx, settings.n_gpu_layers)
            logger.info("slot %d loaded %s", index, self.model_path.name)
            self._slots.append(_Slot(llama))
        # The startup load, reported (once) by the instance's first request.
        self._pending_load_ns = time.monotonic_ns() - started
        self._pending_lock = threading.Lock()
        logger.info("loaded %d slot(s) in %.2f s", settings.slots, self._pending_load_ns / 1e9)
        self.model = self._describe(self._slots[0].llama)
        self._gate = InstanceGate((settings.n_ctx, self._gpu_layers(settings.n_gpu_layers)))

    def _load(self, n_ctx: int, n_gpu_layers: int) -> _CountingLlama:
        settings = self.settings
        try:
            return _CountingLlama(
                model_path=str(self.model_path),
                n_ctx=n_ctx,
                n_gpu_layers=n_gpu_layers,
                n_threads=settings.n_threads,
                n_threads_batch=settings.n_threads,
                n_batch=min(settings.n_batch, n_ctx),
                seed=settings.seed,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise SetupError(
                f"llama.cpp cannot load the model <model_path={self.model_path} n_ctx={n_ctx}>: {exc}"
            ) from exc

    def _describe(self, llama: llama_cpp.Llama) -> ModelInfo:
        meta = llama.metadata
        family = meta.get("general.architecture", "llama")
        stat = self.model_path.stat()
        file_type = int(meta.get("general.file_type", "-1") or -1)
        # An identifier, not the file's hash: hashing 250 MB would slow every start.
        digest = hashlib.sha256(
            f"{self.model_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
        ).hexdigest()
        return ModelInfo(
            name=canonical_model_name(self.settings.model_name),
            family=family,
            parameter_size=meta.get("general.size_label", "unknown"),
            quantization_level=_FILE_TYPES.get(file_type, f"file_type_{file_type}"),
            size_bytes=stat.st_size,
            digest=digest,
            context_length=int(meta.get(f"{family}.context_length", "0") or 0),
            n_layers=int(llama_cpp.llama_model_n_layer(llama.model)),
            modified_at=datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(),
        )

    def _gpu_layers(self, value: int) -> int:
        """Offloaded layers for a num_gpu value (negative or more than the model has = all).

        Compared instead of the raw value, so num_gpu 80 and 999 (both "all")
        do not reload the model.
        """
        n_layers = self.model.n_layers
        return n_layers if value < 0 or value > n_layers else value

    # -- models ---------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        return [self.model]

    def loaded(self) -> list[LoadedModel]:
        config = self._gate.loaded
        if config is None:  # a reload failed: nothing is loaded
            return []
        n_ctx, n_gpu_layers = config
        on_gpu = n_gpu_layers != 0 and bool(llama_cpp.llama_supports_gpu_offload())
        return [LoadedModel(self.model, n_ctx, self.model.size_bytes if on_gpu else 0)]

    def find_model(self, name: str) -> ModelInfo | None:
        return self.model if same_model(name, self.model.name) else None

    def pull(self, name: str) -> ModelInfo | None:
        return self.find_model(name)

    # -- generation -----------------------------------------------------------

    def prepare(self, request: GenerationRequest) -> PreparedGeneration:
        model = self.find_model(request.model)
        if model is None:
            raise RequestError(404, f"model '{request.model}' not found", code="model_not_found")
        prompt_text = render_prompt(request)
        tokens: list[int] = []
        if not request.load_only:
            with self._vocab_lock:
                tokens = self._vocab_model.tokenize(prompt_text.encode("utf-8"), True, True)
        options = request.options
        n_vocab = self._n_vocab
        unknown = [token for token, _ in options.logit_bias if token >= n_vocab]
        if unknown:
            raise RequestError(
                400, f"invalid value for 'logit_bias': token id {unknown[0]} (the vocabulary has {n_vocab})",
                code="invalid_value",
            )
        num_ctx, num_gpu = options.num_ctx, options.num_gpu
        if request.api == "ollama":
            # Like Ollama: an option left out means the default, not "whatever is loaded".
            num_ctx = self.settings.n_ctx if num_ctx is None else num_ctx
            num_gpu = self.settings.n_gpu_layers if num_gpu is None else num_gpu
        return PreparedGeneration(
            request=request,
            model=model,
            prompt_text=prompt_text,
            prompt_tokens=len(tokens),
            num_ctx=num_ctx,
            num_gpu=num_gpu,
            token_ids=tuple(tokens),
        )

    def _reload(self, config: Config) -> None:
        """Load every slot with ``config`` (no request is running: the gate waited)."""
        n_ctx, n_gpu_layers = config
        started = time.monotonic_ns()
        for slot in self._slots:
            slot.llama.close()
        try:
            for slot in self._slots:
                # llama.cpp's -1 = every layer, the output layer included.
                slot.llama = self._load(n_ctx, -1 if n_gpu_layers >= self.model.n_layers else n_gpu_layers)
        except SetupError as exc:
            raise EngineError(str(exc)) from exc
        logger.info(
            "reloaded %d slot(s) with n_ctx=%d n_gpu_layers=%d in %.2f s",
            len(self._slots),
            n_ctx,
            n_gpu_layers,
            (time.monotonic_ns() - started) / 1e9,
        )

    def _startup_load_ns(self) -> int:
        with self._pending_lock:
            load_ns, self._pending_load_ns = self._pending_load_ns, 0
        return load_ns

    def generate(
        self, prepared: PreparedGeneration, slot_index: int
    ) -> Generator[GenerationEvent, None, None]:
        request = prepared.request
        wanted: Config | None = None
        if prepared.num_ctx is not None or prepared.num_gpu is not None:
            wanted = (
                prepared.num_ctx if prepared.num_ctx is not None else self.settings.n_ctx,
                self._gpu_layers(
                    prepared.num_gpu if prepared.num_gpu is not None else self.settings.n_gpu_layers
                ),
            )
        default = (self.settings.n_ctx, self._gpu_layers(self.settings.n_gpu_layers))
        with self._gate.use(wanted, default, self._reload) as passage:
            # The first request also reports the load done at startup, before it arrived.
            load_ns = passage.load_ns + self._startup_load_ns()
            if request.load_only:
                yield load_only_stats(load_ns)
                return
            llm = self._slots[slot_index].llama
            yield from self._generate(llm, prepared, passage.config[0], load_ns)

    def _generate(
        self, llm: _CountingLlama, prepared: PreparedGeneration, n_ctx: int, load_ns: int
    ) -> Generator[GenerationEvent, None, None]:
        settings, options = self.settings, prepared.request.options
        tokens = list(prepared.token_ids)
        dropped = 0
        plan = plan_truncation(len(tokens), n_ctx, options.num_predict)
        if plan is not None:
            log_truncation(prepared.request.request_id, n_ctx, len(tokens), plan)
            tokens = tokens[: plan.head] + (tokens[len(tokens) - plan.tail :] if plan.tail else [])
            dropped = plan.dropped
        limit, _ = effective_num_predict(options.num_predict, None, n_ctx - len(tokens))
        if not settings.prompt_cache:
            llm.reset()  # type: ignore[no-untyped-call]  # n_tokens = 0: generate() then finds no prefix and clears the KV cache
        if options.seed is not None:
            llm.set_seed(options.seed)
        else:
            with self._seed_lock:
                llm.set_seed(self._seeds.randrange(2**31))
        vocab = llm._model.vocab
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        llama_cpp.llama_perf_context_reset(llm.ctx)
        llm.decoded_tokens = 0
        prompt_evaluated, prompt_ms = 0, 0.0
        # Tokens sampled: the generated ones, and the end-of-generation token if it came.
        sampled = 0
        generated = 0
        done_reason: DoneReason = "length"
        tokens_out = llm.generate(
            tokens,
            top_k=options.top_k if options.top_k is not None else settings.top_k,
            top_p=options.top_p if options.top_p is not None else settings.top_p,
            min_p=0.0,  # Ollama's default; Llama.generate's is 0.05
            temp=options.temperature if options.temperature is not None else settings.temperature,
            repeat_penalty=options.repeat_penalty
            if options.repeat_penalty is not None
            else settings.repeat_penalty,
            logits_processor=_logit_bias(options.logit_bias),
        )
        # num_predict 0: nothing to generate, and nothing is decoded.
        source: Iterator[int] = tokens_out if limit > 0 else iter(())
        try:
            first = True
            for token in source:
                if first:
                    # The prompt is decoded and the first token sampled: split here.
                    perf = llama_cpp.llama_perf_context(llm.ctx)
                    prompt_evaluated, prompt_ms = llm.decoded_tokens, perf.t_p_eval_ms + perf.t_eval_ms
                    first = False
                sampled += 1
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    done_reason = "stop"
                    break
                generated += 1
                text = decoder.decode(_token_piece(vocab, token))
                if text:  # empty while a multi-byte character is incomplete
                    yield TokenPiece(text)
                if generated >= limit:
                    break
        except (RuntimeError, ValueError, OSError) as exc:
            raise EngineError(f"llama.cpp failed while generating: {exc}") from exc
        finally:
            tokens_out.close()
        tail = decoder.decode(b"", final=True)
        if tail:
            yield TokenPiece(tail)
        perf = llama_cpp.llama_perf_context(llm.ctx)
        total_ms = perf.t_p_eval_ms + perf.t_eval_ms
        yield GenerationStats(
            prompt_tokens=len(tokens),
            prompt_evaluated=prompt_evaluated,
            # The end-of-generation token counts, as in Ollama and llama-server.
            eval_count=sampled,
            load_duration_ns=load_ns,
            prompt_eval_duration_ns=round(prompt_ms * 1e6),
            eval_duration_ns=round(max(0.0, total_ms - prompt_ms) * 1e6),
            done_reason=done_reason,
            prompt_truncated_tokens=dropped,
            # The first token is sampled from the prompt's logits: one decode per later one.
            eval_steps=max(0, sampled - 1),
        )

    def close(self) -> None:
        for slot in self._slots:
            slot.llama.close()
        self._vocab_model.close()  # type: ignore[no-untyped-call]  # llama-cpp-python: unannotated

