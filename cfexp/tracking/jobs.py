"""One MLflow run per Hydra job, a child of its sweep's parent run.

The parent run is created by :class:`cfexp.app.callback.CfexpCallback`
when a multirun starts, and its id is written to ``<sweep dir>/``
:data:`PARENT_FILE`; each job reads it there, so parent/child linking works
whether jobs run in this process or in others.
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

from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cfexp.config.schema import CfexpConfig
from cfexp.redact import redact_tree, scrub, secret_values
from cfexp.tracking.store import Tracker, resolve_uri

log = logging.getLogger(__name__)

PARENT_FILE = "cfexp_parent_run.json"
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
    ".hydra",
)
# Folders of the multi-agent solo phase (solo_agent_0, …), uploaded whole.
SOLO_DIRS = "solo_agent_*"

_TRACKERS: dict[str, Tracker] = {}


def tracker_for(uri_setting: str | None, mlruns_dir: Path) -> Tracker:
    """One client per store and process (MLflow's SQLite set-up is not free)."""
    uri = resolve_uri(uri_setting, mlruns_dir)
    if uri not in _TRACKERS:
        _TRACKERS[uri] = Tracker(uri, mlruns_dir / "artifacts")
    return _TRACKERS[uri]


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


def redacted_config(cfg: DictConfig) -> dict[str, Any]:
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    redacted: dict[str, Any] = redact_tree(container)
    return redacted


def _redacted_hydra_dir(source: Path, target: Path) -> Path:
    """A copy of Hydra's .hydra/ folder with secrets masked.

    Hydra writes overrides as given, also inside composite strings
    (``hydra.job.override_dirname``), so the secret values themselves are
    scrubbed from the text of every file.
    """
    target.mkdir(parents=True, exist_ok=True)
    overrides_file = source / "overrides.yaml"
    overrides = OmegaConf.load(overrides_file) if overrides_file.exists() else []
    secrets = secret_values(str(o) for o in overrides)
    for path in source.glob("*.yaml"):
        (target / path.name).write_text(scrub(path.read_text(), secrets))
    return target


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def run_name(overrides: list[str], swept_keys: list[str] | None = None) -> str:
    """Say what differs: in a sweep the swept keys only, else every override.

    Paths, Hydra's own settings and a sweeper's trial info never name a run.
    """
    shown = [o for o in overrides if not _key(o).startswith(("hydra.", "paths.", "trial."))]
    if swept_keys:
        shown = [o for o in shown if _key(o) in swept_keys] or shown
    return " ".join(shown) if shown else "defaults"


def swept_keys(overrides: list[str]) -> list[str]:
    """The keys a multirun's command line sweeps (`a=1,2`, `b=range(3)`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()]


def is_multirun(hydra_cfg: Any) -> bool:
    """Whether this job is one of a sweep's (Hydra's ``-m``)."""
    return bool(hydra_cfg.mode == RunMode.MULTIRUN)


def read_parent(sweep_dir: Path) -> dict[str, Any] | None:
    """The parent run's file: ``run_id``, ``tracking_uri``, ``swept_keys``."""
    path = sweep_dir / PARENT_FILE
    if not path.exists():
        return None
    parent: dict[str, Any] = json.loads(path.read_text())
    return parent


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
    def start(
        cls, settings: CfexpConfig, cfg: DictConfig, overrides: list[str], hydra_cfg: Any
    ) -> JobRun:
        tracker = tracker_for(settings.tracking.uri, Path(settings.paths.mlruns_dir))
        parent = None
        if is_multirun(hydra_cfg):
            parent = read_parent(Path(hydra_cfg.sweep.dir))
        tags = {
            "overrides": " ".join(overrides),
            "hydra.output_dir": str(hydra_cfg.runtime.output_dir),
        }
        if parent:
            tags["hydra.job_num"] = str(hydra_cfg.job.num)
        if settings.trial.study is not None:  # a trial of hydra/sweeper=cfexp_optuna
            tags["trial.study"] = settings.trial.study
            tags["trial.number"] = str(settings.trial.number)
        run_id = tracker.start_run(
            settings.tracking.experiment,
            run_name(overrides, parent["swept_keys"] if parent else None),
            tags,
            parent["run_id"] if parent else None,
        )
        config = redacted_config(cfg)
        tracker.log_batch(run_id, params=flatten(config))
        staging = Path(hydra_cfg.runtime.output_dir) / ".cfexp-upload"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        (staging / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
        return cls(tracker, run_id, staging)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.pending_tags.update(tags)

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        self.tracker.log_batch(self.run_id, metrics=metrics, tags=self.pending_tags)
        self.pending_tags = {}

    def log_job_artifacts(self, job_dir: Path) -> None:
        spec = job_dir / "agent_spec.json"
        if spec.exists():  # the spec may hold an API key: upload a redacted copy only
            data = json.loads(spec.read_text())
            for agent in data.get("agents", []):
                if agent.get("api_key"):
                    agent["api_key"] = "***"
            (job_dir / "agent_spec.redacted.json").write_text(json.dumps(data, indent=2))
        solo = sorted(path.name for path in job_dir.glob(SOLO_DIRS) if path.is_dir())
        for name in (*JOB_ARTIFACTS, *solo):
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
        self.pending_tags["error"] = error.splitlines()[0] if error else ""
        self._end("FAILED")

    def kill(self, reason: str) -> None:
        self.tracker.log_text(self.run_id, reason, "error.txt")
        self._end("KILLED")

    def _end(self, status: str) -> None:
        if self.pending_tags:
            self.tracker.log_batch(self.run_id, tags=self.pending_tags)
            self.pending_tags = {}
        if any(self.staging.iterdir()):  # e.g. config.yaml when the job failed early
            self._upload()
        shutil.rmtree(self.staging, ignore_errors=True)
        self.tracker.end_run(self.run_id, status)


def _link_or_copy(source: str, target: str) -> None:
    """A hard link where possible (no copy of big records), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
