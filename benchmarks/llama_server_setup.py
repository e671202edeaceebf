"""llama-server's set-up cost: the first build (from its stamp) and a cached set-up.

    python benchmarks/llama_server_setup.py [--repeat 5]

Prints: the build time recorded in the cached build's stamp.json (the first
build, by `make llama-server`), the wall time of `python -m
cfexp.backends.llama_server_build` when the build is cached (what `make
llama-server` costs every later time), and of starting one instance with the
embedded model until /health answers 200 (what a job's set-up costs). Medians
over --repeat runs; the load average before and after. Written up in
docs/benchmarks.md ("llama-server build and set-up").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cfexp.backends.base import LaunchSpec
from cfexp.backends.llama_server import LlamaServerBackend
from cfexp.backends.llama_server_build import LlamaServerBuild

REPO = Path(__file__).resolve().parents[1]


def cached_build_command_s() -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "cfexp.backends.llama_server_build"], cwd=REPO, check=True,
                   capture_output=True)
    return time.monotonic() - started


def server_start_s(threads: int) -> float:
    launch = LaunchSpec(
        backend="llamaserver", api="openai", host="127.0.0.1", url=None, model_name="gemma3:270m",
        model_file=None, n_layers=18, gpu_layers=0, ctx=512, threads=threads, slots=1, binary="",
    )
    with tempfile.TemporaryDirectory() as folder:
        started = time.monotonic()
        instance = LlamaServerBackend().start(launch, 0, Path(folder), 300)
        took = time.monotonic() - started
        assert instance.process is not None
        instance.process.stop()
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    load_before = os.getloadavg()
    built = LlamaServerBuild().ensure()
    commands = [cached_build_command_s() for _ in range(args.repeat)]
    starts = [server_start_s(threads=os.cpu_count() or 1) for _ in range(args.repeat)]
    print(json.dumps({
        "cores": os.cpu_count(),
        "load_before": [round(x, 2) for x in load_before],
        "first_build_s (stamp)": built.stamp.get("build_seconds"),
        "first_build_jobs": built.stamp.get("jobs"),
        "cached_build_command_s (median)": round(statistics.median(commands), 2),
        "cached_build_command_s": [round(x, 2) for x in commands],
        "server_start_to_healthy_s (median)": round(statistics.median(starts), 2),
        "server_start_to_healthy_s": [round(x, 2) for x in starts],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }, indent=2))


if __name__ == "__main__":
    main()
