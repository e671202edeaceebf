"""The simulator's optional optimum: a decode rate that peaks at a known config.

Invariants: unset, the timing model is exactly the plain one; set, the rate
multiplier is 1 at the optimum, ``floor + (1 - floor) / e`` one context
doubling (or ``optimum_width`` layers) away, never below ``floor``; and the
best whole config of the full rate (base × multiplier) is the optimum.
"""

from __future__ import annotations

import math

import pytest

from cfexp.errors import ConfigError
from cfexp.serving.engines.sim import SimEngine
from cfexp.serving.request import ChatMessage, GenerationRequest, SamplingOptions
from cfexp.serving.settings import SimSettings, parse_settings

LAYERS = range(0, 19)
CONTEXTS = (256, 512, 1024, 2048, 4096)


def _rate(engine: SimEngine, layers: int, num_ctx: int) -> float:
    return 1.0 / engine.decode_seconds(layers, num_ctx)


def test_unset_optimum_leaves_the_timing_model_unchanged() -> None:
    engine = SimEngine(SimSettings())
    for layers in LAYERS:
        for num_ctx in CONTEXTS:
            assert engine.optimum_factor(layers, num_ctx) == 1.0
            assert engine.decode_seconds(layers, num_ctx) == engine.token_seconds(25.0, 120.0, layers)


def test_the_multiplier_is_one_at_the_optimum_and_falls_by_e_per_unit_of_distance() -> None:
    engine = SimEngine(SimSettings(optimum_num_gpu=12, optimum_num_ctx=1024, optimum_width=2.0, optimum_floor=0.25))
    one_unit = 0.25 + 0.75 / math.e
    assert engine.optimum_factor(12, 1024) == pytest.approx(1.0)
    assert engine.optimum_factor(12, 2048) == pytest.approx(one_unit)
    assert engine.optimum_factor(12, 512) == pytest.approx(one_unit)
    assert engine.optimum_factor(14, 1024) == pytest.approx(one_unit)
    assert engine.optimum_factor(10, 1024) == pytest.approx(one_unit)
    assert engine.optimum_factor(0, 65536) == pytest.approx(0.25, abs=1e-9)  # far away: the floor


def test_the_best_whole_config_is_the_optimum() -> None:
    engine = SimEngine(SimSettings(optimum_num_gpu=12, optimum_num_ctx=1024, optimum_width=2.0))
    best = max(((layers, ctx) for layers in LAYERS for ctx in CONTEXTS), key=lambda c: _rate(engine, *c))
    assert best == (12, 1024)


def test_one_optimum_alone_adds_one_term() -> None:
    only_ctx = SimEngine(SimSettings(optimum_num_ctx=1024))
    assert only_ctx.optimum_factor(0, 1024) == only_ctx.optimum_factor(18, 1024) == pytest.approx(1.0)
    only_gpu = SimEngine(SimSettings(optimum_num_gpu=6))
    assert only_gpu.optimum_factor(6, 256) == only_gpu.optimum_factor(6, 8192) == pytest.approx(1.0)


def test_generation_uses_the_requested_layers_and_context(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = SimEngine(SimSettings(time_scale=0.0, jitter_cv=0.0, optimum_num_gpu=12, optimum_num_ctx=1024))
    seen: list[tuple[int, int]] = []
    plain = engine.decode_seconds

    def spy(layers: int, num_ctx: int) -> float:
        seen.append((layers, num_ctx))
        return plain(layers, num_ctx)

    monkeypatch.setattr(engine, "decode_seconds", spy)
    request = GenerationRequest(
        request_id="t", api="ollama", endpoint="/api/chat", kind="chat", model="cfexp-sim", stream=True,
        messages=(ChatMessage("user", "hello"),), options=SamplingOptions(num_predict=3, num_ctx=2048, num_gpu=40),
    )
    list(engine.generate(engine.prepare(request), 0))
    assert seen == [(18, 2048)]  # num_gpu 40 offloads all 18 layers


def test_optimum_settings_are_checked() -> None:
    parsed = parse_settings("sim", {"optimum_num_gpu": 12, "optimum_num_ctx": 1024, "optimum_width": 2})
    assert isinstance(parsed, SimSettings) and parsed.optimum_width == 2.0
    for bad in (
        {"optimum_num_ctx": 8},
        {"optimum_num_gpu": -1},
        {"optimum_num_gpu": 1.5},
        {"optimum_width": 0},
        {"optimum_floor": 0},
        {"optimum_floor": 1.5},
    ):
        key = next(iter(bad))
        with pytest.raises(ConfigError, match=f"<{key}="):
            parse_settings("sim", bad)
