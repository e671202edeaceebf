"""The order of a job's phases (cfexp/app/measure.py, docs/multi-agent.md "Phases: ABA")."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from cfexp.app.measure import plan_phases
from cfexp.config.validate import to_settings


def _order(compose_cfg: Callable[..., DictConfig], tmp_path: Path, *overrides: str) -> list[str]:
    cfg = to_settings(compose_cfg("backend=sim", "scenario=multi_agent", *overrides))
    return [f"{p.label}:{','.join(map(str, p.agents))}" if p.agents else p.label for p in plan_phases(cfg, tmp_path)]


def test_the_solos_after_mirror_the_solos_before(compose_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    order = _order(compose_cfg, tmp_path, "scenario.agents=3", "scenario.solo=both", "prompt_cache=defeat")
    assert order == [
        "solo_before:0", "solo_before:1", "solo_before:2", "measured",
        "solo_after:2", "solo_after:1", "solo_after:0",
    ]  # fmt: skip
    # Why: with phases of equal length, every agent's two solos are centred on the concurrent phase,
    # so a slowdown linear in time cancels in each agent's mean of the two.
    measured = order.index("measured")
    for agent in range(3):
        centre = statistics.fmean([order.index(f"solo_before:{agent}"), order.index(f"solo_after:{agent}")])
        assert centre == measured


def test_one_sided_designs_keep_their_one_side(compose_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    before = _order(compose_cfg, tmp_path, "scenario.solo=before", "prompt_cache=defeat")
    after = _order(compose_cfg, tmp_path, "scenario.solo=after", "prompt_cache=defeat")
    assert before == ["solo_before:0", "solo_before:1", "measured"]
    assert after == ["measured", "solo_after:1", "solo_after:0"]
