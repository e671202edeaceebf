"""What answered: a running server's own account of what it is and what it serves.

A run's provenance and model digest come from here, not from the config: a
simulator reached through ``backend=ollama`` or an OpenAI URL is still the
simulator (cfexp's server says which engine it runs on ``/api/version``), and
the digest is the one the server reports for the model it serves (Ollama's
``/api/tags``; for llama-server, the hash of the file its ``/props`` names), or
``unknown`` — never guessed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import httpx

from cfexp.backends.model_files import file_sha256
from cfexp.backends.net import tls_context

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
_PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ServerIdentity:
    # cfexp-sim | cfexp-llamacpp | ollama | llama-server | openai-compatible
    engine: str
    version: str | None
    # A simulator answered: its numbers are simulated, whatever the backend setting.
    simulated: bool
    # As the server reports it ("sha256:<hex>" where known), else "unknown".
    model_digest: str
    # llama-server: the model file it loaded, when it says.
    model_path: str | None = None


def identify(base_url: str, model: str, api_key: str | None = None) -> ServerIdentity:
    """Ask the server at ``base_url`` what it is (a few GETs; never raises for an odd answer)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(
        base_url=base_url, headers=headers, timeout=_PROBE_TIMEOUT_S, trust_env=False, verify=tls_context(trust_env=False)
    ) as client:
        version = _json(client, "/api/version")
        if version is not None and version.get("server") == "cfexp-serving":
            engine = str(version.get("engine"))
            return ServerIdentity(
                engine=f"cfexp-{engine}",
                version=str(version.get("cfexp_version")),
                simulated=engine == "sim",
                model_digest=_ollama_digest(client, model),
            )
        if version is not None and "version" in version:
            return ServerIdentity("ollama", str(version["version"]), False, _ollama_digest(client, model))
        props = _json(client, "/props")
        if props is not None and "model_path" in props:
            path = str(props["model_path"])
            return ServerIdentity(
                engine="llama-server",
                version=str(props.get("build_info") or "") or None,
                simulated=False,
                model_digest=_file_digest(path),
                model_path=path,
            )
    return ServerIdentity("openai-compatible", None, False, UNKNOWN)


@dataclass(frozen=True)
class LoadedState:
    """What a server has loaded for the model now, as it reports it (None = it does not say)."""

    # The context length loaded (Ollama /api/ps context_length; llama-server /props n_ctx per slot).
    num_ctx: int | None
    # Bytes of the model in GPU memory (Ollama /api/ps size_vram; 0 = on the CPU).
    size_vram_bytes: int | None


def loaded_state(base_url: str, model: str, api_key: str | None = None) -> LoadedState:
    """Ask the server what it runs ``model`` with (a GET or two; never raises).

    Ollama's API (Ollama, cfexp's servers) answers ``/api/ps`` for the models in
    memory; llama-server answers ``/props``. A server that says neither gives
    ``LoadedState(None, None)``.
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(
        base_url=base_url, headers=headers, timeout=_PROBE_TIMEOUT_S, trust_env=False, verify=tls_context(trust_env=False)
    ) as client:
        ps = _json(client, "/api/ps")
        entries = ps.get("models") if ps is not None else None
        if isinstance(entries, list):
            for entry in entries:
                if isinstance(entry, dict) and entry.get("name") in _names(model):
                    return LoadedState(_whole(entry.get("context_length")), _whole(entry.get("size_vram")))
            return LoadedState(None, None)  # not in memory
        props = _json(client, "/props")
        if props is not None:
            slot = props.get("default_generation_settings")
            n_ctx = slot.get("n_ctx") if isinstance(slot, dict) else props.get("n_ctx")
            return LoadedState(_whole(n_ctx), None)
    return LoadedState(None, None)


def _names(model: str) -> set[str]:
    """``gemma3`` and ``gemma3:latest`` name one Ollama model."""
    return {model, model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"}


def _whole(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _json(client: httpx.Client, path: str) -> dict[str, object] | None:
    try:
        response = client.get(path)
        if response.status_code != 200:
            return None
        body = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def _ollama_digest(client: httpx.Client, model: str) -> str:
    tags = _json(client, "/api/tags")
    entries = tags.get("models") if tags is not None else None
    wanted = _names(model)
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("name") in wanted and isinstance(entry.get("digest"), str):
            digest = str(entry["digest"])
            return digest if digest.startswith("sha256:") else f"sha256:{digest}"
    return UNKNOWN


def _file_digest(path: str) -> str:
    """The sha256 of a model file the server names, when it is readable here."""
    try:
        return f"sha256:{file_sha256(Path(path))}"
    except OSError as exc:
        log.info("cannot hash the server's model file %s (%s): model digest unknown", path, exc)
        return UNKNOWN
