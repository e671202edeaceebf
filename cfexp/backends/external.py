"""Backends cfexp does not ship: a real Ollama, any OpenAI-compatible server.

``ollama``: attach to the server at ``backend.url``; if nothing answers there,
the URL is on loopback and ``ollama`` is on PATH, start ``ollama serve``
ourselves (``OLLAMA_HOST``, ``OLLAMA_MODELS``, ``OLLAMA_NUM_PARALLEL``) and
stop it after. A missing model is a clear error with the ``ollama pull``
command. ``openai``: attach only; the API key is sent, never logged.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx

from cfexp.backends.base import LaunchSpec, ServerInstance
from cfexp.backends.net import is_loopback, port_free, tls_context
from cfexp.backends.process import ManagedProcess
from cfexp.childproc import launcher_path
from cfexp.errors import ModelNotAvailableError, ServerStartError, ServerUnreachableError, SetupError

_INSTALL_HINT = "install Ollama (https://ollama.com/download) or give backend.url of a running one"


def _ollama_version(base_url: str) -> str | None:
    try:
        response = httpx.get(f"{base_url}/api/version", timeout=3, verify=tls_context())
        response.raise_for_status()
        return str(response.json().get("version"))
    except (httpx.HTTPError, ValueError):
        return None


class OllamaBackend:
    def start(self, launch: LaunchSpec, index: int, run_dir: Path, timeout_s: float) -> ServerInstance:
        assert launch.url is not None  # the ollama backend's config has one
        base_url = launch.url
        process = None
        version = _ollama_version(base_url)
        if version is None:
            process = self._launch(launch, base_url, index, run_dir, timeout_s)
            version = _ollama_version(base_url)
        instance = ServerInstance(
            index=index, backend="ollama", api="ollama", base_url=base_url, launch=launch,
            process=process, version=version,
        )
        try:
            self._check_model(base_url, launch.model_name)
        except SetupError:
            if process is not None:
                process.stop()
            raise
        return instance

    def _launch(
        self, launch: LaunchSpec, base_url: str, index: int, run_dir: Path, timeout_s: float
    ) -> ManagedProcess:
        url = httpx.URL(base_url)
        host, port = url.host, url.port or 11434
        where = f"<backend={launch.backend} url={base_url}>"
        address = f"fix its address (backend.url, or backend.urls[{index}] for several instances)"
        if launch.backend != "ollama":  # a `cfexp serve` given by its URL: cfexp never starts Ollama for it
            raise ServerUnreachableError(
                f"no server answers at {where}: start one there (`cfexp serve {launch.backend} --port {port}`), "
                f"{address}, or drop backend.url so that cfexp starts its own"
            )
        if launch.external:
            raise ServerUnreachableError(
                f"no server answers at {where}: with topology.lifecycle=external cfexp starts nothing, "
                f"so start it there or {address}"
            )
        if not launch.start_if_absent:
            raise ServerUnreachableError(
                f"no server answers at {where}: start it there, or {address}; "
                "with backend.start_if_absent=true cfexp starts `ollama serve` there itself"
            )
        if not is_loopback(host):
            raise ServerUnreachableError(
                f"no Ollama answers at {where}, and cfexp only starts servers on loopback: "
                "check the URL and that the server is running"
            )
        wanted = launch.binary or "ollama"
        binary = shutil.which(wanted)
        if binary is None:
            raise SetupError(f"no Ollama answers at {where} and `{wanted}` is not on PATH: {_INSTALL_HINT}")
        if not port_free(host, port):
            raise ServerStartError(
                f"port {port} is in use by something that is not Ollama {where}: "
                "stop it or choose another backend.url"
            )
        env = dict(os.environ)
        env["OLLAMA_HOST"] = f"{host}:{port}"
        env["OLLAMA_NUM_PARALLEL"] = str(launch.slots)
        if launch.models_dir:
            env["OLLAMA_MODELS"] = launch.models_dir
        argv = [binary, "serve"]
        launcher = launcher_path()
        if launcher is not None:  # dies with cfexp even if cfexp is killed outright
            argv = [str(launcher), str(run_dir / f"server{index}.rusage.json"), *argv]
        process = ManagedProcess(name=f"ollama{index}", argv=argv, log_path=run_dir / f"server{index}.log", env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not process.alive():
                process.stop()
                raise ServerStartError(f"`ollama serve` {where} exited. Its last log lines:\n{process.tail()}")
            if _ollama_version(base_url) is not None:
                return process
            time.sleep(0.2)
        process.stop()
        raise ServerStartError(f"`ollama serve` {where} did not answer within {timeout_s:.0f} s")

    @staticmethod
    def _check_model(base_url: str, model: str) -> None:
        response = httpx.get(f"{base_url}/api/tags", timeout=10, verify=tls_context())
        names = {entry.get("name") for entry in response.json().get("models", [])}
        if model not in names and f"{model}:latest" not in names:
            raise ModelNotAvailableError(
                f"Ollama at <url={base_url}> does not have <model.name={model}>: run `ollama pull {model}`"
            )


class OpenAIBackend:
    def __init__(self, api_key: str | None) -> None:
        self._api_key = api_key  # kept out of LaunchSpec so no repr or tag can show it

    def start(self, launch: LaunchSpec, index: int, run_dir: Path, timeout_s: float) -> ServerInstance:
        assert launch.url is not None  # validated: openai needs a URL
        base_url = launch.url.rstrip("/")
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        try:
            response = httpx.get(f"{base_url}/v1/models", headers=headers, timeout=10, verify=tls_context())
        except httpx.HTTPError as exc:
            raise ServerUnreachableError(
                f"no OpenAI-compatible server answers at <backend.url={base_url}> ({exc.__class__.__name__}): "
                "start it or fix the URL"
            ) from exc
        if response.status_code in (401, 403):
            raise ServerUnreachableError(
                f"the server at <backend.url={base_url}> refused the API key (HTTP {response.status_code}): "
                "set backend.api_key"
            )
        return ServerInstance(
            index=index, backend="openai", api="openai", base_url=base_url, launch=launch,
            version=response.headers.get("server"),
        )
