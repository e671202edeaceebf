"""Planning a sweep: its seed, its order, its announcement, and what the parent run records.

Called once, before the first job (:meth:`CfexpBasicSweeper.split_arguments`).
When cfexp's callback made a parent run for the sweep (its id is in
``<sweep dir>/cfexp_parent_run.json``), the parent gets the tags
``sweep.order``, ``sweep.seed`` (shuffled and blocked) and ``sweep.jobs`` and
the artifact ``sweep_plan.txt``; a resumed sweep's parent already holds a
seed, which the resumed sweep reuses when none is configured, so its jobs
keep their positions. Each job run tags its own position (Hydra's job
number, ``sweep.position``) itself, in :mod:`cfexp.tracking.jobs`.
Everything here is best effort: tracking that fails is a warning, never a
reason not to run the sweep.
"""

from __future__ import annotations

import logging
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from cfexp.redact import scrub, secret_values
from cfexp.tracking.tags import JOBS_TAG, ORDER_TAG, SEED_TAG  # names only: no MLflow import
from cfexp.vocab import SweepOrder
from hydra_plugins.cfexp_basic_sweeper._order import Job, choose_seed, order_jobs
from hydra_plugins.cfexp_basic_sweeper._preamble import Estimate, SweepPlan, describe, plan_text

if TYPE_CHECKING:
    from cfexp.tracking.store import Tracker

log = logging.getLogger(__name__)

PLAN_FILE = "sweep_plan.txt"


def plan_sweep(
    grid: Sequence[Sequence[str]],
    config: DictConfig,
    order: SweepOrder,
    seed: int | None,
    repetition_key: str,
) -> list[Job]:
    """The jobs in the order they will run; announces the sweep and records its order."""
    sweep_dir = Path(str(config.hydra.sweep.dir))
    parent = _parent(sweep_dir, config)
    experiment = str(OmegaConf.select(config, "tracking.experiment", default=None) or config.hydra.job.name)
    chosen: int | None = None
    recorded_order, recorded = _recorded(parent)
    if recorded_order is not None and recorded_order != order:
        log.warning(
            "resume: the sweep being resumed ran in %s order, this one runs in %s order: "
            "its jobs get other positions (hydra.sweeper.order=%s keeps them)", recorded_order, order, recorded_order,
        )
    if order != SweepOrder.grid:
        chosen = choose_seed(seed, recorded)
        if seed is None and recorded is not None:
            log.info("resume: the jobs run in the order of the sweep being resumed (seed %d)", recorded)
        elif recorded is not None and seed != recorded:
            log.warning(
                "resume: hydra.sweeper.seed=%d, the sweep being resumed used %d: its jobs get other positions",
                seed, recorded,
            )
    ordered = order_jobs(grid, order, chosen or 0, repetition_key)
    plan = SweepPlan(
        experiment=experiment,
        grid=grid,
        ordered=ordered,
        order=order,
        seed=chosen,
        repetition_key=repetition_key,
        estimate=_estimate(parent, experiment),
        sweep_dir=str(sweep_dir),
        resume=bool(OmegaConf.select(config, "resume", default=False)),
    )
    # The command's own output, before Hydra's first "Launching" line: print, not a log
    # record, so it reads the same on a terminal, in a pipe and in a nohup file.
    # Overrides are shown as given: secrets given literally (api_key=…) are masked first.
    secrets = secret_values(override for job in grid for override in job)
    print(scrub(describe(plan), secrets), flush=True)
    text = scrub(plan_text(plan), secrets)
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PLAN_FILE).write_text(text)
    except OSError as exc:
        log.warning("could not write %s: %s", PLAN_FILE, exc)
    _record(parent, order, chosen, len(ordered), text)
    return ordered


def _parent(sweep_dir: Path, config: DictConfig) -> tuple[Tracker, str] | None:
    """The tracker and id of the sweep's parent run, if cfexp's callback made one."""
    try:
        from cfexp.tracking.jobs import tracker_for
        from cfexp.tracking.sweep_file import read_parent

        parent = read_parent(sweep_dir)
        if not parent:
            return None
        try:
            mlruns_dir = Path(str(OmegaConf.select(config, "paths.mlruns_dir")))
        except Exception:  # interpolation needs Hydra's runtime info
            mlruns_dir = Path(os.getcwd()) / "mlruns"
        return tracker_for(parent["tracking_uri"], mlruns_dir), str(parent["run_id"])
    except Exception as exc:
        log.warning("could not open the sweep's MLflow parent run: %s", exc)
        return None


def _recorded(parent: tuple[Tracker, str] | None) -> tuple[SweepOrder | None, int | None]:
    """The order and seed a resumed sweep's parent run recorded (a new parent has none yet)."""
    if parent is None:
        return None, None
    tracker, run_id = parent
    try:
        tags: dict[str, Any] = tracker.get_run(run_id).data.tags
        order, seed = tags.get(ORDER_TAG), tags.get(SEED_TAG)
        return (SweepOrder(order) if order is not None else None), (int(seed) if seed is not None else None)
    except Exception as exc:  # an unreachable store, a spooled parent, a bad tag
        log.debug("no recorded order: %s", exc)
        return None, None


def _estimate(parent: tuple[Tracker, str] | None, experiment: str) -> Estimate | None:
    """The median duration of the experiment's earlier FINISHED runs, when there are any."""
    if parent is None:
        return None
    from cfexp.tracking.resume import finished_durations_s

    try:
        durations = finished_durations_s(parent[0], experiment)
    except Exception as exc:
        log.warning("no duration estimate: earlier runs of %s could not be read: %s", experiment, exc)
        return None
    if not durations:
        return None
    return Estimate(runs=len(durations), median_s=statistics.median(durations))


def _record(parent: tuple[Tracker, str] | None, order: SweepOrder, seed: int | None, jobs: int, text: str) -> None:
    if parent is None:
        return
    tracker, run_id = parent
    tags = {ORDER_TAG: str(order), JOBS_TAG: str(jobs)}
    if seed is not None:
        tags[SEED_TAG] = str(seed)
    try:
        tracker.set_tags(run_id, tags)
        tracker.log_text(run_id, text, PLAN_FILE)
    except Exception as exc:
        log.warning("could not record the sweep's order on its MLflow parent run: %s", exc)
