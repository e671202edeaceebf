"""The run order of cfexp's grid sweeper, as pure functions on job override lists."""

from __future__ import annotations

import itertools

import pytest

from cfexp.vocab import SweepOrder
from hydra_plugins.cfexp_basic_sweeper._order import (
    blocks,
    choose_seed,
    config_of,
    order_jobs,
    repetition_of,
)
from hydra_plugins.cfexp_basic_sweeper._preamble import (
    Estimate,
    SweepPlan,
    describe,
    duration_text,
    plan_text,
)


def grid(runtimes: int = 2, ctxs: int = 3, repetitions: int = 3) -> list[list[str]]:
    """Jobs as Hydra's BasicSweeper makes them: the Cartesian product, last key fastest."""
    return [
        ["+experiment=tr112", f"runtime=r{r}", f"ctx={c}", f"repetition={k}"]
        for r, c, k in itertools.product(range(runtimes), range(ctxs), range(repetitions))
    ]


def configs(jobs: list[list[str]]) -> list[tuple[str, ...]]:
    return [config_of(job, "repetition") for job in jobs]


def test_grid_is_hydras_order() -> None:
    jobs = grid()
    assert order_jobs(jobs, SweepOrder.grid, seed=1) == jobs


@pytest.mark.parametrize("order", [SweepOrder.shuffled, SweepOrder.blocked])
def test_an_order_is_a_permutation_of_the_jobs_and_reproducible_from_its_seed(order: SweepOrder) -> None:
    jobs = grid()
    first = order_jobs(jobs, order, seed=7)
    assert sorted(first) == sorted(jobs) and first != jobs
    assert order_jobs(jobs, order, seed=7) == first  # the same seed: the same order (resume)
    assert order_jobs(jobs, order, seed=8) != first
    assert jobs == grid()  # the input is left alone


def test_blocked_runs_every_config_once_per_repetition_block_each_in_a_fresh_order() -> None:
    jobs = grid(runtimes=2, ctxs=3, repetitions=4)
    ordered = order_jobs(jobs, SweepOrder.blocked, seed=3)
    every_config = sorted(set(configs(jobs)))
    assert len(every_config) == 6
    found = blocks(ordered, "repetition")
    assert [repetition_of(b[0], "repetition") for b in found] == ["0", "1", "2", "3"]  # blocks in swept order
    for position in range(4):
        block = ordered[6 * position : 6 * (position + 1)]
        assert {repetition_of(job, "repetition") for job in block} == {str(position)}
        assert sorted(configs(block)) == every_config  # each block: a permutation of all configs
    assert len({tuple(configs(b)) for b in found}) > 1  # not the same permutation every block


def test_blocked_without_a_swept_repetition_is_one_shuffled_block() -> None:
    jobs = [[f"ctx={c}", f"temperature={t}"] for c, t in itertools.product((256, 512, 1024), (0.6, 0.8))]
    ordered = order_jobs(jobs, SweepOrder.blocked, seed=5)
    assert sorted(ordered) == sorted(jobs) and ordered != jobs
    assert len(blocks(ordered, "repetition")) == 1


def test_the_repetition_key_can_be_another_key_and_may_carry_a_plus() -> None:
    jobs = [[f"ctx={c}", f"+rep={k}"] for c, k in itertools.product((1, 2, 3), (0, 1))]
    ordered = order_jobs(jobs, SweepOrder.blocked, seed=2, repetition_key="rep")
    assert [repetition_of(j, "rep") for j in ordered] == ["0"] * 3 + ["1"] * 3


def test_a_configured_seed_wins_then_the_recorded_one_then_a_fresh_one() -> None:
    assert choose_seed(4, 9) == 4
    assert choose_seed(None, 9) == 9
    fresh = {choose_seed(None, None) for _ in range(5)}
    assert all(isinstance(s, int) and 0 <= s < 2**31 for s in fresh) and len(fresh) > 1


# -- the announcement --------------------------------------------------------------


def plan(order: SweepOrder, estimate: Estimate | None = None, resume: bool = False) -> SweepPlan:
    jobs = grid()
    return SweepPlan(
        experiment="tr112", grid=jobs, ordered=order_jobs(jobs, order, 11), order=order,
        seed=None if order == SweepOrder.grid else 11, repetition_key="repetition",
        estimate=estimate, sweep_dir="multirun/x", resume=resume,
    )


def test_the_announcement_says_jobs_factors_levels_order_and_estimate() -> None:
    text = describe(plan(SweepOrder.blocked, Estimate(runs=40, median_s=30.0)))
    lines = text.splitlines()
    assert lines[0] == "cfexp sweep of experiment tr112: 18 job(s) = 6 config(s) x 3 repetition(s)"
    assert "    runtime     r0, r1" in lines
    assert "    ctx         0, 1, 2" in lines
    assert "    repetition  0, 1, 2" in lines
    assert "  fixed: +experiment=tr112" in lines
    assert ("  order: blocked, seed 11: 3 blocks, one per repetition; each runs every one of the 6 configs "
            "once, in its own random order") in lines
    # 18 jobs x 30 s = 9 min
    assert ("  estimated duration: about 9 min (median 30.0 s of 40 earlier FINISHED run(s) of tr112 x 18 jobs)"
            in lines)
    assert lines[-1].startswith("  job folders: multirun/x/<N>, N = the job's position in this order")


def test_without_earlier_runs_the_duration_is_unknown_and_grid_says_how_to_randomise() -> None:
    text = describe(plan(SweepOrder.grid, resume=True))
    assert "  estimated duration: unknown (no earlier FINISHED run in experiment tr112)" in text
    assert "hydra.sweeper.order=blocked" in text
    assert "resume=true: jobs whose config already has a FINISHED run are skipped" in text


def test_the_plan_file_lists_every_job_at_its_position() -> None:
    shuffled = plan(SweepOrder.shuffled)
    text = plan_text(shuffled)
    assert "order: shuffled, seed 11: one random permutation of all jobs" in text
    listed = text.split("jobs in the order they run (position  overrides):\n")[1].splitlines()
    assert [line.split(None, 1) for line in listed] == [
        [str(i), " ".join(job)] for i, job in enumerate(shuffled.ordered)
    ]


@pytest.mark.parametrize("seconds, text", [(42, "42 s"), (720, "12 min"), (3 * 3600 + 300, "3 h 05 min")])
def test_durations_read_naturally(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text
