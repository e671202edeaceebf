"""Output folders: each command creates its own (cfexp.unique_dir), and holds it while it runs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from cfexp.config.output_dirs import CLAIM_FILE, FolderClaim, claim_unique_dir
from tests.together import REPO, run_together

CLAIM_TOGETHER = """
from cfexp.config.output_dirs import claim_unique_dir
go()
print(claim_unique_dir(sys.argv[1]))
"""


def test_the_first_command_gets_the_name_the_next_ones_a_numbered_one(tmp_path: Path) -> None:
    base = str(tmp_path / "multirun" / "2026-01-01" / "09-00-00")
    assert claim_unique_dir(base) == base and Path(base).is_dir()
    assert claim_unique_dir(base) == f"{base}_2"
    assert claim_unique_dir(base) == f"{base}_3"


def test_processes_claiming_one_name_together_each_get_their_own(tmp_path: Path) -> None:
    base = str(tmp_path / "multirun" / "2026-01-01" / "09-00-00")
    results = run_together(CLAIM_TOGETHER, [[base]] * 5)
    assert [r.returncode for r in results] == [0] * 5
    claimed = sorted(r.stdout.strip() for r in results)
    assert claimed == sorted([base, *(f"{base}_{n}" for n in range(2, 6))])


def test_an_unwritable_place_is_left_to_the_writability_check(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a folder")
    assert claim_unique_dir(str(blocked / "09-00-00")) == str(blocked / "09-00-00")


def test_the_default_folders_are_claimed_once_per_config(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    compose_cfg()  # registers the schema and the resolver
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        first = compose("config", return_hydra_config=True)
        second = compose("config", return_hydra_config=True)
    sweep = str(first.hydra.sweep.dir)
    assert sweep.startswith("multirun/") and first.hydra.sweep.dir == sweep  # cached: read twice, one folder
    assert Path(sweep).is_dir()
    # A job's config gets the command's resolver cache (Hydra's load_sweep_config), also in another process.
    job = OmegaConf.create(OmegaConf.to_container(second, resolve=False))
    OmegaConf.copy_cache(from_config=first, to_config=job)
    assert job.hydra.sweep.dir == sweep
    # Another command (another config, same second): another folder.
    other = second.hydra.sweep.dir
    assert other != sweep and Path(other).is_dir()


def test_a_second_command_in_a_folder_in_use_is_refused_before_any_job(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    claim = FolderClaim(folder)
    assert claim.take("a cfexp command")
    try:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        done = subprocess.run(
            [sys.executable, "-m", "cfexp", "backend=sim", f"paths.root_dir={tmp_path}", f"hydra.run.dir={folder}"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
        )
    finally:
        claim.release()
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"another cfexp command is running in the output folder <hydra.run.dir={folder}>" in done.stderr
    assert f"pid={os.getpid()}" in done.stderr and "No job was started" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()  # nothing started, not even the store
    assert (folder / CLAIM_FILE).exists()
