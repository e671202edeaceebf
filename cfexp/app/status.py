"""A job's outcome as a small file in its output folder.

The sweep summary reads these files rather than in-process state, so it works
whichever launcher ran the jobs (in this process, or in others).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

STATUS_FILE = "cfexp_status.json"
FINISHED, FAILED, KILLED, INVALID_CONFIG = "FINISHED", "FAILED", "KILLED", "INVALID_CONFIG"
# resume=true found a FINISHED run of the same config: not run again (run_id is that run).
SKIPPED = "SKIPPED"
OK_STATUSES = (FINISHED, SKIPPED)


@dataclass(frozen=True)
class JobStatus:
    status: str
    overrides: list[str]
    error: str | None = None
    run_id: str | None = None
    # The job's folder in its sweep (Hydra's job number: its position in the run
    # order), filled in by read_all; None for a single run.
    folder: str | None = None
    # The key numbers it measured (cfexp.app.progress.key_metrics), for the lines on screen.
    metrics: dict[str, float] | None = None

    @property
    def ok(self) -> bool:
        return self.status in OK_STATUSES


def write(
    job_dir: Path,
    status: str,
    overrides: list[str],
    error: str | None = None,
    run_id: str | None = None,
    metrics: dict[str, float] | None = None,
) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    record = JobStatus(status=status, overrides=overrides, error=error, run_id=run_id, metrics=metrics)
    (job_dir / STATUS_FILE).write_text(json.dumps(asdict(record), indent=2))


def read_all(sweep_dir: Path) -> list[JobStatus]:
    """Statuses of every job below a sweep folder, in job order (the order they ran)."""
    found = []
    for path in sorted(sweep_dir.glob(f"*/{STATUS_FILE}"), key=lambda p: _job_key(p.parent.name)):
        found.append(JobStatus(**{**json.loads(path.read_text()), "folder": path.parent.name}))
    return found


def _job_key(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (1 << 30, name)
