"""The request every API is parsed into, and the error a client gets back.

Both APIs (Ollama native and OpenAI) parse their bodies into one
:class:`GenerationRequest`, so engines never see an API's wire format; the
API modules only parse and frame.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

Api = Literal["ollama", "openai"]
#: chat = a list of messages rendered with the model's chat template;
#: completion = a raw prompt (Ollama /api/generate renders it as one user turn
#: unless ``raw`` is true; OpenAI /v1/completions never does).
Kind = Literal["chat", "completion"]


class RequestError(Exception):
    """A client error: sent back as the API's error object with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str = "invalid_request_error",
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        # OpenAI's error "type" and "code" (Ollama has neither).
        self.error_type = error_type
        self.code = code


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class SamplingOptions:
    """Model options a request carries (Ollama names); None = not given."""

    num_predict: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repeat_penalty: float | None = None
    seed: int | None = None
    # Launch parameters: a value different from the loaded one reloads the model.
    num_ctx: int | None = None
    num_gpu: int | None = None
    # OpenAI logit_bias: (token id, bias added to its logit) pairs, sorted by id.
    logit_bias: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class GenerationRequest:
    """One generation, whatever API it came through."""

    request_id: str
    api: Api
    endpoint: str
    kind: Kind
    model: str
    stream: bool
    messages: tuple[ChatMessage, ...] = ()
    prompt: str = ""
    # Ollama /api/generate's "system" (a system turn before the prompt).
    system: str | None = None
    # Ollama /api/generate's "raw": the prompt is sent to the model as is.
    raw: bool = False
    options: SamplingOptions = field(default_factory=SamplingOptions)
    # OpenAI stream_options.include_usage: a last chunk carrying usage.
    include_usage: bool = False
    # Ollama: an empty prompt / no messages only loads the model (done_reason "load").
    load_only: bool = False


def parse_json_body(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or RequestError(400) saying why not."""
    if not body.strip():
        raise RequestError(400, "request body is empty: send a JSON object")
    try:
        value = json.loads(body)
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"request body is not UTF-8: {exc.reason}") from exc
    except json.JSONDecodeError as exc:
        raise RequestError(
            400, f"invalid JSON in request body: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    if not isinstance(value, dict):
        raise RequestError(400, f"request body must be a JSON object, got {type(value).__name__}")
    return value


def _field_error(name: str, value: Any, allowed: str) -> RequestError:
    return RequestError(400, f"invalid value for '{name}': {value!r} (expected {allowed})")


def get_str(
    body: dict[str, Any], name: str, default: str | None = None, *, required: bool = False
) -> str | None:
    value = body.get(name, default)
    if value is None:
        if required:
            raise RequestError(400, f"'{name}' is required")
        return None
    if not isinstance(value, str):
        raise _field_error(name, value, "a string")
    if required and not value:
        raise RequestError(400, f"'{name}' is required")
    return value


def get_bool(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _field_error(name, value, "true or false")
    return value


def get_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    # JSON clients sometimes send 16.0 for 16; accept whole floats.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _field_error(name, value, "a whole number")
    return value


def get_float(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise _field_error(name, value, "a number")
    return float(value)


# OpenAI's documented range for a logit_bias value.
LOGIT_BIAS_RANGE = (-100.0, 100.0)


def get_logit_bias(body: dict[str, Any]) -> tuple[tuple[int, float], ...]:
    """OpenAI's ``logit_bias``: an object mapping token ids (as strings) to a bias in [-100, 100]."""
    value = body.get("logit_bias")
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise _field_error("logit_bias", value, "an object mapping token ids to numbers")
    low, high = LOGIT_BIAS_RANGE
    pairs = []
    for key, bias in value.items():
        if not (isinstance(key, str) and key.isascii() and key.isdigit()):
            raise _field_error("logit_bias", value, "token ids as keys, e.g. {\"106\": 12}")
        if not isinstance(bias, (int, float)) or isinstance(bias, bool) or not low <= bias <= high:
            raise _field_error(f"logit_bias.{key}", bias, f"a number from {low:g} to {high:g}")
        pairs.append((int(key), float(bias)))
    return tuple(sorted(pairs))


def parse_messages(value: Any) -> tuple[ChatMessage, ...]:
    """Chat messages; content may be a string or OpenAI's list of text parts."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _field_error("messages", value, "a list of {role, content} objects")
    messages: list[ChatMessage] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise _field_error(f"messages[{index}]", item, "an object with role and content")
        role = item.get("role")
        if not isinstance(role, str) or not role:
            raise _field_error(f"messages[{index}].role", role, "a role such as system, user or assistant")
        content = item.get("content")
        if content is None:
            content = ""
        elif isinstance(content, list):
            # OpenAI content parts: keep the text parts, in order.
            texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            content = "".join(t for t in texts if isinstance(t, str))
        elif not isinstance(content, str):
            raise _field_error(f"messages[{index}].content", content, "a string")
        messages.append(ChatMessage(role=role, content=content))
    return tuple(messages)
