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


NO_FAULT = FaultPlan()


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
        fail = settings.fail_status if settings.fail_status and number % settings.fail_every_n == 0 else None
        drop = (
            settings.drop_after_tokens
            if settings.drop_after_tokens is not None and number % settings.drop_every_n == 0
            else None
        )
        if fail is None and drop is None:
            return NO_FAULT
        return FaultPlan(fail_status=fail, drop_after_tokens=drop)
