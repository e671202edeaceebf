"""Start several Python processes so that they do something at the same instant.

Each process runs ``PRELUDE + script``: it imports what it needs first (which
takes each a different time), says it is ready, and waits; once all are
ready they are released together, and the script goes on from ``go()``.
The tests of shared state created on first use (the tracking store, the
Optuna storage, the spool, the model file, the Rust and launcher builds) use
it: whatever the processes race for, they race for it within a millisecond.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PRELUDE = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")

def go():
    print("ready", flush=True)
    sys.stdin.readline()
"""


@dataclass
class Finished:
    returncode: int
    stdout: str  # after the "ready" line
    stderr: str


def run_together(
    script: str,
    args: Sequence[Sequence[str]],
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> list[Finished]:
    """``python -c PRELUDE+script ARGS`` once per entry of ``args``, released together at ``go()``."""
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | dict(env or {})
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environment.get("PYTHONPATH")]))
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", PRELUDE + script, *arguments],
            cwd=REPO, env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        for arguments in args
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            if line != "ready\n":  # it failed before go(): report what it said
                _, stderr = process.communicate(timeout=timeout)
                raise AssertionError(f"a process ended before go(): {line!r}\n{stderr[-3000:]}")
        for process in processes:  # the release: one short write each
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        results = []
        for process in processes:
            stdout, stderr = process.communicate(timeout=timeout)
            results.append(Finished(process.returncode, stdout, stderr))
        return results
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
