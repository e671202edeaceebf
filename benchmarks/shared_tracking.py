"""A 200-job sweep over 2 local worker processes into a PostgreSQL-backed MLflow server.

What it measures: how many jobs per minute cfexp completes when its jobs run
in two worker processes at once and every run goes over HTTP to a shared
``mlflow server`` on PostgreSQL (artifacts uploaded through the server), and
whether any run is lost or written twice.

Set-up (as in tests/shared_tracking/): a throwaway PostgreSQL cluster and
``mlflow server --workers 2`` on it, both started here and stopped at the
end. The sweep: ``--jobs`` jobs on the simulator (``time_scale=0.02``,
``scenario=single_inference num_predict=8``, one ``repetition`` value each,
so every job's config is distinct), over two workers:

- ``--launcher ray_local`` (default): one sweep, ``hydra/launcher=ray_local``
  with ``num_cpus=2``: Ray runs two jobs at a time, in two worker processes;
- ``--launcher processes``: two ``python -m cfexp -m`` processes at once,
  each running half of the jobs (two sweeps, two parent runs).

Not ``hydra/launcher=submitit_local``: submitit's local executor starts every
job it is given at once (``array_parallelism`` is a SLURM setting it
ignores), so two at a time needs ``hydra.sweeper.max_batch_size=2``, and
then each job is a fresh Python process (imports, a server of its own) and
each batch waits for its slower job: in a 10-job check on this machine it
ran ~5 jobs per minute against ~28 for Ray's two reused worker processes.

Checks, from the server and from PostgreSQL itself: FINISHED child runs
under the parent(s) == jobs, one per repetition value, each with its
artifacts; the ``runs`` table holds jobs + parents rows.

Usage: ``python benchmarks/shared_tracking.py [--jobs 200] [--launcher ray_local]``.
The results replace the section between the markers in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import REPO, machine_line, write_section
from mlflow.tracking import MlflowClient

sys.path.insert(0, str(REPO))  # the services of tests/shared_tracking/
from tests.shared_tracking.services import MlflowServer, Postgres, mlflow_server, postgres_cluster

OUT = REPO / "docs" / "benchmarks.md"
EXPERIMENT = "shared_tracking"
JOB = ("backend=sim", "backend.settings.time_scale=0.02", "scenario=single_inference", "num_predict=8")
LAUNCHERS = {
    # Two jobs at a time: Ray's num_cpus=2, one CPU per job (conf/hydra/launcher/ray_local.yaml).
    "ray_local": ("hydra/launcher=ray_local", "hydra.launcher.ray.init.num_cpus=2", "hydra.launcher.ray.remote.num_cpus=1"),
    "processes": (),
}


@dataclass
class Outcome:
    wall_s: float
    span_s: float
    jobs: int
    finished: int
    distinct_configs: int
    with_artifacts: int
    parents: int
    db_runs: int
    most_at_once: int


def sweep_command(root: Path, server: MlflowServer, repetitions: list[int], launcher: tuple[str, ...]) -> list[str]:
    return [
        sys.executable, "-m", "cfexp", "-m", *JOB, *launcher,
        f"repetition={','.join(str(r) for r in repetitions)}",
        f"tracking.uri={server.url}", f"tracking.experiment={EXPERIMENT}",
        f"paths.root_dir={root}", f"hydra.sweep.dir={root}/multirun",
    ]


class LoadSampler:
    """The 1-minute load average every few seconds while the sweep runs (the machine may be shared)."""

    def __init__(self, period_s: float = 5.0) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period_s,), daemon=True)

    def _run(self, period_s: float) -> None:
        while not self._stop.wait(period_s):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        if not self.samples:
            return "not sampled"
        return f"mean {sum(self.samples) / len(self.samples):.1f}, max {max(self.samples):.1f}"


def run_sweeps(base: Path, server: MlflowServer, jobs: int, launcher: str) -> float:
    """Start the sweep(s), wait; the wall time in seconds."""
    if launcher == "processes":
        halves = [list(range(0, jobs, 2)), list(range(1, jobs, 2))]
        commands = [sweep_command(base / f"worker{i}", server, half, ()) for i, half in enumerate(halves)]
    else:
        commands = [sweep_command(base / "sweep", server, list(range(jobs)), LAUNCHERS[launcher])]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    logs = [base / f"cfexp-{i}.log" for i in range(len(commands))]
    started = time.monotonic()
    processes = []
    for command, log in zip(commands, logs, strict=True):
        with log.open("w") as out:
            processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT))
    try:
        codes = [p.wait() for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    wall_s = time.monotonic() - started
    for code, log in zip(codes, logs, strict=True):
        if code != 0:
            sys.exit(f"a sweep failed (exit {code}):\n{log.read_text()[-3000:]}")
    return wall_s


def count_runs(server: MlflowServer, postgres: Postgres, jobs: int, wall_s: float) -> Outcome:
    client = MlflowClient(tracking_uri=server.url)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, "no experiment on the server"
    runs: list[Any] = list(client.search_runs([experiment.experiment_id], max_results=10000))
    parents = {r.info.run_id for r in runs if r.data.tags.get("cfexp.sweep") == "parent"}
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in parents]
    finished = [r for r in children if r.info.status == "FINISHED"]
    with_artifacts = sum(
        1 for r in finished if (server.artifacts / experiment.experiment_id / r.info.run_id / "artifacts" / "records.jsonl").exists()
    )
    span_ms = max(r.info.end_time for r in children) - min(r.info.start_time for r in children)
    return Outcome(
        wall_s=wall_s,
        span_s=span_ms / 1000,
        jobs=jobs,
        finished=len(finished),
        distinct_configs=len({r.data.params["repetition"] for r in finished}),
        with_artifacts=with_artifacts,
        parents=len(parents),
        db_runs=rows_in_runs_table(postgres),
        most_at_once=most_at_once([(r.info.start_time, r.info.end_time) for r in children]),
    )


def most_at_once(intervals: list[tuple[int, int]]) -> int:
    """The largest number of runs open at the same moment (a run ends before one starting then)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def rows_in_runs_table(postgres: Postgres) -> int:
    """The runs PostgreSQL holds, counted in the database itself (not through MLflow)."""
    import psycopg2

    connection = psycopg2.connect(host="127.0.0.1", port=postgres.port, user="postgres", dbname="mlflow")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM runs WHERE lifecycle_stage = 'active'")
            row = cursor.fetchone()
            assert row is not None
            return int(row[0])
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--launcher", choices=sorted(LAUNCHERS), default="ray_local")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cfexp-bench-shared-") as tmp:
        base = Path(tmp)
        with postgres_cluster() as postgres:
            store = postgres.create_database("mlflow")
            with mlflow_server(store, base / "server") as server:
                print(f"mlflow server {server.url} on {store}", file=sys.stderr)
                with LoadSampler() as load:
                    wall_s = run_sweeps(base, server, args.jobs, args.launcher)
                outcome = count_runs(server, postgres, args.jobs, wall_s)

    ok = (
        outcome.finished == outcome.distinct_configs == outcome.with_artifacts == args.jobs
        and outcome.db_runs == args.jobs + outcome.parents
    )
    how = {
        "ray_local": "one sweep, `hydra/launcher=ray_local` with `num_cpus=2` (two Ray worker processes, one job each at a time)",
        "processes": "two `python -m cfexp -m` processes at once, each with half of the jobs",
    }[args.launcher]
    rows = [
        ("jobs per minute, first job start to last job end", f"{outcome.jobs / outcome.span_s * 60:.1f}"),
        ("jobs per minute, whole command (incl. start and stop of the workers)", f"{outcome.jobs / outcome.wall_s * 60:.1f}"),
        ("wall time of the command", f"{outcome.wall_s:.0f} s"),
        ("most jobs running at once (from the runs' start and end times)", f"{outcome.most_at_once}"),
        ("FINISHED child runs under the parent run(s)", f"{outcome.finished} of {outcome.jobs}"),
        ("distinct configs among them (`repetition`)", f"{outcome.distinct_configs}"),
        ("runs with their artifacts in the server's store", f"{outcome.with_artifacts}"),
        ("rows in PostgreSQL's `runs` table (jobs + parents)", f"{outcome.db_runs} (= {outcome.jobs} + {outcome.parents})"),
        ("lost or duplicated runs", "none" if ok else "**yes: see the rows above**"),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    body = f"""{machine_line()},
`python benchmarks/shared_tracking.py --jobs {args.jobs} --launcher {args.launcher}`, run once.
The machine was shared with other test runs at the time: load average during the
sweep {load.summary()} on 2 cores, so the rates are what a busy machine gives, not a ceiling.

A throwaway PostgreSQL {postgres_version()} cluster and `mlflow server --workers 2` on it
(artifacts proxied through the server), both started by the script. {args.jobs} jobs on
`backend=sim` (`time_scale=0.02`, `scenario=single_inference num_predict=8`), one
`repetition` value each, {how}; every run, metric and artifact goes over HTTP to the server.

| measure | value |
|---|---|
{table}
"""
    write_section(args.out, "shared_tracking", "Shared tracking: 2 workers, MLflow server on PostgreSQL", body)
    if not ok:
        sys.exit("runs were lost or duplicated")


def postgres_version() -> str:
    from tests.shared_tracking.services import postgres_bindir

    done = subprocess.run([str(postgres_bindir() / "postgres"), "--version"], capture_output=True, text=True, check=False)
    found = re.search(r"\d+\.\d+", done.stdout) if done.returncode == 0 else None
    return found.group(0) if found else "(unknown version)"


if __name__ == "__main__":
    main()
