"""Client-side TTFT overhead: each agent's TTFT against cfexp's server's own record of it.

cfexp's servers log every request's ground truth (``--ground-truth``): when
they had read the request head (``t_received_ns``) and when they handed its
first content chunk to the kernel (``t_first_chunk_sent_ns``), on the same
CLOCK_MONOTONIC as the agents' records. The server's TTFT is the difference;
the agent's is ``t_first_token_ns − t_send_ns`` (``ttft_ms``). What the client
adds on top — the request's way to the server, the chunk's way back, the
client's own reading of it — is the difference of the two, per request.

Every runtime runs `single_agent` agent processes — an analysis call, then a
report call: the process's first, cold call and a warm one — started by the
harness's own runner (`cfexp.agents.runner.run_agent`, as a job starts them,
without the sweep's Hydra and MLflow around it) against one embedded llamacpp
server (Gemma 3 270M, 1 slot) started by the harness's server pool; the
runtimes take turns, process by process. Each process gets its own nonce salt,
so no prompt is served from the prefix cache. Reported per runtime, over every
successful call: the median and p90 of (client TTFT − server TTFT), for all
calls and apart for the first (cold) and the later (warm) calls; its two
halves, the request's way in (server read − ``t_send_ns``) and the first
chunk's way out (``t_first_token_ns`` − server send); the median `connect_ms`;
and the median time from the call's start to the request's write
(``t_send_ns − t_start_ns``: connection pool, connect, request set-up), which
the TTFT no longer includes.

Usage: `python benchmarks/client_ttft.py [--requests 50] [--runtimes asyncio,tokio,...] [--threads 0,1]`;
results go to docs/benchmarks.md ("Client-side TTFT overhead").
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import REPO, machine_line, percentile, read_jsonl, write_section
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from cfexp.agents.runner import AgentCommand, python_agent_command, run_agent
from cfexp.agents.rust_build import rust_agent_command
from cfexp.agents.spec import AgentSpec, Spec
from cfexp.app.agent_spec import instance_launch_options
from cfexp.backends.pool import ServerPool, launch_specs
from cfexp.config.schema import CfexpConfig, register_configs
from cfexp.config.validate import to_settings
from cfexp.vocab import Api, Scenario

RUNTIMES = ["asyncio", "uvloop", "tokio", "tokio_localset", "smol", "smol_1kb", "async_std"]
PYTHON = {"asyncio", "uvloop"}
# Targets of issue 16, item 3: median client TTFT − server TTFT.
TARGET_MS = {"python": 2.0, "rust": 0.5}
CALLS_PER_JOB = 2  # single_agent: analysis, report


@dataclass
class Overheads:
    """One runtime's per-call readings, in ms."""

    first: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)
    way_in: list[float] = field(default_factory=list)
    way_out: list[float] = field(default_factory=list)
    connect: list[float] = field(default_factory=list)
    before_send: list[float] = field(default_factory=list)

    @property
    def all(self) -> list[float]:
        return self.first + self.warm


