"""A scripted LLM server for end-to-end agent tests (stdlib only, no simulator).

``ScriptedServer(script)`` serves on a loopback port in a background thread,
one thread per connection (so concurrent agents are served concurrently).
``script(path, body)`` returns a :class:`Reply`: status, body chunks, and
sleeps, written with chunked transfer encoding so each chunk reaches the
client as its own network write.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    chunks: list[bytes] = field(default_factory=list)
    status: int = 200
    # Sleep before the status line (a slow prefill) and before each chunk (decode).
    first_delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    # Drop the connection after the chunks, without the closing zero-length chunk.
    drop_connection: bool = False
    # After the whole reply, wait for the client's next request on this
    # connection and close it unanswered: llama-server closes the connection
    # after every stream while announcing keep-alive, and its close can meet
    # the next request; this makes that race happen every time.
    close_after: bool = False
    # Close the connection right after the whole reply (a server ending
    # keep-alive between two calls).
    close_at_end: bool = False
    # Write just these bytes (say, half a status line) instead of a reply, then close.
    raw_then_close: bytes | None = None
    content_type: str = "application/x-ndjson"


@dataclass
class SeenRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    t_start: float
    t_end: float = 0.0
    # Which connection it came on: 1, 2, ... in the order they were accepted.
    connection: int = 0


Script = Callable[[str, dict[str, Any]], Reply]


def ollama_reply(text: str, pieces: int = 4, **kwargs: Any) -> Reply:
    """An Ollama /api/chat stream of ``text`` in ``pieces`` parts plus the final object."""
    step = max(1, -(-len(text) // pieces))
    parts = [text[i : i + step] for i in range(0, len(text), step)]
    lines = [
        {"model": "m", "message": {"role": "assistant", "content": p}, "done": False} for p in parts
    ]
    final = {
        "model": "m", "message": {"role": "assistant", "content": ""}, "done": True,
        "done_reason": "stop", "total_duration": 9_000_000, "load_duration": 1_000_000,
        "prompt_eval_count": 50, "prompt_eval_duration": 2_000_000,
        "eval_count": len(parts), "eval_duration": 5_000_000,
    }  # fmt: skip
    lines.append(final)
    return Reply(chunks=[(json.dumps(x) + "\n").encode() for x in lines], **kwargs)


def openai_reply(text: str, pieces: int = 4, **kwargs: Any) -> Reply:
    """An OpenAI chat.completions SSE stream with a usage chunk and [DONE]."""
    step = max(1, -(-len(text) // pieces))
    parts = [text[i : i + step] for i in range(0, len(text), step)]
    events: list[dict[str, Any]] = [{"choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
    events += [
        {"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in parts
    ]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events.append({"choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": len(parts)}})
    chunks = [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]
    return Reply(chunks=chunks, content_type="text/event-stream", **kwargs)


class ScriptedServer:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[SeenRequest] = []
        self._lock = threading.Lock()
        self._active = 0
        self.max_active = 0
        # Connections accepted so far.
        self.connections = 0
        # Each connection's socket and the thread serving it: closed and joined on the way out,
        # so no thread of a test's server outlives the test (a kept-alive connection would).
        self._served: list[tuple[socket.socket, threading.Thread]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet tests

            def setup(self) -> None:
                super().setup()
                self.connection_number = server._connected(self.connection)

            def do_POST(self) -> None:  # stdlib's name
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                seen = SeenRequest(
                    self.path, dict(self.headers), body, time.monotonic(), connection=self.connection_number
                )
                server._enter(seen)
                try:
                    self._reply(server.script(self.path, body))
                except OSError:
                    pass  # the client gave up (timeout test): nothing to do
                finally:
                    seen.t_end = time.monotonic()
                    server._leave()

            def _reply(self, reply: Reply) -> None:
                time.sleep(reply.first_delay_s)
                if reply.raw_then_close is not None:
                    self.wfile.write(reply.raw_then_close)
                    self.wfile.flush()
                    self._close()
                    return
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                for chunk in reply.chunks:
                    time.sleep(reply.chunk_delay_s)
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                if reply.drop_connection:
                    self._close()
                    return
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                if reply.close_at_end:
                    self._close()
                elif reply.close_after:
                    self.connection.settimeout(10)
                    # The next request's first bytes have arrived (or the client left).
                    self.connection.recv(1, socket.MSG_PEEK)
                    self._close()

            def _close(self) -> None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up is part of the test, not an error

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def _enter(self, seen: SeenRequest) -> None:
        with self._lock:
            self.requests.append(seen)
            self._active += 1
            self.max_active = max(self.max_active, self._active)

    def _connected(self, connection: socket.socket) -> int:
        with self._lock:
            self.connections += 1
            self._served.append((connection, threading.current_thread()))
            return self.connections

    def _leave(self) -> None:
        with self._lock:
            self._active -= 1

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        with self._lock:
            served = list(self._served)
        for connection, _ in served:
            try:
                connection.shutdown(socket.SHUT_RDWR)  # a handler waiting for a next request returns
            except OSError:
                pass  # already closed
        for _, thread in served:
            thread.join(timeout=5)
