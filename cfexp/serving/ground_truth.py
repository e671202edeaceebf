"""The server's own timeline of every generation request (``--ground-truth``).

One JSON line per generation request, appended when the request ends, so the
harness can check what the agents measured against what the server did. Times
are ``time.monotonic_ns()`` readings: CLOCK_MONOTONIC is one system-wide clock
on Linux, so they compare directly with the agents' ``t_*_ns`` fields.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from cfexp.serving.engines.base import GenerationStats

# ok: reply complete; client_gone: the client closed the connection first;
# fault_status / fault_drop / fault_malformed / fault_hang: an injected fault
# (kept when the client then goes away); error: a 4xx/5xx reply or an engine
# failure.
Outcome = Literal["ok", "client_gone", "fault_status", "fault_drop", "fault_malformed", "fault_hang", "error"]


@dataclass
class GroundTruthRecord:
    request_id: str
    endpoint: str
    # Request line and headers read (before the body).
    t_received_ns: int
    # The connection it came on ("c000001", numbered as accepted): requests of
    # one kept-alive connection share it.
    connection_id: str | None = None
    model: str | None = None
    stream: bool | None = None
    # Entered the FIFO queue; left it (a slot was free and it was its turn).
    t_queued_ns: int | None = None
    t_admitted_ns: int | None = None
    slot: int | None = None
    # First content-bearing chunk written to the socket.
    t_first_chunk_sent_ns: int | None = None
    # One per content-bearing chunk, read just before its bytes were handed to
    # the kernel (the socket is unbuffered, with TCP_NODELAY): a strict lower
    # bound of when any client can have received it.
    chunk_sent_ns: list[int] = field(default_factory=list)
    # The last byte of the reply written (or the failure handled).
    t_done_ns: int | None = None
    # The engine's counters, as the final message reports them (null when it
    # did not finish): prompt_eval_count = the whole prompt (cached + evaluated,
    # after truncation); eval_count includes the end-of-turn token of a reply
    # that stopped by itself.
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    # Prompt tokens really evaluated / taken from the prefix cache (timings.prompt_n / cache_n).
    prompt_n: int | None = None
    cache_n: int | None = None
    # Prompt tokens dropped to fit the context.
    prompt_truncated_tokens: int | None = None
    done_reason: str | None = None
    # The durations reported in the final message (ns).
    load_duration_ns: int | None = None
    prompt_eval_duration_ns: int | None = None
    eval_duration_ns: int | None = None
    # The simulator's model time for this request (null on llamacpp): see docs/serving.md.
    sim: dict[str, Any] | None = None
    http_status: int | None = None
    outcome: Outcome = "ok"
    error: str | None = None

    def add_stats(self, stats: GenerationStats) -> None:
        """Copy the engine's final counters."""
        self.prompt_eval_count = stats.prompt_tokens
        self.eval_count = stats.eval_count
        self.prompt_n = stats.prompt_evaluated
        self.cache_n = stats.cached_prompt_tokens
        self.prompt_truncated_tokens = stats.prompt_truncated_tokens
        self.done_reason = stats.done_reason
        self.load_duration_ns = stats.load_duration_ns
        self.prompt_eval_duration_ns = stats.prompt_eval_duration_ns
        self.eval_duration_ns = stats.eval_duration_ns
        self.sim = stats.detail


class GroundTruthLog:
    """Appends records as JSON lines; safe to call from many threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._file: IO[str] | None = path.open("a", encoding="utf-8")

    def write(self, record: GroundTruthRecord) -> None:
        line = json.dumps(dataclasses.asdict(record), separators=(",", ":")) + "\n"
        with self._lock:
            if self._file is not None:
                self._file.write(line)
                # Flushed per line: a killed server keeps everything written so far.
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
