"""The agent contract on the real servers: Gemma 3 270M behind cfexp's own server
(``backend=llamacpp``) and behind llama.cpp's llama-server (``backend=llamaserver``).

Real processes, real tokens; every test runs against both servers. What the
records say is held to what the servers counted, under cfexp's definitions
(docs/metrics.md, docs/record-schema.md):

1. ``output_tokens`` = the server's count − 1 when the reply stopped by itself
   (``finish_reason`` "stop": the end-of-turn token is counted and sent as no
   chunk), and one content chunk per token — except that a token ending inside
   a UTF-8 character is sent with the next one (both servers hold incomplete
   characters back), so the exact relation is chunks = tokens − tokens that end
   mid-character (− tokens with no text at all). The base model does not stop
   by itself within a few tokens, and agents send nothing that would make it:
   through the agent the "length" side, at the HTTP level (the Python agent's
   own call code, with a ``logit_bias`` on ``<end_of_turn>`` added to its
   request) the "stop" side;
2. TTFT ≥ the server's own prompt time, per call;
3. a repeated prompt is served from the prefix cache, and ``prompt_cache=defeat``
   leaves only the chat template's first tokens to reuse;
4. two agents on one instance overlap with 2 slots and take turns with 1;
5. a server killed mid-stream fails the job cleanly.

Small work only (``num_predict`` 8–16), and no timing assertions: orderings
and counts from the records.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from cfexp.agents.python_agent import client as agent_client
from cfexp.agents.python_agent.client import CallRequest, WireApi, stream_call
from cfexp.agents.records import CallRecord, read_records
from cfexp.agents.spec import AgentSpec, Api
from cfexp.backends.base import LaunchSpec, ServerInstance
from cfexp.backends.cfexp_server import CfexpServerBackend
from cfexp.backends.llama_server import LlamaServerBackend
from cfexp.metrics.calls import derive_call, output_tokens
from tests.app.test_e2e_sim import client_for, leftover_processes, run_cfexp, runs_of

pytestmark = [pytest.mark.slow, pytest.mark.llamacpp]

BACKENDS = ["llamacpp", "llamaserver"]
# Gemma 3's <end_of_turn>: the token a reply that stops by itself ends with.
END_OF_TURN = 106
# The chat template's first tokens (<bos><start_of_turn>user\n) and the nonce's
# word ("Request "), with room for a hex digit two nonces share by chance.
TEMPLATE_TOKENS = 8

Call = dict[str, Any]


# ------------------------------------------------------------------ helpers


def calls_in(job: Path) -> list[Call]:
    """Every call record (with its derived metrics) of every phase of a job, measured phase first."""
    paths = [job / "records.jsonl", *sorted(job.glob("phases/*/records.jsonl"))]
    return [
        r
        for path in paths
        for line in path.read_text().splitlines()
        if (r := json.loads(line))["kind"] == "call"
    ]


def jobs_of(tmp_path: Path) -> list[Path]:
    return sorted(
        (p for p in (tmp_path / "multirun").iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
    )


def server_count(call: Call, backend: str) -> int:
    """The raw count the backend's API reports: Ollama eval_count (cfexp's server, the
    llamacpp backend's default API), OpenAI usage.completion_tokens (llama-server)."""
    count = call["server_eval_count"] if backend == "llamacpp" else call["server_completion_tokens"]
    assert isinstance(count, int)
    return count


def assert_counts_agree(call: Call, backend: str, num_predict: int) -> None:
    """Items 1 and 2 for one successful call of a job."""
    assert call["success"], call["error"]
    assert call["finish_reason"] in ("stop", "length"), call
    stopped = call["finish_reason"] == "stop"
    count = server_count(call, backend)
    # llama.cpp's timings count the same tokens as the API's own counter.
    assert call["server_timings_predicted_n"] == count == call["output_tokens_server"]
    assert call["output_tokens"] == count - stopped
    if not stopped:
        assert call["output_tokens"] == num_predict
    # One chunk per token, but for tokens that end inside a character (sent with
    # the next) or have no text: never more chunks than tokens.
    assert call["content_chunks"] <= call["output_tokens"]
    if call["text"].isascii():  # every byte a whole character: nothing held back
        assert call["content_chunks"] == call["output_tokens"], call["text"]
    # The prompt: cached + evaluated, as both servers count it.
    assert call["prompt_tokens"] == call["prompt_tokens_cached"] + call["prompt_tokens_evaluated"]
    assert call["prompt_tokens_evaluated"] >= 1
    # TTFT spans the server's prompt evaluation (and more: connect, queue, first decode step).
    assert call["ttft_ms"] >= call["server_prompt_eval_ms"] > 0


