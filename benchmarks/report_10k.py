"""Time `cfexp report` over 10,000 runs; write the result into docs/benchmarks.md.

The store is made fast: MLflow creates the SQLite schema and the experiment
(and one sweep parent run through its client), then the 10,000 child runs are
inserted with direct SQL (sqlite3) into MLflow's own tables (``runs``,
``params``, ``tags``, ``metrics``, ``latest_metrics``): logging them through
MlflowClient.log_batch would take far longer than the report itself.

    python benchmarks/report_10k.py                   # ~1-2 minutes on 2 cores
    python benchmarks/report_10k.py --store /tmp/s10k # make the store there once, reuse it after
    python benchmarks/report_10k.py --repeat 5 --before /tmp/base   # also time another checkout's cfexp

``--store DIR`` keeps the store (a later run with the same DIR reuses it, for
profiling ``cfexp report`` on it); ``--repeat N`` times the report N times
(medians); ``--before DIR`` times the cfexp of another checkout (e.g. the
previous commit, ``git archive HEAD~1 cfexp | tar -x -C DIR``) alternately
with this one, on the same store, for a before/after ratio measured under
the same load; ``--no-docs`` prints the numbers without rewriting
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import REPO, machine_line, write_section
from mlflow.tracking import MlflowClient

RUNS = 10_000
EXPERIMENT = "bench10k"
# 2 runtimes x 5 gpu_layers x 5 ctx x 2 options_modes = 100 configs x 100 repetitions.
GRID = list(itertools.product(
    (("python", "asyncio"), ("rust", "tokio")), (40, 60, 80, 120, 999), (256, 512, 1024, 2048, 4096),
    ("configured", "server_defaults"),
))
METRICS = ("ttft_ms", "tpot_ms", "throughput_tok_s", "e2e_ms", "agent_startup_ms", "agent_peak_rss_mb",
           "agent_cpu_us_per_token", "output_tokens", "calls_total", "calls_failed", "server_prompt_eval_ms",
           "itl_ms_mean", "ingest_files", "ingest_bytes", "report_quality_overall", "agent_wall_ms")


def make_store(root: Path) -> str:
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    (root / "mlruns").mkdir(parents=True)
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
    parent = client.create_run(experiment_id, run_name="sweep", tags={"cfexp.sweep": "parent"}).info.run_id
    client.set_terminated(parent, "FINISHED")
    rng = random.Random(0)
    now = int(time.time() * 1000)
    runs, params, tags, metrics = [], [], [], []
    for i in range(RUNS):
        (language, runtime), gpu, ctx, mode = GRID[i % len(GRID)]
        run_id = uuid.UUID(int=rng.getrandbits(128)).hex
        status = "FAILED" if i % 500 == 7 else "FINISHED"
        runs.append((run_id, f"run {i}", "UNKNOWN", "", "", "bench", status, now + i, now + i + 1000, "",
                     "active", (root / "artifacts" / run_id).as_uri(), int(experiment_id), None))
        for key, value in {
            "language": language, "runtime.name": runtime,
            "gpu_layers": gpu, "ctx": ctx, "temperature": 0.8, "options_mode": mode, "repetition": i // len(GRID),
            "scenario.name": "single_agent", "topology.name": "single", "backend.name": "sim",
            "num_predict": 128, "top_p": 0.9, "top_k": 40, "paths.root_dir": str(root),
        }.items():
            params.append((key, str(value), run_id))
        for key, value in {
            "mlflow.parentRunId": parent, "provenance": "simulated", "language": language, "runtime": runtime,
            "host": "bench", "backend": "sim", "backend_version": "0.12.0", "model": "gemma3:270m",
            "model_digest": "simulated", "code_version": "bench", "env.cpu_count": "2",
        }.items():
            tags.append((key, value, run_id))
        tags.append(("sweep.position", str(i), run_id))
        speed = (1.3 if language == "rust" else 1.0) * (1.05 if mode == "configured" else 1.0)
        for key in METRICS:
            scale = 100.0 * speed if "throughput" in key else 50.0 / speed
            if key.startswith("report_quality"):  # a share in [0, 1], as the catalogue bounds it
                scale = 0.5
            value = rng.lognormvariate(0, 0.1) * scale
            metrics.append((key, value, now, 0, 0, run_id))
    with sqlite3.connect(root / "mlruns" / "mlflow.db") as db:
        db.executemany("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, "
                       "status, start_time, end_time, source_version, lifecycle_stage, artifact_uri, "
                       "experiment_id, deleted_time) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", runs)
        db.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?,?,?)", params)
        db.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?,?,?)", tags)
        db.executemany("INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
                       "VALUES (?,?,?,?,?,?)", metrics)
        db.executemany("INSERT INTO metrics (key, value, timestamp, step, is_nan, run_uuid) "
                       "VALUES (?,?,?,?,?,?)", metrics)
    return uri


def time_report(uri: str, out: Path, checkout: Path) -> tuple[float, float, float]:
    """Wall time (s), CPU time (s) and peak RSS (MB) of one `cfexp report` subprocess, with ``checkout``'s cfexp."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PYTHONPATH")}
    with tempfile.TemporaryFile("w+") as stderr:
        started = time.monotonic()
        # -m with cwd=checkout: that checkout's cfexp is imported first.
        child = subprocess.Popen(
            [sys.executable, "-m", "cfexp.cli", "report", "--experiment", EXPERIMENT, "--tracking-uri", uri,
             "--out", str(out)], cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        # wait4: this child's own peak RSS (RUSAGE_CHILDREN would be the largest of every report so far).
        _, status, usage = os.wait4(child.pid, 0)
        wall_s = time.monotonic() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            stderr.seek(0)
            sys.exit(f"cfexp report ({checkout}) failed:\n{stderr.read()[-3000:]}")
    return wall_s, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


# Times the report's stages in one process (the same code as `cfexp report`, its functions wrapped with
# clocks); prints them as JSON. Interpreter start-up (~0.05 s) is not in it.
_STAGES = """
import json, sys, time
from pathlib import Path
started = time.perf_counter()
import cfexp.report.writer as w
from cfexp.report import load
spent = {"imports: pandas, numpy, scipy.special, cfexp": time.perf_counter() - started}
def clocked(module, name, stage):
    function = getattr(module, name)
    def timed(*args, **kwargs):
        begun = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[stage] = spent.get(stage, 0.0) + time.perf_counter() - begun
    setattr(module, name, timed)
clocked(load, "search_runs", "read: SQL queries into one frame")
clocked(w, "_csv", "write CSVs")
# The figures are drawn by a forked child (cfexp/report/aside.py) meanwhile: what the report process
# spends on them is its wait for that child at the end of each section.
draw_aside = w.draw_aside
def clocked_aside(draw):
    figures = draw_aside(draw)
    def waited():
        begun = time.perf_counter()
        try:
            return figures()
        finally:
            spent[WAIT] = spent.get(WAIT, 0.0) + time.perf_counter() - begun
    return waited
WAIT = "figures: waiting for the figure process (matplotlib's import and drawing, in the child)"
w.draw_aside = clocked_aside
begun = time.perf_counter()
options = w.ReportOptions(experiment=sys.argv[1], tracking_uri=sys.argv[2], out_dir=Path(sys.argv[3]))
runset = w.load_runs(options.tracking_uri, options.experiment)
spent["read: label runs (provenance, designs, configs)"] = (
    time.perf_counter() - begun - spent["read: SQL queries into one frame"])
begun = time.perf_counter()
w.write_report(runset, options, options.out_dir)
spent["statistics, tables, report.md"] = (time.perf_counter() - begun - spent.get(WAIT, 0.0)
                                          - spent["write CSVs"])
spent["total in the process"] = time.perf_counter() - started
print(json.dumps(spent))
"""


def time_stages(uri: str, out: Path) -> dict[str, float]:
    """Seconds per stage of one report (:data:`_STAGES`), in a subprocess with this checkout's cfexp."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PYTHONPATH")}
    done = subprocess.run([sys.executable, "-c", _STAGES, EXPERIMENT, uri, str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"the stage timing failed:\n{done.stderr[-3000:]}")
    stages: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="make the store in this folder, or reuse the one there")
    parser.add_argument("--repeat", type=int, default=3, help="how many times to time the report (default 3)")
    parser.add_argument("--before", type=Path, help="a checkout of the code before, timed alternately")
    parser.add_argument("--no-docs", action="store_true", help="print the numbers, leave docs/benchmarks.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = (args.store or Path(tmp)).resolve()
        made_s = None
        if (root / "mlruns" / "mlflow.db").is_file():
            uri = f"sqlite:///{root}/mlruns/mlflow.db"
        else:
            started = time.monotonic()
            uri = make_store(root)
            made_s = time.monotonic() - started
        after: list[tuple[float, float, float]] = []
        before: list[tuple[float, float, float]] = []
        stages: list[dict[str, float]] = []
        for _ in range(args.repeat):
            if args.before:
                before.append(time_report(uri, Path(tmp) / "before", args.before.resolve()))
            after.append(time_report(uri, Path(tmp) / "report", REPO))
            stages.append(time_stages(uri, Path(tmp) / "stages"))
        lines = len((Path(tmp) / "report" / "report.md").read_text().splitlines())
    body = _section(made_s, after, before, stages, lines)
    if args.no_docs:
        print(body)
    else:
        write_section(REPO / "docs" / "benchmarks.md", "report_10k", "cfexp report over 10,000 runs", body)


def _section(
    made_s: float | None, after: list[tuple[float, float, float]], before: list[tuple[float, float, float]],
    stages: list[dict[str, float]], lines: int,
) -> str:
    wall = statistics.median(w for w, _, _ in after)
    cpu = statistics.median(c for _, c, _ in after)
    spread = f"{min(w for w, _, _ in after):.1f}-{max(w for w, _, _ in after):.1f} s"
    rows = [
        *([f"| make the store (MLflow schema, then direct SQL inserts) | {made_s:.1f} s |"] if made_s else []),
        f"| `cfexp report` wall time, median of {len(after)} (target <= 3 s) | **{wall:.1f} s** ({spread}) |",
        f"| its CPU time (user + system), median | {cpu:.1f} s |",
        f"| its peak RSS, largest of {len(after)} | {max(m for _, _, m in after):.0f} MB |",
    ]
    if before:
        old, old_cpu = statistics.median(w for w, _, _ in before), statistics.median(c for _, c, _ in before)
        rows += [
            f"| the code before, run alternately with it on the same store: wall time, median of {len(before)} | "
            f"{old:.1f} s (ratio before/after {old / wall:.2f}) |",
            f"| the code before: CPU time, median | {old_cpu:.1f} s (ratio {old_cpu / cpu:.2f}) |",
            f"| the code before: peak RSS, largest | {max(m for _, _, m in before):.0f} MB |",
        ]
    rows.append(f"| report.md | {lines} lines |")
    names = list(stages[0])
    breakdown = "\n".join(f"| {name} | {statistics.median(s[name] for s in stages):.2f} s |" for name in names)
    table = "\n".join(rows)
    return f"""
{machine_line()}.

`cfexp report` over **{RUNS:,} runs** (100 configs x 100 repetitions, 16 metrics and 15 params each,
{RUNS // 500} of them FAILED) in a SQLite store made by the script, timed as a subprocess (start-up and
imports included), `python benchmarks/report_10k.py --repeat {len(after)}{" --before DIR" if before else ""}`:

| what | value |
|---|---|
{table}

Where the time goes (one more report per repetition, its stages clocked in the process; medians;
wall-clock seconds):

| stage | time |
|---|---|
{breakdown}

The report reads a SQLite store with one read-only SQL query per table (no mlflow import); with
`--filter` it goes through MLflow's client, which is much slower on this many runs.
"""


if __name__ == "__main__":
    main()
