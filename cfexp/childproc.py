"""Helpers for the child processes cfexp starts (servers and agents alike).

- :func:`kill_group`: stop a child and everything it spawned;
- :func:`launcher_path`: ``cfexp-launch`` (``launcher.c``), compiled on first
  use, which starts a program, dies with cfexp, and measures the program's
  exact rusage (see :mod:`cfexp.agents.runner` for why that needs C).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import signal
import subprocess
from pathlib import Path

from cfexp.filelock import FileLock

log = logging.getLogger(__name__)

def kill_group(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    """Signal the child's whole process group (it was started in a new session)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


LAUNCHER_SOURCE = Path(__file__).with_name("launcher.c")


@functools.cache
def launcher_path() -> Path | None:
    """The compiled cfexp-launch, built on first use; None without a C compiler.

    Processes that start together compile it once: the others wait on a lock
    beside it, then use it.
    """
    source = LAUNCHER_SOURCE.read_bytes()
    cache = Path(os.environ.get("CFEXP_CACHE_DIR") or Path.home() / ".cache" / "cfexp") / "bin"
    binary = cache / f"cfexp-launch-{hashlib.sha256(source).hexdigest()[:12]}"
    if binary.exists():
        return binary
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        log.warning("no C compiler: agents start without cfexp-launch and peak RSS is not reported")
        return None
    lock = FileLock(
        binary.with_name(binary.name + ".lock"), "launcher build lock",
        reason="another cfexp process is compiling cfexp-launch",
    )
    with lock:
        if binary.exists():  # compiled while this process waited
            return binary
        partial = binary.with_suffix(f".{os.getpid()}.tmp")
        log.info("compiling cfexp-launch (once): %s", binary)
        done = subprocess.run(
            [compiler, "-O2", "-o", str(partial), str(LAUNCHER_SOURCE)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            log.warning("cfexp-launch did not compile (%s); peak RSS is not reported", done.stderr.strip()[-300:])
            return None
        partial.replace(binary)  # atomic: no process ever runs a half-written file
        return binary
