"""Writing one HTTP response: plain bodies, chunked streams, and cut connections.

The handler's ``wfile`` is unbuffered (``wbufsize = 0``): every write is one
``sendall`` on a socket with TCP_NODELAY, so a chunk is on its way to the
client when ``write_chunk`` returns — the moment the ground truth records.
Any failure to write means the client is gone and raises :class:`ClientGone`.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler
from typing import Any

JSON = "application/json; charset=utf-8"

# What a peer that went away looks like to sendall().
_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError, OSError)


class ClientGone(Exception):
    """The client closed the connection (or it broke) while we were writing."""


class ResponseWriter:
    """Writes one response on a handler's connection."""

    def __init__(
        self,
        handler: BaseHTTPRequestHandler,
        request_id: str,
        head_only: bool = False,
        connection_id: str | None = None,
    ) -> None:
        self._handler = handler
        self.request_id = request_id
        # The connection the request came on (ServingHTTPServer numbers them).
        self.connection_id = connection_id
        # HEAD: headers as for GET, no body.
        self._head_only = head_only
        self._chunked = False
        self.status: int | None = None
        self.headers_sent = False

    def _write(self, data: bytes) -> None:
        try:
            self._handler.wfile.write(data)
        except _GONE as exc:
            self._handler.close_connection = True
            raise ClientGone(str(exc)) from exc

    def _start(self, status: int, headers: Sequence[tuple[str, str]]) -> None:
        handler = self._handler
        handler.send_response(status)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("X-Request-Id", self.request_id)
        self.status = status
        self.headers_sent = True
        try:
            handler.end_headers()
        except _GONE as exc:
            handler.close_connection = True
            raise ClientGone(str(exc)) from exc

    def send_bytes(self, status: int, body: bytes, content_type: str) -> None:
        self._start(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        if not self._head_only:
            self._write(body)

    def send_json(self, status: int, body: dict[str, Any]) -> None:
        self.send_bytes(status, json.dumps(body, separators=(",", ":")).encode(), JSON)

    def send_text(self, status: int, text: str) -> None:
        self.send_bytes(status, text.encode(), "text/plain; charset=utf-8")

    def start_stream(self, content_type: str, status: int = 200) -> None:
        headers = [("Content-Type", content_type), ("Cache-Control", "no-cache")]
        if self._handler.request_version == "HTTP/1.1":
            self._chunked = True
            headers.append(("Transfer-Encoding", "chunked"))
        else:
            # HTTP/1.0 has no chunked encoding: the body ends when the connection does.
            headers.append(("Connection", "close"))
            self._handler.close_connection = True
        self._start(status, headers)

    def write_chunk(self, data: bytes) -> None:
        if self._chunked:
            # Size line, data and CRLF in one write: one send per chunk.
            self._write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self._write(data)

    def end_stream(self) -> None:
        if self._chunked:
            self._write(b"0\r\n\r\n")

    def client_closed(self) -> bool:
        """True when the client has already closed its end (it gave up while queued).

        Checked at admission: generating a whole reply for nobody would delay
        everyone queued behind it. Pipelined bytes of a next request do not count.
        """
        sock = self._handler.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def abort(self) -> None:
        """Cut the connection now (an injected fault): the client sees it end mid-response."""
        self._handler.close_connection = True
        with contextlib.suppress(OSError):  # already gone
            self._handler.connection.shutdown(socket.SHUT_RDWR)
