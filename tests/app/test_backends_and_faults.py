"""Other backends (Ollama, OpenAI-compatible) and faults, end to end.

The Ollama and OpenAI backends are exercised against `cfexp serve sim`, which
speaks both APIs; a stand-in `ollama` executable on PATH (a script that runs
`cfexp serve sim` on OLLAMA_HOST) lets cfexp's "start `ollama serve` itself"
path run for real.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.test_e2e_sim import FAST_SIM, client_for, leftover_processes, run_cfexp, runs_of

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def sim_server(tmp_path: Path) -> Iterator[str]:
    """`cfexp serve sim` on a free port, serving the model gemma3:270m."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cfexp.cli", "serve", "sim", "--port", str(port), "--settings",
         json.dumps({"time_scale": 0.02, "jitter_cv": 0}), "--ground-truth", str(tmp_path / "gt.jsonl")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert process.stdout is not None
    try:  # stopped even when the test (or this set-up) fails: no orphan server
        ready = process.stdout.readline()
        assert ready.startswith("CFEXP_SERVING_READY"), ready
        yield f"http://127.0.0.1:{port}"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0  # `cfexp serve` stops cleanly on SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


def test_cfexp_serve_answers_both_apis(sim_server: str) -> None:
    assert httpx.get(f"{sim_server}/api/version").status_code == 200
    tags = httpx.get(f"{sim_server}/api/tags").json()
    assert [m["name"] for m in tags["models"]] == ["gemma3:270m"]
    assert httpx.get(f"{sim_server}/v1/models").json()["data"][0]["id"] == "gemma3:270m"


def test_ollama_backend_attaches_to_a_running_server(sim_server: str, tmp_path: Path) -> None:
    done = run_cfexp(tmp_path, "backend=ollama", f"backend.url={sim_server}", "scenario=single_inference", "num_predict=4")
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = runs_of(tmp_path)
    # What answered is cfexp's simulator, whatever the backend setting (docs/methodology.md).
    assert run.info.status == "FINISHED" and run.data.tags["provenance"] == "simulated"


def test_a_model_that_is_not_pulled_says_how_to_pull_it(sim_server: str, tmp_path: Path) -> None:
    done = run_cfexp(tmp_path, "backend=ollama", f"backend.url={sim_server}", "model=gemma3_4b")
    assert done.returncode == 1
    assert "ollama pull gemma3:latest" in done.stderr and "Traceback" not in done.stderr
    (run,) = runs_of(tmp_path)
    assert run.info.status == "FAILED"


