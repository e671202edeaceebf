"""Draw a report's figures in a forked child process while the parent writes the tables.

matplotlib's import and the drawing of a section's figures are about a second
of one core over a large store, and nothing the parent computes next (the
statistics, the tables, the CSVs) needs them. On a machine with a second core
a child forked from the report process draws them meanwhile: it inherits the
runs by ``fork`` (nothing is pickled), writes its PNGs into the report folder
and sends their names back through a pipe.

The report must not depend on that: where ``fork`` is unsafe or missing (other
Python threads running, no ``os.fork``) the figures are drawn in-process, and a
child that fails or dies without an answer has its figures drawn again
in-process, so an error surfaces with its own traceback. The child is a daemon
of :mod:`multiprocessing`: it is stopped if the report process ends first.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection

log = logging.getLogger(__name__)

# A function that writes figures and returns their file names (None: a figure with nothing to show).
Draw = Callable[[], list[str | None]]


def draw_aside(draw: Draw) -> Callable[[], list[str]]:
    """Start ``draw`` in a forked child; return the function that waits for its figure names."""
    if not _fork_is_safe():
        names = draw()
        return lambda: [n for n in names if n]
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_draw_in_child, args=(draw, send), name="cfexp-report-figures", daemon=True)
    child.start()
    send.close()  # the child holds the writing end: EOF once it is gone

    def figures() -> list[str]:
        try:
            names, why = receive.recv()
        except EOFError:  # died before it answered (killed, out of memory)
            names, why = None, ""
        finally:
            receive.close()
            child.join()
        if names is None or child.exitcode != 0:
            log.warning("the figure process failed (%s): drawing the figures here", why or f"exit code {child.exitcode}")
            names = draw()
        return [n for n in names if n]

    return figures


def _fork_is_safe() -> bool:
    """Whether this process can fork a child that runs Python: no ``fork``, or another thread
    running (the child would copy any lock it holds, held forever), is a no."""
    return hasattr(os, "fork") and threading.active_count() == 1


def _draw_in_child(draw: Draw, send: Connection) -> None:
    try:
        send.send((draw(), ""))
    except Exception as exc:  # said once, by the parent, which draws again (and raises if it fails too)
        send.send((None, f"{type(exc).__name__}: {exc}"))
        sys.exit(1)  # no traceback here: the parent's is the one to read
