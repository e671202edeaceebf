"""A stand-in for SLURM's commands on one machine, for tests without a cluster.

``sbatch`` keeps a copy of each script it is given, runs every task of the
job (each array index) in the background with the variables SLURM sets
(``SLURM_JOB_ID``, ``SLURM_ARRAY_JOB_ID``, ``SLURM_ARRAY_TASK_ID``, …) and
prints what sbatch prints; ``srun`` drops its options and runs the command;
``sacct`` knows no job (submitit then waits for the result files). So the
script submitit writes is the one that runs, on this machine.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

SBATCH = r"""#!/usr/bin/env bash
set -euo pipefail
script="$1"
job_id="$$"
cp "$script" "$FAKE_SLURM_DIR/sbatch_${job_id}.sh"
range=$(sed -n 's/^#SBATCH --array=\([0-9]*\)-\([0-9]*\).*/\1 \2/p' "$script")
run_task() {  # $1: the task's job id; the rest: variables for it
    local log="$FAKE_SLURM_DIR/task_$1.log"; shift
    env SLURM_NTASKS=1 SLURM_JOB_NUM_NODES=1 SLURM_NODEID=0 SLURM_PROCID=0 SLURM_LOCALID=0 \
        SLURM_JOB_NODELIST=localhost "$@" bash "$script" </dev/null >"$log" 2>&1 &
}
if [[ -n "$range" ]]; then
    read -r first last <<<"$range"
    for ((i = first; i <= last; i++)); do
        run_task "${job_id}_$i" SLURM_JOB_ID="$((job_id * 1000 + i))" \
            SLURM_ARRAY_JOB_ID="$job_id" SLURM_ARRAY_TASK_ID="$i"
    done
else
    run_task "$job_id" SLURM_JOB_ID="$job_id"
fi
echo "Submitted batch job $job_id"
"""

SRUN = r"""#!/usr/bin/env bash
while [[ $# -gt 0 && "$1" == --* ]]; do
    case "$1" in
        --output|--error|--ntasks|--nodes|--cpus-per-task) shift 2 ;;
        *) shift ;;
    esac
done
exec "$@"
"""

SACCT = r"""#!/usr/bin/env bash
echo "JobID|State|NodeList"
"""


def install(bin_dir: Path) -> Path:
    """Write sbatch, srun and sacct into bin_dir; return it (put it first on PATH)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("sbatch", SBATCH), ("srun", SRUN), ("sacct", SACCT)):
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir


def env_with(bin_dir: Path, record_dir: Path) -> dict[str, str]:
    """Variables for a command that should find the fake SLURM first."""
    record_dir.mkdir(parents=True, exist_ok=True)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_SLURM_DIR": str(record_dir)}
