"""Ollama's native API: request parsing and response framing (NDJSON).

Shapes follow Ollama's API documentation (docs/api.md in ollama/ollama):
``/api/chat`` and ``/api/generate`` stream one JSON object per line, the last
with ``done: true``, ``done_reason`` and the counters (durations in ns);
``stream: false`` returns that last object with the whole content. Errors are
``{"error": "..."}``. cfexp's extensions in the final object, unless the
setting ``timings`` is false: llama.cpp's ``timings`` and
``prompt_truncated_tokens``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from cfexp.serving.engines.base import GenerationStats, LoadedModel, ModelInfo
from cfexp.serving.request import (
    GenerationRequest,
    RequestError,
    SamplingOptions,
    get_bool,
    get_float,
    get_int,
    get_str,
    parse_messages,
)
from cfexp.serving.timings import final_extras

NDJSON = "application/x-ndjson"


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def parse_options(value: Any) -> SamplingOptions:
    """Ollama's ``options`` object; options we do not model are ignored, like Ollama's unknown ones."""
    if value is None:
        return SamplingOptions()
    if not isinstance(value, dict):
        raise RequestError(400, f"invalid value for 'options': {value!r} (expected an object)")
    num_ctx = get_int(value, "num_ctx")
    if num_ctx is not None and not 16 <= num_ctx <= 1 << 20:
        raise RequestError(400, f"invalid value for 'options.num_ctx': {num_ctx} (expected 16 to 1048576)")
    return SamplingOptions(
        num_predict=get_int(value, "num_predict"),
        temperature=get_float(value, "temperature"),
        top_p=get_float(value, "top_p"),
        top_k=get_int(value, "top_k"),
        repeat_penalty=get_float(value, "repeat_penalty"),
        seed=get_int(value, "seed"),
        num_ctx=num_ctx,
        num_gpu=get_int(value, "num_gpu"),
    )


def parse_chat(body: dict[str, Any], request_id: str) -> GenerationRequest:
    messages = parse_messages(body.get("messages"))
    return GenerationRequest(
        request_id=request_id,
        api="ollama",
        endpoint="/api/chat",
        kind="chat",
        model=get_str(body, "model", required=True) or "",
        stream=get_bool(body, "stream", True),
        messages=messages,
        options=parse_options(body.get("options")),
        # Ollama: a chat without messages just loads the model.
        load_only=not messages,
    )


def parse_generate(body: dict[str, Any], request_id: str) -> GenerationRequest:
    prompt = get_str(body, "prompt", "") or ""
    return GenerationRequest(
        request_id=request_id,
        api="ollama",
        endpoint="/api/generate",
        kind="completion",
        model=get_str(body, "model", required=True) or "",
        stream=get_bool(body, "stream", True),
        prompt=prompt,
        system=get_str(body, "system"),
        raw=get_bool(body, "raw", False),
        options=parse_options(body.get("options")),
        # Ollama: an empty prompt just loads the model.
        load_only=prompt == "",
    )


def model_name_of(body: dict[str, Any]) -> str:
    """``model``, or the older ``name`` that /api/show and /api/pull still accept."""
    name = get_str(body, "model") or get_str(body, "name")
    if not name:
        raise RequestError(400, "'model' is required")
    return name


def error_body(error: RequestError) -> dict[str, Any]:
    return {"error": error.message}


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


class OllamaFramer:
    """Frames one generation as Ollama does (chat or generate shape)."""

    content_type = NDJSON

    def __init__(self, request: GenerationRequest, t_received_ns: int, extensions: bool = True) -> None:
        self.request = request
        self.t_received_ns = t_received_ns
        # Add timings and prompt_truncated_tokens to the final object (real Ollama never does).
        self.extensions = extensions

    def _content(self, text: str) -> dict[str, Any]:
        if self.request.kind == "chat":
            return {"message": {"role": "assistant", "content": text}}
        return {"response": text}

    def _object(self, text: str, done: bool) -> dict[str, Any]:
        return {"model": self.request.model, "created_at": now_rfc3339(), **self._content(text), "done": done}

    def piece(self, text: str) -> bytes:
        return _line(self._object(text, done=False))

    def _final(self, text: str, stats: GenerationStats, t_now_ns: int) -> dict[str, Any]:
        final = self._object(text, done=True)
        final.update(
            done_reason=stats.done_reason,
            # Like Ollama: from the request's arrival, so queueing and loading count.
            total_duration=t_now_ns - self.t_received_ns,
            load_duration=stats.load_duration_ns,
            # As Ollama counts: the whole prompt, cached tokens included.
            prompt_eval_count=stats.prompt_tokens,
            # Only the tokens really evaluated take time (a cache hit shows here).
            prompt_eval_duration=stats.prompt_eval_duration_ns,
            # The end-of-turn token included when the reply stopped by itself.
            eval_count=stats.eval_count,
            eval_duration=stats.eval_duration_ns,
        )
        final.update(final_extras(stats, self.extensions))
        return final

    def final(self, stats: GenerationStats, t_now_ns: int) -> bytes:
        return _line(self._final("", stats, t_now_ns))

    def whole(self, text: str, stats: GenerationStats, t_now_ns: int) -> dict[str, Any]:
        return self._final(text, stats, t_now_ns)

    def error(self, message: str) -> bytes:
        return _line({"error": message})

    def malformed(self) -> bytes:
        # An object cut short: a line no JSON parser accepts (an injected fault).
        return b'{"message":{"role":"assistant","cont\n'


# -- metadata endpoints --------------------------------------------------------


def _details(model: ModelInfo) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": model.format,
        "family": model.family,
        "families": [model.family],
        "parameter_size": model.parameter_size,
        "quantization_level": model.quantization_level,
    }


def tags_body(models: list[ModelInfo]) -> dict[str, Any]:
    return {
        "models": [
            {
                "name": m.name,
                "model": m.name,
                "modified_at": m.modified_at,
                "size": m.size_bytes,
                "digest": m.digest,
                "details": _details(m),
            }
            for m in models
        ]
    }


def ps_body(loaded: list[LoadedModel]) -> dict[str, Any]:
    return {
        "models": [
            {
                "name": item.model.name,
                "model": item.model.name,
                "size": item.model.size_bytes,
                "digest": item.model.digest,
                "details": _details(item.model),
                # Models stay loaded until the server stops.
                "expires_at": "2318-01-01T00:00:00Z",
                "size_vram": item.size_vram_bytes,
                "context_length": item.num_ctx,
            }
            for item in loaded
        ]
    }


def show_body(model: ModelInfo) -> dict[str, Any]:
    family = model.family
    return {
        "license": "",
        "modelfile": f"FROM {model.name}\n",
        "parameters": "",
        "template": "{{ .Prompt }}",
        "details": _details(model),
        "model_info": {
            "general.architecture": family,
            "general.basename": model.name.split(":")[0],
            f"{family}.context_length": model.context_length,
            f"{family}.block_count": model.n_layers,
        },
        "capabilities": ["completion"],
        "modified_at": model.modified_at,
    }


def pull_statuses(model: ModelInfo) -> list[dict[str, Any]]:
    """The progress objects of a pull that has nothing to download."""
    digest = f"sha256:{model.digest}"
    return [
        {"status": "pulling manifest"},
        {
            "status": f"pulling {model.digest[:12]}",
            "digest": digest,
            "total": model.size_bytes,
            "completed": model.size_bytes,
        },
        {"status": "verifying sha256 digest"},
        {"status": "writing manifest"},
        {"status": "success"},
    ]


def ndjson(objects: list[dict[str, Any]]) -> bytes:
    return b"".join(_line(obj) for obj in objects)
