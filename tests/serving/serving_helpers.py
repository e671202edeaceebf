"""Helpers for the serving tests: start the real server process, read its streams."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
READY = "CFEXP_SERVING_READY port="
SIM_MODEL = "cfexp-sim"
LLAMA_MODEL = "gemma3:270m"

#: Fast, deterministic simulator settings for API tests.
FAST_SIM: dict[str, Any] = {"time_scale": 0.001, "jitter_cv": 0.0}


@dataclass
class Server:
    process: subprocess.Popen[str]
    port: int
    ground_truth: Path
    log: Path
    # time.monotonic_ns() just before the process was started, and when its
    # READY line was read: the server's own start lies between the two.
    t_spawned_ns: int = 0
    t_ready_ns: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ground_truth_records(self) -> list[dict[str, Any]]:
        text = self.ground_truth.read_text() if self.ground_truth.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    def wait_ground_truth(self, count: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """The records once there are at least ``count``.

        A record is written after the reply's last byte, so a client can finish
        reading before the server has written it: poll, never read once.
        """
        deadline = time.monotonic() + timeout_s
        while len(records := self.ground_truth_records()) < count:
            assert time.monotonic() < deadline, f"{len(records)} ground-truth records, expected {count}"
            time.sleep(0.01)
        return records

    def ground_truth_for(self, request_ids: list[str], timeout_s: float = 30.0) -> dict[str, dict[str, Any]]:
        """The records of these requests, waiting until all are written."""
        deadline = time.monotonic() + timeout_s
        while True:
            records = {r["request_id"]: r for r in self.ground_truth_records()}
            if all(i in records for i in request_ids):
                return records
            assert time.monotonic() < deadline, f"ground truth lacks some of {request_ids}"
            time.sleep(0.01)

    def status(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/cfexp/status", timeout=10)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


ServerFactory = Callable[..., Server]


def run_serving(args: list[str], log: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with log.open("w") as stderr:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "cfexp.serving", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )


def start_server(engine: str, settings: dict[str, Any], directory: Path, timeout_s: float = 120.0) -> Server:
    directory.mkdir(parents=True, exist_ok=True)
    ground_truth = directory / "ground_truth.jsonl"
    log = directory / "server.log"
    args = [
        "--engine",
        engine,
        "--port",
        "0",
        "--settings",
        json.dumps(settings),
        "--ground-truth",
        str(ground_truth),
    ]
    t_spawned = time.monotonic_ns()
    process = run_serving(args, log)
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    line = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline()
            break
        if process.poll() is not None:
            break
    if not line.startswith(READY):
        process.kill()
        process.wait()
        process.stdout.close()
        raise AssertionError(f"server did not become ready (got {line!r}); log:\n{log.read_text()[-3000:]}")
    return Server(
        process=process,
        port=int(line[len(READY) :]),
        ground_truth=ground_truth,
        log=log,
        t_spawned_ns=t_spawned,
        t_ready_ns=time.monotonic_ns(),
    )


def ndjson_lines(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.iter_lines() if line.strip()]


def sse_events(response: httpx.Response) -> list[Any]:
    """The data of every SSE event; ``[DONE]`` is kept as the string."""
    events: list[Any] = []
    for line in response.iter_lines():
        if not line.startswith("data: "):
            assert line == "", f"unexpected SSE line {line!r}"
            continue
        data = line[len("data: ") :]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events
