"""Helpers every child process cfexp starts needs (servers and agents alike)."""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Run in the child between fork and exec: the kernel SIGTERMs it if cfexp dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not glibc Linux: process groups and atexit handlers still apply
        pass


def kill_group(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    """Signal the child's whole process group (it was started in a new session)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
