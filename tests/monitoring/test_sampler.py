"""The sampling thread against real processes this test starts.

Nothing here depends on how fast the machine is: tests wait for a number of
ticks (with a generous guard timeout) instead of sleeping for a fixed time,
and bounds on sample counts are loose.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import psutil
import pytest

from cfexp.errors import ConfigError
from cfexp.monitoring import SystemSampler, _sampler
from tests.monitoring.children import HOG, PARENT_OF_ALLOCATOR, SLEEPER, wait_for

Spawn = Callable[[str], Popen[str]]


def _wait_ticks(sampler: SystemSampler, ticks: int) -> None:
    target = sampler.samples_taken + ticks
    wait_for(lambda: sampler.samples_taken >= target)


def test_a_busy_process_shows_its_memory_and_cpu(spawn: Spawn) -> None:
    hog = spawn(HOG)
    with SystemSampler(interval_s=0.1) as sampler:
        assert sampler.watch("hog", hog.pid)
        # One tick may be in flight, one primes the CPU counter: 5 leave >= 3 CPU values.
        _wait_ticks(sampler, 5)
    result = sampler.stop()
    summary = result.summary()
    assert summary["proc_hog_rss_mb_max"] >= 50
    assert summary["proc_hog_cpu_pct_mean"] > 0
    assert summary["proc_hog_threads_max"] >= 1
    assert len(result.series()["proc_hog_cpu_pct"]) >= 3
    assert summary["samples"] >= 5
    assert 0 <= summary["sys_cpu_pct_mean"] <= 100
    assert summary["sys_mem_used_mb_max"] > 0
    assert len([k for k in summary if k.startswith("sys_core") and k.endswith("_mean")]) == psutil.cpu_count()


def test_samples_keep_to_the_interval() -> None:
    """Never more samples than deadlines, each at or after its deadline t0 + k * interval."""
    interval_s = 0.05
    sampler = SystemSampler(interval_s=interval_s).start()
    time.sleep(1.0)
    result = sampler.stop()
    elapsed_ns = time.monotonic_ns() - result.t0_ns
    assert 5 <= len(result) <= elapsed_ns / (interval_s * 1e9)
    for k, sample in enumerate(result, start=1):
        assert sample.t_ns - result.t0_ns >= k * interval_s * 1e9 - 1e6  # 1 ms of rounding


def test_children_are_summed_only_when_included(spawn: Spawn) -> None:
    parent = spawn(PARENT_OF_ALLOCATOR)  # 'ready' comes from the child, after it allocated
    with SystemSampler(interval_s=0.1) as tree, SystemSampler(interval_s=0.1, include_children=False) as alone:
        tree.watch("parent", parent.pid)
        alone.watch("parent", parent.pid)
        _wait_ticks(tree, 3)
        _wait_ticks(alone, 3)
    with_children, without = tree.stop().summary(), alone.stop().summary()
    assert with_children["proc_parent_rss_mb_max"] >= 50
    assert without["proc_parent_rss_mb_max"] < 50
    assert with_children["proc_parent_rss_mb_max"] > without["proc_parent_rss_mb_max"]


@pytest.mark.parametrize("reap", [True, False], ids=["reaped", "zombie"])
def test_a_process_that_exits_stops_being_sampled(spawn: Spawn, reap: bool) -> None:
    sleeper = spawn(SLEEPER)
    with SystemSampler(interval_s=0.05) as sampler:
        sampler.watch("sleeper", sleeper.pid)
        _wait_ticks(sampler, 3)
        sleeper.kill()
        if reap:
            sleeper.wait()
        else:  # exited, not yet waited for by its parent (us)
            wait_for(lambda: psutil.Process(sleeper.pid).status() == psutil.STATUS_ZOMBIE)
        exited_at = sampler.samples_taken
        _wait_ticks(sampler, 3)
    result = sampler.stop()
    # The tick in flight when it exited may still include it; none after that.
    assert not any("sleeper" in s.processes for s in result.samples[exited_at + 1 :])
    assert 1 <= result.summary()["proc_sleeper_samples"] < len(result)


def test_a_pid_that_never_existed_is_reported_as_never_sampled() -> None:
    never = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    with SystemSampler(interval_s=0.05) as sampler:
        assert sampler.watch("ghost", never) is False
        _wait_ticks(sampler, 2)
    summary = sampler.stop().summary()
    assert summary["proc_ghost_samples"] == 0
    assert [k for k in summary if k.startswith("proc_ghost")] == ["proc_ghost_samples"]


def test_processes_can_be_watched_before_start_and_after(spawn: Spawn) -> None:
    server, agent = spawn(SLEEPER), spawn(SLEEPER)
    sampler = SystemSampler(interval_s=0.05)
    sampler.watch("server0", server.pid)
    sampler.start()
    _wait_ticks(sampler, 2)
    sampler.watch("agent", agent.pid)
    _wait_ticks(sampler, 3)
    result = sampler.stop()
    assert result.watched == {"server0": server.pid, "agent": agent.pid}
    counts = result.summary()
    assert counts["proc_server0_samples"] > counts["proc_agent_samples"] >= 1


def test_stop_is_idempotent_and_does_not_wait_for_the_next_tick() -> None:
    sampler = SystemSampler(interval_s=60.0).start()
    started = time.monotonic()
    first = sampler.stop()
    # A whole interval would be 60 s: a margin no busy machine can eat (issue 17.5).
    assert time.monotonic() - started < 20
    assert sampler.stop() is first
    assert len(first) == 0
    assert sampler.watch("late", 1) is False


def test_stop_without_start_returns_an_empty_result() -> None:
    result = SystemSampler().stop()
    assert len(result) == 0
    assert result.summary()["samples"] == 0


def test_start_twice_is_an_error() -> None:
    sampler = SystemSampler(interval_s=1.0).start()
    try:
        with pytest.raises(RuntimeError, match="twice"):
            sampler.start()
    finally:
        sampler.stop()


@pytest.mark.parametrize("interval_s", [0.0, -1.0, float("nan")])
def test_a_non_positive_interval_is_a_config_error(interval_s: float) -> None:
    with pytest.raises(ConfigError, match="interval_s="):
        SystemSampler(interval_s=interval_s)


@pytest.mark.parametrize("name", ["", "has space", "a/b", "é"])
def test_a_name_that_cannot_be_a_metric_name_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="name="):
        SystemSampler().watch(name, 1)


def test_descendants_from_proc_match_psutils_scan(spawn: Spawn, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast /proc/<pid>/task/<tid>/children walk finds what psutil's full scan finds."""
    parent = psutil.Process(spawn(PARENT_OF_ALLOCATOR).pid)
    fast = _sampler._descendants(parent)
    monkeypatch.setattr(_sampler, "_proc_children_supported", lambda: False)
    assert fast is not None and len(fast) == 1
    assert sorted(fast) == sorted(_sampler._descendants(parent) or [])
