"""Untimed warm-up calls: the state every measured phase starts from.

A server reloads its model when a request's launch options differ from the
loaded ones (Ollama: ``num_ctx``, ``num_gpu``; a request without options loads
its defaults), and a model's first request pays for page-ins and allocations
later ones do not. So before every measured phase, each instance gets
``topology.warmup_calls`` short requests carrying **exactly the options the
phase's calls will send** — a reload then happens here, untimed, and never
inside a measured call. What the servers report as load time is returned, for
the record; nothing else of a warm-up is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from cfexp.backends.base import ServerInstance
from cfexp.backends.net import tls_context

log = logging.getLogger(__name__)

_PROMPT = "Say hello."
_TOKENS = 4
# Sampling options the OpenAI API takes at the top level (launch options it cannot set).
_OPENAI_OPTIONS = ("temperature", "top_p", "seed", "top_k", "repeat_penalty")


@dataclass(frozen=True)
class WarmupTarget:
    """One instance, and the model options the next phase's calls send to it (None = none)."""

    instance: ServerInstance
    options: dict[str, Any] | None


def _request(target: WarmupTarget, model: str) -> tuple[str, dict[str, Any]]:
    messages = [{"role": "user", "content": _PROMPT}]
    given = target.options or {}
    if target.instance.api == "openai":
        body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": _TOKENS, "stream": False}
        body.update((key, given[key]) for key in _OPENAI_OPTIONS if key in given)
        return "/v1/chat/completions", body
    options = {**given, "num_predict": _TOKENS}
    return "/api/chat", {"model": model, "messages": messages, "stream": False, "options": options}


@dataclass
class WarmupResult:
    # The longest model load (ms) the servers reported (Ollama's load_duration), if any.
    load_ms: float | None = None
    # Warm-up calls that failed, one sentence each: the measured calls that follow
    # record their own failure (or pay what the warm-up could not), and the run says so.
    problems: list[str] = field(default_factory=list)


def warm_up(
    targets: Sequence[WarmupTarget], model: str, calls: int, timeout_s: float, api_key: str | None = None
) -> WarmupResult:
    """Send ``calls`` untimed requests per target; never raises.

    A server that cannot answer a warm-up is not a reason to stop before
    measuring: the measured calls meet the same server and are recorded as
    they go, failed or not. The failure is returned, for the run's warnings.
    """
    result = WarmupResult()
    load_ms: list[float] = []
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    for target in targets:
        path, body = _request(target, model)
        for _ in range(calls):
            try:
                response = httpx.post(
                    target.instance.base_url + path, json=body, headers=headers, timeout=timeout_s,
                    verify=tls_context(),
                )
                response.raise_for_status()
                load_ns = response.json().get("load_duration")
                if isinstance(load_ns, int):
                    load_ms.append(load_ns / 1e6)
            except (httpx.HTTPError, ValueError) as exc:
                problem = f"a warm-up call to {target.instance.describe()} failed ({exc.__class__.__name__}: {exc})"
                log.warning("%s; measuring anyway, the measured calls record what the server does", problem)
                result.problems.append(problem + ": the next phase's first call may have paid a model load")
                break  # one failure per instance says it; the next call would only wait again
        log.debug("warmed up %s with %d call(s), options %s", target.instance.describe(), calls, target.options)
    result.load_ms = max(load_ms) if load_ms else None
    return result
