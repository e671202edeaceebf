"""Summary, series and rows computed from hand-made samples (pure functions)."""

from __future__ import annotations

import math

import pytest

from cfexp.monitoring import GpuSample, ProcessSample, Sample, SystemSamples, summarize

T0 = 1_000_000_000_000  # an arbitrary monotonic reading
MS = 1_000_000


def _sample(
    t_ms: int,
    cpu: float,
    *,
    procs: dict[str, ProcessSample] | None = None,
    gpus: tuple[GpuSample, ...] = (),
) -> Sample:
    return Sample(
        t_ns=T0 + t_ms * MS + 123,  # sub-millisecond part is truncated in offsets
        cpu_pct=cpu,
        core_cpu_pct=(cpu - 5, cpu + 5),
        mem_used_mb=1000 + cpu,
        mem_pct=cpu / 10,
        load_avg_1m=0.5,
        processes=procs or {},
        gpus=gpus,
    )


# The agent starts at the second tick (CPU primed, so None), runs one more tick, exits.
SAMPLES = (
    _sample(500, 10.0),
    _sample(1000, 20.0, procs={"agent": ProcessSample(cpu_pct=None, rss_mb=50.0, threads=1)}),
    _sample(1500, 60.0, procs={"agent": ProcessSample(cpu_pct=80.0, rss_mb=70.0, threads=3)}),
    _sample(2000, 30.0),
)


def _result(samples: tuple[Sample, ...] = SAMPLES, *, gpu: bool = False) -> SystemSamples:
    return SystemSamples(
        interval_s=0.5,
        t0_ns=T0,
        t0_unix_ms=1_700_000_000_000,
        gpu_available=gpu,
        watched={"agent": 4242, "ghost": 999_999},
        samples=samples,
        sampler_cpu_ms=12.5,
    )


def test_summary_is_mean_and_max_of_each_series() -> None:
    summary = _result().summary()
    assert summary["samples"] == 4
    assert summary["sys_cpu_pct_mean"] == pytest.approx(30.0)
    assert summary["sys_cpu_pct_max"] == 60.0
    assert summary["sys_core1_cpu_pct_max"] == 65.0
    assert summary["sys_core0_cpu_pct_mean"] == pytest.approx(25.0)
    assert summary["sys_mem_used_mb_max"] == 1060.0
    assert summary["sys_mem_pct_mean"] == pytest.approx(3.0)
    assert summary["sys_load_avg_1m_mean"] == 0.5
    assert summary["sampler_cpu_ms"] == 12.5


def test_process_statistics_cover_only_ticks_where_it_was_measured() -> None:
    """The priming tick has no CPU value: the mean is over measured ticks, not diluted by 0."""
    summary = _result().summary()
    assert summary["proc_agent_samples"] == 2
    assert summary["proc_agent_cpu_pct_mean"] == 80.0
    assert summary["proc_agent_rss_mb_mean"] == 60.0
    assert summary["proc_agent_rss_mb_max"] == 70.0
    assert summary["proc_agent_threads_max"] == 3.0


def test_a_process_never_seen_has_a_zero_count_and_no_statistics() -> None:
    summary = _result().summary()
    assert summary["proc_ghost_samples"] == 0
    assert [k for k in summary if k.startswith("proc_ghost_")] == ["proc_ghost_samples"]


def test_absent_gpu_is_a_flag_and_no_gpu_keys() -> None:
    summary = _result().summary()
    assert summary["gpu_available"] == 0.0
    assert [k for k in summary if k.startswith("gpu")] == ["gpu_available"]
    assert not [k for k in _result().series() if k.startswith("gpu")]


def test_gpu_statistics_skip_unreported_quantities() -> None:
    samples = (
        _sample(500, 10.0, gpus=(GpuSample(0, util_pct=40.0, mem_used_mb=2048.0, power_w=None),)),
        _sample(1000, 10.0, gpus=(GpuSample(0, util_pct=60.0, mem_used_mb=3072.0, power_w=None),)),
    )
    summary = _result(samples, gpu=True).summary()
    assert summary["gpu_available"] == 1.0
    assert summary["gpu0_util_pct_mean"] == 50.0
    assert summary["gpu0_mem_used_mb_max"] == 3072.0
    assert "gpu0_power_w_mean" not in summary  # not reported by the board, so not 0


def test_series_are_millisecond_offsets_from_start() -> None:
    series = _result().series()
    assert series["sys_cpu_pct"] == [(500, 10.0), (1000, 20.0), (1500, 60.0), (2000, 30.0)]
    assert series["proc_agent_rss_mb"] == [(1000, 50.0), (1500, 70.0)]
    assert series["proc_agent_cpu_pct"] == [(1500, 80.0)]
    assert all(isinstance(t, int) for points in series.values() for t, _ in points)


def test_rows_share_one_set_of_keys_with_none_for_absent_values() -> None:
    rows = _result().to_rows()
    assert len(rows) == 4
    assert all(row.keys() == rows[0].keys() for row in rows)
    assert list(rows[0])[:3] == ["t_ms", "t_ns", "sys_cpu_pct"]
    assert [row["t_ms"] for row in rows] == [500, 1000, 1500, 2000]
    assert [row["t_ns"] for row in rows] == [s.t_ns for s in SAMPLES]
    assert [row["proc_agent_cpu_pct"] for row in rows] == [None, None, 80.0, None]


def test_no_samples_gives_counts_only() -> None:
    summary = summarize((), gpu_available=False, watched=["agent"])
    assert summary == {"samples": 0.0, "gpu_available": 0.0, "proc_agent_samples": 0.0}
    assert not any(math.isnan(v) for v in summary.values())
