"""Measure what cfexp itself costs per job, and the Python agent's footprint.

On the simulator with zero simulated latency (``time_scale=0``) a job's whole
duration is overhead: composing the config, reusing the server, spawning and
running the agent process, computing metrics, logging to MLflow. We run one
multirun of ``--jobs`` jobs and take, from the MLflow store it wrote:

- per-job overhead: the median gap between consecutive child runs' start
  times (one whole job cycle), and the part of it spent outside the agent
  process (cycle − the agent's wall time);
- the Python agent's startup (exec to ready), peak RSS and CPU time;
- CPU per streamed token: the slope of agent CPU time between a short and a
  long generation (``--short``/``--long`` tokens), so start-up CPU cancels out.

Usage: ``python benchmarks/overhead.py [--jobs 30] [--out docs/benchmarks.md]``.
The results replace the section between the markers in the output file.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _common import REPO, machine_line, sweep, write_section

OUT = REPO / "docs" / "benchmarks.md"


def zero_latency_sweep(root: Path, name: str, jobs: int, num_predict: int) -> list:  # type: ignore[type-arg]
    return sweep(
        root, name,
        "backend=sim", "backend.settings.time_scale=0", "backend.settings.jitter_cv=0",
        "scenario=single_inference", f"num_predict={num_predict}", f"ctx={max(512, num_predict + 1024)}",
        f"repetition={','.join(str(i) for i in range(jobs))}",
    )


def median_metric(runs: list, key: str) -> float:  # type: ignore[type-arg]
    return statistics.median(r.data.metrics[key] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--short", type=int, default=16)
    parser.add_argument("--long", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cfexp-bench-") as tmp:
        root = Path(tmp)
        short = zero_latency_sweep(root, "overhead_short", args.jobs, args.short)
        long = zero_latency_sweep(root, "overhead_long", max(5, args.jobs // 3), args.long)

    cycles_ms = [b.info.start_time - a.info.start_time for a, b in zip(short, short[1:])]
    cycle = statistics.median(cycles_ms)
    agent_wall = median_metric(short, "agent_wall_ms")
    cpu_short, cpu_long = median_metric(short, "agent_cpu_ms"), median_metric(long, "agent_cpu_ms")
    tokens_short, tokens_long = median_metric(short, "output_tokens"), median_metric(long, "output_tokens")
    cpu_per_token_us = (cpu_long - cpu_short) * 1000 / (tokens_long - tokens_short)
    rows = [
        ("per-job overhead of cfexp (job cycle − agent process)", f"{(cycle - agent_wall) / 1000:.3f} s", "<= 0.5 s"),
        ("whole job cycle (median gap between job starts)", f"{cycle / 1000:.3f} s", ""),
        ("  of which the agent process, spawn to exit", f"{agent_wall / 1000:.3f} s", ""),
        ("Python agent startup (exec to ready)", f"{median_metric(short, 'agent_startup_ms'):.0f} ms", "<= 400 ms"),
        ("Python agent peak RSS", f"{median_metric(short, 'agent_peak_rss_mb'):.1f} MB", "<= 60 MB"),
        ("Python agent CPU time per job", f"{cpu_short:.0f} ms", ""),
        ("Python agent CPU per streamed token (slope)", f"{cpu_per_token_us:.0f} us", ""),
    ]
    table = "\n".join(f"| {name} | {value} | {target} |" for name, value, target in rows)
    body = f"""{machine_line()},
`python benchmarks/overhead.py --jobs {args.jobs}`: one multirun of {args.jobs} jobs
(`scenario=single_inference num_predict={args.short}`) and one of {len(long)} jobs
(`num_predict={args.long}`) on `backend=sim` with `time_scale=0` (no simulated latency),
`topology.lifecycle=per_sweep` (the server is reused). Medians over the jobs.

| measure | value | target |
|---|---|---|
{table}
"""
    write_section(args.out, "overhead", "Per-job overhead and the Python agent", body)


if __name__ == "__main__":
    main()
