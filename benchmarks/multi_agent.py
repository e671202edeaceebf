"""Parallel efficiency by topology and runtime, on the simulator and on real servers.

1. Simulator, no jitter, one slot per instance, dual topology, 2 agents:
   `parallel_efficiency_pct` per runtime (targets: Python >= 99 %, Rust
   >= 99.5 % except async_std), `--reps` repetitions each.
2. Simulator, Python, 8 agents on 8 instances (target >= 97 %).
3. Real servers, Python, 2 agents, ABA (solo before and after), single vs dual
   (`--real-reps` repetitions each): cfexp's embedded server (one slot per
   instance) and llama.cpp's llama-server with 1 and 2 slots
   (`--parallel`, continuous batching). Measured and written down, no target.

Usage: `python benchmarks/multi_agent.py [--reps 5] [--real-reps 3] [--no-sim] [--no-real]`;
results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from _common import REPO, machine_line, sweep, write_section

RUNTIMES = ["asyncio", "uvloop", "tokio", "tokio_localset", "smol", "smol_1kb", "async_std"]
SIM = (
    "backend=sim", "backend.settings.time_scale=1.0", "backend.settings.jitter_cv=0",
    "scenario=multi_agent", "num_predict=64",
)
# The real servers: (label, overrides). Every job runs solo before, concurrent, solo after.
REAL = [
    ("llamacpp (cfexp's server), 1 slot", ("backend=llamacpp",)),
    ("llama-server, 1 slot", ("backend=llamaserver", "backend.slots=1")),
    ("llama-server, 2 slots", ("backend=llamaserver", "backend.slots=2")),
]


def stat(runs: list[Any], key: str, digits: int = 1) -> str:
    values = [r.data.metrics[key] for r in runs if key in r.data.metrics]
    if not values:
        return "–"
    spread = f" ({min(values):.{digits}f}–{max(values):.{digits}f})" if len(values) > 1 else ""
    return f"{statistics.median(values):.{digits}f}{spread}"


def by(runs: list[Any], param: str, value: str) -> list[Any]:
    return [r for r in runs if r.data.params.get(param) == value]


def sim_rows(root: Path, reps: str) -> list[str]:
    dual = sweep(root, "multi_dual", *SIM, "topology=dual", f"runtime={','.join(RUNTIMES)}", reps)
    wide = sweep(root, "multi_8x8", *SIM, "topology=multi", "topology.instances=8", "scenario.agents=8", reps)
    rows = [
        f"| sim | dual | 2 | {rt} | {stat(by(dual, 'runtime.name', rt), 'parallel_efficiency_pct')} "
        f"| {stat(by(dual, 'runtime.name', rt), 'overlap_efficiency_pct')} | {len(by(dual, 'runtime.name', rt))} |"
        for rt in RUNTIMES
    ]
    rows.append(
        f"| sim | multi (8) | 8 | asyncio | {stat(wide, 'parallel_efficiency_pct')} "
        f"| {stat(wide, 'overlap_efficiency_pct')} | {len(wide)} |"
    )
    return rows


def real_rows(root: Path, reps: str) -> list[str]:
    rows = []
    for index, (label, overrides) in enumerate(REAL):
        runs = sweep(root, f"multi_real_{index}", "scenario=multi_agent", "num_predict=32",
                     "topology=single,dual", *overrides, reps)  # fmt: skip
        for topology in ("single", "dual"):
            chosen = by(runs, "topology.name", topology)
            agent = " / ".join(
                f"{stat(chosen, f'agent_0_{m}_solo', 0)} → {stat(chosen, f'agent_0_{m}_concurrent', 0)}"
                for m in ("ttft_ms", "throughput_tok_s")
            )
            warned = sum(1 for r in chosen if r.data.metrics.get("measurement_warnings", 0) > 0)
            rows.append(
                f"| {label} | {topology} | {stat(chosen, 'parallel_efficiency_pct')} | {stat(chosen, 'speedup', 2)} "
                f"| {stat(chosen, 'overlap_efficiency_pct')} | {stat(chosen, 'drift_pct')} | {agent} "
                f"| {warned} | {len(chosen)} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--real-reps", type=int, default=3)
    parser.add_argument("--no-sim", action="store_true", help="skip the simulator tables")
    parser.add_argument("--no-real", action="store_true", help="skip the real servers")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cfexp-bench-") as tmp:
        root = Path(tmp)
        if not args.no_sim:
            rows = sim_rows(root, f"repetition=range(0,{args.reps})")
            body = f"""{machine_line()}, `python benchmarks/multi_agent.py --reps {args.reps} --no-real`.
Simulator: `time_scale=1`, no jitter, one slot per instance, `num_predict=64`; every job
runs each agent alone before and after the concurrent phase (ABA). Values: median (min–max)
over the repetitions. Targets: sim dual 2 agents >= 99 % (Python), >= 99.5 % (Rust except
async_std); sim 8x8 >= 97 %.

| backend | topology | agents | runtime | parallel efficiency % | overlap ratio % (original's) | jobs |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
            write_section(REPO / "docs" / "benchmarks.md", "multi_agent", "Multi-agent parallel efficiency", body)
        if not args.no_real:
            rows = real_rows(root, f"repetition=range(0,{args.real_reps})")
            body = f"""{machine_line()} (load average {load_before:.1f} at the start),
`python benchmarks/multi_agent.py --real-reps {args.real_reps} --no-sim`.
Gemma 3 270M (Q4_K_M), Python agents, 2 agents, `num_predict=32`, `prompt_cache=defeat`,
every job ABA (solo before, concurrent, solo after, each after a warm-up with its
options); `backend.threads=0` (the 2 cores split between instances). Values: median
(min–max) over {args.real_reps} repetitions per row. Efficiency = longest solo / wall
(100 % = no interference); speedup = Σ solo / wall (≤ 2); the overlap ratio is the
original study's; drift = how much an agent's two solos differ. Agent 0's TTFT (ms) and
decode rate (tokens/s): mean solo → concurrent.

| server | topology | parallel efficiency % | speedup | overlap ratio % | drift % | agent 0 TTFT / rate, solo → concurrent | runs with warnings | jobs |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
            write_section(REPO / "docs" / "benchmarks.md", "multi_agent_real",
                          "Single vs dual on real servers (ABA)", body)  # fmt: skip


if __name__ == "__main__":
    main()
