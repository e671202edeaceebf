"""Resuming a sweep: which jobs already ran, and which parent run to reuse.

Every job run carries the tag :data:`CONFIG_HASH_TAG`, a sha256 of its
composed config with the keys that do not change what is measured removed
(:data:`VOLATILE_KEYS`). With ``resume=true`` a job whose hash already has a
FINISHED run in the experiment is skipped, and a sweep reuses the parent run
of the sweep it resumes (docs/tracking.md, "Resuming a sweep").
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfexp.tracking.sqlite_read import latest_runs_timed, local_store
from cfexp.tracking.store import Tracker
from cfexp.tracking.sweep_file import read_parent
from cfexp.tracking.tags import CONFIG_HASH_TAG, PARENT_TAG, SWEEP_KEY_TAG

log = logging.getLogger(__name__)

# Top-level config keys left out of the hash: where outputs and runs go
# (paths, tracking), the resume switch itself, and which optimisation trial a
# job is (trial: the same settings in another trial are the same measurement).
# Hydra's own node (output dirs, runtime, timestamps) is never part of a task's
# config; it is removed too in case a caller passes it.
VOLATILE_KEYS = ("paths", "tracking", "trial", "resume", "hydra")
_RESUME_KEYS = ("resume",)


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 (hex) of a resolved, redacted config without :data:`VOLATILE_KEYS`.

    Canonical JSON (sorted keys, no whitespace), so the hash is the same in any
    process and whatever the order the config was composed in.
    """
    kept = {key: value for key, value in config.items() if key not in VOLATILE_KEYS}
    canonical = json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class EarlierRun:
    """A FINISHED run of the same config: its id and its metrics."""

    run_id: str
    metrics: dict[str, float]


def finished_run(tracker: Tracker, experiment: str, hash_value: str) -> EarlierRun | None:
    """The latest FINISHED run of ``experiment`` tagged with ``hash_value``, if any."""
    runs = tracker.search_runs(
        experiment, f"tags.`{CONFIG_HASH_TAG}` = '{hash_value}' and attributes.status = 'FINISHED'", latest=1
    )
    if not runs:
        return None
    latest = runs[0]  # the newest first
    return EarlierRun(str(latest.info.run_id), {k: float(v) for k, v in latest.data.metrics.items()})


# The runs a sweep's duration estimate looks at: the latest ones, which reflect today's
# machine and code (reading every run of an experiment of 10,000 took 11 s at each sweep start).
ESTIMATE_RUNS = 100


def finished_durations_s(tracker: Tracker, experiment: str) -> list[float]:
    """How long each FINISHED job run among the latest :data:`ESTIMATE_RUNS` runs of
    ``experiment`` took (MLflow start to end), in seconds, the newest first.

    Parents of sweeps are left out: their duration is a whole sweep's. A local
    SQLite store is read straight (:mod:`cfexp.tracking.sqlite_read`): the sweep's
    first job waits for this, and MLflow's client loads each run whole (the latest
    100 of a 10,000-run experiment: 0.22 s, against 8 ms); another store through
    its tracker.
    """
    db = local_store(tracker.uri)
    if db is not None:
        runs = latest_runs_timed(db, tracker.uri, experiment, ESTIMATE_RUNS, PARENT_TAG)
    else:
        runs = [
            (run.info.status, run.info.start_time or 0, run.info.end_time or 0, run.data.tags.get(PARENT_TAG, ""))
            for run in tracker.search_runs(experiment, latest=ESTIMATE_RUNS)
        ]
    return [
        (end - start) / 1000.0
        for status, start, end, sweep in runs
        if status == "FINISHED" and sweep != "parent" and start and end
    ]


def without_resume(overrides: Iterable[str]) -> list[str]:
    """Overrides minus ``resume=…`` (the one override a resumed sweep adds)."""
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in _RESUME_KEYS]


def sweep_key(overrides: Iterable[str]) -> str:
    """Identifies "the same sweep": its overrides without ``resume``, in any order."""
    return hashlib.sha256("\n".join(sorted(without_resume(overrides))).encode("utf-8")).hexdigest()


def parent_to_reuse(tracker: Tracker, experiment: str, overrides: list[str], sweep_dir: Path) -> str | None:
    """The parent run a resumed sweep continues, or None to start a new one.

    First the parent recorded in the sweep folder (a rerun into the same
    ``hydra.sweep.dir``), when the store still has it; else the latest parent
    of the experiment with the same overrides (minus ``resume``) that did not
    finish, else the latest such parent at all.
    """
    recorded = read_parent(sweep_dir)
    if recorded and recorded.get("tracking_uri") == tracker.uri:
        try:
            run = tracker.get_run(str(recorded["run_id"]))
        except Exception:  # deleted, or from another store: fall back to the search
            run = None
        if run is not None and run.info.lifecycle_stage == "active":
            return str(run.info.run_id)
    candidates = tracker.search_runs(
        experiment, f"tags.`{PARENT_TAG}` = 'parent' and tags.`{SWEEP_KEY_TAG}` = '{sweep_key(overrides)}'"
    )
    if not candidates:
        return None
    newest_first = sorted(candidates, key=lambda run: run.info.start_time or 0, reverse=True)
    unfinished = [run for run in newest_first if run.info.status != "FINISHED"]
    return str((unfinished or newest_first)[0].info.run_id)
