"""One job's managed LLM servers per host at a time: a per-user lock file.

With a parallel launcher (``hydra/launcher=submitit_local``, ``ray``, or
several SLURM jobs placed on one node) two jobs on one host could each start
a llama.cpp or Ollama server at the same moment: they would compete for the
cores, the memory bandwidth and the GPU, and each job's timings would measure
the other's load. A job that needs such servers therefore takes this host's
lock before it starts them and keeps it until they stop; a second job waits
(and says so in its log) before starting its own.

The lock is a :class:`cfexp.filelock.FileLock` (``flock``) on a file in a
per-user folder on the local disk (never a shared filesystem: the lock is
about *this* host). The kernel releases it
when the holding process exits, however it exits, so a crashed job never
leaves the host locked. The file also holds the holder's pid and job folder,
so a waiting job can say whom it waits for.

``topology.host_lock``: ``auto`` (on for servers cfexp starts from a real
engine, llamacpp, llamaserver or ollama; off for the simulator, which only
sleeps, and for servers cfexp only attaches to), ``always`` or ``never``.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from cfexp.config.schema import CfexpConfig
from cfexp.errors import SetupError
from cfexp.filelock import FileLock

log = logging.getLogger(__name__)

LOCK_FILE = "managed-servers.lock"
# Backends whose servers run a real model; the simulator only sleeps.
_REAL_ENGINES = ("llamacpp", "ollama", "llamaserver")
# How often a waiting job repeats that it waits.
_REMIND_S = 60.0


def lock_needed(cfg: CfexpConfig) -> bool:
    """Whether this job's servers must hold the host lock (``topology.host_lock``)."""
    mode = cfg.topology.host_lock
    if mode == "always":
        return True
    if mode == "never":
        return False
    backend = cfg.backend
    if backend.name not in _REAL_ENGINES or cfg.topology.lifecycle == "external":
        return False
    if backend.name == "llamacpp":
        return backend.url is None  # with a URL cfexp attaches to a `cfexp serve` started by hand
    if backend.name == "llamaserver" and backend.url is None:
        return True  # cfexp always starts it
    return backend.start_if_absent  # ollama, llamaserver with a URL: cfexp may start the server


def lock_dir() -> Path:
    """``$CFEXP_LOCK_DIR``, else ``$XDG_RUNTIME_DIR/cfexp``, else ``/tmp/cfexp-<uid>``.

    All three are local to the host, as a per-host lock must be.
    """
    configured = os.environ.get("CFEXP_LOCK_DIR")
    if configured:
        return Path(configured)
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir and Path(runtime_dir).is_dir():
        return Path(runtime_dir) / "cfexp"
    return Path("/tmp") / f"cfexp-{os.getuid()}"


def _private_dir(path: Path) -> Path:
    """Create the folder (mode 700); refuse one that another user owns or a symlink."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid():
        raise SetupError(
            f"the lock folder <{path}> is a symlink or belongs to another user: "
            "remove it, or set CFEXP_LOCK_DIR to a folder of your own on the local disk"
        )
    return path


class HostLock:
    """The host's lock for managed real servers, held by at most one job at a time."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or _private_dir(lock_dir()) / LOCK_FILE
        self._lock = FileLock(
            self.path,
            "host lock",
            reason="another job's managed servers run on this host (topology.host_lock=never shares it)",
            notice_after_s=0.0,  # a job waits for another job's whole run: say so at once
            remind_s=_REMIND_S,
            mode=0o600,
        )

    @property
    def held(self) -> bool:
        return self._lock.held

    def acquire(self, holder: str) -> float:
        """Take the lock, waiting as long as another job holds it.

        ``holder`` names this job in the lock file (its output folder), for
        the log of the next job that waits. Returns the seconds waited.
        """
        return self._lock.acquire(holder=f"job={holder}")

    def release(self) -> None:
        self._lock.release()
