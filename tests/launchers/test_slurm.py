"""`hydra/launcher=submitit_slurm`, without a cluster.

The config composes with the settings a cluster needs, and a whole sweep runs
through a stand-in for sbatch/srun/sacct (:mod:`tests.launchers.fake_slurm`):
the batch script submitit writes is the one that runs, on this machine, with
the variables SLURM sets, so the job array, the pickled task (cfexp's callback
and task included) and the parent/child linking are all exercised.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from cfexp.config.schema import register_configs
from tests.conftest import CONF_DIR
from tests.launchers import fake_slurm
from tests.launchers.helpers import job_dirs, job_status, run_sweep, survivors, sweep_runs

CLUSTER_SETTINGS = (
    "hydra.launcher.partition=gpu",
    "hydra.launcher.timeout_min=30",
    "hydra.launcher.gpus_per_node=1",
    "hydra.launcher.cpus_per_task=4",
)


def test_the_slurm_launcher_composes_with_cluster_settings(tmp_path: Path) -> None:
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(
                "config",
                overrides=["hydra/launcher=submitit_slurm", *CLUSTER_SETTINGS, f"paths.root_dir={tmp_path}"],
                return_hydra_config=True,
            )
    finally:
        GlobalHydra.instance().clear()
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.timeout_min, launcher.gpus_per_node, launcher.cpus_per_task) == (
        "gpu", 30, 1, 4,
    )
    assert OmegaConf.select(cfg, "hydra.runtime.choices")["hydra/launcher"] == "submitit_slurm"


@pytest.mark.slow
def test_a_sweep_runs_through_the_batch_script_submitit_writes(tmp_path: Path) -> None:
    bin_dir = fake_slurm.install(tmp_path / "bin")
    record_dir = tmp_path / "slurm"
    done = run_sweep(
        tmp_path, "hydra/launcher=submitit_slurm", *CLUSTER_SETTINGS, "temperature=0.6,0.8",
        env=fake_slurm.env_with(bin_dir, record_dir),
    )
    assert done.returncode == 0, done.stderr[-3000:]

    (script_path,) = record_dir.glob("sbatch_*.sh")
    script = script_path.read_text()
    for line in (
        "#SBATCH --partition=gpu", "#SBATCH --time=30", "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=4", "#SBATCH --array=0-1%2",
    ):
        assert line in script.splitlines(), f"{line!r} not in the batch script:\n{script}"
    array_id = re.fullmatch(r"sbatch_(\d+)\.sh", script_path.name)
    assert array_id is not None

    parent, children = sweep_runs(tmp_path)
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.info.status for c in children} == {"FINISHED"}
    for index, job_dir in enumerate(job_dirs(tmp_path / "multirun")):
        assert job_status(job_dir) == "FINISHED"
        # Hydra's job id is the SLURM array task the job ran as.
        hydra_cfg = OmegaConf.load(job_dir / ".hydra" / "hydra.yaml")
        assert hydra_cfg.hydra.job.id == f"{array_id.group(1)}_{index}"
    # submitit returns once every task wrote its result file; the task's
    # python and the batch script around it exit just after. A process left
    # running (a server, an agent) would still be here after the wait.
    deadline = time.monotonic() + 30
    while survivors(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert survivors(tmp_path) == []
