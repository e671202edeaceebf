"""What the study adds to the sweep's MLflow parent run.

cfexp's callback creates the parent run when the multirun starts and writes
its id to ``<sweep dir>/cfexp_parent_run.json``; when that file exists, the
sweeper tags the parent with the study (name, storage, best trials) and, if
the sweep stops on an error, ends it FAILED with that error. Everything goes
through :mod:`cfexp.tracking` (the only code that talks to MLflow). Without
the file (an app other than cfexp) this module does nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from cfexp.tracking.store import Tracker

log = logging.getLogger(__name__)


def tracker_and_run(sweep_dir: Path, config: DictConfig) -> tuple[Tracker, str] | None:
    """The tracker and id of the sweep's parent run, if cfexp's callback made one."""
    from cfexp.tracking.jobs import tracker_for  # MLflow only when there is a parent
    from cfexp.tracking.sweep_file import read_parent

    parent = read_parent(sweep_dir)
    if not parent:
        return None
    try:
        mlruns_dir = Path(str(OmegaConf.select(config, "paths.mlruns_dir")))
    except Exception:  # interpolation needs Hydra's runtime info
        mlruns_dir = Path(os.getcwd()) / "mlruns"
    return tracker_for(parent["tracking_uri"], mlruns_dir), str(parent["run_id"])


def annotate(sweep_dir: Path, config: DictConfig, tags: Mapping[str, str], texts: Mapping[str, str]) -> None:
    """Tags and text artifacts on the parent run (best effort: a warning if it fails)."""
    try:
        found = tracker_and_run(sweep_dir, config)
        if found is None:
            return
        tracker, run_id = found
        tracker.set_tags(run_id, tags)
        for name, text in texts.items():
            tracker.log_text(run_id, text, name)
    except Exception as exc:
        log.warning("could not annotate the sweep's MLflow parent run: %s", exc)


def end_failed(sweep_dir: Path, config: DictConfig, error: str) -> None:
    """End the parent run FAILED with the error that stopped the sweep."""
    try:
        found = tracker_and_run(sweep_dir, config)
        if found is None:
            return
        tracker, run_id = found
        tracker.set_tags(run_id, {"error": error.splitlines()[0] if error else ""})
        tracker.log_text(run_id, error, "error.txt")
        tracker.end_run(run_id, "FAILED")
    except Exception as exc:
        log.warning("could not close the sweep's MLflow parent run: %s", exc)
