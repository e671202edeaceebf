"""The real llama-server (built by `make llama-server`) with the embedded model:
start, health, stop with no orphan, parallel slots vs a queue, and faults."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from cfexp.backends.base import LaunchSpec, ServerInstance
from cfexp.backends.identify import identify
from cfexp.backends.llama_server import LlamaServerBackend
from cfexp.backends.pool import check_alive
from cfexp.errors import ServerDiedError, ServerStartError

pytestmark = [pytest.mark.slow, pytest.mark.llamacpp]


def spec(slots: int = 1, ctx: int = 256, model_file: str | None = None, **settings: object) -> LaunchSpec:
    return LaunchSpec(
        backend="llamaserver", api="openai", host="127.0.0.1", url=None, model_name="gemma3:270m",
        model_file=model_file, n_layers=18, gpu_layers=0, ctx=ctx, threads=2 if slots == 1 else 1,
        slots=slots, settings_json=json.dumps(settings, sort_keys=True), binary="",
    )


def tree(pid: int) -> list[int]:
    root = psutil.Process(pid)
    return [pid, *(child.pid for child in root.children(recursive=True))]


def gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def started(tmp_path: Path, launch: LaunchSpec) -> Iterator[ServerInstance]:
    instance = LlamaServerBackend().start(launch, 0, tmp_path / "servers", 300)
    try:
        yield instance
    finally:
        assert instance.process is not None
        instance.process.stop()


@pytest.fixture
def two_slots(tmp_path: Path) -> Iterator[ServerInstance]:
    yield from started(tmp_path, spec(slots=2))


@pytest.fixture
def one_slot(tmp_path: Path) -> Iterator[ServerInstance]:
    yield from started(tmp_path, spec(slots=1))


def test_a_started_server_is_healthy_gives_each_slot_ctx_and_stops_with_its_tree(tmp_path: Path) -> None:
    instance = LlamaServerBackend().start(spec(slots=2, ctx=256), 0, tmp_path / "servers", 300)
    assert instance.process is not None
    pids = tree(instance.process.pid)
    try:
        assert any("llama-server" in psutil.Process(pid).name() for pid in pids)
        assert httpx.get(f"{instance.base_url}/health").json() == {"status": "ok"}
        slots = httpx.get(f"{instance.base_url}/slots").json()
        assert [slot["n_ctx"] for slot in slots] == [256, 256]  # ctx is what each request gets
        models = httpx.get(f"{instance.base_url}/v1/models").json()
        assert models["data"][0]["id"] == "gemma3:270m"
        assert instance.version and instance.version.startswith("b")  # its build_info, b<number>-<commit>
        assert identify(instance.base_url, "gemma3:270m").engine == "llama-server"
    finally:
        instance.process.stop()
    assert gone(pids)
    assert "listening on" in (tmp_path / "servers" / "server0.log").read_text()


def race(base_url: str) -> list[str]:
    """Stream A, and once A's first token came, stream B: the order of their events."""
    events: list[str] = []
    lock = threading.Lock()
    body = {
        "model": "gemma3:270m", "messages": [{"role": "user", "content": "Tell me a story."}],
        "max_tokens": 24, "ignore_eos": True, "temperature": 0, "stream": True,
    }

    def run(name: str) -> None:
        with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=300) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line == "data: [DONE]":
                    with lock:
                        events.append(f"{name}:end")
                elif line.startswith("data: ") and '"content":"' in line:
                    with lock:
                        events.append(f"{name}:token")

    first = threading.Thread(target=run, args=("a",))
    first.start()
    deadline = time.monotonic() + 300
    while "a:token" not in events and time.monotonic() < deadline:
        time.sleep(0.005)
    second = threading.Thread(target=run, args=("b",))
    second.start()
    first.join()
    second.join()
    return events


def test_two_slots_serve_two_streams_at_once(two_slots: ServerInstance) -> None:
    events = race(two_slots.base_url)
    # B starts streaming while A is still streaming: both progress before either ends.
    assert events.index("b:token") < events.index("a:end")
    assert any(e == "a:token" for e in events[events.index("b:token"):events.index("a:end")])
    assert events.count("a:token") == events.count("b:token")  # same length: ignore_eos, 24 tokens


