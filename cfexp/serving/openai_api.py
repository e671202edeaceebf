"""The OpenAI API: request parsing and response framing (SSE).

``/v1/chat/completions`` and ``/v1/completions`` as OpenAI documents them:
plain JSON with ``usage`` when ``stream`` is false (the default); with
``stream: true`` server-sent events ``data: {...}\\n\\n``, a chunk with
``finish_reason``, then — when ``stream_options.include_usage`` — a chunk with
empty ``choices`` and the ``usage``, then ``data: [DONE]``. The non-standard
``top_k`` and ``repeat_penalty`` body fields are honoured, as llama.cpp's and
vLLM's servers do, and so is ``logit_bias`` (by the llamacpp engine). ``num_ctx``/``num_gpu`` cannot be set through this API: the
request runs with whatever the instance has loaded. cfexp's extensions, on
the last chunk before ``[DONE]`` (or at the top of a whole reply), where
llama-server puts its ``timings``, unless the setting ``timings`` is false:
``timings`` and ``prompt_truncated_tokens``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from cfexp.serving.engines.base import GenerationStats, ModelInfo
from cfexp.serving.request import (
    GenerationRequest,
    RequestError,
    SamplingOptions,
    get_bool,
    get_float,
    get_int,
    get_logit_bias,
    get_str,
    parse_messages,
)
from cfexp.serving.timings import final_extras

SSE = "text/event-stream"
_DONE = b"data: [DONE]\n\n"
# Fixed: the same server build always answers with the same fingerprint.
_FINGERPRINT = "fp_cfexp"


def _options(body: dict[str, Any]) -> SamplingOptions:
    n = get_int(body, "n")
    if n is not None and n != 1:
        raise RequestError(
            400, f"invalid value for 'n': {n} (only 1 choice is supported)", code="invalid_value"
        )
    max_tokens = get_int(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = get_int(body, "max_tokens")
    if max_tokens is not None and max_tokens < 1:
        raise RequestError(
            400, f"invalid value for 'max_tokens': {max_tokens} (expected >= 1)", code="invalid_value"
        )
    return SamplingOptions(
        num_predict=max_tokens,
        temperature=get_float(body, "temperature"),
        top_p=get_float(body, "top_p"),
        top_k=get_int(body, "top_k"),
        repeat_penalty=get_float(body, "repeat_penalty"),
        seed=get_int(body, "seed"),
        logit_bias=get_logit_bias(body),
    )


def _include_usage(body: dict[str, Any]) -> bool:
    stream_options = body.get("stream_options")
    if stream_options is None:
        return False
    if not isinstance(stream_options, dict):
        raise RequestError(
            400, f"invalid value for 'stream_options': {stream_options!r} (expected an object)"
        )
    return get_bool(stream_options, "include_usage", False)


def parse_chat_completions(body: dict[str, Any], request_id: str) -> GenerationRequest:
    messages = parse_messages(body.get("messages"))
    if not messages:
        raise RequestError(400, "'messages' is required and must not be empty", code="invalid_value")
    return GenerationRequest(
        request_id=request_id,
        api="openai",
        endpoint="/v1/chat/completions",
        kind="chat",
        model=get_str(body, "model", required=True) or "",
        stream=get_bool(body, "stream", False),
        messages=messages,
        options=_options(body),
        include_usage=_include_usage(body),
    )


def parse_completions(body: dict[str, Any], request_id: str) -> GenerationRequest:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise RequestError(
            400, f"invalid value for 'prompt': {prompt!r} (expected a string)", code="invalid_value"
        )
    return GenerationRequest(
        request_id=request_id,
        api="openai",
        endpoint="/v1/completions",
        kind="completion",
        model=get_str(body, "model", required=True) or "",
        stream=get_bool(body, "stream", False),
        prompt=prompt,
        options=_options(body),
        include_usage=_include_usage(body),
    )


def error_body(error: RequestError) -> dict[str, Any]:
    return {"error": {"message": error.message, "type": error.error_type, "param": None, "code": error.code}}


def usage(stats: GenerationStats) -> dict[str, Any]:
    # completion_tokens counts the end-of-turn token of a reply that stopped by
    # itself, as llama-server's does.
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.eval_count,
        "total_tokens": stats.prompt_tokens + stats.eval_count,
        "prompt_tokens_details": {"cached_tokens": stats.cached_prompt_tokens},
    }


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


class OpenAIFramer:
    """Frames one generation as OpenAI does (chat or text completion shape)."""

    content_type = SSE

    def __init__(self, request: GenerationRequest, t_received_ns: int, extensions: bool = True) -> None:
        self.request = request
        # Add timings (and prompt_truncated_tokens) where llama-server puts its timings.
        self.extensions = extensions
        self.chat = request.kind == "chat"
        self.id = f"{'chatcmpl' if self.chat else 'cmpl'}-{request.request_id}"
        self.created = int(time.time())

    def _envelope(self, chunk: bool) -> dict[str, Any]:
        if self.chat:
            kind = "chat.completion.chunk" if chunk else "chat.completion"
        else:
            kind = "text_completion"
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.request.model,
            "system_fingerprint": _FINGERPRINT,
        }

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        chunk = {**self._envelope(chunk=True), "choices": choices}
        if self.request.include_usage:
            chunk["usage"] = None  # OpenAI: null on every chunk but the usage one
        return chunk

    def _choice(self, text: str | None, finish_reason: str | None) -> dict[str, Any]:
        if self.chat:
            delta = {} if text is None else {"role": "assistant", "content": text}
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}

    def piece(self, text: str) -> bytes:
        return _event(self._chunk([self._choice(text, None)]))

    def final(self, stats: GenerationStats, t_now_ns: int) -> bytes:
        chunks = [self._chunk([self._choice(None, stats.done_reason)])]
        if self.request.include_usage:
            chunks.append({**self._envelope(chunk=True), "choices": [], "usage": usage(stats)})
        # As llama-server: timings (and our prompt_truncated_tokens) on the last chunk.
        chunks[-1].update(final_extras(stats, self.extensions))
        return b"".join(_event(chunk) for chunk in chunks) + _DONE

    def whole(self, text: str, stats: GenerationStats, t_now_ns: int) -> dict[str, Any]:
        if self.chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": stats.done_reason,
            }
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": stats.done_reason}
        return {
            **self._envelope(chunk=False),
            "choices": [choice],
            "usage": usage(stats),
            **final_extras(stats, self.extensions),
        }

    def error(self, message: str) -> bytes:
        # No [DONE] after it: the stream did not complete.
        return _event({"error": {"message": message, "type": "server_error", "param": None, "code": None}})

    def malformed(self) -> bytes:
        # An event whose data is not JSON (an injected fault).
        return b'data: {"choices":[{"delta":{"cont\n\n'


def models_body(models: list[ModelInfo], created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_body(m, created) for m in models]}


def model_body(model: ModelInfo, created: int) -> dict[str, Any]:
    return {"id": model.name, "object": "model", "created": created, "owned_by": "cfexp"}
