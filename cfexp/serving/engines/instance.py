"""The model instance that every slot shares: one loaded configuration at a time.

Ollama runs one model instance (runner) per loaded configuration, and its
``OLLAMA_NUM_PARALLEL`` slots share it. A request whose ``num_ctx`` or
``num_gpu`` differ from what is loaded makes Ollama's scheduler wait until
the requests running on the instance have finished, then reload it; the
requests that arrive meanwhile wait behind that reload, in order. The gate
does the same for cfexp's engines:

- requests pass the gate one at a time, in the order they reached it;
- a request whose configuration is loaded passes at once (others may be
  running on the other slots);
- a request that needs another configuration waits until no request is
  running, then reloads, holding back everyone behind it;
- ``load_ns`` is, as Ollama's ``load_duration``, the time from reaching the
  gate to passing it: its own load, plus any wait for in-flight requests or
  for a load ahead of it (0 when it passed at once).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

#: A loaded configuration: (num_ctx, offloaded layers).
Config = tuple[int, int]


@dataclass(frozen=True)
class Passage:
    """One request's way through the gate."""

    # What the instance has loaded while this request runs.
    config: Config
    # This request (re)loaded the instance.
    reloaded: bool
    # Reaching the gate to passing it, in ns (0 when it passed at once).
    load_ns: int


class InstanceGate:
    """Admits requests to the shared instance, reloading it when a request needs another config."""

    def __init__(self, loaded: Config | None = None) -> None:
        self._condition = threading.Condition()
        self._loaded = loaded
        self._users = 0
        self._next_ticket = 0
        # The ticket whose turn it is to pass.
        self._serving = 0

    @property
    def loaded(self) -> Config | None:
        with self._condition:
            return self._loaded

    @property
    def users(self) -> int:
        """Requests holding the instance: passed the gate, not finished yet."""
        with self._condition:
            return self._users

    @contextmanager
    def use(
        self, wanted: Config | None, default: Config, load: Callable[[Config], None]
    ) -> Iterator[Passage]:
        """Hold the instance with ``wanted`` loaded for the ``with`` block.

        ``wanted`` None = whatever is loaded (``default`` when nothing is).
        ``load(config)`` is called, with no request running, when a reload is
        needed; if it raises, nothing counts as loaded and the next request
        loads again.
        """
        started = time.monotonic_ns()
        waited = False
        with self._condition:
            ticket = self._next_ticket
            self._next_ticket += 1
            while True:
                if ticket == self._serving:
                    target = wanted or self._loaded or default
                    if self._loaded == target:
                        reload = False
                        break
                    if self._users == 0:
                        reload = True
                        break
                waited = True
                self._condition.wait()
            if not reload:
                self._pass_locked()
        if reload:
            try:
                load(target)
            except BaseException:
                with self._condition:
                    self._loaded = None
                    self._serving += 1
                    self._condition.notify_all()
                raise
            with self._condition:
                self._loaded = target
                self._pass_locked()
        load_ns = time.monotonic_ns() - started if (waited or reload) else 0
        try:
            yield Passage(target, reload, load_ns)
        finally:
            with self._condition:
                self._users -= 1
                self._condition.notify_all()

    def _pass_locked(self) -> None:
        self._users += 1
        self._serving += 1
        self._condition.notify_all()
