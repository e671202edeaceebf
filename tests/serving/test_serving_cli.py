"""The command line: the READY line, settings files, and the exit codes the launcher relies on."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest

from cfexp.serving import EXIT_BAD_SETTINGS, main
from tests.serving.serving_helpers import READY, run_serving, start_server

pytestmark = pytest.mark.slow


def _run_to_exit(args: list[str], tmp_path: Path) -> tuple[int, str, str]:
    log = tmp_path / "server.log"
    process = run_serving(args, log)
    stdout, _ = process.communicate(timeout=60)
    return process.returncode, stdout, log.read_text()


def test_ready_line_then_health_check_then_sigterm(tmp_path: Path) -> None:
    settings = tmp_path / "sim.json"
    settings.write_text(json.dumps({"time_scale": 0.001, "model_name": "tiny:1b"}))
    server = start_server("sim", {}, tmp_path / "a")  # defaults, inline JSON
    try:
        assert httpx.get(f"{server.url}/api/version", timeout=10).json()["engine"] == "sim"
    finally:
        assert server.stop() == 0
    process = run_serving(
        ["--engine", "sim", "--port", "0", "--settings", f"@{settings}"], tmp_path / "b.log"
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith(READY) and line.endswith("\n")
    port = int(line[len(READY) :])
    tags = httpx.get(f"http://127.0.0.1:{port}/api/tags", timeout=10).json()
    assert tags["models"][0]["name"] == "tiny:1b"
    process.terminate()
    assert process.wait(20) == 0
    assert process.stdout.read() == ""  # exactly one line on stdout
    process.stdout.close()


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ('{"n_ctx": "big"}', "<n_ctx='big'>: expected a whole number of tokens"),
        ('{"decode_speed": 3}', "unknown sim setting <decode_speed=3>: allowed keys are"),
        ('{"faults": {"fail_status": 404}}', "<fail_status=404>: expected null, 500, 502, 503 or 504"),
        ('{"n_ctx": 2048', "--settings is not valid JSON"),
        ("[1]", "must be a JSON object"),
    ],
)
def test_bad_settings_exit_2_naming_the_key(settings: str, expected: str, tmp_path: Path) -> None:
    code, stdout, log = _run_to_exit(["--engine", "sim", "--settings", settings], tmp_path)
    assert code == 2 and stdout == ""
    assert expected in log


def test_port_in_use_exits_3(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, stdout, log = _run_to_exit(["--engine", "sim", "--port", str(port)], tmp_path)
    assert code == 3 and stdout == ""
    assert f"cannot bind <host=127.0.0.1 port={port}>" in log
    assert len(log.strip().splitlines()) == 1


@pytest.mark.llamacpp
def test_missing_model_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    code, _, log = _run_to_exit(
        ["--engine", "llamacpp", "--settings", json.dumps({"model_path": str(missing)})], tmp_path
    )
    assert code == 2
    assert f"<model_path={missing}>" in log


def test_unknown_engine_exits_2(tmp_path: Path) -> None:
    code, _, log = _run_to_exit(["--engine", "vllm"], tmp_path)
    assert code == 2 and "invalid choice" in log


def test_main_returns_the_exit_code() -> None:
    assert main(["--engine", "sim", "--settings", '{"slots": 0}']) == EXIT_BAD_SETTINGS
