"""The request queue: FIFO admission to N parallel slots.

A plain ``threading.Semaphore`` wakes *some* waiter when a slot frees up, not
the one that has waited longest, so under load a late request can overtake an
early one. Here every request takes a numbered ticket on arrival, and a slot
goes to the lowest waiting ticket: admission order is arrival order, always.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Admission:
    """A request's pass through the queue (times are ``time.monotonic_ns()``)."""

    ticket: int
    slot: int
    t_queued_ns: int
    t_admitted_ns: int


@dataclass(frozen=True)
class QueueStatus:
    slots: int
    busy: int
    waiting: int
    # Tickets handed out so far (= admitted_total + waiting).
    queued_total: int
    admitted_total: int


class AdmissionQueue:
    """FIFO admission to ``slots`` slots numbered 0..slots-1."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self._slots = slots
        self._condition = threading.Condition()
        self._free = list(range(slots))
        self._next_ticket = 0
        # The ticket whose turn it is: tickets below it have been admitted.
        self._serving = 0

    @contextmanager
    def admit(self) -> Iterator[Admission]:
        """Wait for this request's turn and a free slot; free the slot on exit."""
        admission = self._acquire()
        try:
            yield admission
        finally:
            self._release(admission.slot)

    def _acquire(self) -> Admission:
        with self._condition:
            ticket = self._next_ticket
            self._next_ticket += 1
            # Taken under the lock, so queue times are ordered like tickets.
            t_queued = time.monotonic_ns()
            while ticket != self._serving or not self._free:
                self._condition.wait()
            self._serving += 1
            slot = self._free.pop(0)
            t_admitted = time.monotonic_ns()
            # The next ticket may be able to go too (another slot is free).
            self._condition.notify_all()
            return Admission(ticket, slot, t_queued, t_admitted)

    def _release(self, slot: int) -> None:
        with self._condition:
            self._free.append(slot)
            # Lowest slot first: with few requests, slot 0 keeps its warm cache.
            self._free.sort()
            self._condition.notify_all()

    def status(self) -> QueueStatus:
        with self._condition:
            busy = self._slots - len(self._free)
            return QueueStatus(
                slots=self._slots,
                busy=busy,
                waiting=self._next_ticket - self._serving,
                queued_total=self._next_ticket,
                admitted_total=self._serving,
            )
