"""One generation request, from its body to its ground-truth line.

Order of events: parse (400 on a bad body) → fault plan (an injected status
stops here) → ``engine.prepare`` (404 unknown model) →
FIFO queue → ``engine.generate`` on the admitted slot → frames written as the
tokens come → final frame. Headers go out with the first frame, so an error
found after admission (e.g. a failed reload) still gets a proper status. Once
a stream has started, an error becomes the API's in-stream error object.
The other injected faults act between frames (:meth:`GenerationExchange._inject`):
a cut connection, a malformed line, or a reply that stops without closing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from cfexp.serving.admission import AdmissionQueue
from cfexp.serving.engines.base import Engine, EngineError, GenerationEvent, GenerationStats
from cfexp.serving.faults import FaultInjector, FaultPlan
from cfexp.serving.ground_truth import GroundTruthLog, GroundTruthRecord
from cfexp.serving.request import GenerationRequest, RequestError, parse_json_body
from cfexp.serving.response import JSON, ClientGone, ResponseWriter

logger = logging.getLogger(__name__)


class Framer(Protocol):
    """An API's framing of one generation (see ollama_api / openai_api)."""

    content_type: str

    def piece(self, text: str) -> bytes: ...

    def final(self, stats: GenerationStats, t_now_ns: int) -> bytes: ...

    def whole(self, text: str, stats: GenerationStats, t_now_ns: int) -> dict[str, Any]: ...

    def error(self, message: str) -> bytes: ...

    def malformed(self) -> bytes: ...


@dataclass(frozen=True)
class GenerationEndpoint:
    """How one API path parses requests and frames replies."""

    path: str
    parse: Callable[[dict[str, Any], str], GenerationRequest]
    framer: Callable[[GenerationRequest, int, bool], Framer]
    error_body: Callable[[RequestError], dict[str, Any]]


@dataclass
class Services:
    """What every exchange shares: the engine, the queue, faults, ground truth."""

    engine: Engine
    queue: AdmissionQueue
    faults: FaultInjector
    ground_truth: GroundTruthLog | None
    # Set at shutdown: running generations stop at their next token.
    stopping: threading.Event
    # Send timings and prompt_truncated_tokens in final messages (the setting "timings").
    extensions: bool = True


# How often a hung reply looks whether its client gave up or the server stops.
_HANG_POLL_S = 0.1


class _Faulted(Exception):
    """The reply was cut short on purpose (an injected fault); ``outcome`` names it."""

    def __init__(self, outcome: Literal["fault_drop", "fault_hang"]) -> None:
        super().__init__(outcome)
        self.outcome = outcome


