"""The real engine: a GGUF model run through llama-cpp-python's ``Llama``.

One ``Llama`` per slot (each with its own KV cache), used by one request at a
time: the queue guarantees it, so no stream is ever interrupted by another
request. Tokens are generated with ``Llama.generate`` (which reuses the KV
cache for the longest common prompt prefix) and sampled with the request's
options, Gemma 3's published defaults filling the gaps.

Counters, as Ollama reports them:

- ``prompt_eval_count``: prompt tokens actually decoded for this request,
  counted where ``Llama.eval`` is called — llama.cpp's own perf counters
  report ``max(1, n)``, so they cannot tell 0 from 1 on a cache hit.
- ``prompt_eval_duration`` / ``eval_duration``: llama.cpp's perf timings
  (``llama_perf_context``: decode compute time, reset before each request),
  split at the first sampled token. Sampling and detokenizing are not included.
- ``eval_count``: tokens generated (the end-of-turn token not included).
- ``load_duration``: the slot's startup load on its first request, the reload
  when the request's num_ctx / num_gpu differ from the loaded ones, else 0.
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
    same_model,
)
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
    n_ctx: int
    n_gpu_layers: int
    # Startup load time, reported (once) by the slot's first request.
    pending_load_ns: int


def resolve_model_path(settings: LlamaSettings) -> Path:
    """The GGUF file to serve; ConfigError (exit 2) when it does not exist."""
    if settings.model_path is None:
        from cfexp.servers.model_files import embedded_gguf

        return embedded_gguf()
    path = Path(settings.model_path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"the model file does not exist <model_path={settings.model_path}>: "
            "give the path of a GGUF file, or leave model_path out to serve the embedded Gemma 3 270M"
        )
    return path


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
        self._vocab_lock = threading.Lock()
        self._seed_lock = threading.Lock()
        self._seeds = random.Random(settings.seed)
        self._slots: list[_Slot] = []
        for index in range(settings.slots):
            started = time.monotonic_ns()
            llama = self._load(settings.n_ctx, settings.n_gpu_layers)
            load_ns = time.monotonic_ns() - started
            logger.info("slot %d loaded %s in %.2f s", index, self.model_path.name, load_ns / 1e9)
            self._slots.append(_Slot(llama, settings.n_ctx, settings.n_gpu_layers, load_ns))
        self.model = self._describe(self._slots[0].llama)
        for slot in self._slots:
            slot.n_gpu_layers = self._gpu_layers(slot.n_gpu_layers)

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
        slot = self._slots[0]
        on_gpu = slot.n_gpu_layers != 0 and bool(llama_cpp.llama_supports_gpu_offload())
        return [LoadedModel(self.model, slot.n_ctx, self.model.size_bytes if on_gpu else 0)]

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
        num_ctx, num_gpu = options.num_ctx, options.num_gpu
        if request.api == "ollama":
            # Like Ollama: an option left out means the default, not "whatever is loaded".
            num_ctx = self.settings.n_ctx if num_ctx is None else num_ctx
            num_gpu = self.settings.n_gpu_layers if num_gpu is None else num_gpu
        _check_fits(len(tokens), num_ctx or self._slots[0].n_ctx)
        return PreparedGeneration(
            request=request,
            model=model,
            prompt_text=prompt_text,
            prompt_tokens=len(tokens),
            num_ctx=num_ctx,
            num_gpu=num_gpu,
            token_ids=tuple(tokens),
        )

    def _ensure_loaded(self, slot: _Slot, n_ctx: int, n_gpu_layers: int) -> int:
        """Reload the slot's model if the launch parameters differ; the load time in ns."""
        load_ns, slot.pending_load_ns = slot.pending_load_ns, 0
        if (slot.n_ctx, slot.n_gpu_layers) == (n_ctx, n_gpu_layers):
            return load_ns
        started = time.monotonic_ns()
        slot.llama.close()
        # llama.cpp's -1 = every layer, the output layer included.
        slot.llama = self._load(n_ctx, -1 if n_gpu_layers >= self.model.n_layers else n_gpu_layers)
        slot.n_ctx, slot.n_gpu_layers = n_ctx, n_gpu_layers
        load_ns = time.monotonic_ns() - started
        logger.info("reloaded with n_ctx=%d n_gpu_layers=%d in %.2f s", n_ctx, n_gpu_layers, load_ns / 1e9)
        return load_ns

    def generate(
        self, prepared: PreparedGeneration, slot_index: int
    ) -> Generator[GenerationEvent, None, None]:
        slot = self._slots[slot_index]
        request = prepared.request
        n_ctx = prepared.num_ctx or slot.n_ctx
        n_gpu_layers = slot.n_gpu_layers if prepared.num_gpu is None else self._gpu_layers(prepared.num_gpu)
        _check_fits(prepared.prompt_tokens, n_ctx)
        try:
            load_ns = self._ensure_loaded(slot, n_ctx, n_gpu_layers)
        except SetupError as exc:
            raise EngineError(str(exc)) from exc
        if request.load_only:
            yield GenerationStats(0, 0, 0, load_ns, 0, 0, "load")
            return
        yield from self._generate(slot.llama, prepared, n_ctx, load_ns)

    def _generate(
        self, llm: _CountingLlama, prepared: PreparedGeneration, n_ctx: int, load_ns: int
    ) -> Generator[GenerationEvent, None, None]:
        settings, options = self.settings, prepared.request.options
        tokens = list(prepared.token_ids)
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
        prompt_eval_count, prompt_ms = 0, 0.0
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
        )
        # num_predict 0: nothing to generate, and nothing is decoded.
        source: Iterator[int] = tokens_out if limit > 0 else iter(())
        try:
            first = True
            for token in source:
                if first:
                    # The prompt is decoded and the first token sampled: split here.
                    perf = llama_cpp.llama_perf_context(llm.ctx)
                    prompt_eval_count, prompt_ms = llm.decoded_tokens, perf.t_p_eval_ms + perf.t_eval_ms
                    first = False
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
            prompt_eval_count=prompt_eval_count,
            eval_count=generated,
            load_duration_ns=load_ns,
            prompt_eval_duration_ns=round(prompt_ms * 1e6),
            eval_duration_ns=round(max(0.0, total_ms - prompt_ms) * 1e6),
            done_reason=done_reason,
        )

    def close(self) -> None:
        for slot in self._slots:
            slot.llama.close()
        self._vocab_model.close()  # type: ignore[no-untyped-call]


def _check_fits(prompt_tokens: int, n_ctx: int) -> None:
    if prompt_tokens >= n_ctx:
        raise RequestError(
            400,
            f"prompt is too long: {prompt_tokens} tokens do not fit the context <num_ctx={n_ctx}>; "
            "shorten the prompt or raise num_ctx",
            code="context_length_exceeded",
        )
