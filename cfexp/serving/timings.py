"""llama.cpp's ``timings`` object, which both APIs add to their final message.

llama-server (tools/server/server-common.cpp, ``server_slot_stats::to_json``)
sends it in the final streamed chunk and in whole replies. It is the only
place where a client sees how many prompt tokens were really evaluated
(``prompt_n``) and how many came from the cache (``cache_n``): Ollama's
``prompt_eval_count`` counts both. Durations are milliseconds (floats); a rate
whose divisor is 0 is 0.0, as llama-server writes it.
"""

from __future__ import annotations

from typing import Any

from cfexp.serving.engines.base import GenerationStats


def timings_body(stats: GenerationStats) -> dict[str, Any]:
    """The ``timings`` object of one generation, keys in llama-server's order."""
    prompt_ms = stats.prompt_eval_duration_ns / 1e6
    predicted_ms = stats.eval_duration_ns / 1e6
    prompt_n = stats.prompt_evaluated
    # The decode steps predicted_ms covers (llama-server: tokens - 1, the first
    # token being sampled from the prompt's logits; the simulator: one per token).
    steps = stats.eval_steps
    return {
        "cache_n": stats.cached_prompt_tokens,
        "prompt_n": prompt_n,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": prompt_ms / prompt_n if prompt_n > 0 else 0.0,
        "prompt_per_second": 1e3 / prompt_ms * prompt_n if prompt_ms > 0 else 0.0,
        "predicted_n": stats.eval_count,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": predicted_ms / steps if steps > 0 else 0.0,
        "predicted_per_second": 1e3 / predicted_ms * steps if predicted_ms > 0 else 0.0,
    }


def final_extras(stats: GenerationStats, extensions: bool) -> dict[str, Any]:
    """The keys cfexp's servers add to a final message: llama.cpp's ``timings``
    and the extension ``prompt_truncated_tokens`` (0 when nothing was dropped).

    None when ``extensions`` is off (the setting ``timings: false``): the final
    message is then exactly Ollama's or OpenAI's.
    """
    if not extensions:
        return {}
    return {"timings": timings_body(stats), "prompt_truncated_tokens": stats.prompt_truncated_tokens}
