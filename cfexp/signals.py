"""Process-wide signal handling, in one place.

- SIGTERM takes Ctrl-C's path: it raises :class:`Terminated`, a
  KeyboardInterrupt, so every handler that marks a run KILLED on Ctrl-C
  handles it the same way; a second SIGTERM during that clean-up stops the
  children and exits at once;
- what must stop when cfexp stops (the managed servers: registered by
  :mod:`cfexp.backends.process`) runs at interpreter exit (:func:`on_exit`);
- :func:`stop_launched_jobs` passes a stop signal on to jobs of out-of-process
  launchers (submitit);
- :func:`die_with_parent`: a child's own request that the kernel SIGTERM it
  when cfexp dies (``PR_SET_PDEATHSIG``).

Ground floor: the standard library and psutil only.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import signal
import threading
from collections.abc import Callable

import psutil

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_EXIT_HOOKS: list[Callable[[], None]] = []
# Children that are not jobs: stop_launched_jobs leaves them to their owner.
_NOT_JOBS: set[int] = set()


def on_exit(hook: Callable[[], None]) -> None:
    """Run ``hook`` at interpreter exit and on a second SIGTERM (registered once)."""
    if hook not in _EXIT_HOOKS:
        _EXIT_HOOKS.append(hook)


def run_exit_hooks() -> None:
    for hook in list(_EXIT_HOOKS):
        hook()


def not_a_launched_job(pid: int) -> None:
    """A child that :func:`stop_launched_jobs` must neither signal nor wait for: the
    tracking writer, which the clean-up after a stop still writes through."""
    _NOT_JOBS.add(pid)


def die_with_parent(death_signal: signal.Signals = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``death_signal`` (SIGTERM) to this process when its parent dies.

    Called by a child on its own start-up (never in a fork-to-exec
    ``preexec_fn``: loading libc there can deadlock a multi-threaded parent).
    Returns False when the parent is already gone (adopted by init), so the
    caller can exit at once. On systems without ``prctl`` it is a no-op, and
    process groups plus cfexp's exit handlers still stop the child.
    """
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, death_signal)
    except (OSError, AttributeError):
        return True
    return os.getppid() != 1


def stop_launched_jobs(signum: int, grace_s: float | None = 30.0) -> None:
    """Pass a stop signal on to the children no ManagedProcess tracks, then wait.

    Those are jobs of an out-of-process launcher (submitit's local controllers,
    which forward SIGTERM to their job): each job marks its run KILLED and stops
    its own servers. Ctrl-C already reached them through the process group, so
    they are only waited for (SIGINT: no signal sent). What outlives ``grace_s``
    is killed, whole tree; ``None`` waits for the jobs to end on their own.
    """
    try:
        children = [child for child in psutil.Process().children() if child.pid not in _NOT_JOBS]
    except psutil.Error:
        return
    if signum != signal.SIGINT:
        for child in children:
            try:
                child.send_signal(signum)
            except psutil.NoSuchProcess:
                pass
    _, alive = psutil.wait_procs(children, timeout=grace_s)
    for child in alive:
        log.warning("pid %d did not stop within %s s of the signal: killed", child.pid, grace_s)
        try:
            for process in [*child.children(recursive=True), child]:
                process.kill()
        except psutil.NoSuchProcess:
            pass


class Terminated(KeyboardInterrupt):
    """SIGTERM, taking Ctrl-C's path: the running job is marked KILLED and
    every child stopped on the way out (``cfexp.app.task``, ``cfexp.__main__``).

    A KeyboardInterrupt rather than SystemExit, so that every handler that
    marks a run KILLED on Ctrl-C handles SIGTERM the same way.
    """

    signum = signal.SIGTERM


_terminating = False


def _on_sigterm(signum: int, frame: object) -> None:
    global _terminating
    if _terminating:  # a second SIGTERM while cleaning up: stop the children, go now
        run_exit_hooks()
        os._exit(128 + signum)
    _terminating = True
    raise Terminated(f"terminated by signal {signum} (SIGTERM)")


def install_cleanup_handlers() -> None:
    """Make the exit hooks run at exit, and SIGTERM raise :class:`Terminated` (main thread only)."""
    atexit.register(run_exit_hooks)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
