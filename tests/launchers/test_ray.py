"""`hydra/launcher=ray_local` (hydra-ray-launcher on a local Ray): a real sweep.

Tested with hydra-ray-launcher 1.2.2, Ray 2.60 and hydra-core 1.3.8.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.launchers.helpers import job_dirs, job_status, run_sweep, survivors, sweep_runs

pytestmark = pytest.mark.slow


@pytest.fixture
def ray_temp_dir() -> Iterator[Path]:
    # Ray puts its Unix sockets under its temp dir; a pytest tmp_path would make
    # their paths longer than the 107 bytes a socket path may have.
    path = Path(tempfile.mkdtemp(prefix="cfexp-ray-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_sweep_on_a_local_ray_links_every_job_to_one_parent_run(tmp_path: Path, ray_temp_dir: Path) -> None:
    done = run_sweep(
        tmp_path, "hydra/launcher=ray_local", f"+hydra.launcher.ray.init._temp_dir={ray_temp_dir}",
        "temperature=0.6,0.8",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Started a local Ray instance" in done.stderr

    parent, children = sweep_runs(tmp_path)
    assert parent.info.status == "FINISHED" and parent.data.tags["jobs"] == "2"
    assert len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.info.status for c in children} == {"FINISHED"}
    for job_dir in job_dirs(tmp_path / "multirun"):
        assert job_status(job_dir) == "FINISHED"
        assert "this job runs in its own process (hydra/launcher=ray_local)" in (job_dir / "__main__.log").read_text()
    # Ray's own processes (GCS, raylet, workers) inherited the test's mark: none is left.
    assert survivors(tmp_path) == []
