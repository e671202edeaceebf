"""End to end on llama.cpp's own llama-server (backend=llamaserver), real model,
with the Python agent and a Rust one: both speak the OpenAI API to it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cfexp.backends.model_files import expected_sha256
from tests.app.test_e2e_sim import leftover_processes, run_cfexp, runs_of

pytestmark = [pytest.mark.slow, pytest.mark.llamacpp]


@pytest.mark.parametrize("runtime", ["asyncio", "tokio"])
def test_a_single_inference_job_finishes_on_llama_server(tmp_path: Path, runtime: str) -> None:
    done = run_cfexp(
        tmp_path, "backend=llamaserver", "scenario=single_inference", "num_predict=8", f"runtime={runtime}",
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = runs_of(tmp_path)
    tags, metrics = run.data.tags, run.data.metrics
    assert run.info.status == "FINISHED"
    assert tags["backend"] == "llamaserver" and tags["provenance"] == "measured"
    assert tags["runtime"] == runtime and tags["model_digest"] == "sha256:" + expected_sha256()[1]
    assert tags["backend_version"] not in ("", "unknown", "None")  # llama-server's build_info
    assert tags["launch.threads"] == str(os.cpu_count())  # --threads: 0 resolved, one instance
    assert metrics["calls_total"] == 1 and metrics["calls_failed"] == 0
    assert 0 < metrics["output_tokens"] <= 8 and metrics["ttft_ms"] > 0
    # llama-server's log and the chat template it was given stay in the job's servers folder.
    servers = tmp_path / "run" / "servers"
    assert "listening on http://127.0.0.1:" in (servers / "server0.log").read_text()
    assert "<start_of_turn>" in (servers / "gemma3_chat_template.jinja").read_text()
    assert leftover_processes(tmp_path) == []
