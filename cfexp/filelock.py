"""Inter-process locks on files (``flock``), for state that several cfexp processes share.

Several cfexp commands (and the jobs of one sweep, under an out-of-process
launcher) may start at the same moment and find the same thing missing: the
tracking store, the Optuna storage, the assembled model file, a Rust binary,
the compiled launcher. Whatever creates such shared state does it under a
:class:`FileLock` on a file next to it; every other process waits, then finds
it made. Also the per-host lock for managed servers
(:mod:`cfexp.backends.host_lock`) is one.

- ``flock(2)`` on a file that is never deleted: the kernel releases the lock
  when its holder closes the file or exits, however it exits (a SIGKILLed
  holder never leaves a stale lock). The file is opened close-on-exec, so a
  child started while the lock is held (a server, cargo) does not inherit it.
- The holder writes ``pid=… host=… <what it does>`` into the file, so a
  waiting process can say whom it waits for.
- A waiter says so on its log when the wait is long (``notice_after_s``) and
  again every ``remind_s``; Ctrl-C or SIGTERM interrupt the wait.
- Locks are exclusive between processes and also between two ``FileLock``
  objects of one process (each has its own open file).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

# A waiter polls (so it can speak and be interrupted): quickly at first, then less often.
_FIRST_POLL_S = 0.02
_MAX_POLL_S = 0.25


class FileLock:
    """An exclusive lock on ``path`` held by at most one process (or object) at a time.

    ``name`` names the lock in messages (``waiting for the <name> <path>``);
    ``reason`` says why one waits (``: another command is creating the store``).
    """

    def __init__(
        self,
        path: Path,
        name: str,
        *,
        reason: str = "",
        notice_after_s: float = 3.0,
        remind_s: float = 60.0,
        mode: int = 0o644,
    ) -> None:
        self.path = path
        self.name = name
        self.reason = reason
        self.notice_after_s = notice_after_s
        self.remind_s = remind_s
        self.mode = mode
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, holder: str = "") -> float:
        """Take the lock, waiting as long as another holds it; the seconds waited.

        ``holder`` describes this process's use of it (written in the file).
        """
        if self._fd is not None:
            return 0.0
        fd = self._open()
        started = time.monotonic()
        contended = False
        next_notice_s = self.notice_after_s
        poll_s = _FIRST_POLL_S
        try:
            while not _try_flock(fd):
                contended = True
                waited = time.monotonic() - started
                if waited >= next_notice_s:
                    log.warning(
                        "waiting for the %s %s, held by %s%s",
                        self.name, self.path, _read_holder(fd) or "another process",
                        f": {self.reason}" if self.reason else "",
                    )
                    next_notice_s = waited + self.remind_s
                time.sleep(poll_s)
                poll_s = min(poll_s * 2, _MAX_POLL_S)
        except BaseException:
            os.close(fd)
            raise
        waited = time.monotonic() - started if contended else 0.0
        if contended and waited >= self.notice_after_s:
            log.info("%s %s acquired after %.1f s", self.name, self.path, waited)
        self._take(fd, holder)
        return waited

    def try_acquire(self, holder: str = "") -> bool:
        """Take the lock if it is free; never waits."""
        if self._fd is not None:
            return True
        fd = self._open()
        if not _try_flock(fd):
            os.close(fd)
            return False
        self._take(fd, holder)
        return True

    def holder(self) -> str:
        """What the current holder wrote (``pid=… host=… …``), "" when free or unknown."""
        try:
            with self.path.open("rb") as handle:
                return handle.read(4096).decode(errors="replace").strip()
        except OSError:
            return ""

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            os.close(fd)  # closing the file releases the flock

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, self.mode)

    def _take(self, fd: int, holder: str) -> None:
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid={os.getpid()} host={socket.gethostname()} {holder}".rstrip().encode() + b"\n", 0)
        except OSError:  # only the message of a later waiter depends on it
            pass
        self._fd = fd


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 4096, 0).decode(errors="replace").strip()
    except OSError:
        return ""
