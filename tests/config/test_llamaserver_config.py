"""backend=llamaserver: composition, validation, registry, host lock, provenance."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
from omegaconf import DictConfig

from cfexp.app.provenance import model_digest
from cfexp.backends.base import ServerInstance
from cfexp.backends.host_lock import lock_needed
from cfexp.backends.llama_server import LlamaServerBackend
from cfexp.backends.model_files import expected_sha256, sha256_of
from cfexp.backends.pool import backend_for, launch_spec
from cfexp.backends.process import ManagedProcess
from cfexp.config.schema import CfexpConfig
from cfexp.config.validate import to_settings
from cfexp.errors import ConfigError

Compose = Callable[..., DictConfig]


def test_the_backend_composes_with_its_defaults(compose_cfg: Compose) -> None:
    settings = to_settings(compose_cfg("backend=llamaserver"))
    backend = settings.backend
    assert backend.name == "llamaserver" and backend.api == "openai" and backend.url is None
    assert backend.binary is None and backend.slots == 1
    assert backend.settings == {"prompt_cache": True, "cache_ram_mib": None, "extra_args": []}
    assert isinstance(backend_for(settings), LlamaServerBackend)
    spec = launch_spec(settings, 0, gpu_layers=settings.gpu_layers, ctx=settings.ctx)
    assert spec.binary is None and spec.ctx == 512 and json.loads(spec.settings_json)["prompt_cache"] is True


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (("backend.api=ollama",), "<backend.api=ollama> with backend=llamaserver: llama-server speaks the OpenAI API"),
        (("backend.binary=/no/such/llama-server",), "<backend.binary=/no/such/llama-server> is not an executable"),
        (("model.file=/no/such.gguf",), "<model.file=/no/such.gguf> does not exist"),
        (("topology.lifecycle=external",), "<topology.lifecycle=external> <backend=llamaserver> attaches to running servers"),
    ],
)
def test_bad_llamaserver_configs_are_refused(compose_cfg: Compose, overrides: tuple[str, ...], needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        to_settings(compose_cfg("backend=llamaserver", *overrides))
    assert needle in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "needed"),
    [
        ((), True),
        (("backend.url=http://127.0.0.1:8080",), True),  # cfexp may start it there
        (("backend.url=http://127.0.0.1:8080", "backend.start_if_absent=false"), False),
        (("topology.lifecycle=external", "backend.url=http://127.0.0.1:8080"), False),
    ],
)
def test_managed_llama_servers_hold_the_host_lock(
    compose_cfg: Compose, overrides: tuple[str, ...], needed: bool
) -> None:
    assert lock_needed(to_settings(compose_cfg("backend=llamaserver", *overrides))) is needed


def _managed(settings: CfexpConfig) -> list[ServerInstance]:
    """An instance cfexp started with this config's launch (the process itself does not matter here)."""
    launch = launch_spec(settings, 0, gpu_layers=settings.gpu_layers, ctx=settings.ctx)
    process = cast(ManagedProcess, object())
    return [ServerInstance(index=0, backend="llamaserver", api="openai", base_url="http://127.0.0.1:1",
                           launch=launch, process=process)]  # fmt: skip


def test_the_model_digest_is_the_served_gguf_files(compose_cfg: Compose, tmp_path: Path) -> None:
    embedded = to_settings(compose_cfg("backend=llamaserver"))
    assert model_digest(embedded, _managed(embedded)) == "sha256:" + expected_sha256()[1]
    own = tmp_path / "own.gguf"
    own.write_bytes(b"GGUF own model")
    settings = to_settings(compose_cfg("backend=llamaserver", f"model.file={own}"))
    assert model_digest(settings, _managed(settings)) == "sha256:" + sha256_of(own)
