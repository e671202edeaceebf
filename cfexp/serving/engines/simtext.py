"""The simulator's output text: deterministic, seeded, markdown-ish words.

Downstream code parses agent replies for ``## Key Findings`` and
``## Recommendations`` sections with ``- `` bullets, so the simulated text has
exactly that shape, repeating (Key Findings, Recommendations, Summary) for as
many tokens as requested. One item of :func:`token_pieces` is one token.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

_WORDS = tuple(
    ["latency", "throughput", "tokens", "agents", "runtime", "cache", "queue", "stream", "memory", "requests", "batch", "model", "server", "median", "variance", "load", "concurrency", "scheduler", "buffer", "prompt", "context", "decode", "prefill", "the", "data", "results", "benchmark", "performance", "across", "under", "with", "during", "each", "shows", "improves", "reduces", "increases", "stays", "higher", "lower", "faster", "slower", "stable", "measured", "observed", "consistent", "overall", "python", "rust", "async", "workers", "calls", "instance", "clients", "response", "time"]
)

_SECTIONS = ("Key Findings", "Recommendations", "Summary")


def seed_for(base_seed: int, prompt: str) -> int:
    """A seed from the settings' seed and the prompt (stable across processes)."""
    digest = hashlib.blake2b(f"{base_seed}\0{prompt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _sentence(rng: random.Random, words: int) -> Iterator[str]:
    for index in range(words):
        word = rng.choice(_WORDS)
        yield word.capitalize() if index == 0 else f" {word}"
    yield "."


def token_pieces(seed: int) -> Iterator[str]:
    """An endless stream of token texts, the same for the same seed."""
    rng = random.Random(seed)
    while True:
        for section in _SECTIONS:
            yield "##"
            for word in section.split():
                yield f" {word}"
            yield "\n"
            if section == "Summary":
                yield from _sentence(rng, rng.randint(8, 16))
                yield "\n\n"
                continue
            for _ in range(3):
                yield "-"
                yield from (
                    f" {piece}" if i == 0 else piece
                    for i, piece in enumerate(_sentence(rng, rng.randint(5, 11)))
                )
                yield "\n"
            yield "\n"