def test_cfexp_starts_and_stops_ollama_itself_when_nothing_answers(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ollama"
    # Like `ollama serve`: listen on $OLLAMA_HOST. Records what it was given.
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$@ OLLAMA_HOST=$OLLAMA_HOST OLLAMA_NUM_PARALLEL=$OLLAMA_NUM_PARALLEL" >> {tmp_path}/ollama-calls\n'
        f'exec {sys.executable} -m cfexp.cli serve sim --port "${{OLLAMA_HOST##*:}}" '
        "--settings '{\"time_scale\": 0.02}'\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    port = free_port()
    env_path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    done = run_cfexp(
        tmp_path, "backend=ollama", f"backend.url=http://127.0.0.1:{port}", "scenario=single_inference",
        "num_predict=4", "backend.slots=1", env={"PATH": env_path},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    calls = (tmp_path / "ollama-calls").read_text()
    assert f"serve OLLAMA_HOST=127.0.0.1:{port} OLLAMA_NUM_PARALLEL=1" in calls
    with pytest.raises(httpx.ConnectError):  # the server cfexp started is gone
        httpx.get(f"http://127.0.0.1:{port}/api/version", timeout=2)


def test_ollama_not_installed_gives_the_install_hint(tmp_path: Path) -> None:
    done = run_cfexp(
        tmp_path, "backend=ollama", f"backend.url=http://127.0.0.1:{free_port()}", "backend.binary=no-such-ollama"
    )
    assert done.returncode == 1
    assert "is not on PATH" in done.stderr and "install Ollama" in done.stderr


def test_openai_backend_streams_sse_and_never_records_the_key(sim_server: str, tmp_path: Path) -> None:
    done = run_cfexp(
        tmp_path, "backend=openai", f"backend.url={sim_server}", "backend.api_key=sk-secret-123",
        "scenario=single_inference", "num_predict=4",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = runs_of(tmp_path)
    assert run.data.params["backend.api_key"] == "***"
    assert run.data.metrics["output_tokens"] == 4  # from the usage chunk
    assert "sk-secret-123" not in json.dumps([run.data.params, run.data.tags, run.info.run_name])
    # Nothing uploaded holds it: download every artifact and look.
    downloaded = Path(client_for(tmp_path).download_artifacts(run.info.run_id, "", str(tmp_path / "dl")))
    files = [p for p in downloaded.rglob("*") if p.is_file()]
    assert any(p.name == "overrides.yaml" for p in files)
    for path in files:
        assert "sk-secret-123" not in path.read_text(errors="replace"), path
    # Nor what cfexp itself writes locally (Hydra's own .hydra/ copies are Hydra's).
    assert "sk-secret-123" not in (tmp_path / "run" / "cfexp_status.json").read_text()
    assert "sk-secret-123" not in (tmp_path / "run" / "records.jsonl").read_text()


def test_calls_cut_mid_stream_fail_the_run_with_the_error_kind(tmp_path: Path) -> None:
    done = run_cfexp(
        tmp_path, *FAST_SIM, "scenario=single_inference", "num_predict=16",
        "+backend.settings.faults={drop_after_tokens:3}",
    )
    assert done.returncode == 1
    (run,) = runs_of(tmp_path)
    assert run.info.status == "FAILED" and run.data.metrics["calls_failed"] == 1
    error = Path(client_for(tmp_path).download_artifacts(run.info.run_id, "error.txt", str(tmp_path))).read_text()
    assert "error_kind=incomplete_stream" in error


def test_a_call_timeout_is_recorded_as_such(tmp_path: Path) -> None:
    done = run_cfexp(
        tmp_path, "backend=sim", "backend.settings.time_scale=1.0", "+backend.settings.decode_gpu_tok_s=10",
        "scenario=single_inference", "num_predict=50", "timeouts.call_s=0.5",
    )
    assert done.returncode == 1
    assert "error_kind=timeout" in done.stderr


def test_a_run_timeout_stops_the_agent(tmp_path: Path) -> None:
    started = time.monotonic()
    done = run_cfexp(
        tmp_path, "backend=sim", "backend.settings.time_scale=1.0", "+backend.settings.decode_gpu_tok_s=5",
        "scenario=single_inference", "num_predict=200", "timeouts.run_s=2",
    )
    assert done.returncode == 1
    assert "exceeded timeouts.run_s" in done.stderr
    assert time.monotonic() - started < 120
    assert leftover_processes(tmp_path) == []


def test_a_server_that_does_not_start_is_reported_with_its_log(tmp_path: Path) -> None:
    done = run_cfexp(tmp_path, *FAST_SIM, "+backend.settings.no_such_key=1")
    assert done.returncode == 1
    assert "sim server" in done.stderr and "exited with code 2" in done.stderr
    (run,) = runs_of(tmp_path)
    error = Path(client_for(tmp_path).download_artifacts(run.info.run_id, "error.txt", str(tmp_path))).read_text()
    assert "no_such_key" in error  # the server's own message, from its log


def test_a_multi_line_error_reaches_the_summary_the_error_tag_and_the_report_whole(tmp_path: Path) -> None:
    """The server's own line comes after "Its last log lines:": no place may cut it off there."""
    done = run_cfexp(tmp_path, "-m", *FAST_SIM, "+backend.settings.no_such_key=1", "temperature=0.6,0.8")
    assert done.returncode == 1
    summary = done.stderr.split("job(s) failed:", 1)[1]
    assert "Its last log lines:" in summary and "no_such_key" in summary.split("Its last log lines:", 1)[1]
    children = [r for r in runs_of(tmp_path) if r.data.tags.get("mlflow.parentRunId")]
    assert len(children) == 2
    for run in children:
        tag = run.data.tags["error"]
        assert "Its last log lines:" in tag and "no_such_key" in tag.split("Its last log lines:", 1)[1]
    report = subprocess.run(
        [sys.executable, "-m", "cfexp.cli", "report", "--experiment", "cfexp",
         "--tracking-uri", f"sqlite:///{tmp_path}/mlruns/mlflow.db", "--out", str(tmp_path / "report")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-2000:]
    text = (tmp_path / "report" / "report.md").read_text()
    in_full = text.split("Their errors in full:", 1)[1]
    assert all(f"`{run.info.run_id}`" in in_full for run in children)
    assert "no_such_key" in in_full.split("Its last log lines:", 1)[1]


def test_cfexp_serve_injects_faults_into_an_attached_backend(tmp_path: Path) -> None:
    """`cfexp serve sim --settings '{"faults": …}'`: a standalone faulty server for any client."""
    port = free_port()
    settings = {"time_scale": 0.02, "faults": {"malformed_after_tokens": 2}}
    process = subprocess.Popen(
        [sys.executable, "-m", "cfexp.cli", "serve", "sim", "--port", str(port), "--settings", json.dumps(settings)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert process.stdout is not None
    try:
        assert process.stdout.readline().startswith("CFEXP_SERVING_READY")
        done = run_cfexp(
            tmp_path, "backend=ollama", f"backend.url=http://127.0.0.1:{port}", "scenario=single_inference",
            "num_predict=8",
        )
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stdout.close()
    assert done.returncode == 1 and "error_kind=malformed_stream" in done.stderr, done.stderr[-2000:]
    (run,) = runs_of(tmp_path)
    assert run.info.status == "FAILED" and run.data.metrics["calls_failed"] == 1
