"""Parallel efficiency by topology and runtime, on the simulator and the real model.

1. Simulator, no jitter, one slot per instance, dual topology, 2 agents:
   `parallel_efficiency_pct` per runtime (targets: Python >= 99 %, Rust
   >= 99.5 % except async_std), `--reps` repetitions each.
2. Simulator, Python, 8 agents on 8 instances (target >= 97 %).
3. The embedded model (llama.cpp), Python, 2 agents, single vs dual
   (`--real-reps` repetitions each): measured and written down, no target.

Usage: `python benchmarks/multi_agent.py [--reps 5] [--real-reps 3]`; results
go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
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


def stats(runs: list[Any], key: str) -> str:
    values = [r.data.metrics[key] for r in runs]
    spread = f" (min {min(values):.2f}, max {max(values):.2f})" if len(values) > 1 else ""
    return f"{statistics.median(values):.2f}{spread}"


def by(runs: list[Any], param: str, value: str) -> list[Any]:
    return [r for r in runs if r.data.params.get(param) == value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--real-reps", type=int, default=3)
    args = parser.parse_args()
    reps = f"repetition={','.join(map(str, range(args.reps)))}"
    with tempfile.TemporaryDirectory(prefix="cfexp-bench-") as tmp:
        root = Path(tmp)
        dual = sweep(root, "multi_dual", *SIM, "topology=dual", f"runtime={','.join(RUNTIMES)}", reps)
        wide = sweep(root, "multi_8x8", *SIM, "topology=multi", "topology.instances=8", "scenario.agents=8", reps)
        real = sweep(
            root, "multi_real", "scenario=multi_agent", "num_predict=32", "topology=single,dual",
            f"repetition={','.join(map(str, range(args.real_reps)))}",
        )
    rows = [
        f"| sim | dual | 2 | {rt} | {stats(by(dual, 'runtime.name', rt), 'parallel_efficiency_pct')} "
        f"| {stats(by(dual, 'runtime.name', rt), 'overlap_efficiency_pct')} | {len(by(dual, 'runtime.name', rt))} |"
        for rt in RUNTIMES
    ]
    rows.append(
        f"| sim | multi (8) | 8 | asyncio | {stats(wide, 'parallel_efficiency_pct')} | {stats(wide, 'overlap_efficiency_pct')} | {len(wide)} |"
    )
    for topology in ("single", "dual"):
        chosen = by(real, "topology.name", topology)
        rows.append(
            f"| llamacpp (Gemma 3 270M) | {topology} | 2 | asyncio | {stats(chosen, 'parallel_efficiency_pct')} "
            f"| {stats(chosen, 'overlap_efficiency_pct')} | {len(chosen)} |"
        )
    body = f"""{machine_line()}, `python benchmarks/multi_agent.py --reps {args.reps} --real-reps {args.real_reps}`.
Simulator: `time_scale=1`, no jitter, one slot per instance, `num_predict=64`.
Real model: `num_predict=32`, `backend.threads=0` (2 cores split between instances).
Each job measures every agent alone first (solo phase), then all together.
Values: median (min, max) over the repetitions.
Targets: sim dual 2 agents >= 99 % (Python), >= 99.5 % (Rust except async_std); sim 8x8 >= 97 %.

| backend | topology | agents | runtime | parallel efficiency % | overlap ratio % (original's) | jobs |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
    write_section(REPO / "docs" / "benchmarks.md", "multi_agent", "Multi-agent parallel efficiency", body)


if __name__ == "__main__":
    main()
