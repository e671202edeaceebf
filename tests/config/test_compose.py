"""Composition of every config group, and validation of bad values."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hydra.errors import ConfigCompositionException, HydraException
from omegaconf import DictConfig
from omegaconf.errors import ConfigKeyError, ValidationError

from cfexp.config.schema import CfexpConfig
from cfexp.config.validate import to_settings
from cfexp.errors import ConfigError

Compose = Callable[..., DictConfig]


def test_defaults_follow_the_original_reference_config(compose_cfg: Compose) -> None:
    settings = to_settings(compose_cfg())
    assert isinstance(settings, CfexpConfig)
    assert (settings.gpu_layers, settings.ctx, settings.temperature) == (80, 512, 0.8)
    assert (settings.top_p, settings.top_k, settings.repeat_penalty) == (0.9, 40, 1.1)
    assert settings.backend.name == "llamacpp"
    assert (settings.language, settings.runtime.name) == ("python", "asyncio")
    assert (settings.prompt_cache, settings.seed, settings.topology.warmup_calls) == ("defeat", 0, 1)
    assert settings.scenario.name == "single_agent"
    assert settings.model.name == "gemma3:270m"


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("backend=sim", "backend.name", "sim"),
        ("backend=ollama", "backend.url", "http://127.0.0.1:11434"),
        ("scenario=single_inference", "scenario.name", "single_inference"),
        ("runtime=uvloop", "runtime.name", "uvloop"),
        ("prompt_cache=allow", "prompt_cache", "allow"),
        ("scenario=multi_agent", "scenario.solo", "both"),
        ("topology=single", "topology.instances", 1),
        ("model=gemma3_4b", "model.name", "gemma3:latest"),
        ("temperature=0.6", "temperature", 0.6),
        ("ctx=1024", "ctx", 1024),
        ("gpu_layers=60", "gpu_layers", 60),
        ("num_predict=16", "num_predict", 16),
        ("options_mode=server_defaults", "options_mode", "server_defaults"),
        ("topology.lifecycle=per_job", "topology.lifecycle", "per_job"),
    ],
)
def test_every_group_and_key_composes(compose_cfg: Compose, override: str, key: str, expected: object) -> None:
    settings = to_settings(compose_cfg(override))
    value: object = settings
    for part in key.split("."):
        value = getattr(value, part)
    assert value == expected


def test_openai_backend_needs_a_url(compose_cfg: Compose) -> None:
    with pytest.raises(ConfigError, match="backend.url"):
        to_settings(compose_cfg("backend=openai"))
    settings = to_settings(compose_cfg("backend=openai", "backend.url=http://127.0.0.1:8000"))
    assert settings.backend.api == "openai"


@pytest.mark.parametrize(
    "override, key",
    [
        ("temperature=-3", "temperature=-3.0"),
        ("ctx=0", "ctx=0"),
        ("timeouts.call_s=-1", "timeouts.call_s=-1.0"),
        ("num_predict=0", "num_predict=0"),
        ("top_p=1.5", "top_p=1.5"),
        ("backend.slots=0", "backend.slots=0"),
        ("topology.instances=0", "topology.instances=0"),
        ("backend.url=localhost:11434", "backend.url=localhost:11434"),
        ("scenario.personas=[Nobody]", "scenario.personas=['Nobody']"),
        ("model.file=/nonexistent/model.gguf", "model.file=/nonexistent/model.gguf"),
    ],
)
def test_out_of_range_values_name_key_value_and_what_is_allowed(
    compose_cfg: Compose, override: str, key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        to_settings(compose_cfg(override))
    message = str(caught.value)
    assert f"<{key}>" in message
    assert "\n" not in message  # one paragraph


def test_all_problems_are_reported_at_once(compose_cfg: Compose) -> None:
    with pytest.raises(ConfigError) as caught:
        to_settings(compose_cfg("temperature=5", "ctx=0"))
    assert "<temperature=5.0>" in str(caught.value) and "<ctx=0>" in str(caught.value)


def test_wrong_types_unknown_keys_and_words_fail_at_composition(compose_cfg: Compose) -> None:
    """Closed vocabularies are enums (cfexp.vocab): a word not allowed fails while composing."""
    with pytest.raises((ValidationError, HydraException)):
        compose_cfg("temperature=hot")
    for override in ("topology.lifecycle=sometimes", "scenario=multi_agent scenario.mode=hetero",
                     "prompt_cache=never", "language=python"):  # fmt: skip
        with pytest.raises((ValidationError, ConfigKeyError, HydraException)):
            compose_cfg(*override.split())
    with pytest.raises((ConfigKeyError, HydraException)):
        compose_cfg("temprature=0.5")
    with pytest.raises(ConfigCompositionException):
        compose_cfg("backend=llamcpp")


@pytest.mark.parametrize("runtime", ["tokio", "tokio_localset", "smol", "smol_1kb", "async_std"])
def test_a_rust_runtime_implies_rust(compose_cfg: Compose, runtime: str) -> None:
    settings = to_settings(compose_cfg(f"runtime={runtime}"))
    assert settings.language == "rust"
    assert settings.runtime.legacy == (runtime == "async_std")


def test_multi_agent_modes_set_each_agents_options(compose_cfg: Compose) -> None:
    from cfexp.app.agent_spec import agent_options, instance_launch_options

    bvc = to_settings(compose_cfg("scenario=multi_agent", "scenario.mode=baseline_vs_chimera"))
    assert agent_options(bvc, 0) is None and agent_options(bvc, 1) is not None
    hetero = to_settings(
        compose_cfg(
            "scenario=multi_agent", "topology=dual", "scenario.mode=chimera_hetero",
            "+scenario.per_agent={agent_1:{ctx:1024,gpu_layers:100,temperature:0.6}}",
        )
    )
    second = agent_options(hetero, 1)
    assert second is not None and (second["num_ctx"], second["num_gpu"], second["temperature"]) == (1024, 100, 0.6)
    assert instance_launch_options(hetero) == [(80, 512), (100, 1024)]
    # Agent i sends seed + i in every phase: the same sampling alone and together.
    assert (agent_options(hetero, 0) or {})["seed"] == 0 and second["seed"] == 1


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (("topology=dual", "topology.instances=3"), "<topology.instances=3> contradicts <topology=dual>"),
        (("topology=multi", "topology.instances=0"), "<topology.instances=0> must be"),
        (("scenario=multi_agent", "scenario.agents=0"), "<scenario.agents=0> must be"),
        (("scenario=single_agent", "scenario.agents=2"), "needs scenario=multi_agent"),
        (
            ("scenario=multi_agent", "scenario.mode=chimera_hetero", "+scenario.per_agent={agent_5:{ctx:1024}}"),
            "names agents that do not exist",
        ),
        (("scenario=multi_agent", "+scenario.per_agent={agent_1:{ctx:1024}}"), "apply to scenario.mode=chimera_hetero"),
        (("backend=openai", "backend.url=http://127.0.0.1:9", "topology=dual"), "need one distinct URL per instance"),
        (
            ("backend=ollama", "topology=dual", "topology.lifecycle=external",
             "backend.urls=[http://127.0.0.1:9,http://127.0.0.1:9/]"),
            "names one server twice",
        ),
        (("backend=sim", "topology=dual", "backend.urls=[http://127.0.0.1:9]"), "gives 1"),
        (("backend=ollama", "topology.lifecycle=external", "backend.url=null"), "set backend.url"),
    ],
)
def test_bad_multi_agent_configs_are_refused(compose_cfg: Compose, overrides: tuple[str, ...], needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        to_settings(compose_cfg(*overrides))
    assert needle in str(caught.value)
