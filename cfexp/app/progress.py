"""What a command says on screen: a line per finished job, a table at the end, where to look.

Plain text on standard output (the failure summary goes to standard error):
it reads the same on a terminal, in a pipe and in a CI log. Everything here
formats; the callback (:mod:`cfexp.app.callback`) decides when to print, from
the jobs' status files, so it works whichever launcher ran the jobs.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from cfexp.app.status import JobStatus

# The few numbers a line or a row shows (their definitions: docs/metrics.md);
# a job shows those it measured: parallel efficiency only for multi-agent runs.
KEY_METRICS = ("ttft_ms", "throughput_tok_s", "e2e_ms", "parallel_efficiency_pct")


def key_metrics(metrics: Mapping[str, float] | None) -> dict[str, float]:
    """The key metrics a job measured, and its calls (what a status file keeps)."""
    chosen = {name: value for name, value in (metrics or {}).items()
              if name in (*KEY_METRICS, "calls_total", "calls_failed") and math.isfinite(value)}  # fmt: skip
    return chosen


def headline(metrics: Mapping[str, float] | None) -> str:
    """``ttft_ms 41.2 · throughput_tok_s 55.0 · calls 2/2 ok``; empty when nothing was measured."""
    metrics = metrics or {}
    parts = [f"{name} {_number(metrics[name])}" for name in KEY_METRICS if name in metrics]
    if "calls_total" in metrics:
        total, failed = int(metrics["calls_total"]), int(metrics.get("calls_failed", 0))
        parts.append(f"calls {total - failed}/{total} ok")
    return " · ".join(parts)


def _number(value: float) -> str:
    return f"{value:.1f}" if abs(value) < 10_000 else f"{value:.0f}"


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def varied(overrides: Sequence[str], swept: Collection[str] | None) -> str:
    """The overrides that tell a sweep's jobs apart (the swept keys'); all of them without that."""
    if swept:
        overrides = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in swept]
    return " ".join(overrides) or "defaults"


def swept_among(statuses: Sequence[JobStatus]) -> set[str]:
    """The keys whose value differs between these jobs."""
    values: dict[str, set[str]] = {}
    for job in statuses:
        for override in job.overrides:
            key, _, value = override.partition("=")
            values.setdefault(key.lstrip("+~"), set()).add(value)
    return {key for key, seen in values.items() if len(seen) > 1}


def job_line(
    done: int, total: int | None, job: JobStatus, elapsed_s: float, swept: Collection[str] | None = None
) -> str:
    """One finished job of a sweep: its place, status, swept values, key numbers, time and ETA."""
    place = f"[{done}/{total}]" if total else f"[{done}]"
    eta = ""
    if total and done < total:
        eta = f", about {duration(elapsed_s / done * (total - done))} to go"
    numbers = headline(job.metrics)
    what = varied(job.overrides, swept)
    return f"cfexp {place} {job.status} {what}" + (f" | {numbers}" if numbers else "") + (
        f" | {duration(elapsed_s)} elapsed{eta}"
    )


def final_table(statuses: Sequence[JobStatus]) -> str:
    """One row per job, in run order: its folder, status, swept values, key numbers, run id."""
    swept = swept_among(statuses)
    rows = [("#", "status", "swept values" if swept else "overrides", "key metrics", "run id")]
    for index, job in enumerate(statuses):
        rows.append((
            job.folder if job.folder is not None else str(index), job.status,
            varied(job.overrides, swept), headline(job.metrics) or "-", job.run_id or "-",
        ))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1]
        for row in rows
    )


@dataclass(frozen=True)
class Where:
    """Where a command's results are."""

    outputs: str  # the run or sweep folder
    experiment: str
    run_id: str | None  # the single run, or the sweep's parent run
    tracking_uri: str
    mlruns_dir: str
    sweep: bool
    # The store `cfexp ui` and `cfexp report` open when given no option (./mlruns).
    default_store: bool

    def text(self) -> str:
        what = "sweep (parent run)" if self.sweep else "run"
        lines = [f"  outputs:  {self.outputs}"]
        if self.run_id:
            lines.append(f"  MLflow:   {what} {self.run_id} in experiment {self.experiment!r} ({self.tracking_uri})")
        if self.default_store:
            lines.append("  browse:   cfexp ui   (http://127.0.0.1:5000)")
        elif self.tracking_uri.startswith("sqlite:"):
            lines.append(f"  browse:   cfexp ui --mlruns {self.mlruns_dir}   (http://127.0.0.1:5000)")
        else:
            lines.append(f"  browse:   the MLflow UI of {self.tracking_uri}")
        if self.sweep:
            store = "" if self.default_store else f" --tracking-uri {self.tracking_uri}"
            lines.append(f"  report:   cfexp report --experiment {self.experiment}{store}")
        return "\n".join(lines)
