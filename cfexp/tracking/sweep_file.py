"""The file in a sweep's folder that tells every job its parent run.

The parent run is created when a multirun starts, and its id is written to
``<sweep dir>/`` :data:`PARENT_FILE`; each job reads it there, so parent/child
linking works whether jobs run in the launching process or in others
(submitit, Ray).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PARENT_FILE = "cfexp_parent_run.json"


def read_parent(sweep_dir: Path) -> dict[str, Any] | None:
    """The parent run's file: ``run_id``, ``tracking_uri``, ``swept_keys``; None when absent."""
    path = sweep_dir / PARENT_FILE
    if not path.exists():
        return None
    parent: dict[str, Any] = json.loads(path.read_text())
    return parent


def write_parent(sweep_dir: Path, run_id: str, tracking_uri: str, swept_keys: list[str]) -> None:
    (sweep_dir / PARENT_FILE).write_text(
        json.dumps({"run_id": run_id, "tracking_uri": tracking_uri, "swept_keys": swept_keys}, indent=2)
    )
