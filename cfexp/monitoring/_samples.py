"""System samples and what is computed from them: pure data and functions, no I/O.

The sampling thread (:mod:`cfexp.monitoring._sampler`) produces one
:class:`Sample` per tick; every name a caller logs — series, summary
statistics, artifact rows — is derived here, so the naming rules live in one
place (docs/system-metrics.md).

Absence is never a number: a quantity that was not measured (no GPU, a
process not yet started or already gone, the tick on which a process's CPU
counter was primed) has no value, and is left out of means and maxima instead
of being counted as 0.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

_NS_PER_MS = 1_000_000

RowValue = float | int | None


@dataclass(frozen=True)
class ProcessSample:
    """One watched process at one tick (summed over its live children when included)."""

    # None on the tick the process was first seen: psutil's cpu_percent needs a
    # primed first call, and that call's 0.0 is not a measurement.
    cpu_pct: float | None
    rss_mb: float
    threads: int


@dataclass(frozen=True)
class GpuSample:
    """One NVIDIA device at one tick; a field is None when the driver does not report it."""

    index: int
    util_pct: float | None
    mem_used_mb: float | None
    power_w: float | None


@dataclass(frozen=True)
class Sample:
    """Everything read at one tick."""

    # time.monotonic_ns() when the tick began.
    t_ns: int
    cpu_pct: float
    core_cpu_pct: tuple[float, ...]
    mem_used_mb: float
    mem_pct: float
    load_avg_1m: float
    # Only the watched processes that were alive at this tick.
    processes: Mapping[str, ProcessSample] = field(default_factory=dict)
    gpus: tuple[GpuSample, ...] = ()


def sample_values(sample: Sample) -> dict[str, float]:
    """The flat ``{series name: value}`` of one sample; absent quantities have no key."""
    values: dict[str, float] = {
        "sys_cpu_pct": sample.cpu_pct,
        **{f"sys_core{i}_cpu_pct": pct for i, pct in enumerate(sample.core_cpu_pct)},
        "sys_mem_used_mb": sample.mem_used_mb,
        "sys_mem_pct": sample.mem_pct,
        "sys_load_avg_1m": sample.load_avg_1m,
    }
    for name, proc in sample.processes.items():
        if proc.cpu_pct is not None:
            values[f"proc_{name}_cpu_pct"] = proc.cpu_pct
        values[f"proc_{name}_rss_mb"] = proc.rss_mb
        values[f"proc_{name}_threads"] = float(proc.threads)
    for gpu in sample.gpus:
        for quantity, value in (
            ("util_pct", gpu.util_pct),
            ("mem_used_mb", gpu.mem_used_mb),
            ("power_w", gpu.power_w),
        ):
            if value is not None:
                values[f"gpu{gpu.index}_{quantity}"] = value
    return values


def _offset_ms(t_ns: int, t0_ns: int) -> int:
    return (t_ns - t0_ns) // _NS_PER_MS


def build_series(samples: Sequence[Sample], t0_ns: int) -> dict[str, list[tuple[int, float]]]:
    """``{series name: [(ms since t0, value), ...]}`` in sample order."""
    series: dict[str, list[tuple[int, float]]] = {}
    for sample in samples:
        t_ms = _offset_ms(sample.t_ns, t0_ns)
        for name, value in sample_values(sample).items():
            series.setdefault(name, []).append((t_ms, value))
    return series


def build_rows(samples: Sequence[Sample], t0_ns: int) -> list[dict[str, RowValue]]:
    """One flat dict per sample, all with the same keys (None where a value is absent).

    Keys: ``t_ms`` (since t0), ``t_ns`` (the raw ``CLOCK_MONOTONIC`` reading, the
    clock agent records use, so rows line up with calls), then every series name
    in order of first appearance; the rows can be written as CSV (one header) or
    JSONL alike.
    """
    per_sample = [sample_values(sample) for sample in samples]
    columns = list(dict.fromkeys(name for values in per_sample for name in values))
    return [
        {"t_ms": _offset_ms(sample.t_ns, t0_ns), "t_ns": sample.t_ns, **{c: values.get(c) for c in columns}}
        for sample, values in zip(samples, per_sample, strict=True)
    ]


def summarize(
    samples: Sequence[Sample],
    *,
    gpu_available: bool,
    watched: Sequence[str] = (),
) -> dict[str, float]:
    """Mean and max of every series, plus counts.

    Keys: ``<series>_mean`` and ``<series>_max`` for each series that has at
    least one value; ``samples`` (ticks taken); ``gpu_available`` (1.0/0.0);
    ``proc_<name>_samples`` (ticks at which the process was alive) for every
    watched name, 0 for a process never seen.
    """
    summary: dict[str, float] = {
        "samples": float(len(samples)),
        "gpu_available": 1.0 if gpu_available else 0.0,
    }
    for name in watched:
        summary[f"proc_{name}_samples"] = float(sum(name in s.processes for s in samples))
    for name, points in build_series(samples, t0_ns=0).items():
        values = [value for _, value in points]
        summary[f"{name}_mean"] = sum(values) / len(values)
        summary[f"{name}_max"] = max(values)
    return summary


@dataclass(frozen=True)
class SystemSamples:
    """The time series one :class:`~cfexp.monitoring.SystemSampler` run recorded."""

    interval_s: float
    # time.monotonic_ns() at start(); sample times are offsets from it.
    t0_ns: int
    # Wall clock (ms since the epoch) at the same instant, e.g. for MLflow timestamps.
    t0_unix_ms: int
    gpu_available: bool
    # Every name watched during the run -> its pid (the last one, if re-watched).
    watched: Mapping[str, int]
    samples: tuple[Sample, ...]
    # CPU time the sampling thread itself used; None if it did not finish in time.
    sampler_cpu_ms: float | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def series(self) -> dict[str, list[tuple[int, float]]]:
        """``{name: [(ms since start, value), ...]}``, e.g. for MLflow metric steps."""
        return build_series(self.samples, self.t0_ns)

    def to_rows(self) -> list[dict[str, RowValue]]:
        """Flat, equal-keyed rows (``t_ms``, ``t_ns`` + every series) for a CSV or JSONL artifact."""
        return build_rows(self.samples, self.t0_ns)

    def summary(self) -> dict[str, float]:
        """Per-run statistics (see :func:`summarize`), plus ``sampler_cpu_ms`` when known."""
        summary = summarize(self.samples, gpu_available=self.gpu_available, watched=list(self.watched))
        if self.sampler_cpu_ms is not None:
            summary["sampler_cpu_ms"] = self.sampler_cpu_ms
        return summary