def spans(call: Call) -> tuple[int, int]:
    times = call["chunk_times_ns"]
    return times[0], times[-1]


def served(call: Call) -> tuple[int, int]:
    """When the server worked on the call: from the start of its prompt evaluation (its first
    token's arrival less the server's own prompt time) to its last token."""
    first, last = spans(call)
    return first - int(call["server_prompt_eval_ms"] * 1e6), last


# --------------------------------------------- 1 and 2, through the agent


@pytest.mark.parametrize("runtime", ["asyncio", "tokio"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_output_tokens_and_ttft_agree_with_the_servers_counters(
    tmp_path: Path, backend: str, runtime: str
) -> None:
    """A single_agent job (analysis, report) with the Python agent and a Rust one."""
    done = run_cfexp(
        tmp_path,
        f"backend={backend}",
        "scenario=single_agent",
        "num_predict=12",
        f"runtime={runtime}",
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    calls = calls_in(tmp_path / "run")
    assert [c["step"] for c in calls] == ["analysis", "report"]
    for call in calls:
        assert_counts_agree(call, backend, num_predict=12)
    (run,) = runs_of(tmp_path)
    metrics = run.data.metrics
    assert metrics["output_tokens_total"] == sum(c["output_tokens"] for c in calls)
    assert run.data.tags["runtime"] == runtime
    assert leftover_processes(tmp_path) == []


# ------------------------------------- 1 and 2 at the HTTP level: the stop side


def launch(backend: str) -> LaunchSpec:
    """One instance of ``backend`` speaking the OpenAI API (the API that takes a logit_bias)."""
    return LaunchSpec(
        backend=backend, api="openai", host="127.0.0.1", url=None, model_name="gemma3:270m", model_file=None,
        n_layers=18, gpu_layers=0, ctx=512, threads=2, slots=1, settings_json="{}", binary="",
    )  # fmt: skip


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerInstance]:
    backend: str = request.param
    starter = LlamaServerBackend() if backend == "llamaserver" else CfexpServerBackend("llamacpp")
    instance = starter.start(launch(backend), 0, tmp_path_factory.mktemp(backend), 300)
    try:
        yield instance
    finally:
        assert instance.process is not None
        instance.process.stop()


def agent_call(
    server: ServerInstance, monkeypatch: pytest.MonkeyPatch, content: str, extra: dict[str, Any] | None = None
) -> CallRecord:
    """One call made by the Python agent's own client code (request, stream parsing, record),
    with ``extra`` fields added to its OpenAI request body."""
    openai = agent_client.WIRE_APIS["openai"]

    def body_with_extra(call: CallRequest) -> tuple[dict[str, Any], dict[str, Any]]:
        body, options = openai.build_body(call)
        return {**body, **(extra or {})}, options

    monkeypatch.setitem(
        agent_client.WIRE_APIS, "openai", WireApi(openai.path, body_with_extra, openai.accept)
    )
    agent = AgentSpec(
        name="agent_0", persona="default", base_url=server.base_url, api=Api.openai, model="gemma3:270m",
        options={"temperature": 0.0, "seed": 1}, instance=0,
    )  # fmt: skip
    request = CallRequest(
        "contract", agent, 0, "single_inference", [{"role": "user", "content": content}], 16, 120
    )

    async def call() -> CallRecord:
        async with agent_client.new_client((agent,), 120) as client:
            return await stream_call(client, request)

    return asyncio.run(call())


def test_a_reply_that_stops_by_itself_counts_without_its_end_of_turn(
    server: ServerInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A logit bias of 12 on <end_of_turn> makes the base model end "Say OK." by itself (it
    rarely does unbiased); −100 keeps it from ever stopping, so the budget cuts the reply."""
    stopped = agent_call(server, monkeypatch, "Say OK.", {"logit_bias": {str(END_OF_TURN): 12}})
    assert stopped.success and stopped.finish_reason == "stop", stopped
    count = stopped.server_completion_tokens
    assert count is not None and count == stopped.server_timings_predicted_n
    # The end-of-turn token is counted and comes as no chunk: the one definition removes it.
    assert output_tokens(stopped) == count - 1 == stopped.content_chunks >= 1
    metrics = derive_call(stopped)
    assert (metrics.output_tokens, metrics.output_tokens_server) == (count - 1, count)
    assert metrics.ttft_ms is not None and metrics.server_prompt_eval_ms is not None
    assert metrics.ttft_ms >= metrics.server_prompt_eval_ms > 0

    cut = agent_call(server, monkeypatch, "Say OK.", {"logit_bias": {str(END_OF_TURN): -100}})
    assert cut.success and cut.finish_reason == "length"
    assert output_tokens(cut) == cut.server_completion_tokens == cut.server_timings_predicted_n == 16
    assert cut.content_chunks == 16
    assert cut.text.startswith(stopped.text)  # greedy: the same reply, then past where it stopped


def test_a_character_split_over_tokens_comes_as_one_chunk(
    server: ServerInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """🦙 has no token of its own: it is 4 byte tokens, and both servers send a character only
    once it is complete. So chunks < tokens here, and output_tokens still counts tokens."""
    record = agent_call(server, monkeypatch, "🦙" * 12)
    assert record.success and record.finish_reason == "length"
    assert set(record.text) == {"🦙"}  # greedy: the model repeats it
    assert output_tokens(record) == record.server_completion_tokens == 16 == len(record.text.encode())
    assert record.content_chunks == len(record.text) == 4
    assert derive_call(record).output_tokens == 16


# ------------------------------------------------------------ keep-alive


def test_an_agents_calls_keep_one_connection_or_replace_it_when_the_server_closes(
    server: ServerInstance, caplog: pytest.LogCaptureFixture
) -> None:
    """Three calls through one agent client (docs/fault-model.md, "Keep-alive and the one resend").

    cfexp's server keeps the connection: one connection_id in its ground truth,
    no connect after the first call. llama-server closes the connection after
    every streamed reply while announcing keep-alive: each later call finds it
    closed and connects, or its request meets the close and is resent once;
    either way every call succeeds.
    """
    agent = AgentSpec(
        name="agent_0", persona="default", base_url=server.base_url, api=Api.openai, model="gemma3:270m",
        options={"temperature": 0.0, "seed": 1}, instance=0,
    )  # fmt: skip

    async def calls() -> list[CallRecord]:
        async with agent_client.new_client((agent,), 120) as client:
            return [
                await stream_call(
                    client,
                    CallRequest(
                        "keepalive", agent, i, "single_inference", [{"role": "user", "content": f"Say {i}."}], 4, 120
                    ),
                )
                for i in range(3)
            ]

    records = asyncio.run(calls())
    assert all(r.success for r in records), [r.error for r in records]
    first, *later = records
    assert first.t_connect_start_ns is not None
    if server.backend == "llamaserver":
        # The resend (when the close raced the request) is logged; a call never fails for it.
        assert all(r.t_connect_start_ns is not None for r in later)
        return
    assert all((r.t_connect_start_ns, r.t_connect_end_ns) == (None, None) for r in later)
    assert "once more" not in caplog.text
    assert server.ground_truth_path is not None
    deadline = time.monotonic() + 30
    while True:  # a ground-truth line is written once its reply has ended
        truth = [json.loads(line) for line in server.ground_truth_path.read_text().splitlines()]
        mine = [t for t in truth if t["t_received_ns"] >= first.t_start_ns]
        if len(mine) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(mine) == 3 and len({t["connection_id"] for t in mine}) == 1, mine


# --------------------------------------------------------------- 3: cache


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_repeated_prompt_hits_the_cache_and_defeat_leaves_only_the_template(
    tmp_path: Path, backend: str
) -> None:
    """``allow``: each job's priming sends the measured call first, on one server kept for the
    sweep, so the measured call is served from the cache but for what the server re-evaluates
    (1 token on cfexp's server; ~5 on llama-server, whose Gemma 3 sliding-window cache resumes
    from a checkpoint). ``defeat``: a nonce no earlier call shared starts every prompt, also the
    next call of the same agent process, so at most the template's first tokens are reused."""
    allow = tmp_path / "allow"
    done = run_cfexp(
        allow, "-m", f"backend={backend}", "scenario=single_inference", "num_predict=8", "prompt_cache=allow",
        "repetition=0,1", timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    jobs = jobs_of(allow)
    assert len(jobs) == 2
    for job in jobs:
        measured, priming = calls_in(job)  # measured phase first
        for call in (measured, priming):
            assert_counts_agree(call, backend, num_predict=8)
            assert call["prompt_nonce"] is None
        assert measured["prompt_tokens"] == priming["prompt_tokens"] > 20
        assert measured["prompt_tokens_evaluated"] <= 5
        assert measured["prompt_tokens_cached"] >= measured["prompt_tokens"] - 5
    # The first job's priming met a cold cache (the warm-up's prompt shares the template only).
    first_priming = calls_in(jobs[0])[1]
    assert first_priming["prompt_tokens_cached"] <= TEMPLATE_TOKENS

    defeat = tmp_path / "defeat"
    done = run_cfexp(
        defeat, "-m", f"backend={backend}", "scenario=single_agent", "num_predict=8", "prompt_cache=defeat",
        "repetition=0,1", timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    calls = [call for job in jobs_of(defeat) for call in calls_in(job)]
    assert len(calls) == 4
    nonces = [call["prompt_nonce"] for call in calls]
    assert all(nonces) and len(set(nonces)) == len(nonces)
    for call in calls:
        assert_counts_agree(call, backend, num_predict=8)
        assert call["prompt_tokens_cached"] <= TEMPLATE_TOKENS, call
    assert leftover_processes(tmp_path) == []


# ----------------------------------------------- 4: slots, through cfexp


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_slots_serve_two_agents_at_once_and_one_slot_makes_them_take_turns(
    tmp_path: Path, backend: str
) -> None:
    """Two agents on one instance, concurrent phase only. From the records' times: with 2 slots
    (llama-server: batched; cfexp's server: a model instance each) the server works on both
    agents' first calls at once; with 1 slot no call of one agent streams while one of the
    other's does."""
    done = run_cfexp(
        tmp_path, "-m", f"backend={backend}", "backend.slots=1,2", "backend.threads=1", "scenario=multi_agent",
        "topology=single", "scenario.solo=null", "num_predict=12", timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    children = [r for r in runs_of(tmp_path) if r.data.tags.get("mlflow.parentRunId")]
    assert sorted(r.data.params["backend.slots"] for r in children) == ["1", "2"]
    assert all(r.info.status == "FINISHED" for r in children)
    slots_seen = []
    for job in jobs_of(tmp_path):
        slots = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["backend"]["slots"]
        slots_seen.append(slots)
        calls = calls_in(job)
        assert len(calls) == 4 and {c["agent"] for c in calls} == {"agent_0", "agent_1"}
        for call in calls:
            assert_counts_agree(call, backend, num_predict=12)
            # Both agents share the process's salt; the hash in front keeps their prompts apart.
            assert call["prompt_tokens_cached"] <= TEMPLATE_TOKENS, call
        pairs = [(a, b) for a in calls for b in calls if (a["agent"], b["agent"]) == ("agent_0", "agent_1")]
        if slots == 2:
            a, b = (next(c for c in calls if c["agent"] == name and c["step"] == "analysis")
                    for name in ("agent_0", "agent_1"))  # fmt: skip
            # Sent together, and each is in the server's hands (evaluating its prompt or
            # streaming) while the other is. Chunk streams alone are too short to overlap
            # reliably: 12 tokens stream in ~0.6 s, while the two ~4 s prompt evaluations on one
            # thread each can end a second apart on a busy machine.
            assert abs(a["t_send_ns"] - b["t_send_ns"]) < 1e9
            (a_start, a_last), (b_start, b_last) = served(a), served(b)
            assert a_start < b_last and b_start < a_last
        else:
            for a, b in pairs:
                (a_first, a_last), (b_first, b_last) = spans(a), spans(b)
                assert a_last < b_first or b_last < a_first, (a["step"], b["step"])
    assert sorted(slots_seen) == [1, 2]
    assert leftover_processes(tmp_path) == []


# ----------------------------------------- 5: a server killed mid-stream


def _kill(pid: int, found: list[int]) -> None:
    os.kill(pid, signal.SIGKILL)
    found.append(pid)


def _server_pid(tmp_path: Path, backend: str) -> int | None:
    """The server process of this test's job (its command line names the job's folder)."""
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(tmp_path) not in cmdline:
            continue
        if backend == "llamacpp" and "cfexp.serving" in cmdline:
            return int(proc.info["pid"])
        if backend == "llamaserver" and proc.info["name"] == "llama-server":
            return int(proc.info["pid"])
    return None


def _report_call_streaming(tmp_path: Path, backend: str) -> bool:
    """The analysis call is recorded and the report call's stream has begun."""
    raw = tmp_path / "run" / "records.raw.jsonl"
    lines = raw.read_text().splitlines() if raw.exists() else []
    if not any('"kind":"call"' in line for line in lines):
        return False
    logs = tmp_path / "run" / "servers"
    if backend == "llamacpp":  # it streams 3 tokens of the report call, then holds the stream open
        return any(
            "hanging (faults.hang_after_tokens)" in log.read_text(errors="replace")
            for log in logs.glob("*.log")
        )
    match = re.search(
        r"listening on (http://127\.0\.0\.1:\d+)", (logs / "server0.log").read_text(errors="replace")
    )
    if match is None:
        return False
    try:
        slots = httpx.get(f"{match.group(1)}/slots", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return False
    return any(slot["is_processing"] and slot["next_token"][0]["n_decoded"] >= 3 for slot in slots)


def kill_server_mid_report(tmp_path: Path, backend: str, found: list[int], stop: threading.Event) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not stop.is_set():
        if _report_call_streaming(tmp_path, backend):
            pid = _server_pid(tmp_path, backend)
            if pid is not None:
                _kill(pid, found)
                return
        time.sleep(0.01)


# The third generation request of the job (warm-up, analysis, report) streams 3 tokens and
# holds its stream open, so the kill surely lands mid-stream however fast the machine is.
# llama-server has no such setting: it is killed once /slots shows the report call decoding.
KILL_OVERRIDES: dict[str, tuple[str, ...]] = {
    "llamacpp": ("+backend.settings.faults={hang_after_tokens:3,hang_every_n:3}",),
    "llamaserver": ("backend=llamaserver",),
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_server_killed_mid_stream_fails_the_job_and_keeps_what_finished(
    tmp_path: Path, backend: str
) -> None:
    found: list[int] = []
    stop = threading.Event()
    striker = threading.Thread(target=kill_server_mid_report, args=(tmp_path, backend, found, stop))
    striker.start()
    try:
        done = run_cfexp(
            tmp_path, *KILL_OVERRIDES[backend], "scenario=single_agent", "num_predict=16", timeout=900
        )
    finally:
        stop.set()
        striker.join()
    assert found, "the server was never seen streaming the report call"
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "during the job" in done.stderr and "Traceback" not in done.stderr
    (run,) = runs_of(tmp_path)
    assert run.info.status == "FAILED"
    # The analysis call finished: its metrics reach the run.
    metrics = run.data.metrics
    assert metrics["calls_total"] == 2 and metrics["calls_failed"] == 1
    assert metrics["ttft_ms"] > 0 and metrics["output_tokens_total"] == 16
    analysis, report = read_records(tmp_path / "run" / "records.raw.jsonl").calls
    assert analysis.success and analysis.step == "analysis"
    assert not report.success and report.error_kind is not None
    assert report.error_kind.value == "incomplete_stream" and report.http_status == 200
    assert report.content_chunks >= 1 and report.text  # what came before the kill is kept
    if backend == "llamacpp":
        assert report.content_chunks == 3
    artifacts = {a.path for a in client_for(tmp_path).list_artifacts(run.info.run_id)}
    assert {"records.jsonl", "server_logs", "error.txt"} <= artifacts
    logs = {a.path for a in client_for(tmp_path).list_artifacts(run.info.run_id, "server_logs")}
    assert "server_logs/server0.log" in logs
    assert leftover_processes(tmp_path) == []