class GenerationExchange:
    def __init__(
        self,
        endpoint: GenerationEndpoint,
        services: Services,
        writer: ResponseWriter,
        t_received_ns: int,
    ) -> None:
        self.endpoint = endpoint
        self.services = services
        self.writer = writer
        self.record = GroundTruthRecord(
            request_id=writer.request_id,
            endpoint=endpoint.path,
            t_received_ns=t_received_ns,
            connection_id=writer.connection_id,
        )
        self.framer: Framer | None = None

    def run(self, body: bytes) -> None:
        record = self.record
        try:
            request = self.endpoint.parse(parse_json_body(body), self.writer.request_id)
            record.model, record.stream = request.model, request.stream
            plan = self.services.faults.plan()
            if plan.fail_status is not None:
                record.outcome = "fault_status"
                message = f"injected fault: HTTP {plan.fail_status} (faults.fail_status)"
                self.writer.send_json(
                    plan.fail_status,
                    self.endpoint.error_body(RequestError(plan.fail_status, message, "server_error")),
                )
                return
            prepared = self.services.engine.prepare(request)
            self.framer = self.endpoint.framer(request, record.t_received_ns, self.services.extensions)
            with self.services.queue.admit() as admission:
                record.t_queued_ns, record.t_admitted_ns = admission.t_queued_ns, admission.t_admitted_ns
                record.slot = admission.slot
                if self.writer.client_closed():
                    raise ClientGone("the client closed the connection while queued")
                self._check_running()  # the engine may be closing
                events = self.services.engine.generate(prepared, admission.slot)
                try:
                    if request.stream:
                        self._stream(events, plan)
                    else:
                        self._whole(events, plan)
                finally:
                    events.close()  # frees the engine's slot state if we stopped early
        except RequestError as error:
            self._fail(error.status, error.message, error)
        except EngineError as error:
            level = logging.INFO if self.services.stopping.is_set() else logging.ERROR
            logger.log(level, "request %s failed in the engine: %s", self.writer.request_id, error)
            self._fail(500, str(error), None)
        except ClientGone:
            if record.outcome == "ok":  # an injected fault that came first stays the outcome
                record.outcome = "client_gone"
            logger.info("request %s: the client went away", self.writer.request_id)
        except _Faulted as fault:
            record.outcome = fault.outcome
        except Exception as error:  # never a traceback to the client or a dead thread
            logger.exception("request %s failed", self.writer.request_id)
            self._fail(500, f"internal server error: {type(error).__name__}", None)
        finally:
            record.http_status = self.writer.status
            record.t_done_ns = time.monotonic_ns()
            if self.services.ground_truth is not None:
                self.services.ground_truth.write(record)

    def _fail(self, status: int, message: str, error: RequestError | None) -> None:
        self.record.outcome = "error"
        self.record.error = message
        try:
            if not self.writer.headers_sent:
                error = error or RequestError(status, message, "server_error")
                self.writer.send_json(status, self.endpoint.error_body(error))
            elif self.framer is not None:
                self.writer.write_chunk(self.framer.error(message))
                self.writer.end_stream()
        except ClientGone:
            self.record.outcome = "client_gone"

    def _check_running(self) -> None:
        if self.services.stopping.is_set():
            raise EngineError("the server is shutting down")

    def _sent_chunk(self, t_send_ns: int) -> None:
        if self.record.t_first_chunk_sent_ns is None:
            self.record.t_first_chunk_sent_ns = t_send_ns
        self.record.chunk_sent_ns.append(t_send_ns)

    def _inject(self, plan: FaultPlan, sent: int) -> None:
        """Act on the plan's faults that are due after ``sent`` content chunks."""
        if plan.drop_after_tokens == sent:
            self.writer.abort()
            raise _Faulted("fault_drop")
        if plan.malformed_after_tokens == sent and self.framer is not None:
            self.record.outcome = "fault_malformed"
            if not self.writer.headers_sent:
                self.writer.start_stream(self.framer.content_type)
            self.writer.write_chunk(self.framer.malformed())
        if plan.hang_after_tokens == sent:
            self.record.outcome = "fault_hang"
            self._hang()

    def _hang(self) -> None:
        """Send nothing more, keeping the connection open, until the client gives up.

        Holds the slot, like a stuck server would. Ends when the client closes
        its end (ClientGone) or the server stops (the connection is cut).
        """
        logger.info("request %s: hanging (faults.hang_after_tokens)", self.writer.request_id)
        while not self.services.stopping.wait(_HANG_POLL_S):
            if self.writer.client_closed():
                raise ClientGone("the client gave up on a hung reply")
        self.writer.abort()
        raise _Faulted("fault_hang")

    def _finish(self, stats: GenerationStats | None) -> GenerationStats:
        if stats is None:
            raise EngineError("the engine ended without its counters")
        self.record.add_stats(stats)
        return stats

    def _stream(self, events: Iterator[GenerationEvent], plan: FaultPlan) -> None:
        assert self.framer is not None
        self._inject(plan, 0)
        stats: GenerationStats | None = None
        sent = 0
        for event in events:
            self._check_running()
            if isinstance(event, GenerationStats):
                stats = event
                continue
            if not event.text:
                continue
            if not self.writer.headers_sent:
                self.writer.start_stream(self.framer.content_type)
            # Read before the write: the client cannot see the chunk earlier
            # than this, however the sending thread is scheduled after it.
            t_send = time.monotonic_ns()
            self.writer.write_chunk(self.framer.piece(event.text))
            self._sent_chunk(t_send)
            sent += 1
            self._inject(plan, sent)
        stats = self._finish(stats)
        if not self.writer.headers_sent:
            self.writer.start_stream(self.framer.content_type)
        self.writer.write_chunk(self.framer.final(stats, time.monotonic_ns()))
        self.writer.end_stream()

    def _whole(self, events: Iterator[GenerationEvent], plan: FaultPlan) -> None:
        assert self.framer is not None
        drop_after, hang_after = plan.drop_after_tokens, plan.hang_after_tokens
        texts: list[str] = []
        stats: GenerationStats | None = None
        for event in events:
            self._check_running()
            if isinstance(event, GenerationStats):
                stats = event
            elif event.text:
                texts.append(event.text)
            if drop_after is not None and len(texts) >= drop_after:
                self.writer.abort()
                raise _Faulted("fault_drop")
            if hang_after is not None and len(texts) >= hang_after:
                self.record.outcome = "fault_hang"
                self._hang()
        stats = self._finish(stats)
        text = "".join(texts)
        t_send = time.monotonic_ns()
        if plan.malformed_after_tokens is not None:  # the whole body is one bad line
            self.record.outcome = "fault_malformed"
            self.writer.send_bytes(200, self.framer.malformed(), JSON)
            return
        self.writer.send_json(200, self.framer.whole(text, stats, t_send))
        if text:
            self._sent_chunk(t_send)
