"""Fault injection: deciding which generation requests fail, and how.

Counts generation requests (1, 2, 3, ... in arrival order; metadata endpoints
do not count) and applies :class:`~cfexp.serving.settings.FaultSettings`. The
HTTP layer acts on the resulting :class:`FaultPlan`. New kinds of faults get a
settings field, a plan field, and code where the plan is acted on.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from cfexp.serving.settings import FaultSettings


@dataclass(frozen=True)
class FaultPlan:
    """What to do wrong with one request (None = nothing)."""

    # Reply with this status instead of serving the request.
    fail_status: int | None = None
    # Close the connection after this many content chunks.
    drop_after_tokens: int | None = None
    # Write one line that is not valid JSON after this many content chunks.
    malformed_after_tokens: int | None = None
    # Stop sending after this many content chunks, connection left open.
    hang_after_tokens: int | None = None


NO_FAULT = FaultPlan()


def _every(value: int | None, every_n: int, number: int) -> int | None:
    """``value`` when request ``number`` is one of every ``every_n``th, else None."""
    return value if value is not None and number % every_n == 0 else None


class FaultInjector:
    def __init__(self, settings: FaultSettings) -> None:
        self.settings = settings
        self._count = 0
        self._lock = threading.Lock()

    def plan(self) -> FaultPlan:
        """The plan for the next generation request."""
        settings = self.settings
        with self._lock:
            self._count += 1
            number = self._count
        plan = FaultPlan(
            fail_status=_every(settings.fail_status, settings.fail_every_n, number),
            drop_after_tokens=_every(settings.drop_after_tokens, settings.drop_every_n, number),
            malformed_after_tokens=_every(settings.malformed_after_tokens, settings.malformed_every_n, number),
            hang_after_tokens=_every(settings.hang_after_tokens, settings.hang_every_n, number),
        )
        return NO_FAULT if plan == NO_FAULT else plan