def test_one_slot_queues_the_second_stream(one_slot: ServerInstance) -> None:
    events = race(one_slot.base_url)
    # B's first token comes only after A's stream ended.
    assert events.index("a:end") < events.index("b:token")
    assert events[: events.index("a:end") + 1] == ["a:token"] * events.count("a:token") + ["a:end"]


def test_a_model_it_cannot_load_gives_the_servers_own_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"this is not a GGUF file" * 100)
    with pytest.raises(ServerStartError) as caught:
        LlamaServerBackend().start(spec(model_file=str(bad)), 0, tmp_path / "servers", 300)
    message = str(caught.value)
    assert f"could not load <model.file={bad}>" in message
    assert "invalid magic characters" in message  # llama.cpp's own words, from its log
    assert "model.file=null for the embedded model" in message


def test_a_server_dying_at_start_says_so_with_its_log(tmp_path: Path) -> None:
    # A context size llama-server accepts as a flag, then cannot create a context with.
    launch = spec(extra_args=["--ctx-size", "-7"])
    with pytest.raises(ServerStartError) as caught:
        LlamaServerBackend().start(launch, 0, tmp_path / "servers", 300)
    message = str(caught.value)
    assert "exited with code 1 at start: it could not create its context" in message
    assert "failed to initialize the context: n_ctx_seq == 0" in message  # its own error line
    assert "Its last log lines" in message
    assert "could not load <model.file" not in message  # the model itself was fine


def test_a_value_it_refuses_is_named(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError, match=r"refused the value of --parallel \(exit 1\): error: invalid value"):
        LlamaServerBackend().start(spec(extra_args=["--parallel", "0"]), 0, tmp_path / "servers", 300)


def test_a_server_dying_mid_job_is_reported_by_the_liveness_check(tmp_path: Path) -> None:
    instance = LlamaServerBackend().start(spec(), 0, tmp_path / "servers", 300)
    assert instance.process is not None
    try:
        server_pid = next(pid for pid in tree(instance.process.pid) if "llama-server" in psutil.Process(pid).name())
        os.kill(server_pid, signal.SIGKILL)
        instance.process.popen.wait(timeout=30)  # cfexp-launch mirrors its end
        with pytest.raises(ServerDiedError, match=r"server <instance=0 backend=llamaserver .* exited with code"):
            check_alive([instance])
    finally:
        instance.process.stop()


def attach_spec(url: str) -> LaunchSpec:
    return dataclasses.replace(spec(), url=url)


def test_a_url_where_a_llama_server_runs_is_attached_to(one_slot: ServerInstance, tmp_path: Path) -> None:
    attached = LlamaServerBackend().start(attach_spec(one_slot.base_url), 0, tmp_path / "other", 30)
    assert attached.process is None and attached.base_url == one_slot.base_url
    assert attached.version == one_slot.version


def stream_json(base_url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json={**body, "stream": True}, timeout=300) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                out.append(json.loads(line[6:]))
    return out


def test_a_repeated_prompt_is_served_from_the_prefix_cache(one_slot: ServerInstance) -> None:
    body = {"model": "gemma3:270m", "messages": [{"role": "user", "content": "Name three rivers in Europe."}],
            "max_tokens": 4, "temperature": 0}
    first = [e["timings"] for e in stream_json(one_slot.base_url, body) if "timings" in e][-1]
    second = [e["timings"] for e in stream_json(one_slot.base_url, body) if "timings" in e][-1]
    assert first["cache_n"] == 0 and first["prompt_n"] > 10
    assert second["cache_n"] + second["prompt_n"] == first["prompt_n"] and second["prompt_n"] < first["prompt_n"]


def test_prompt_cache_off_evaluates_every_prompt_whole(tmp_path: Path) -> None:
    body = {"model": "gemma3:270m", "messages": [{"role": "user", "content": "Name three rivers in Europe."}],
            "max_tokens": 4, "temperature": 0}
    for instance in started(tmp_path, spec(prompt_cache=False)):
        first = [e["timings"] for e in stream_json(instance.base_url, body) if "timings" in e][-1]
        second = [e["timings"] for e in stream_json(instance.base_url, body) if "timings" in e][-1]
        assert first["cache_n"] == second["cache_n"] == 0 and second["prompt_n"] == first["prompt_n"]
