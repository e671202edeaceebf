"""Per agent variant: startup, peak RSS, CPU per streamed token, TTFT measurement error.

Every runtime (Python asyncio/uvloop, Rust tokio/tokio_localset/smol/smol_1kb/
async_std) is run through `python -m cfexp` on the simulator, the way users
run them, and measured by the harness from outside:

- startup (exec to ready), peak RSS, CPU time: medians over `--reps` jobs of
  `single_inference num_predict=16`;
- CPU per streamed token: slope of CPU time between 16 and `--long` tokens
  (start-up cancels out), medians;
- TTFT measurement error: the agent's first-token reading minus the time the
  simulator handed that chunk to the kernel (its ground-truth log, same
  CLOCK_MONOTONIC), p50 and p99 over all calls of the variant.

Usage: `python benchmarks/agents.py [--reps 20] [--long 4096]`; results go to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from _common import REPO, machine_line, median, percentile, read_jsonl, sweep, write_section

RUNTIMES = ["asyncio", "uvloop", "tokio", "tokio_localset", "smol", "smol_1kb", "async_std"]
TARGETS = {"startup": "<= 10 ms (tokio), <= 400 ms (Python)", "rss": "<= 10 MB (tokio), <= 60 MB (Python)"}


def ttft_errors_ms(sweep_dir: Path) -> dict[str, list[float]]:
    """runtime -> [client first-token time − server first-chunk send time] for every call."""
    truth = read_jsonl(sweep_dir / "servers" / "server0_ground_truth.jsonl")
    errors: dict[str, list[float]] = {}
    for job in sorted(p for p in sweep_dir.iterdir() if p.name.isdigit()):
        records = read_jsonl(job / "records.raw.jsonl")
        runtime = next(r["runtime"] for r in records if r["kind"] == "ready")
        for call in (r for r in records if r["kind"] == "call" and r["success"]):
            # The server request this call made: the first received after it was sent.
            served = min(
                (t for t in truth if t["t_received_ns"] >= call["t_send_ns"] and t["t_first_chunk_sent_ns"]),
                key=lambda t: t["t_received_ns"],
            )
            errors.setdefault(runtime, []).append((call["t_first_token_ns"] - served["t_first_chunk_sent_ns"]) / 1e6)
    return errors


def metric(runs: list[Any], runtime: str, key: str) -> float:
    return median([r.data.metrics[key] for r in runs if r.data.tags["runtime"] == runtime])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--long", type=int, default=4096)
    args = parser.parse_args()
    common = ("backend=sim", "backend.settings.jitter_cv=0", "scenario=single_inference", f"runtime={','.join(RUNTIMES)}")
    with tempfile.TemporaryDirectory(prefix="cfexp-bench-") as tmp:
        root = Path(tmp)
        short = sweep(
            root, "agents_short", *common, "backend.settings.time_scale=0.05", "num_predict=16",
            f"repetition={','.join(map(str, range(args.reps)))}",
        )
        # A context large enough that the whole generation fits.
        long = sweep(
            root, "agents_long", *common, "backend.settings.time_scale=0", f"num_predict={args.long}",
            f"ctx={args.long + 1024}", "repetition=0,1,2,3,4",
        )
        errors = ttft_errors_ms(root / "multirun" / "agents_short")

    rows = []
    for runtime in RUNTIMES:
        tokens = metric(long, runtime, "output_tokens") - metric(short, runtime, "output_tokens")
        slope_us = (metric(long, runtime, "agent_cpu_ms") - metric(short, runtime, "agent_cpu_ms")) * 1000 / tokens
        err = errors[runtime]
        rows.append(
            f"| {runtime} | {metric(short, runtime, 'agent_startup_ms'):.1f} | {metric(short, runtime, 'agent_peak_rss_mb'):.1f} "
            f"| {metric(short, runtime, 'agent_cpu_ms'):.1f} | {slope_us:.1f} | {statistics.median(err):.2f} | {percentile(err, 99):.2f} | {len(err)} |"
        )
    body = f"""{machine_line()}, `python benchmarks/agents.py --reps {args.reps} --long {args.long}`.
Simulator, `single_inference`, one server reused for the sweep; every variant
started by the harness through `cfexp-launch` and measured from outside.
Medians over {args.reps} jobs (CPU slope: medians of 5 jobs at {args.long} tokens
against the 16-token jobs; every token arrives as its own NDJSON line, read and parsed on its own). TTFT error: agent first-token reading minus the
simulator's send time of that chunk (same clock), over every call.
Targets: startup {TARGETS['startup']}; peak RSS {TARGETS['rss']}; CPU per token <= 5 us
(tokio); TTFT error <= 1 ms at p99 (tokio).

| runtime | startup ms | peak RSS MB | CPU ms per job | CPU us per token | TTFT error p50 ms | TTFT error p99 ms | calls |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
    write_section(REPO / "docs" / "benchmarks.md", "agents", "Agent variants: startup, memory, CPU, TTFT error", body)


if __name__ == "__main__":
    main()
