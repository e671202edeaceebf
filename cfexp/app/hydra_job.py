"""Hydra's side of a job: where it runs, what its command line said, its files.

Everything the task needs from Hydra's runtime config is read here, once, into
a :class:`~cfexp.tracking.jobs.JobPlace` of plain values, so ``cfexp.tracking`` talks to MLflow
only and never to Hydra. The secrets a command line or config carried are
masked in the files Hydra wrote (``.hydra/``, ``multirun.yaml``) here too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from hydra.types import RunMode

from cfexp.config.schema import CfexpConfig
from cfexp.redact import (
    MIN_SCRUB_LEN,
    mask_in_logs,
    redact_overrides,
    redact_tree,
    scrub,
    secret_values,
    secret_values_in,
)
from cfexp.tracking.jobs import JobPlace

log = logging.getLogger(__name__)


def is_multirun(hydra_cfg: Any) -> bool:
    """Whether this job is one of a sweep's (Hydra's ``-m``)."""
    return bool(hydra_cfg.mode == RunMode.MULTIRUN)


def job_place(hydra_cfg: Any) -> JobPlace:
    """Where this job runs and what its command line said, from Hydra's runtime config."""
    multirun = is_multirun(hydra_cfg)
    return JobPlace(
        output_dir=Path(hydra_cfg.runtime.output_dir),
        sweep_dir=Path(hydra_cfg.sweep.dir) if multirun else None,
        job_num=int(hydra_cfg.job.num) if multirun else None,
        overrides=redact_overrides(hydra_cfg.overrides.task),
    )


def swept_keys(overrides: list[str]) -> list[str]:
    """The keys a multirun's command line sweeps (``a=1,2``, ``b=range(3)``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()]


@dataclasses.dataclass(frozen=True)
class GridSize:
    """How many jobs a grid sweep makes: the product of its factors' levels."""

    jobs: int
    levels: dict[str, int]  # each swept key and its number of values


def grid_size(params: dict[str, str] | None, task_overrides: list[str]) -> GridSize:
    """The grid Hydra's BasicSweeper (and so cfexp's) makes of a sweep's ``params``
    and command line, counted without listing it (a million jobs cost nothing here).

    As in BasicSweeper: the command line comes after ``params``, and the last
    override of a key wins.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    arguments = [f"{key}={value}" for key, value in (params or {}).items()] + list(task_overrides)
    levels: dict[str, int] = {}
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        if override.is_sweep_override() and override.is_discrete_sweep():
            levels[key] = sum(1 for _ in override.sweep_string_iterator())
        else:  # one value (an interval() sweep is refused by the sweeper itself)
            levels[key] = 1
    swept = {key: n for key, n in levels.items() if n != 1}
    jobs = 1
    for n in swept.values():
        jobs *= n
    return GridSize(jobs=jobs, levels=swept)


def settings_tree(settings: CfexpConfig) -> dict[str, Any]:
    """The typed settings as plain JSON values, secrets masked: what a run logs and hashes.

    The settings the agent and servers used, not the raw composed config.
    """
    plain: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(settings)))
    redacted: dict[str, Any] = redact_tree(plain)
    return redacted


def keep_secrets_out_of_files(settings: CfexpConfig, hydra_cfg: Any) -> None:
    """Secrets given as literal values are masked in logs from now on, and in
    the files Hydra wrote with them (the job's ``.hydra/``, a sweep's
    ``multirun.yaml``). ``${oc.env:…}`` interpolations are never secrets."""
    plain = json.loads(json.dumps(dataclasses.asdict(settings)))
    found = {*secret_values(hydra_cfg.overrides.task), *secret_values_in(plain)}
    secrets = {secret for secret in found if len(secret) >= MIN_SCRUB_LEN}
    if not secrets:
        return
    mask_in_logs(secrets)
    files = list((Path(hydra_cfg.runtime.output_dir) / ".hydra").glob("*.yaml"))
    if is_multirun(hydra_cfg):
        files.append(Path(hydra_cfg.sweep.dir) / "multirun.yaml")
    for path in files:
        try:
            text = path.read_text()
            if any(secret in text for secret in secrets):
                temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                temporary.write_text(scrub(text, secrets))
                temporary.replace(path)
        except OSError as exc:
            log.warning("could not mask secrets in %s: %s", path, exc)
