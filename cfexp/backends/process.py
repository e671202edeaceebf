"""A child process that cfexp starts, watches and always stops.

Used for every managed server. Three guarantees make "no orphan process" hold:
the child gets its own process group (so stopping it stops anything it
spawned), the kernel sends it SIGTERM if cfexp itself dies (cfexp's server
asks for ``PR_SET_PDEATHSIG`` itself, ``--die-with-parent``; other programs
are started through ``cfexp-launch``, which does), and :func:`stop_all` runs
at interpreter exit for whatever is still running (registered with
:mod:`cfexp.signals`, which also turns SIGTERM into Ctrl-C's path).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from cfexp import signals
from cfexp.childproc import kill_group

log = logging.getLogger(__name__)

_RUNNING: set[ManagedProcess] = set()
_RUNNING_LOCK = threading.Lock()


class ManagedProcess:
    """A started child with its output captured to a log file.

    ``ready_marker``: a line prefix the child prints on stdout when it is
    ready; :meth:`wait_ready` returns that line. Other output goes to the log,
    and to ``echo`` too when given (``cfexp ui`` shows MLflow's on the terminal).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        ready_marker: str | None = None,
        echo: TextIO | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._ready_marker = ready_marker
        self._echo = echo
        self._ready_line: str | None = None
        self._ready_event = threading.Event()
        self._tail: deque[str] = deque(maxlen=40)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # The log is appended to (a sweep keeps every start of an instance in one
        # file): this start's own output begins here (log_text).
        self._log = log_path.open("a", encoding="utf-8", errors="replace")
        self.log_offset = os.fstat(self._log.fileno()).st_size
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,
        )
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        self._reader = threading.Thread(target=self._pump, name=f"log-{name}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            if (
                self._ready_marker
                and self._ready_line is None
                and line.startswith(self._ready_marker)
            ):
                self._ready_line = line.strip()
                self._ready_event.set()
            self._tail.append(line.rstrip("\n"))
            self._log.write(line)
            self._log.flush()
            if self._echo is not None:
                try:
                    self._echo.write(line)
                    self._echo.flush()
                except (OSError, ValueError):  # the terminal went away: keep draining into the log
                    self._echo = None
        self._ready_event.set()  # EOF: wake waiters, the child is gone

    def wait_ready(self, timeout_s: float) -> str | None:
        """The ready line, or None if the child exited or the time ran out first."""
        self._ready_event.wait(timeout_s)
        if self._ready_line is None and self._ready_event.is_set():
            # Its output ended: it is exiting. Its exit status can lag the end of
            # its output by a moment; wait for it, so callers see alive() False.
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        return self._ready_line

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_ended(self) -> None:
        """Block until the child's output ends: it exited (or closed its stdout)."""
        self._reader.join()

    def log_text(self) -> str:
        """What this start of the process wrote to its log so far (not an earlier start's lines)."""
        try:
            with self.log_path.open("rb") as log_file:
                log_file.seek(self.log_offset)
                return log_file.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 10) -> str:
        """The child's last output lines, for error messages."""
        return "\n".join(list(self._tail)[-lines:])

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the process group, then SIGKILL after ``grace_s``."""
        if self.alive():
            self._signal_group(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.02)
            if self.alive():
                log.warning("%s did not stop on SIGTERM; killing it", self.name)
                self._signal_group(signal.SIGKILL)
        self.popen.wait()
        # Children it may have left in its group go too.
        self._signal_group(signal.SIGKILL)
        self._reader.join(timeout=2)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._log.close()
        with _RUNNING_LOCK:
            _RUNNING.discard(self)

    def _signal_group(self, sig: signal.Signals) -> None:
        kill_group(self.popen.pid, sig)


def stop_all() -> None:
    """Stop every process still running (interpreter exit, SIGTERM)."""
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for process in running:
        process.stop(grace_s=2.0)


# Whatever still runs is stopped at exit and on a second SIGTERM.
signals.on_exit(stop_all)