def served_request(call: dict[str, Any], truth: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The server's record of this call: the first request it read after the call's send.

    Processes run one after another and the calls of a process too, so the
    first request read after the send and before the first token is this one.
    """
    candidates = [
        t for t in truth
        if t["t_first_chunk_sent_ns"] and call["t_send_ns"] <= t["t_received_ns"] <= call["t_first_token_ns"]
    ]  # fmt: skip
    return min(candidates, key=lambda t: t["t_received_ns"]) if candidates else None


def ground_truth_with(path: Path, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The server's log once it holds every call's line: it writes one when a request ends,
    which can be just after the agent saw the final message and exited."""
    deadline = time.monotonic() + 10
    while True:
        truth = read_jsonl(path)
        if all(served_request(c, truth) is not None for c in calls if c["success"]):
            return truth
        if time.monotonic() > deadline:
            raise SystemExit(f"the server's ground truth {path} lacks a call of this process")
        time.sleep(0.05)


def add_process(seen: Overheads, records: list[dict[str, Any]], truth: list[dict[str, Any]]) -> None:
    """One agent process's calls, matched with the server's records of them."""
    calls = [r for r in records if r["kind"] == "call"]
    first = min(calls, key=lambda c: c["t_start_ns"])
    for call in (c for c in calls if c["success"]):
        served = served_request(call, truth)
        assert served is not None
        client_ms = (call["t_first_token_ns"] - call["t_send_ns"]) / 1e6
        server_ms = (served["t_first_chunk_sent_ns"] - served["t_received_ns"]) / 1e6
        (seen.first if call is first else seen.warm).append(client_ms - server_ms)
        seen.way_in.append((served["t_received_ns"] - call["t_send_ns"]) / 1e6)
        seen.way_out.append((call["t_first_token_ns"] - served["t_first_chunk_sent_ns"]) / 1e6)
        seen.before_send.append((call["t_send_ns"] - call["t_start_ns"]) / 1e6)
        if call["t_connect_start_ns"] is not None and call["t_connect_end_ns"] is not None:
            seen.connect.append((call["t_connect_end_ns"] - call["t_connect_start_ns"]) / 1e6)


def config(root: Path, backend: str, num_predict: int, threads: int) -> CfexpConfig:
    register_configs()
    GlobalHydra.instance().clear()
    overrides = [f"backend={backend}", "scenario=single_agent", f"num_predict={num_predict}", f"paths.root_dir={root}"]
    if threads:
        overrides.append(f"backend.threads={threads}")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return to_settings(compose("config", overrides=overrides))


def command(runtime: str) -> AgentCommand:
    return python_agent_command(runtime) if runtime in PYTHON else rust_agent_command(runtime)


def measure(runtimes: list[str], processes: int, backend: str, num_predict: int, threads: int) -> dict[str, Overheads]:
    found = {runtime: Overheads() for runtime in runtimes}
    commands = {runtime: command(runtime) for runtime in runtimes}  # builds the Rust agents first
    with tempfile.TemporaryDirectory(prefix="cfexp-bench-") as tmp:
        root = Path(tmp)
        cfg = config(root, backend, num_predict, threads)
        pool = ServerPool()
        try:
            (instance,) = pool.acquire(cfg, root / "servers", launch_specs(cfg, instance_launch_options(cfg)))
            assert instance.ground_truth_path is not None
            agent = AgentSpec(
                name="agent_0", persona="default", base_url=instance.base_url, api=Api(instance.api),
                model=cfg.model.name, options=None, instance=instance.index,
            )  # fmt: skip
            for rep in range(processes):
                for runtime in runtimes:
                    spec = Spec(
                        run_id=f"{runtime}-{rep}", scenario=Scenario.single_agent, data_dir=str(REPO / "cfexp" / "data"),
                        num_predict=num_predict, call_timeout_s=120.0, cache_nonce=secrets.token_hex(6), agents=(agent,),
                    )  # fmt: skip
                    result = run_agent(commands[runtime], spec, root / "jobs" / spec.run_id, timeout_s=300)
                    if result.exit_code != 0:
                        sys.exit(f"the {runtime} agent failed (exit {result.exit_code}):\n{result.stderr_tail()}")
                    records = read_jsonl(result.records_path)
                    calls = [r for r in records if r["kind"] == "call"]
                    add_process(found[runtime], records, ground_truth_with(instance.ground_truth_path, calls))
                print(f"process {rep + 1}/{processes} of each runtime done", file=sys.stderr)
        finally:
            pool.close()
    return found


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "—"


def _threads_label(threads: int) -> str:
    cores = os.cpu_count() or 1
    return f"{cores} (default: every core)" if threads == 0 else f"{threads} of {cores}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50, help="successful calls per runtime, at least")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES))
    parser.add_argument("--num-predict", type=int, default=16)
    parser.add_argument("--backend", choices=("llamacpp", "sim"), default="llamacpp",
                        help="sim: the simulator's server, for a quick look (its timing model, no real engine)")
    parser.add_argument("--threads", default=None,
                        help="the server's llama.cpp threads (backend.threads), one measurement per value, comma-"
                             "separated; 0: the backend's default, every core (default: 0,1 on llamacpp, 0 on sim)")
    parser.add_argument("--dry-run", action="store_true", help="print the section, do not write docs/benchmarks.md")
    args = parser.parse_args()
    runtimes = args.runtimes.split(",")
    threads_list = [int(t) for t in (args.threads or ("0,1" if args.backend == "llamacpp" else "0")).split(",")]
    processes = math.ceil(args.requests / CALLS_PER_JOB)

    rows = []
    for threads in threads_list:  # one server per setting, one after the other
        found = measure(runtimes, processes, args.backend, args.num_predict, threads)
        for runtime in runtimes:
            seen = found[runtime]
            target = TARGET_MS["python" if runtime in PYTHON else "rust"]
            overall = statistics.median(seen.all)
            verdict = "met" if overall <= target else "**missed**"
            rows.append(
                f"| {runtime} | {_threads_label(threads)} | {len(seen.all)} | **{overall:.2f}** "
                f"| {percentile(seen.all, 90):.2f} "
                f"| {_median(seen.warm)} | {_median(seen.first)} | {_median(seen.way_in)} | {_median(seen.way_out)} "
                f"| {_median(seen.connect)} "
                f"| {_median(seen.before_send)} | <= {target} ({verdict}) |"
            )
    server = "Embedded llamacpp server (Gemma 3 270M, 1 slot)" if args.backend == "llamacpp" else "The simulator's server"
    threads_arg = ",".join(str(t) for t in threads_list)
    body = f"""{machine_line()}, `python benchmarks/client_ttft.py --requests {args.requests} --runtimes {args.runtimes} --backend {args.backend} --threads {threads_arg}`.
{server}, `single_agent` with
`num_predict={args.num_predict}`: {processes} agent processes per runtime and server setting (the runtimes
taking turns; the server settings one after the other, each its own server), each an analysis call
(the process's first, cold call) and a report call (warm), started by the harness's runner against
one server. "Server threads" is the server's llama.cpp threads (`backend.threads`; the simulator
computes nothing, so it is moot there): with every core, the agent waits for a core while the
server decodes.
Overhead = the agent's TTFT (`t_first_token_ns − t_send_ns`, the send read
just before the request's first byte is written) − the server's own record of
the same request (request head read → first content chunk handed to the
kernel, its ground-truth log, same CLOCK_MONOTONIC), per successful call. Target: median <= 2 ms (Python),
<= 0.5 ms (Rust). Its two halves: way in = server read − client send, way
out = client first-token reading − server send. `connect_ms` and the call's
start → request write are no longer part of TTFT and are shown beside it.

| runtime | server threads | calls | overhead median ms | p90 ms | warm calls: median ms | first (cold) calls: median ms | way in median ms | way out median ms | connect_ms median | start → send median ms | target ms |
|---|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
    if args.dry_run:
        print(body)
        return
    if args.backend == "sim":
        key, title = "client_ttft_sim", "Client-side TTFT overhead on the simulator"
    else:
        key, title = "client_ttft", "Client-side TTFT overhead"
    write_section(REPO / "docs" / "benchmarks.md", key, title, body)


if __name__ == "__main__":
    main()
