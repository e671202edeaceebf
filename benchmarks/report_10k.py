"""Time `cfexp report` over 10,000 runs; write the result into docs/benchmarks.md.

The store is made fast: MLflow creates the SQLite schema and the experiment
(and one sweep parent run through its client), then the 10,000 child runs are
inserted with direct SQL (sqlite3) into MLflow's own tables (``runs``,
``params``, ``tags``, ``metrics``, ``latest_metrics``): logging them through
MlflowClient.log_batch would take far longer than the report itself.

    python benchmarks/report_10k.py            # ~1-2 minutes on 2 cores
"""

from __future__ import annotations

import itertools
import os
import random
import resource
import sqlite3
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


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.monotonic()
        uri = make_store(root)
        made_s = time.monotonic() - started
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "cfexp.cli", "report", "--experiment", EXPERIMENT, "--tracking-uri", uri,
             "--out", str(root / "report")], cwd=REPO, env=env, capture_output=True, text=True, check=False)
        report_s = time.monotonic() - started
        if done.returncode != 0:
            sys.exit(f"cfexp report failed:\n{done.stderr[-3000:]}")
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        lines = len((root / "report" / "report.md").read_text().splitlines())
    body = f"""
{machine_line()}.

`cfexp report` over **{RUNS:,} runs** (100 configs x 100 repetitions, 16 metrics and 15 params each,
{RUNS // 500} of them FAILED) in a temporary SQLite store, timed as a subprocess (start-up and imports
included), one run of `python benchmarks/report_10k.py`:

| what | value |
|---|---|
| make the store (MLflow schema, then direct SQL inserts) | {made_s:.1f} s |
| `cfexp report` wall time (target <= 10 s) | **{report_s:.1f} s** |
| its peak RSS | {peak_mb:.0f} MB |
| report.md | {lines} lines |

The report reads a SQLite store with one read-only SQL query per table (no mlflow import); with
`--filter` it goes through MLflow's client, which is much slower on this many runs.
"""
    write_section(REPO / "docs" / "benchmarks.md", "report_10k", "cfexp report over 10,000 runs", body)


if __name__ == "__main__":
    main()
