"""What cfexp costs around its jobs: the gap between job starts, the sweep's start and its exit.

The sweep is the cheapest one cfexp runs: Rust tokio agents (the process
lives ~16 ms) on the simulator with no simulated latency, the server reused
(``topology.lifecycle=per_sweep``), ``--jobs`` repetitions. In it, nearly all of
a job's time is cfexp's own. Measured from outside, per sweep:

- **per-job cost**: the median gap between consecutive jobs' MLflow start times;
- **sweep start**: from launching ``python -m cfexp`` to the first request the
  server received (its ground-truth record, ``CLOCK_MONOTONIC`` as here);
- **exit**: from the end of the last job's run (its MLflow end time) to the
  command's exit.

Each sweep writes into a store that already exists (created by one small sweep
first), as every sweep but a store's first does. ``--before DIR`` measures
another tree of cfexp too (e.g. ``git archive main | tar -x -C DIR``), its
sweeps interleaved with this tree's, so both meet the same machine load.
One more sweep of this tree runs under ``_phases.py`` (a clock on each step
of a job) for the breakdown of where a job's time goes.

``--default-runs N`` also times the default experiment (``python -m cfexp``:
the embedded Gemma 3 270M on llama.cpp, a single run) N times per tree, from
its launch to the server's first request: there the model server's start
(seconds) is what overlaps the tracking store's opening.

Usage: ``python benchmarks/job_cost.py [--jobs 12] [--repeats 3] [--default-runs 3] [--before DIR] [--out docs/benchmarks.md]``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import REPO, machine_line, write_section
from _phases import PHASES
from mlflow.tracking import MlflowClient

OUT = REPO / "docs" / "benchmarks.md"
SWEEP = [
    "backend=sim", "backend.settings.time_scale=0", "backend.settings.jitter_cv=0",
    "scenario=single_inference", "runtime=tokio",
]
TARGETS = {"gap_s": 0.2, "start_s": 2.0, "exit_s": 0.5}


@dataclass
class SweepTimes:
    gap_s: float  # median gap between job starts
    start_s: float  # launch -> the server's first request
    exit_s: float  # the last job's run ended -> the command exited
    load: float  # 1-minute load average when it ended


def command(code: Path, root: Path, name: str, jobs: int, runner: list[str]) -> list[str]:
    return [
        sys.executable, *runner, "-m", *SWEEP, f"repetition={','.join(str(i) for i in range(jobs))}",
        f"tracking.experiment={name}", f"paths.root_dir={root}", f"hydra.sweep.dir={root}/multirun/{name}",
    ]


def environment(code: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(code)  # the tree measured, whatever the venv's editable install points to
    return env


def run_sweep(code: Path, root: Path, name: str, jobs: int, runner: list[str] | None = None) -> SweepTimes:
    argv = command(code, root, name, jobs, runner or ["-m", "cfexp"])
    t_launch_ns = time.monotonic_ns()
    done = subprocess.run(argv, cwd=code, env=environment(code), capture_output=True, text=True)
    t_exit_ns, t_exit_wall_s = time.monotonic_ns(), time.time()
    if done.returncode != 0:
        sys.exit(f"the sweep {name} in {code} failed:\n{done.stderr[-3000:]}")
    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    runs = sorted(
        (r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("mlflow.parentRunId")),
        key=lambda r: r.info.start_time,
    )
    gaps_ms = [b.info.start_time - a.info.start_time for a, b in zip(runs, runs[1:])]
    first_ns = first_request_ns(root / "multirun" / name / "servers" / "server0_ground_truth.jsonl")
    last_end_s = max(r.info.end_time for r in runs) / 1000
    times = SweepTimes(
        gap_s=statistics.median(gaps_ms) / 1000,
        start_s=(first_ns - t_launch_ns) / 1e9,
        exit_s=t_exit_wall_s - last_end_s,
        load=os.getloadavg()[0],
    )
    print(f"{code.name or code}: {name}: {times} (whole sweep {(t_exit_ns - t_launch_ns) / 1e9:.1f} s)", file=sys.stderr)
    return times


def first_request_ns(ground_truth: Path) -> int:
    """When the server received its first request (its ground-truth log, CLOCK_MONOTONIC)."""
    return min(json.loads(line)["t_received_ns"] for line in ground_truth.read_text().splitlines() if line)


def run_default(code: Path, root: Path, name: str) -> float:
    """The default experiment (a single run on the embedded model): launch -> its server's first request, s."""
    run_dir = root / "runs" / name
    argv = [sys.executable, "-m", "cfexp", f"paths.root_dir={root}", f"hydra.run.dir={run_dir}"]
    t_launch_ns = time.monotonic_ns()
    done = subprocess.run(argv, cwd=code, env=environment(code), capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the default run {name} in {code} failed:\n{done.stderr[-3000:]}")
    start_s = (first_request_ns(run_dir / "servers" / "server0_ground_truth.jsonl") - t_launch_ns) / 1e9
    print(f"{code.name or code}: default run {name}: start {start_s:.2f} s", file=sys.stderr)
    return start_s


def prepare(code: Path, root: Path) -> None:
    """The store exists before the measured sweeps (one small sweep), and the Rust agent is built."""
    run_sweep(code, root, "prepare", 2)


def breakdown(code: Path, root: Path, jobs: int) -> tuple[list[tuple[str, float, float]], list[tuple[str, float]]]:
    """(per-job phases: label, median ms per job, calls per job), (start and end phases: label, ms)."""
    events_file = root / "phases.jsonl"
    runner = [str(REPO / "benchmarks" / "_phases.py"), str(events_file)]
    run_sweep(code, root, "phases", jobs, runner)
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    starts = sorted(e["t0_ns"] for e in events if e["phase"].startswith("job ("))
    per_job: dict[str, list[tuple[float, int]]] = collections.defaultdict(list)
    order = [label for label, _, _ in PHASES]  # the order _phases.py lists them in: a job's steps in turn
    # Each job from its start to the next one's (the first and last jobs are left out: set-up, tear-down).
    for begin, end in zip(starts[1:-2], starts[2:-1]):
        total: collections.Counter[str] = collections.Counter()
        calls: collections.Counter[str] = collections.Counter()
        for event in events:
            if begin <= event["t0_ns"] < end:
                total[event["phase"]] += event["dt_ns"] / 1e6
                calls[event["phase"]] += 1
        per_job["gap between job starts"].append(((end - begin) / 1e6, 1))
        for phase in order:
            per_job[phase].append((total[phase], calls[phase]))
    rows = [("gap between job starts", statistics.median(t for t, _ in per_job["gap between job starts"]), 1.0)]
    for phase in order:
        if phase.startswith(("start:", "end:", "launch", "servers stopped")) or phase not in per_job:
            continue
        median_ms = statistics.median(t for t, _ in per_job[phase])
        if median_ms >= 0.5:
            rows.append((phase, median_ms, statistics.median(c for _, c in per_job[phase])))
    launch = next(e["t0_ns"] for e in events if e["phase"] == "launch")
    once = [("launch -> first job starts", (starts[0] - launch) / 1e6)]
    once += [(e["phase"], e["dt_ns"] / 1e6) for e in events
             if e["phase"].startswith(("start:", "end:")) or (e["phase"].startswith("servers stopped") and e["dt_ns"] > 1e6)]
    return rows, once


def summary(times: list[SweepTimes]) -> dict[str, float]:
    return {key: statistics.median(getattr(t, key) for t in times) for key in ("gap_s", "start_s", "exit_s")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another tree of cfexp, measured interleaved with this one")
    parser.add_argument("--default-runs", type=int, default=0, help="also time N default runs per tree")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    trees = {"after": REPO} if args.before is None else {"before": args.before.resolve(), "after": REPO}
    results: dict[str, list[SweepTimes]] = {label: [] for label in trees}
    loads = []
    with tempfile.TemporaryDirectory(prefix="cfexp-jobcost-") as tmp:
        roots = {label: Path(tmp) / label for label in trees}
        for label, code in trees.items():
            prepare(code, roots[label])
        for repeat in range(args.repeats):
            for label, code in trees.items():
                results[label].append(run_sweep(code, roots[label], f"sweep{repeat}", args.jobs))
                loads.append(os.getloadavg()[0])
        default_starts: dict[str, list[float]] = {label: [] for label in trees}
        for repeat in range(args.default_runs):
            for label, code in trees.items():
                default_starts[label].append(run_default(code, roots[label], f"default{repeat}"))
                loads.append(os.getloadavg()[0])
        rows, once = breakdown(REPO, roots["after"], args.jobs)
        shutil.rmtree(tmp, ignore_errors=True)

    medians = {label: summary(times) for label, times in results.items()}
    names = {"gap_s": "per-job cost: median gap between job starts",
             "start_s": "sweep start: launch to the server's first request",
             "exit_s": "exit: the last job's run ended to the command's exit"}
    # On a noisy machine the ratio within one run says more than either number (the pairs ran interleaved).
    ratio = args.before is not None
    header = ("| measure | " + " | ".join(trees) + (" | after / before" if ratio else "") + " | target |\n|---|"
              + "---|" * (len(trees) + 1 + ratio))
    lines = [header] + [
        f"| {names[key]} | " + " | ".join(f"{medians[label][key]:.3f} s" for label in trees)
        + (f" | {medians['after'][key] / medians['before'][key]:.2f}" if ratio else "") + f" | <= {target} s |"
        for key, target in TARGETS.items()
    ]
    if args.default_runs:
        medians_default = {label: statistics.median(starts) for label, starts in default_starts.items()}
        lines.append(
            "| default experiment (`python -m cfexp`, embedded model) start: launch to the server's first request | "
            + " | ".join(f"{medians_default[label]:.3f} s" for label in trees)
            + (f" | {medians_default['after'] / medians_default['before']:.2f}" if ratio else "") + " | none |"
        )
    every = "; ".join(
        f"{label}: " + ", ".join(f"{t.gap_s:.3f}/{t.start_s:.2f}/{t.exit_s:.2f}" for t in times)
        for label, times in results.items()
    )
    default_every = "" if not args.default_runs else " Each default run's start (seconds): " + "; ".join(
        f"{label}: " + ", ".join(f"{start:.2f}" for start in starts) for label, starts in default_starts.items()
    ) + f" ({args.default_runs} per tree, interleaved)."
    phase_lines = "\n".join(f"| {label} | {ms:.1f} ms | {calls:g} |" for label, ms, calls in rows)
    once_lines = "\n".join(f"| {label} | {ms:.0f} ms |" for label, ms in once)
    shared = (" (the machine was shared: the numbers are noisy, the before/after pairs ran interleaved)"
              if max(loads) > 1.5 else "")
    flags = f"--jobs {args.jobs} --repeats {args.repeats}" + (f" --default-runs {args.default_runs}" if args.default_runs else "")
    body = f"""{machine_line()}; load average during the runs {min(loads):.1f}–{max(loads):.1f}{shared}.
`python benchmarks/job_cost.py {flags}{' --before <main>' if args.before else ''}`:
sweeps of {args.jobs} jobs `{' '.join(SWEEP)} repetition=0,…,{args.jobs - 1}` (server reused), each into
a store that already exists; medians over {args.repeats} sweeps per tree.

{chr(10).join(lines)}

Each sweep (gap / start / exit, seconds): {every}.{default_every}

Where a job's time goes (this tree, one sweep under `benchmarks/_phases.py`, a clock on each step; medians
over the jobs but the first and the last two; indented steps are part of the one above; the `tracking writer`
line (the harness's side of each call to the tracking writer process), or with `CFEXP_TRACKING_WRITER=0` the
`mlflow:` and `sqlite commit` lines, are part of the MLflow steps):

| step | per job | calls |
|---|---|---|
{phase_lines}

The sweep's start and end in that run:

| step | time |
|---|---|
{once_lines}
"""
    write_section(args.out, "job_cost", "Per-job cost, sweep start and exit (Rust tokio on the simulator)", body)


if __name__ == "__main__":
    main()
