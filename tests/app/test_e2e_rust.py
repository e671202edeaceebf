"""End to end: the Rust agents through `python -m cfexp`, beside the Python agent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.app.test_e2e_sim import FAST_SIM, leftover_processes, run_cfexp, runs_of

pytestmark = pytest.mark.slow


def record_keys(job_dir: Path) -> dict[str, set[str]]:
    """kind -> the set of fields of the agent's raw records of that kind."""
    keys: dict[str, set[str]] = {}
    for line in (job_dir / "records.raw.jsonl").read_text().splitlines():
        record = json.loads(line)
        keys.setdefault(record["kind"], set()).update(record)
    return keys


def test_every_runtime_runs_and_writes_the_same_record_schema(tmp_path: Path) -> None:
    runtimes = ["asyncio", "uvloop", "tokio", "tokio_localset", "smol", "smol_1kb", "async_std"]
    done = run_cfexp(
        tmp_path, "-m", *FAST_SIM, "scenario=single_agent", "num_predict=8", f"runtime={','.join(runtimes)}",
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {r.data.tags["runtime"]: r for r in runs_of(tmp_path) if r.data.tags.get("mlflow.parentRunId")}
    assert sorted(runs) == sorted(runtimes)
    for runtime, run in runs.items():
        rust = runtime not in ("asyncio", "uvloop")
        assert run.info.status == "FINISHED"
        assert run.data.tags["language"] == ("rust" if rust else "python")
        assert run.data.tags["runtime_legacy"] == str(runtime == "async_std").lower()
        assert run.data.metrics["output_tokens"] == 8 and run.data.metrics["ingest_files"] > 0
        assert run.data.metrics["agent_peak_rss_mb"] > 0 and run.data.metrics["agent_startup_ms"] > 0
        if rust:
            assert int(run.data.tags["rust_binary_bytes"]) > 0 and run.data.tags["rustc"].startswith("rustc")
    # One record schema: the same fields for every kind, whatever the language.
    schemas = [record_keys(tmp_path / "multirun" / str(i)) for i in range(len(runtimes))]
    assert all(schema == schemas[0] for schema in schemas), schemas
    assert leftover_processes(tmp_path) == []


def test_the_language_is_the_runtimes_and_cannot_be_set_apart(tmp_path: Path) -> None:
    """A runtime implies its language (cfexp.vocab.Runtime): there is no language key to contradict it."""
    done = run_cfexp(tmp_path, *FAST_SIM, "language=python", "runtime=tokio")
    assert done.returncode == 2
    assert "language" in done.stderr and "Traceback" not in done.stderr
