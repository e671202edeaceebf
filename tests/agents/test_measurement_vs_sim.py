"""The Python agent's measurements against the simulator's ground truth.

The simulator logs when it received each request and when it handed each
content chunk to the kernel, on the same CLOCK_MONOTONIC the agent reads. So
causality bounds every client reading: the client cannot see a chunk before
the server sent it (exact), and sees it soon after. The upper tolerance, 200 ms
of delivery and parsing delay per reading, is generous for a 2-core machine
under full load (5–45 ms seen here at load average 6) and still well below the
~0.9–1.7 s prefill the simulator is set to, so a client TTFT that ignored the
prefill, or counted something else, cannot pass.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig

from cfexp.agents.records import CallRecord, read_records
from cfexp.agents.runner import AgentCommand, python_agent_command, run_agent
from cfexp.agents.rust_build import rust_agent_command
from cfexp.agents.spec import AgentSpec, Spec
from cfexp.app.agent_spec import instance_launch_options
from cfexp.backends.base import ServerInstance
from cfexp.backends.pool import ServerPool, launch_specs
from cfexp.config.validate import to_settings
from cfexp.vocab import Api, Scenario

TOLERANCE_NS = 200_000_000
DATA_DIR = Path(__file__).resolve().parents[2] / "cfexp" / "data"
pytestmark = pytest.mark.slow


@pytest.fixture
def sim(compose_cfg: Callable[..., DictConfig], tmp_path: Path) -> Iterator[tuple[object, ServerInstance]]:
    cfg = to_settings(
        compose_cfg(
            "backend=sim",
            "scenario=single_agent",
            "num_predict=20",
            "backend.settings.jitter_cv=0",
            "backend.settings.time_scale=1.0",
            # ~170 (analysis) and ~90 (report) prompt tokens at 100 tok/s = 1.7 s and 0.9 s
            # prefill; 200 tok/s decode = 5 ms per token.
            "+backend.settings.prefill_gpu_tok_s=100",
            "+backend.settings.decode_gpu_tok_s=200",
            "+backend.settings.load_base_s=0",
            "+backend.settings.load_s_per_1k_ctx=0",
        )
    )
    pool = ServerPool()
    (instance,) = pool.acquire(cfg, tmp_path / "servers", launch_specs(cfg, instance_launch_options(cfg)))
    yield cfg, instance
    pool.close()


def _single_agent_run(
    sim: tuple[object, ServerInstance], tmp_path: Path, command: AgentCommand
) -> tuple[list[CallRecord], list[dict[str, Any]]]:
    """One single_agent run: its call records and the server's ground truth, in order."""
    cfg, instance = sim
    agent = AgentSpec(
        name="agent_0", persona="default", base_url=instance.base_url, api=Api(instance.api),
        model=cfg.model.name, options=None, instance=instance.index,  # type: ignore[attr-defined]
    )  # fmt: skip
    spec = Spec(
        run_id="measure", scenario=Scenario.single_agent, data_dir=str(DATA_DIR), num_predict=20,
        call_timeout_s=60.0, cache_nonce="c0ffee", agents=(agent,),
    )  # fmt: skip
    result = run_agent(command, spec, tmp_path / "job", timeout_s=120)
    assert result.exit_code == 0, result.stderr_tail()
    calls = read_records(result.records_path).calls
    assert instance.ground_truth_path is not None
    # The server writes a request's line after the reply's last byte: the
    # agent, which read that byte, may have exited just before.
    deadline = time.monotonic() + 10
    while True:
        truth = [json.loads(line) for line in instance.ground_truth_path.read_text().splitlines()]
        if len(truth) >= len(calls) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert len(calls) == len(truth) == 2  # analysis, report: one request each, in order
    return calls, truth


@pytest.mark.parametrize("runtime", ["asyncio", "uvloop", "tokio", "tokio_localset", "smol", "async_std"])
def test_an_agents_calls_share_one_kept_alive_connection(
    sim: tuple[object, ServerInstance], tmp_path: Path, runtime: str
) -> None:
    """The server saw both requests on one connection; only the first call connected."""
    python = runtime in ("asyncio", "uvloop")
    command = python_agent_command(runtime) if python else rust_agent_command(runtime)
    calls, truth = _single_agent_run(sim, tmp_path, command)
    assert all(call.success for call in calls), [call.error for call in calls]
    assert truth[0]["connection_id"] is not None
    assert truth[0]["connection_id"] == truth[1]["connection_id"]
    first, second = calls
    assert first.t_connect_start_ns is not None and first.t_connect_end_ns is not None
    assert (second.t_connect_start_ns, second.t_connect_end_ns) == (None, None)
    # Each call's send stamp is its own request's write.
    for call, served in zip(calls, truth, strict=True):
        assert call.t_send_ns is not None
        assert call.t_start_ns <= call.t_send_ns <= served["t_received_ns"] <= call.t_send_ns + TOLERANCE_NS


def test_ttft_and_token_counts_match_the_servers_ground_truth(
    sim: tuple[object, ServerInstance], tmp_path: Path
) -> None:
    calls, truth = _single_agent_run(sim, tmp_path, python_agent_command("asyncio"))

    for call, served in zip(calls, truth, strict=True):
        assert call.success, call.error
        # Token counts: the server's raw counters, never the number of chunks.
        assert call.server_eval_count == served["eval_count"]
        assert call.server_prompt_eval_count == served["prompt_eval_count"]
        assert call.content_chunks == len(served["chunk_sent_ns"])
        # Causality, both ends of every reading.
        assert call.t_send_ns <= served["t_received_ns"] <= call.t_send_ns + TOLERANCE_NS
        for seen, sent in zip(call.chunk_times_ns, served["chunk_sent_ns"], strict=True):
            assert sent <= seen <= sent + TOLERANCE_NS
        # TTFT as the client measured it vs as the server lived it.
        assert call.t_first_token_ns is not None
        client_ttft_ms = (call.t_first_token_ns - call.t_send_ns) / 1e6
        server_ttft_ms = (served["t_first_chunk_sent_ns"] - served["t_received_ns"]) / 1e6
        assert server_ttft_ms >= 600  # the simulated prefill really happened
        assert 0 <= client_ttft_ms - server_ttft_ms <= 2 * TOLERANCE_NS / 1e6
        assert client_ttft_ms < 2 * server_ttft_ms
