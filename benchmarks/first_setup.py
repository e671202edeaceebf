"""Time the first set-up on a fresh machine, and what llama-cpp-python's build spends.

Two measurements, each writing its own section of docs/benchmarks.md:

- ``fresh`` (default): a fresh clone of this repository, then
  ``scripts/bootstrap`` with pip's cache switched off (``PIP_NO_CACHE_DIR=1``),
  so every package is downloaded and llama-cpp-python is built from its sdist
  exactly as on a new machine, then the clone's own ``python -m cfexp``
  (the README's first command: the default experiment on the embedded model).
  Wall time and CPU time (user + sys of every child) of each step.
- ``--split``: llama-cpp-python's sdist configured as pip would (CMake,
  Ninja, Release) with the default options, then built one CMake target at a
  time (ggml-base, ggml-cpu, ggml, llama, llama-common, mtmd) to show which
  parts cost what. CPU time is the figure to read: wall time depends on what
  else the machine runs.

Usage: ``python benchmarks/first_setup.py [--split] [--out docs/benchmarks.md]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, machine_line, write_section

OUT = REPO / "docs" / "benchmarks.md"
SDIST_CACHE = Path.home() / ".cache" / "cfexp" / "llama-server" / "sources"
SPLIT_TARGETS = ("ggml-base", "ggml-cpu", "ggml", "llama", "llama-common", "mtmd")


def timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run ``command``; (wall seconds, CPU seconds of its children), or exit on failure."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"{' '.join(command)[:80]}: {wall:.0f} s wall, {cpu:.0f} s CPU", file=sys.stderr)
    return wall, cpu


def fresh(root: Path) -> str:
    clone = root / "cfexp"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True)
    env = {**os.environ, "PIP_NO_CACHE_DIR": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    setup_wall, setup_cpu = timed(["./scripts/bootstrap"], clone, env)
    run_wall, run_cpu = timed([str(clone / ".venv" / "bin" / "python"), "-m", "cfexp"], clone, env)
    load = os.getloadavg()[0]
    return f"""{machine_line()}, commit `{commit.stdout.strip()}`,
`python benchmarks/first_setup.py`: a fresh clone, `scripts/bootstrap` with pip's cache off
(every package downloaded from PyPI, llama-cpp-python built from its sdist with the bootstrap's
options), then the clone's `python -m cfexp` (the default experiment on the embedded model).
One repetition (a first set-up cannot be repeated on one machine without its cache);
load average {load:.1f} at the end.

| step | wall time | CPU time (user + sys) |
|---|---|---|
| `scripts/bootstrap` (venv, every dependency, llama-cpp-python's build) | {setup_wall / 60:.1f} min | {setup_cpu / 60:.1f} min |
| first `python -m cfexp` (default experiment) | {run_wall:.0f} s | {run_cpu:.0f} s |
| **total, `make run` on a fresh machine** (target <= 8 min) | **{(setup_wall + run_wall) / 60:.1f} min** | {(setup_cpu + run_cpu) / 60:.1f} min |"""


def split(root: Path) -> str:
    sdists = sorted(SDIST_CACHE.glob("llama_cpp_python-*.tar.gz"))
    if not sdists:
        sys.exit(f"no llama-cpp-python sdist in {SDIST_CACHE}: run `make llama-server` once")
    subprocess.run(["tar", "-xzf", str(sdists[-1]), "-C", str(root)], check=True)
    (source,) = root.glob("llama_cpp_python-*/")
    build = root / "build"
    configure = ["cmake", "-S", str(source), "-B", str(build), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                 f"-DSKBUILD_PLATLIB_DIR={root / 'install'}"]  # fmt: skip
    timed(configure, root)
    rows = []
    for target in SPLIT_TARGETS:
        wall, cpu = timed(["ninja", "-C", str(build), f"-j{os.cpu_count()}", target], root)
        rows.append((target, wall, cpu))
    total = sum(cpu for _, _, cpu in rows)
    table = "\n".join(f"| `{t}` | {cpu / 60:.1f} min | {cpu / total * 100:.0f} % | {wall / 60:.1f} min |"
                      for t, wall, cpu in rows)  # fmt: skip
    return f"""{machine_line()}, `python benchmarks/first_setup.py --split`: {sdists[-1].name} configured
as pip builds it (CMake, Ninja, Release, default options), then one CMake target at a time.

| target | CPU time | share | wall time |
|---|---|---|---|
{table}
| all | {total / 60:.1f} min | 100 % | |"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", action="store_true", help="the per-target build split instead")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.split and not shutil.which("ninja"):
        sys.exit("--split needs ninja (Debian: apt-get install ninja-build)")
    with tempfile.TemporaryDirectory(prefix="cfexp-setup-") as tmp:
        if args.split:
            write_section(args.out, "first_setup_split", "llama-cpp-python's build, target by target", split(Path(tmp)))
        else:
            write_section(args.out, "first_setup", "First set-up on a fresh machine", fresh(Path(tmp)))


if __name__ == "__main__":
    main()
