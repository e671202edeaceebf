"""Shared helpers of the benchmark scripts: run a sweep, read its runs, write docs."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]


def sweep(root: Path, name: str, *overrides: str) -> list[Any]:
    """Run `python -m cfexp -m OVERRIDES` into its own store; its child runs, in start order."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    command = [
        sys.executable, "-m", "cfexp", "-m", *overrides,
        f"tracking.experiment={name}", f"paths.root_dir={root}", f"hydra.sweep.dir={root}/multirun/{name}",
    ]
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the sweep {name} failed:\n{done.stderr[-3000:]}")
    print(f"{name}: done in {time.monotonic() - started:.1f} s", file=sys.stderr)
    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    runs = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("mlflow.parentRunId")]
    return sorted(runs, key=lambda r: r.info.start_time)


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile by linear interpolation (numpy's default, without numpy)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_section(out: Path, key: str, title: str, body: str) -> None:
    """Replace (or append) the section between `<!-- key:begin -->` and `<!-- key:end -->`."""
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    section = f"{begin}\n{body.strip()}\n{end}"
    text = out.read_text() if out.exists() else "# Benchmarks\n"
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + f"\n\n## {title}\n\n" + section + "\n"
    out.write_text(text)
    print(section)


def machine_line() -> str:
    import platform

    load = os.getloadavg()[0]
    return (
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.node()} ({os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load average {load:.1f} at the end)"
    )
