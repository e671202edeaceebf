"""The HTTP server: stdlib ``ThreadingHTTPServer``, HTTP/1.1, one thread per connection.

Keep-alive is on (HTTP/1.1): a connection's next request is read once the
previous reply is complete, unless that reply closed it (a fault, an unread
request body, an HTTP/1.0 stream). Bodies have a Content-Length, streams use
chunked transfer encoding. Each connection gets a daemon thread, so a stuck client
never blocks shutdown. :func:`serve` runs the server until SIGTERM or SIGINT,
then stops accepting, lets running generations stop at their next token,
frees the engine and returns.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from cfexp import __version__
from cfexp.serving.response import ClientGone, ResponseWriter
from cfexp.serving.routes import App, Call

logger = logging.getLogger("cfexp.serving.http")

READY_MARKER = "CFEXP_SERVING_READY"
# Larger bodies are refused (413): prompts are far smaller than this.
MAX_BODY_BYTES = 64 << 20
# How long shutdown waits for running generations to notice and stop.
_DRAIN_S = 5.0


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ServingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 makes a burst of concurrent clients wait for SYN retries.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, Handler)
        self.app: App | None = None
        self._ids = itertools.count(1)
        self._connection_ids = itertools.count(1)
        self._ids_lock = threading.Lock()

    def next_request_id(self) -> str:
        with self._ids_lock:
            return f"r{next(self._ids):06d}"

    def next_connection_id(self) -> str:
        with self._ids_lock:
            return f"c{next(self._connection_ids):06d}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"cfexp-serving/{__version__}"
    sys_version = ""
    # Idle keep-alive connections are closed after this many seconds.
    timeout = 600
    server: ServingHTTPServer

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        # One per accepted connection: the ground truth shows which requests a
        # kept-alive connection carried.
        self.connection_id = self.server.next_connection_id()
        # Small chunks must leave at once, not wait for Nagle's algorithm.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return b""
        try:
            length = int(length_text)
        except ValueError as exc:
            raise _BodyError(400, f"bad Content-Length header: {length_text!r}") from exc
        if length < 0 or length > MAX_BODY_BYTES:
            raise _BodyError(413, f"request body of {length} bytes is too large (limit {MAX_BODY_BYTES})")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024).split(b";")[0].strip()
            try:
                size = int(line, 16)
            except ValueError as exc:
                raise _BodyError(400, "bad chunked request body") from exc
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > MAX_BODY_BYTES:
                raise _BodyError(413, f"request body is too large (limit {MAX_BODY_BYTES})")
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)  # the CRLF after the chunk

    def _dispatch(self) -> None:
        t_received = time.monotonic_ns()
        writer = ResponseWriter(
            self, self.server.next_request_id(), head_only=self.command == "HEAD", connection_id=self.connection_id
        )
        path = self.path.split("?", 1)[0]
        try:
            try:
                body = self._read_body()
            except _BodyError as error:
                self.close_connection = True  # the rest of the body is unread
                writer.send_json(error.status, {"error": error.message})
            else:
                assert self.server.app is not None
                self.server.app.handle(Call(self.command, path, body, writer, t_received))
        except ClientGone:
            pass
        except Exception:  # a bug: log it, answer 500 if we still can, keep serving
            logger.exception("unhandled error on %s %s", self.command, path)
            self.close_connection = True
            if not writer.headers_sent:
                with contextlib.suppress(ClientGone):
                    writer.send_json(500, {"error": "internal server error"})
        duration_ms = (time.monotonic_ns() - t_received) / 1e6
        logger.info(
            "%s %s %s %.1f ms %s", self.command, path, writer.status or "-", duration_ms, writer.request_id
        )

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Silenced: _dispatch logs one line per request, with its duration."""

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int


def bind(options: ServeOptions) -> ServingHTTPServer:
    """Bind the listening socket (OSError when the address is taken)."""
    return ServingHTTPServer((options.host, options.port))


def _in_flight(app: App) -> bool:
    status = app.services.queue.status()
    return status.busy > 0 or status.waiting > 0


def serve(server: ServingHTTPServer, app: App, stop: threading.Event) -> None:
    """Serve until ``stop`` is set (SIGTERM/SIGINT set it), then shut down cleanly."""
    server.app = app

    def request_stop(signum: int, frame: FrameType | None) -> None:
        logger.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    try:
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
    except ValueError:
        pass  # not the main thread (embedded use): the caller sets `stop`
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
    )
    thread.start()
    port = server.server_address[1]
    logger.info("serving %s on %s:%d", app.services.engine.name, server.server_address[0], port)
    # The launcher waits for exactly this line on stdout.
    sys.stdout.write(f"{READY_MARKER} port={port}\n")
    sys.stdout.flush()
    # A timed wait, so the signal handler gets to run promptly.
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    app.services.stopping.set()
    deadline = time.monotonic() + _DRAIN_S
    while _in_flight(app) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _in_flight(app):
        logger.warning("generations still running after %.0f s; exiting anyway", _DRAIN_S)
    else:
        app.services.engine.close()
    if app.services.ground_truth is not None:
        app.services.ground_truth.close()
    logger.info("stopped")
