"""What one server restart costs: the price of a randomised run order.

In blocked or shuffled order (docs/methodology.md, "Run order") a job's
launch parameters (ctx, gpu_layers, a baseline's server defaults) rarely
match the previous job's, so a ``per_sweep`` server restarts for nearly every
job. This starts cfexp's own server the way a job does, for a configured run
(ctx 512, gpu_layers 80) and for a baseline (the engine's defaults), a few
times each, and prints the time from launch to healthy.

Usage: ``python benchmarks/server_restart.py [sim|llamacpp ...] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hydra import compose, initialize_config_dir  # noqa: E402

from cfexp.app.agent_spec import instance_launch_options  # noqa: E402
from cfexp.backends.cfexp_server import CfexpServerBackend  # noqa: E402
from cfexp.backends.pool import launch_specs  # noqa: E402
from cfexp.config.schema import register_configs  # noqa: E402
from cfexp.config.validate import to_settings  # noqa: E402


def start_times(backend: str, mode: str, repeat: int) -> list[float]:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"backend={backend}", f"options_mode={mode}", "paths.root_dir=/tmp"])
    settings = to_settings(cfg)
    (launch,) = launch_specs(settings, instance_launch_options(settings))
    times = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as folder:
            started = time.monotonic()
            instance = CfexpServerBackend(backend).start(launch, 0, Path(folder), 300)
            times.append(time.monotonic() - started)
            assert instance.process is not None
            instance.process.stop()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backends", nargs="*", default=["sim", "llamacpp"])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    register_configs()
    print("| backend | launch | start to healthy, s (each) | median |")
    print("|---|---|---|---|")
    for backend in args.backends:
        for mode, label in (("configured", "ctx 512, gpu_layers 80"), ("server_defaults", "the engine's defaults")):
            times = start_times(backend, mode, args.repeat)
            each = ", ".join(f"{t:.2f}" for t in times)
            print(f"| {backend} | {label} | {each} | {statistics.median(times):.2f} |", flush=True)


if __name__ == "__main__":
    main()
