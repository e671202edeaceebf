"""What a sweep says about itself before its first job: a pure function to text.

The number of jobs, the factors and their levels, what is fixed, the order
and its seed, and an estimated duration when earlier runs of the experiment
give one. Plain text: it is printed (also when the output is not a
terminal) and kept as ``sweep_plan.txt`` with the jobs in their order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cfexp.vocab import SweepOrder
from hydra_plugins.cfexp_basic_sweeper._order import blocks, config_of, override_key, override_value


@dataclass(frozen=True)
class Estimate:
    """Earlier FINISHED runs of the experiment: how many, and their median duration."""

    runs: int
    median_s: float


@dataclass(frozen=True)
class SweepPlan:
    """Everything the announcement says."""

    experiment: str
    # The jobs in Hydra's grid order (levels are listed in it) and in the order they run.
    grid: Sequence[Sequence[str]]
    ordered: Sequence[Sequence[str]]
    order: SweepOrder
    seed: int | None
    repetition_key: str
    estimate: Estimate | None
    sweep_dir: str
    resume: bool = False


def levels(jobs: Sequence[Sequence[str]]) -> dict[str, list[str]]:
    """Each key's values, in the order first met (Hydra's sweep order)."""
    found: dict[str, list[str]] = {}
    for job in jobs:
        for override in job:
            values = found.setdefault(override_key(override), [])
            value = override_value(override)
            if value not in values:
                values.append(value)
    return found


def duration_text(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3 h 05 min``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def describe(plan: SweepPlan) -> str:
    """The announcement (several lines, no trailing newline)."""
    jobs = len(plan.ordered)
    configs = len({config_of(job, plan.repetition_key) for job in plan.grid})
    all_levels = levels(plan.grid)
    factors = {key: values for key, values in all_levels.items() if len(values) > 1}
    fixed = [o for o in (plan.grid[0] if plan.grid else []) if len(all_levels[override_key(o)]) == 1]
    repetitions = len(all_levels.get(plan.repetition_key, [None]))
    lines = [f"cfexp sweep of experiment {plan.experiment}: {jobs} job(s) = {configs} config(s) x {repetitions} "
             f"repetition(s)"]
    if factors:
        width = max(len(key) for key in factors)
        lines.append("  factors and levels:")
        lines += [f"    {key:<{width}}  {', '.join(values)}" for key, values in factors.items()]
    else:
        lines.append("  factors: none (one config)")
    if fixed:
        lines.append(f"  fixed: {' '.join(fixed)}")
    lines.append(f"  order: {_order_text(plan, configs)}")
    lines.append(f"  estimated duration: {_estimate_text(plan)}")
    if plan.resume:
        lines.append("  resume=true: jobs whose config already has a FINISHED run are skipped "
                     "(the estimate counts every job)")
    lines.append(f"  job folders: {plan.sweep_dir}/<N>, N = the job's position in this order (0 = first), "
                 "tagged sweep.position on its run")
    return "\n".join(lines)


def plan_text(plan: SweepPlan) -> str:
    """The announcement, then every job in the order it runs (``sweep_plan.txt``)."""
    width = len(str(max(len(plan.ordered) - 1, 0)))
    jobs = [f"{position:>{width}}  {' '.join(job) or 'defaults'}" for position, job in enumerate(plan.ordered)]
    return "\n".join([describe(plan), "", "jobs in the order they run (position  overrides):", *jobs]) + "\n"


def _order_text(plan: SweepPlan, configs: int) -> str:
    if plan.order == SweepOrder.grid:
        return ("grid (Hydra's: the last swept key varies fastest, each config's repetitions back to back; "
                "hydra.sweeper.order=blocked interleaves them in random order)")
    if plan.order == SweepOrder.shuffled:
        return f"shuffled, seed {plan.seed}: one random permutation of all jobs"
    found = blocks(plan.grid, plan.repetition_key)
    if len(found) == 1:
        return (f"blocked, seed {plan.seed}: one block ({plan.repetition_key} is not swept), "
                f"the {configs} config(s) in random order")
    return (f"blocked, seed {plan.seed}: {len(found)} blocks, one per {plan.repetition_key}; each runs every one "
            f"of the {configs} configs once, in its own random order")


def _estimate_text(plan: SweepPlan) -> str:
    if plan.estimate is None or plan.estimate.runs == 0:
        return f"unknown (no earlier FINISHED run in experiment {plan.experiment})"
    total = plan.estimate.median_s * len(plan.ordered)
    return (f"about {duration_text(total)} (median {plan.estimate.median_s:.1f} s of "
            f"{plan.estimate.runs} earlier FINISHED run(s) of {plan.experiment} x {len(plan.ordered)} jobs)")
