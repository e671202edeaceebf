"""One MLflow run per job, a child of its sweep's parent run.

The parent run is created by :class:`cfexp.app.callback.CfexpCallback`
when a multirun starts (:func:`start_parent`), and its id is written to the
sweep's folder (:mod:`cfexp.tracking.sweep_file`), where each job finds it.
Hydra is not imported here: the app hands over plain values
(:class:`JobPlace`, the settings as a tree).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cfexp.config.schema import CfexpConfig
from cfexp.redact import MASK, scrub, secret_values
from cfexp.tracking import writer as tracking_writer
from cfexp.tracking.resume import EarlierRun, config_hash, finished_run, parent_to_reuse, sweep_key
from cfexp.tracking.spool import SpoolTracker, is_spooled, open_tracker, spool_root
from cfexp.tracking.store import Tracker, resolve_uri
from cfexp.tracking.sweep_file import read_parent, write_parent
from cfexp.tracking.tags import CONFIG_HASH_TAG, PARENT_TAG, POSITION_TAG, SWEEP_KEY_TAG
from cfexp.tracking.writer import WriterTracker

log = logging.getLogger(__name__)

SPEC_FILE, REDACTED_SPEC_FILE = "agent_spec.json", "agent_spec.redacted.json"
# Job files uploaded as artifacts, when present (names relative to the job dir).
JOB_ARTIFACTS = (
    "records.jsonl",
    "records.raw.jsonl",
    "agent.stdout.log",
    "agent.stderr.log",
    "agent_spec.redacted.json",
    "agent_rusage.json",
    "system_metrics.jsonl",
    "texts",
    "server_logs",
    # The job's other agent runs (solo phases, priming), each in its own folder.
    "phases",
    ".hydra",
)

_TRACKERS: dict[tuple[int, str], Tracker] = {}


def tracker_for(uri_setting: str | None, mlruns_dir: Path) -> Tracker:
    """One client per store and process (MLflow's SQLite set-up is not free).

    In ``python -m cfexp``, a store that is not an MLflow server is held by the
    launch's tracking writer process (:mod:`cfexp.tracking.writer`).
    """
    uri = resolve_uri(uri_setting, mlruns_dir)
    key = (os.getpid(), uri)  # a process forked from this one opens its own
    if key not in _TRACKERS:
        writer = tracking_writer.current()
        if writer is not None and not tracking_writer.is_remote(uri):
            _TRACKERS[key] = WriterTracker(writer, uri, mlruns_dir)
        else:
            # An unreachable server gives a SpoolTracker: runs kept locally, uploaded later.
            _TRACKERS[key] = open_tracker(uri, mlruns_dir)
    return _TRACKERS[key]


def flatten(container: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}} -> {"a.b": "1"} (redact the container first)."""
    flat: dict[str, str] = {}
    for key, value in container.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return flat


@dataclass(frozen=True)
class JobPlace:
    """Where a job runs and what its command line said (secrets masked): plain values."""

    output_dir: Path
    # The multirun's folder (None for a single run).
    sweep_dir: Path | None
    # The job's number in its sweep: its place in the run order (None for a single run).
    job_num: int | None
    overrides: list[str]


def _redacted_hydra_dir(source: Path, target: Path) -> Path:
    """A copy of Hydra's .hydra/ folder with secrets masked.

    Hydra writes overrides as given, also inside composite strings
    (``hydra.job.override_dirname``), so the secret values themselves are
    scrubbed from the text of every file.
    """
    target.mkdir(parents=True, exist_ok=True)
    overrides_file = source / "overrides.yaml"
    overrides = (yaml.safe_load(overrides_file.read_text()) or []) if overrides_file.exists() else []
    secrets = secret_values(str(o) for o in overrides)
    for path in source.glob("*.yaml"):
        (target / path.name).write_text(scrub(path.read_text(), secrets))
    return target


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _named(overrides: list[str]) -> list[str]:
    """The overrides that may name a run: not paths, Hydra's own settings or a sweeper's trial info."""
    return [o for o in overrides if not _key(o).startswith(("hydra.", "paths.", "trial."))]


def run_name(overrides: list[str], swept_keys: list[str] | None = None) -> str:
    """Say what differs: in a sweep the swept keys only, else every override (:func:`_named`)."""
    shown = _named(overrides)
    if swept_keys:
        shown = [o for o in shown if _key(o) in swept_keys] or shown
    return " ".join(shown) if shown else "defaults"


def sweep_name(sweep_dir: Path, overrides: list[str], swept_keys: list[str]) -> str:
    """The parent run's name: its folder, then the swept values, then what is fixed.

    ``sweep 14-02-51: temperature=0.6,0.8 | backend=sim num_predict=4``: the
    runs table cuts long names, so what the sweep varies comes first.
    """
    shown = _named(overrides)
    swept = [o for o in shown if _key(o) in swept_keys]
    fixed = [o for o in shown if _key(o) not in swept_keys]
    return f"sweep {sweep_dir.name}: " + (" | ".join(" ".join(part) for part in (swept, fixed) if part) or "defaults")


def start_parent(
    tracker: Tracker, experiment: str, sweep_dir: Path, overrides: list[str], swept_keys: list[str], resume: bool
) -> str:
    """The sweep's parent run, its id written to the sweep's folder (``sweep_file``).

    With ``resume`` the parent of the sweep being resumed is re-opened
    (status RUNNING) when there is one, so resumed jobs land under it.
    """
    run_id = parent_to_reuse(tracker, experiment, overrides, sweep_dir) if resume else None
    if run_id is not None:
        tracker.reopen_run(run_id)
        log.info("resume: continuing the parent run %s", run_id)
    else:
        run_id = tracker.start_run(
            experiment,
            run_name=sweep_name(sweep_dir, overrides, swept_keys),
            tags={
                PARENT_TAG: "parent",
                SWEEP_KEY_TAG: sweep_key(overrides),
                "overrides": " ".join(overrides),
                "sweep_dir": str(sweep_dir),
            },
        )
        tracker.log_params(run_id, flatten({"sweep": {"overrides": overrides}}))
    write_parent(sweep_dir, run_id, tracker.uri, swept_keys)
    return run_id


@dataclass
class JobRun:
    """One job's MLflow run. Tags wait to be written with the metrics, and
    artifacts are staged in one folder and uploaded in one call: few store
    writes per job (see ``Tracker.log_batch``)."""

    tracker: Tracker
    run_id: str
    staging: Path
    pending_tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, settings: CfexpConfig, config: Mapping[str, Any], place: JobPlace) -> JobRun:
        """The job's run, with ``config`` (the settings as a tree, secrets masked) as its params."""
        tracker = tracker_for(settings.tracking.uri, Path(settings.paths.mlruns_dir))
        parent = read_parent(place.sweep_dir) if place.sweep_dir is not None else None
        if parent and is_spooled(parent["run_id"]) and not isinstance(tracker, SpoolTracker):
            # The parent waits in the spool: spool this run too, so the upload links them.
            tracker = SpoolTracker(tracker.uri, spool_root(Path(settings.paths.mlruns_dir)))
        tags = {
            "overrides": " ".join(place.overrides),
            "hydra.output_dir": str(place.output_dir),
            CONFIG_HASH_TAG: config_hash(config),
        }
        if parent and place.job_num is not None:
            tags["hydra.job_num"] = str(place.job_num)
            # Hydra numbers a sweep's jobs in the order it launches them: after the
            # sweeper's reordering (hydra.sweeper.order), the job's place in the run order.
            tags[POSITION_TAG] = str(place.job_num)
        if settings.trial.study is not None:  # a trial of hydra/sweeper=cfexp_optuna
            tags["trial.study"] = settings.trial.study
            tags["trial.number"] = str(settings.trial.number)
        run_id = tracker.start_run(
            settings.tracking.experiment,
            run_name(place.overrides, parent["swept_keys"] if parent else None),
            tags,
            parent["run_id"] if parent else None,
        )
        # The language is implied by the runtime; logged so reports can compare by it.
        tracker.log_batch(run_id, params={**flatten(config), "language": str(settings.language)})
        staging = place.output_dir / ".cfexp-upload"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        (staging / "config.yaml").write_text(yaml.safe_dump(dict(config), sort_keys=False))
        return cls(tracker, run_id, staging)

    @staticmethod
    def finished_before(settings: CfexpConfig, config: Mapping[str, Any]) -> EarlierRun | None:
        """A FINISHED run of this very config in the experiment (for ``resume=true``)."""
        tracker = tracker_for(settings.tracking.uri, Path(settings.paths.mlruns_dir))
        return finished_run(tracker, settings.tracking.experiment, config_hash(config))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.pending_tags.update(tags)

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        self.tracker.log_batch(self.run_id, metrics=metrics, tags=self.pending_tags)
        self.pending_tags = {}

    def log_job_artifacts(self, job_dir: Path) -> None:
        _redact_agent_specs(job_dir)
        for name in JOB_ARTIFACTS:
            path = job_dir / name
            try:
                if name == ".hydra" and path.is_dir():
                    _redacted_hydra_dir(path, self.staging / ".hydra")
                elif path.is_dir():
                    shutil.copytree(path, self.staging / name, copy_function=_link_or_copy)
                elif path.exists():
                    _link_or_copy(str(path), str(self.staging / name))
            except OSError as exc:
                log.warning("could not stage artifact %s: %s", name, exc)
        self._upload()

    def _upload(self) -> None:
        try:
            self.tracker.log_artifact(self.run_id, self.staging)
        except OSError as exc:
            log.warning("could not store the artifacts of run %s: %s", self.run_id, exc)
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)

    def finish(self) -> None:
        self._end("FINISHED")

    def fail(self, error: str) -> None:
        self.tracker.log_text(self.run_id, error, "error.txt")
        # Whole (a server's last log lines are the point of the message); the store cuts
        # it at MLflow's tag limit, error.txt keeps every byte.
        self.pending_tags["error"] = error
        self._end("FAILED")

    def kill(self, reason: str) -> None:
        self.tracker.log_text(self.run_id, reason, "error.txt")
        self._end("KILLED")

    def _end(self, status: str) -> None:
        _redact_agent_specs(self.staging.parent)  # also when the job failed before its artifacts
        if self.pending_tags:
            self.tracker.log_batch(self.run_id, tags=self.pending_tags)
            self.pending_tags = {}
        if any(self.staging.iterdir()):  # e.g. config.yaml when the job failed early
            self._upload()
        shutil.rmtree(self.staging, ignore_errors=True)
        self.tracker.end_run(self.run_id, status)


def _redact_agent_specs(job_dir: Path) -> None:
    """Each ``agent_spec.json`` (other phases too) -> ``agent_spec.redacted.json``.

    The spec holds the API key the agent needs while it runs; once the job is
    over the original is deleted when it held one, so no key stays on disk or
    reaches an artifact.
    """
    for spec in [job_dir / SPEC_FILE, *job_dir.glob(f"phases/*/{SPEC_FILE}")]:
        if not spec.is_file():
            continue
        try:
            data = json.loads(spec.read_text())
        except (OSError, ValueError) as exc:
            log.warning("could not read %s: %s", spec, exc)
            continue
        held_key = False
        for agent in data.get("agents", []):
            if agent.get("api_key"):
                agent["api_key"] = MASK
                held_key = True
        (spec.parent / REDACTED_SPEC_FILE).write_text(json.dumps(data, indent=2))
        if held_key:
            spec.unlink()


def _link_or_copy(source: str, target: str) -> None:
    """A hard link where possible (no copy of big records), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
