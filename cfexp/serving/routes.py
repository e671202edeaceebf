"""The routing table: which function answers which method and path.

Generation paths go to :class:`~cfexp.serving.exchange.GenerationExchange`;
the metadata endpoints of both APIs are answered here. ``GET /cfexp/status``
is ours (queue depth and slots), for tests and the launcher.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cfexp import __version__
from cfexp.serving import ollama_api, openai_api
from cfexp.serving.exchange import GenerationEndpoint, GenerationExchange, Services
from cfexp.serving.request import RequestError, parse_json_body
from cfexp.serving.response import ResponseWriter

#: The Ollama API version whose request and response shapes we follow.
OLLAMA_API_VERSION = "0.12.0"

_ENDPOINTS = {
    "/api/generate": GenerationEndpoint(
        "/api/generate", ollama_api.parse_generate, ollama_api.OllamaFramer, ollama_api.error_body
    ),
    "/api/chat": GenerationEndpoint(
        "/api/chat", ollama_api.parse_chat, ollama_api.OllamaFramer, ollama_api.error_body
    ),
    "/v1/chat/completions": GenerationEndpoint(
        "/v1/chat/completions",
        openai_api.parse_chat_completions,
        openai_api.OpenAIFramer,
        openai_api.error_body,
    ),
    "/v1/completions": GenerationEndpoint(
        "/v1/completions", openai_api.parse_completions, openai_api.OpenAIFramer, openai_api.error_body
    ),
}


@dataclass(frozen=True)
class Call:
    """One request as the router sees it."""

    method: str
    path: str
    body: bytes
    writer: ResponseWriter
    t_received_ns: int


Route = Callable[[Call], None]


class App:
    """Answers every request the HTTP server receives."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._started = int(time.time())
        get = {
            "/": self._root,
            "/api/version": self._version,
            "/api/tags": self._tags,
            "/api/ps": self._ps,
            "/v1/models": self._v1_models,
            "/cfexp/status": self._status,
        }
        post = {"/api/show": self._show, "/api/pull": self._pull}
        post.update({path: self._generation for path in _ENDPOINTS})
        self._routes: dict[str, dict[str, Route]] = {}
        for path, route in get.items():
            self._routes.setdefault(path, {})["GET"] = route
        for path, route in post.items():
            self._routes.setdefault(path, {})["POST"] = route

    def handle(self, call: Call) -> None:
        path = call.path
        method = "GET" if call.method == "HEAD" else call.method
        if path.startswith("/v1/models/") and method == "GET":
            self._v1_model(call, path.removeprefix("/v1/models/"))
            return
        routes = self._routes.get(path)
        if routes is None:
            self._not_found(call)
        elif method not in routes:
            self._error(call, RequestError(405, f"method {call.method} is not allowed on {path}"))
        else:
            routes[method](call)

    # -- helpers ----------------------------------------------------------------

    @staticmethod
    def _error(call: Call, error: RequestError) -> None:
        if call.path.startswith("/v1/"):
            call.writer.send_json(error.status, openai_api.error_body(error))
        else:
            call.writer.send_json(error.status, ollama_api.error_body(error))

    def _not_found(self, call: Call) -> None:
        if call.path.startswith("/v1/"):
            self._error(call, RequestError(404, f"unknown path {call.path}", code="unknown_url"))
        else:
            call.writer.send_text(404, "404 page not found")  # Ollama's (gin's) reply

    # -- generation -------------------------------------------------------------

    def _generation(self, call: Call) -> None:
        GenerationExchange(_ENDPOINTS[call.path], self.services, call.writer, call.t_received_ns).run(
            call.body
        )

    # -- Ollama metadata --------------------------------------------------------

    def _root(self, call: Call) -> None:
        call.writer.send_text(200, "Ollama is running")

    def _version(self, call: Call) -> None:
        call.writer.send_json(
            200,
            {
                "version": OLLAMA_API_VERSION,
                "server": "cfexp-serving",
                "cfexp_version": __version__,
                "engine": self.services.engine.name,
            },
        )

    def _tags(self, call: Call) -> None:
        call.writer.send_json(200, ollama_api.tags_body(self.services.engine.models()))

    def _ps(self, call: Call) -> None:
        call.writer.send_json(200, ollama_api.ps_body(self.services.engine.loaded()))

    def _show(self, call: Call) -> None:
        try:
            name = ollama_api.model_name_of(parse_json_body(call.body))
            model = self.services.engine.find_model(name)
            if model is None:
                raise RequestError(404, f"model '{name}' not found")
        except RequestError as error:
            self._error(call, error)
            return
        call.writer.send_json(200, ollama_api.show_body(model))

    def _pull(self, call: Call) -> None:
        try:
            body = parse_json_body(call.body)
            name = ollama_api.model_name_of(body)
            stream = body.get("stream", True) is not False
            model = self.services.engine.pull(name)
            if model is None:
                served = ", ".join(m.name for m in self.services.engine.models())
                raise RequestError(
                    404,
                    f"pull model manifest: file does not exist: model '{name}' (this server serves {served})",
                )
        except RequestError as error:
            self._error(call, error)
            return
        if not stream:
            call.writer.send_json(200, {"status": "success"})
            return
        call.writer.start_stream(ollama_api.NDJSON)
        for status in ollama_api.pull_statuses(model):
            call.writer.write_chunk(ollama_api.ndjson([status]))
        call.writer.end_stream()

    # -- OpenAI metadata --------------------------------------------------------

    def _v1_models(self, call: Call) -> None:
        call.writer.send_json(200, openai_api.models_body(self.services.engine.models(), self._started))

    def _v1_model(self, call: Call, name: str) -> None:
        model = self.services.engine.find_model(name)
        if model is None:
            self._error(call, RequestError(404, f"model '{name}' not found", code="model_not_found"))
            return
        call.writer.send_json(200, openai_api.model_body(model, self._started))

    # -- ours -------------------------------------------------------------------

    def _status(self, call: Call) -> None:
        queue = self.services.queue.status()
        call.writer.send_json(
            200,
            {
                "engine": self.services.engine.name,
                "slots": queue.slots,
                "busy": queue.busy,
                "waiting": queue.waiting,
                "queued_total": queue.queued_total,
                "admitted_total": queue.admitted_total,
                "models": [m.name for m in self.services.engine.models()],
            },
        )
