"""Child-process scripts for sampler tests, and a condition wait."""

from __future__ import annotations

import time
from collections.abc import Callable

# Allocates (and touches) 64 MB, says so, then spins a CPU; never outlives a failed test by long.
HOG = """
import time
data = b"x" * (64 << 20)
print("ready", flush=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    pass
"""

# Starts a child that allocates 64 MB and sleeps; the parent itself stays small.
PARENT_OF_ALLOCATOR = """
import subprocess, sys
child = subprocess.Popen(
    [sys.executable, "-c", "import time\\ndata = b'x' * (64 << 20)\\nprint('ready', flush=True)\\ntime.sleep(60)"],
    stdout=subprocess.PIPE, text=True,
)
print(child.stdout.readline(), end="", flush=True)
child.wait()
"""

SLEEPER = "import time\nprint('ready', flush=True)\ntime.sleep(60)"


def wait_for(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Poll until ``condition()``; the timeout is only a guard against a hung test."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(0.01)
