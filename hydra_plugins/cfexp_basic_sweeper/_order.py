"""The order a sweep's jobs run in: pure functions on lists of job overrides.

A job is the list of overrides Hydra's BasicSweeper made for it
(``["runtime=tokio", "ctx=512", "repetition=2"]``); a *config* is a job
without its repetition override, so the repetitions of one config share it.

- ``grid``: Hydra's order (the last swept key varies fastest): all jobs of
  one value of the first key before any of the next, and each config's
  repetitions back to back — so anything that drifts during the sweep (heat,
  caches, background load, the first cold start) lands on some configs only.
- ``shuffled``: one seeded random permutation of all jobs.
- ``blocked``: one block per repetition value, in their swept order; each
  block runs every config once, in a fresh seeded random order. Every config
  meets every stretch of the sweep's time, and the repetitions of a config
  are spread over it (a randomised complete block design).

The same jobs and seed always give the same order (Python's ``random.Random``),
which is how a resumed sweep finds its positions again.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence

from cfexp.vocab import SweepOrder

Job = list[str]


def override_key(override: str) -> str:
    """``+a.b=1`` -> ``a.b``."""
    return override.split("=", 1)[0].lstrip("+~")


def override_value(override: str) -> str:
    return override.split("=", 1)[1] if "=" in override else ""


def config_of(job: Sequence[str], repetition_key: str) -> tuple[str, ...]:
    """The job's overrides without its repetition: what its repetitions share."""
    return tuple(o for o in job if override_key(o) != repetition_key)


def repetition_of(job: Sequence[str], repetition_key: str) -> str | None:
    """The job's repetition value, or None when it has none."""
    return next((override_value(o) for o in job if override_key(o) == repetition_key), None)


def blocks(jobs: Sequence[Sequence[str]], repetition_key: str) -> list[list[Job]]:
    """The jobs grouped by repetition value, blocks and jobs in the order first met."""
    grouped: dict[str | None, list[Job]] = {}
    for job in jobs:
        grouped.setdefault(repetition_of(job, repetition_key), []).append(list(job))
    return list(grouped.values())


def order_jobs(
    jobs: Sequence[Sequence[str]], order: SweepOrder, seed: int, repetition_key: str = "repetition"
) -> list[Job]:
    """The jobs in the order they will run (see the module docstring)."""
    ordered = [list(job) for job in jobs]
    if order == SweepOrder.grid:
        return ordered
    rng = random.Random(seed)
    if order == SweepOrder.shuffled:
        rng.shuffle(ordered)
        return ordered
    result: list[Job] = []
    for block in blocks(ordered, repetition_key):
        rng.shuffle(block)
        result += block
    return result


def new_seed() -> int:
    """A fresh seed for a sweep that was given none (recorded, so the order can be re-derived)."""
    return secrets.randbelow(2**31)


def choose_seed(configured: int | None, recorded: int | None) -> int:
    """The configured seed, else the one a resumed sweep's parent recorded, else a fresh one."""
    if configured is not None:
        return configured
    if recorded is not None:
        return recorded
    return new_seed()
