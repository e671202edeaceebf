"""One MLflow run per Hydra job, a child of its sweep's parent run.

The parent run is created by :class:`cfexp.app.callback.CfexpCallback`
when a multirun starts, and its id is written to ``<sweep dir>/``
:data:`PARENT_FILE`; each job reads it there, so parent/child linking works
whether jobs run in this process or in others.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

    Paths and Hydra's own settings never name a run.
    """
    shown = [o for o in overrides if not _key(o).startswith(("hydra.", "paths."))]
    if swept_keys:
        shown = [o for o in shown if _key(o) in swept_keys] or shown
    return " ".join(shown) if shown else "defaults"


def swept_keys(overrides: list[str]) -> list[str]:
    """The keys a multirun's command line sweeps (`a=1,2`, `b=range(3)`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()]


def read_parent(sweep_dir: Path) -> dict[str, Any] | None:
    """The parent run's file: ``run_id``, ``tracking_uri``, ``swept_keys``."""
    path = sweep_dir / PARENT_FILE
    if not path.exists():
        return None
    parent: dict[str, Any] = json.loads(path.read_text())
    return parent


@dataclass
class JobRun:
    tracker: Tracker
    run_id: str

    @classmethod
    def start(
        cls, settings: CfexpConfig, cfg: DictConfig, overrides: list[str], hydra_cfg: Any
    ) -> JobRun:
        tracker = tracker_for(settings.tracking.uri, Path(settings.paths.mlruns_dir))
        parent = None
        if str(hydra_cfg.mode) == "RunMode.MULTIRUN":
            parent = read_parent(Path(hydra_cfg.sweep.dir))
        tags = {
            "overrides": " ".join(overrides),
            "hydra.output_dir": str(hydra_cfg.runtime.output_dir),
        }
        if parent:
            tags["hydra.job_num"] = str(hydra_cfg.job.num)
        run_id = tracker.start_run(
            settings.tracking.experiment,
            run_name(overrides, parent["swept_keys"] if parent else None),
            tags,
            parent["run_id"] if parent else None,
        )
        config = redacted_config(cfg)
        tracker.log_params(run_id, flatten(config))
        tracker.log_text(run_id, OmegaConf.to_yaml(OmegaConf.create(config)), "config.yaml")
        return cls(tracker, run_id)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tracker.set_tags(self.run_id, tags)

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        self.tracker.log_metrics(self.run_id, metrics)

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
            try:
                path = job_dir / name
                if name == ".hydra" and path.is_dir():
                    path = _redacted_hydra_dir(path, job_dir / ".cfexp-upload" / ".hydra")
                self.tracker.log_artifact(self.run_id, path, name if path.is_dir() else None)
            except OSError as exc:
                log.warning("could not store artifact %s: %s", name, exc)

    def finish(self) -> None:
        self.tracker.end_run(self.run_id, "FINISHED")

    def fail(self, error: str) -> None:
        self.tracker.log_text(self.run_id, error, "error.txt")
        self.tracker.set_tags(self.run_id, {"error": error.splitlines()[0] if error else ""})
        self.tracker.end_run(self.run_id, "FAILED")

    def kill(self, reason: str) -> None:
        self.tracker.log_text(self.run_id, reason, "error.txt")
        self.tracker.end_run(self.run_id, "KILLED")
