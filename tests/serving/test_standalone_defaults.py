"""`cfexp serve <engine>` standalone serves with the settings a managed job gets.

A managed job passes its backend's `settings:` (conf/backend/<engine>.yaml) to
the same server; a setting whose value there differs from the engine's own
default would make a standalone server (a user's quick check, `cfexp serve`)
behave unlike the job it is meant to mirror (issue 16: the prefix cache once
differed).
"""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from cfexp.serving.settings import parse_settings
from tests.app.test_e2e_sim import REPO


@pytest.mark.parametrize("engine", ["sim", "llamacpp"])
def test_the_managed_backend_sets_nothing_the_standalone_server_does_otherwise(engine: str) -> None:
    configured = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "backend" / f"{engine}.yaml").settings)
    assert isinstance(configured, dict) and configured
    standalone = dataclasses.asdict(parse_settings(engine, {}))  # what `cfexp serve <engine>` uses
    differing = {key: (value, standalone.get(key)) for key, value in configured.items() if standalone.get(key) != value}
    assert not differing, f"conf/backend/{engine}.yaml: (managed, standalone) = {differing}"
    assert standalone["prompt_cache"] is True
