"""Guardrails before work starts: misspelt keys and oversized sweeps (issue 13, item 3).

Unit tests of the key check and the grid count, then the real command:
`python -m cfexp` exits 2 with one message and starts nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cfexp.app.hydra_job import grid_size
from cfexp.config.keys import hints_for, unknown_key, unknown_keys
from tests.app.test_e2e_sim import FAST_SIM, client_for, run_cfexp


def test_a_misspelt_key_gets_the_nearest_real_one_at_any_depth() -> None:
    assert unknown_key("temprature") == "<temprature> is not a key of cfexp's config (did you mean temperature?)"
    assert unknown_key("timeouts.cal_s") == (
        "<timeouts.cal_s> is not a key of cfexp's config (did you mean timeouts.call_s?)"
    )
    assert unknown_key("zzz") == "<zzz> is not a key of cfexp's config"  # nothing near: no guess
    for known in ("temperature", "timeouts.call_s", "backend", "backend.settings.anything", "hydra.sweeper.order",
                  "experiment", "scenario.per_agent.a0.ctx"):  # fmt: skip
        assert unknown_key(known) is None, known


def test_a_composed_config_is_checked_against_the_schema_except_its_open_dicts() -> None:
    config = OmegaConf.create({"temprature": 0.5, "ctx": 512, "backend": {"slot": 2, "settings": {"x": 1}},
                               "hydra": {"anything": 1}})  # fmt: skip
    assert unknown_keys(config) == [
        "<temprature> is not a key of cfexp's config (did you mean temperature?)",
        "<backend.slot> is not a key of cfexp's config (did you mean backend.slots?)",
    ]


def test_hints_read_every_override_form_hydra_takes() -> None:
    argv = ["-m", "+temprature=0.5", "++ctx=1", "~top_k", "backend=sim", "hydra/launcher=basic", "+experiment=smoke",
            "timeouts.cal_s=3"]  # fmt: skip
    assert hints_for(argv) == [
        "<temprature> is not a key of cfexp's config (did you mean temperature?)",
        "<timeouts.cal_s> is not a key of cfexp's config (did you mean timeouts.call_s?)",
    ]


def test_the_grid_is_counted_as_basic_sweeper_makes_it() -> None:
    size = grid_size({"ctx": "512,1024", "temperature": "0.6,0.8"}, ["temperature=0.1,0.2,0.3", "top_k=40"])
    assert size.jobs == 6 and size.levels == {"ctx": 2, "temperature": 3}  # the command line wins
    assert grid_size(None, ["temperature=range(0,1,0.001)"]).jobs == 1000
    assert grid_size(None, ["ctx=512"]).jobs == 1


@pytest.mark.parametrize("form", ["+temprature=0.5", "temprature=0.5"], ids=["append", "override"])
def test_a_misspelt_key_exits_2_naming_the_real_one(tmp_path: Path, form: str) -> None:
    done = run_cfexp(tmp_path, *FAST_SIM, "scenario=single_inference", "num_predict=4", form)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "<temprature> is not a key of cfexp's config (did you mean temperature?)" in done.stderr
    assert "Traceback" not in done.stderr
    if (tmp_path / "mlruns" / "mlflow.db").exists():  # the append form is refused per job: no run is made
        client = client_for(tmp_path)
        assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_a_sweep_above_max_jobs_is_refused_before_anything_starts(tmp_path: Path) -> None:
    done = run_cfexp(tmp_path, "-m", *FAST_SIM, "scenario=single_inference", "temperature=range(0,1,0.001)")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "this sweep has 1000 jobs (temperature: 1000 values), more than <hydra.sweeper.max_jobs=200>" in done.stderr
    assert "hydra.sweeper.max_jobs=1000" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "mlruns").exists()  # no store opened, no parent run, no job
    assert not list((tmp_path / "multirun").glob("0"))


def test_a_sweep_at_its_confirmed_size_runs(tmp_path: Path) -> None:
    done = run_cfexp(tmp_path, "-m", *FAST_SIM, "scenario=single_inference", "num_predict=4",
                     "temperature=0.6,0.8,1.0", "hydra.sweeper.max_jobs=3")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "multirun").iterdir() if p.name.isdigit()) == ["0", "1", "2"]
    refused = run_cfexp(tmp_path, "-m", *FAST_SIM, "temperature=0.6,0.8,1.0", "hydra.sweeper.max_jobs=2")
    assert refused.returncode == 2 and "this sweep has 3 jobs" in refused.stderr


def test_a_command_line_hydra_refuses_exits_2_without_a_traceback(tmp_path: Path) -> None:
    done = run_cfexp(tmp_path, "-m", "ctx=512,1024", flags=("--cfg", "job"))
    assert done.returncode == 2 and "Only one of --run, --multirun, --cfg" in done.stderr
    assert "Traceback" not in done.stderr
