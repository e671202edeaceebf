"""Untimed warm-up calls to server instances before a job is measured.

A model's first request can pay for page-ins and allocations that later ones
do not; ``topology.warmup_calls=N`` sends N short chat requests to every
instance first. Nothing of them is recorded except in the server's own log.
"""

from __future__ import annotations

import logging

import httpx

from cfexp.errors import ServerUnreachableError
from cfexp.servers.base import ServerInstance

log = logging.getLogger(__name__)

_PROMPT = "Say hello."


def _request(instance: ServerInstance, model: str) -> tuple[str, dict[str, object]]:
    messages = [{"role": "user", "content": _PROMPT}]
    if instance.api == "openai":
        return "/v1/chat/completions", {"model": model, "messages": messages, "max_tokens": 4, "stream": False}
    return "/api/chat", {"model": model, "messages": messages, "stream": False, "options": {"num_predict": 4}}


def warm_up(instances: list[ServerInstance], model: str, calls: int, timeout_s: float) -> float | None:
    """Send ``calls`` untimed requests to each instance; raise if one cannot answer.

    Returns the longest model load time (ms) the servers reported while warming
    up (Ollama's ``load_duration``), or None when none was reported.
    """
    load_ms: list[float] = []
    for instance in instances:
        path, body = _request(instance, model)
        for _ in range(calls):
            try:
                response = httpx.post(instance.base_url + path, json=body, timeout=timeout_s)
                response.raise_for_status()
                load_ns = response.json().get("load_duration")
                if isinstance(load_ns, int):
                    load_ms.append(load_ns / 1e6)
            except (httpx.HTTPError, ValueError) as exc:
                raise ServerUnreachableError(
                    f"warm-up call to {instance.describe()} failed: {exc}. "
                    "Check the server, or set topology.warmup_calls=0"
                ) from exc
        log.info("warmed up %s with %d call(s)", instance.describe(), calls)
    return max(load_ms) if load_ms else None
