"""A baseline runs against the server's own defaults, never the candidate's ctx or layers.

``options_mode=server_defaults`` (and agent_0 of ``baseline_vs_chimera``) sends
no options: its instance must start with no context or layer setting, so the
backend's defaults apply (docs/reproduce-tr.md, "Server defaults"), and the
run records what the server really ran with (``effective.*`` tags).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from cfexp.app.agent_spec import agent_options, instance_launch_options
from cfexp.app.provenance import server_settings_tags
from cfexp.backends.cfexp_server import CfexpServerBackend, engine_settings
from cfexp.backends.pool import launch_specs
from cfexp.backends.warmup import WarmupTarget, warm_up
from cfexp.cli import build_parser, serve_settings
from cfexp.config.validate import to_settings
from cfexp.serving.settings import LlamaSettings, SimSettings, parse_settings

Compose = Callable[..., DictConfig]
MULTI = ("scenario=multi_agent", "scenario.mode=baseline_vs_chimera")


def test_a_baseline_instance_starts_with_no_ctx_or_layer_setting(compose_cfg: Compose) -> None:
    candidate = to_settings(compose_cfg("ctx=256", "gpu_layers=60"))
    baseline = to_settings(compose_cfg("ctx=256", "gpu_layers=60", "options_mode=server_defaults"))
    assert instance_launch_options(candidate) == [(60, 256)]
    assert instance_launch_options(baseline) == [(None, None)]
    assert agent_options(baseline, 0) is None
    (launch,) = launch_specs(baseline, instance_launch_options(baseline))
    assert (launch.ctx, launch.gpu_layers) == (None, None)


def test_baseline_vs_chimera_gives_agent_0s_instance_the_server_defaults(compose_cfg: Compose) -> None:
    dual = to_settings(compose_cfg(*MULTI, "topology=dual", "ctx=512", "gpu_layers=80"))
    assert instance_launch_options(dual) == [(None, None), (80, 512)]
    # One instance shared by both agents starts as its first agent (agent_0) asks: with
    # the defaults; agent_1's calls ask for ctx 512, so it reloads between them (as Ollama).
    single = to_settings(compose_cfg(*MULTI, "topology=single"))
    assert instance_launch_options(single) == [(None, None)]
    assert agent_options(single, 1) is not None and agent_options(single, 1)["num_ctx"] == 512  # type: ignore[index]


def test_cfexps_server_gets_no_ctx_or_layers_to_start_with_its_engines_defaults(compose_cfg: Compose) -> None:
    baseline = to_settings(compose_cfg("backend=sim", "options_mode=server_defaults"))
    (launch,) = launch_specs(baseline, instance_launch_options(baseline))
    settings = engine_settings(launch)
    assert "n_ctx" not in settings and "n_gpu_layers" not in settings
    parsed = parse_settings("sim", settings)
    assert (parsed.n_ctx, parsed.n_gpu_layers) == (SimSettings.n_ctx, SimSettings.n_gpu_layers) == (4096, 999)
    assert (LlamaSettings.n_ctx, LlamaSettings.n_gpu_layers) == (4096, 0)


@pytest.mark.parametrize("flags, expected", [([], {}), (["--ctx", "512", "--gpu-layers", "80"], {"n_ctx": 512,
                                                                                                     "n_gpu_layers": 80})])
def test_cfexp_serve_with_no_flag_is_the_engines_defaults(flags: list[str], expected: dict[str, int]) -> None:
    args = build_parser().parse_args(["serve", "sim", *flags])
    settings = serve_settings(args)
    assert {k: v for k, v in settings.items() if k in ("n_ctx", "n_gpu_layers")} == expected


def test_unsent_sampling_options_are_left_out(compose_cfg: Compose) -> None:
    settings = to_settings(compose_cfg("top_p=null", "top_k=null", "repeat_penalty=null", "temperature=1.0"))
    options = agent_options(settings, 0)
    assert options is not None
    assert set(options) == {"num_gpu", "num_ctx", "temperature", "seed"}


@pytest.mark.slow
def test_the_simulator_runs_a_baseline_with_its_defaults_and_the_candidate_with_ctx_512(
    compose_cfg: Compose, tmp_path: Path
) -> None:
    """Real server processes, warmed as a job warms them; /api/ps says what each loaded."""
    common = ("backend=sim", "backend.settings.time_scale=0", "ctx=512", "gpu_layers=6")
    tags = {}
    for mode in ("configured", "server_defaults"):
        cfg = to_settings(compose_cfg(*common, f"options_mode={mode}"))
        (launch,) = launch_specs(cfg, instance_launch_options(cfg))
        instance = CfexpServerBackend("sim").start(launch, 0, tmp_path / mode, 60)
        try:
            warm_up([WarmupTarget(instance, agent_options(cfg, 0))], cfg.model.name, 1, 30)
            tags[mode] = server_settings_tags(cfg, [instance])
        finally:
            assert instance.process is not None
            instance.process.stop()
    assert tags["configured"] == {
        "launch.num_ctx": "512", "launch.num_gpu": "6", "effective.num_ctx": "512",
        "launch.threads": "default",  # the simulator computes nothing: no threads of cfexp's choosing
        # 6 of the simulated model's 18 layers on the "GPU": a third of its bytes.
        "effective.size_vram_bytes": tags["configured"]["effective.size_vram_bytes"],
    }
    assert tags["server_defaults"]["launch.num_ctx"] == tags["server_defaults"]["launch.num_gpu"] == "default"
    assert tags["server_defaults"]["effective.num_ctx"] == "4096"
    full = int(tags["server_defaults"]["effective.size_vram_bytes"])  # the default: every layer offloaded
    assert int(tags["configured"]["effective.size_vram_bytes"]) == full * 6 // 18
