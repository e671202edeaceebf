"""Run ``python -m cfexp`` with a clock on each step of a job: where the per-job time goes.

    python benchmarks/_phases.py EVENTS.jsonl -m backend=sim …

Before cfexp starts, the functions named in :data:`PHASES` are wrapped so that
each call appends ``{"phase", "t0_ns", "dt_ns"}`` to EVENTS.jsonl (in memory,
written at exit). Wall-clock timestamps, not a profiler: the numbers are what a
sweep really spends, with no tracing overhead on the code in between. SQLite's
commits are counted apart (each one waits for the disk).

Only the benchmark scripts use this; cfexp itself knows nothing of it.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import json
import runpy
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# (phase label, module, attribute path in it). A function imported by name into
# another module is wrapped where it is called from (the module that uses it).
PHASES: list[tuple[str, str, str]] = [
    ("job (Hydra's run_job: set-up, .hydra files, callbacks, task)", "hydra.core.utils", "run_job"),
    ("compose the job's config (Hydra)", "hydra._internal.config_loader_impl", "ConfigLoaderImpl.load_sweep_config"),
    ("compose the job's config (from the shared defaults)", "hydra_plugins.cfexp_basic_sweeper._compose", "ReusingConfigLoader.load_sweep_config"),
    ("Hydra's job logging set-up", "hydra.core.utils", "configure_log"),
    ("Hydra writes .hydra/*.yaml", "hydra.core.utils", "_save_config"),
    ("callback on_job_start", "cfexp.app.callback", "CfexpCallback.on_job_start"),
    ("callback on_job_end (progress line)", "cfexp.app.callback", "CfexpCallback.on_job_end"),
    ("task (cfexp.app.task.run_job)", "cfexp.app.task", "run_job"),
    ("config validation (to_settings)", "cfexp.app.task", "to_settings"),
    ("settings as a tree (params)", "cfexp.app.task", "settings_tree"),
    ("secrets kept out of files", "cfexp.app.task", "keep_secrets_out_of_files"),
    ("MLflow run start (JobRun.start)", "cfexp.tracking.jobs", "JobRun.start"),
    ("server from the pool (acquire)", "cfexp.app.task", "POOL.acquire"),
    ("provenance tags (run_tags)", "cfexp.app.task", "run_tags"),
    ("server settings tags", "cfexp.app.task", "server_settings_tags"),
    ("measure (warm-up, agent, records, metrics)", "cfexp.app.task", "measure"),
    ("  warm-up call", "cfexp.app.measure", "warm_up"),
    ("  agent command (Rust build check)", "cfexp.app.measure", "agent_command"),
    ("  agent process (spawn to reaped)", "cfexp.app.measure", "run_agent"),
    ("  records read", "cfexp.app.measure", "read_records"),
    ("  records and texts written", "cfexp.app.measure", "artifacts.write_records"),
    ("  call metrics", "cfexp.app.measure", "_run_metrics"),
    ("  system sampler start", "cfexp.app.measure", "_sampler"),
    ("server logs copied", "cfexp.app.task", "artifacts.copy_server_logs"),
    ("MLflow metrics + tags (log_metrics)", "cfexp.tracking.jobs", "JobRun.log_metrics"),
    ("MLflow artifacts (log_job_artifacts)", "cfexp.tracking.jobs", "JobRun.log_job_artifacts"),
    ("MLflow run end (finish)", "cfexp.tracking.jobs", "JobRun.finish"),
    ("status file", "cfexp.app.task", "status.write"),
    ("mlflow: create_run", "cfexp.tracking.store", "MlflowTracker.start_run"),
    ("mlflow: log_batch", "cfexp.tracking.store", "MlflowTracker.log_batch"),
    ("mlflow: log_artifact(s)", "cfexp.tracking.store", "MlflowTracker.log_artifact"),
    ("mlflow: set_terminated", "cfexp.tracking.store", "MlflowTracker.end_run"),
    ("start: callback on_multirun_start", "cfexp.app.callback", "CfexpCallback.on_multirun_start"),
    ("start: open the tracking store", "cfexp.tracking.store_setup", "open_client"),
    ("start: MLflow imported, its schema version looked up", "cfexp.tracking.store_setup", "_head_revision"),
    ("start: MLflow client", "cfexp.tracking.store_setup", "_client"),
    ("start: parent run", "cfexp.app.callback", "start_parent"),
    ("start: plan the sweep", "hydra_plugins.cfexp_basic_sweeper._impl", "plan_sweep"),
    ("start: check that every job composes", "hydra_plugins.cfexp_basic_sweeper.cfexp_basic_sweeper", "CfexpBasicSweeper.validate_batch_is_legal"),
    ("start: server start", "cfexp.backends.cfexp_server", "CfexpServerBackend.start"),
    ("end: callback on_multirun_end", "cfexp.app.callback", "CfexpCallback.on_multirun_end"),
    ("servers stopped (the pool closed)", "cfexp.backends.pool", "ServerPool.close"),
    ("sqlite commit (waits for the disk)", "sqlalchemy.engine.default", "DefaultDialect.do_commit"),
    # The store held by the tracking writer process (cfexp.tracking.writer): the harness's side of it.
    ("tracking writer: a call (sent, answered)", "cfexp.tracking.writer", "TrackingWriter.call"),
    ("start: open the tracking store (in the writer, after its MLflow import)", "cfexp.tracking.writer", "WriterTracker.__init__"),
]

_EVENTS: list[dict[str, Any]] = []


def _timed(label: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.monotonic_ns()
        try:
            return function(*args, **kwargs)
        finally:
            _EVENTS.append({"phase": label, "t0_ns": t0, "dt_ns": time.monotonic_ns() - t0})

    return wrapper


def _wrap(label: str, module_name: str, path: str) -> None:
    owner: Any = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    if isinstance(original, (staticmethod, classmethod)):
        setattr(owner, name, type(original)(_timed(label, original.__func__)))
    else:
        setattr(owner, name, _timed(label, original))


def main() -> None:
    out = Path(sys.argv[1])
    t_launch_ns = time.monotonic_ns()
    for label, module_name, path in PHASES:
        _wrap(label, module_name, path)

    def write() -> None:
        with out.open("w") as file:
            file.write(json.dumps({"phase": "launch", "t0_ns": t_launch_ns, "dt_ns": 0}) + "\n")
            for event in _EVENTS:
                file.write(json.dumps(event) + "\n")

    atexit.register(write)
    sys.argv = ["cfexp", *sys.argv[2:]]
    runpy.run_module("cfexp", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
