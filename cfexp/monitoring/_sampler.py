"""The background sampler: reads machine, process and GPU metrics every interval.

A daemon thread takes one :class:`~cfexp.monitoring.Sample` per tick, at
fixed deadlines ``t0 + k * interval_s`` (``time.monotonic_ns``), so ticks do
not drift; when a tick overruns, the missed deadlines are skipped rather than
caught up in a burst.

Watched processes come and go: :meth:`SystemSampler.watch` may be called
before or after :meth:`~SystemSampler.start`, and a process that exits (or
becomes a zombie, or whose pid is reused) simply stops being sampled. Nothing
in the measurement loop raises into the job: a failed tick is logged and
counted, and the next tick runs.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

import psutil

from cfexp.errors import ConfigError
from cfexp.monitoring._gpu import NvmlReader
from cfexp.monitoring._samples import ProcessSample, Sample, SystemSamples

log = logging.getLogger(__name__)

_MIB = 2**20
_NS_PER_S = 1_000_000_000
_NS_PER_MS = 1_000_000
# Names become part of metric names (proc_<name>_cpu_pct): keep them MLflow-safe.
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
# psutil errors that mean "this process cannot be read any more".
_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied)


@dataclass
class _Watched:
    """A watched process and the state its CPU percentages need between ticks."""

    name: str
    proc: psutil.Process
    primed: bool = False
    # Children seen at the previous tick, kept so their cpu_percent stays primed.
    children: dict[int, psutil.Process] = field(default_factory=dict)


@dataclass
class _Reading:
    rss_bytes: int = 0
    threads: int = 0
    cpu_pct: float = 0.0


class SystemSampler:
    """Samples system metrics in a daemon thread until :meth:`stop`.

    ``interval_s`` is the time between ticks (> 0; 0.1 to 1 s is the useful
    range). With ``include_children`` a watched process's numbers are summed
    over its live descendants (a server's workers, an agent's subprocesses).

    Usable once: ``start()``, any number of ``watch()``, ``stop()``. Also a
    context manager; ``stop()`` after the ``with`` block returns the result.
    """

    def __init__(self, interval_s: float = 0.5, include_children: bool = True) -> None:
        if not interval_s > 0:  # also rejects NaN
            raise ConfigError(f"the sampling interval must be > 0 s <interval_s={interval_s}>; use e.g. 0.5")
        self.interval_s = interval_s
        self.include_children = include_children
        self._interval_ns = int(interval_s * _NS_PER_S)
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._result: SystemSamples | None = None
        # Guarded by _lock: shared between the caller's thread and the sampling thread.
        self._watched: dict[str, _Watched] = {}
        self._watched_pids: dict[str, int] = {}
        self._samples: list[Sample] = []
        # Written by the sampling thread only, read after it ends.
        self._gpu_available = False
        self._sampler_cpu_ms: float | None = None
        self._failed_ticks = 0
        self._t0_ns = 0
        self._t0_unix_ms = 0

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> SystemSampler:
        """Start sampling; the first sample is taken one interval from now."""
        if self._thread is not None:
            raise RuntimeError("SystemSampler.start() called twice; create a new sampler per job")
        self._t0_unix_ms = time.time_ns() // _NS_PER_MS
        self._t0_ns = time.monotonic_ns()
        self._thread = threading.Thread(target=self._run, name="cfexp-system-sampler", daemon=True)
        self._thread.start()
        # Wait for the thread's set-up (the GPU library probe costs ~20 ms of CPU
        # the first time): done now, it cannot compete with the start-up of the
        # agent the caller launches next, which is being measured.
        self._ready.wait(timeout=5.0)
        return self

    def stop(self) -> SystemSamples:
        """Stop sampling and return what was recorded; later calls return the same result.

        Returns within a few milliseconds (the tick in progress, if any), not a
        whole interval. Without a prior ``start()`` the result has no samples.
        """
        if self._result is not None:
            return self._result
        if self._thread is not None:
            self._stop_event.set()
            # A tick takes milliseconds; the bound only guards against a stuck /proc read.
            self._thread.join(timeout=max(1.0, 2 * self.interval_s))
            if self._thread.is_alive():
                log.warning("system sampler thread did not stop in time; returning the samples so far")
        if self._failed_ticks:
            log.warning("system sampler: %d tick(s) failed (see the first traceback above)", self._failed_ticks)
        with self._lock:
            self._result = SystemSamples(
                interval_s=self.interval_s,
                t0_ns=self._t0_ns,
                t0_unix_ms=self._t0_unix_ms,
                gpu_available=self._gpu_available,
                watched=dict(self._watched_pids),
                samples=tuple(self._samples),
                sampler_cpu_ms=self._sampler_cpu_ms,
            )
        return self._result

    def __enter__(self) -> SystemSampler:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what to sample ----------------------------------------------------

    def watch(self, name: str, pid: int) -> bool:
        """Sample process ``pid`` as ``proc_<name>_*`` from the next tick on.

        Returns False (and logs) when the process does not exist or cannot be
        read; the name is still reported, with ``proc_<name>_samples`` 0.
        Watching a name again with another pid (a restarted server) continues
        the same series with the new process.
        """
        if not _NAME_RE.fullmatch(name):
            raise ConfigError(
                f"a watched process name must match {_NAME_RE.pattern} <name={name!r}>; it becomes part of metric names"
            )
        if self._result is not None:
            log.warning("watch(%r, %d) after stop(): not sampled", name, pid)
            return False
        with self._lock:
            self._watched_pids[name] = pid
            current = self._watched.get(name)
            if current is not None and current.proc.pid == pid:
                return True
            self._watched.pop(name, None)
        try:
            proc = psutil.Process(pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied) as exc:
            log.info("process %s <pid=%d> cannot be sampled: %s", name, pid, exc)
            return False
        with self._lock:
            self._watched[name] = _Watched(name=name, proc=proc)
        return True

    @property
    def samples_taken(self) -> int:
        """How many ticks have been recorded so far."""
        with self._lock:
            return len(self._samples)

    # -- the sampling thread -----------------------------------------------

    def _run(self) -> None:
        cpu_start_ns = time.thread_time_ns()
        # psutil keeps the previous machine CPU times per thread: prime them here.
        psutil.cpu_percent(interval=None)
        psutil.cpu_percent(interval=None, percpu=True)
        try:
            gpu = NvmlReader.open()
        finally:
            self._ready.set()
        self._gpu_available = gpu is not None
        deadline_ns = self._t0_ns + self._interval_ns
        try:
            while not self._stop_event.wait(max(0, deadline_ns - time.monotonic_ns()) / _NS_PER_S):
                self._tick(gpu)
                deadline_ns += self._interval_ns
                now_ns = time.monotonic_ns()
                if deadline_ns <= now_ns:  # overran: skip the deadlines already missed
                    missed = (now_ns - deadline_ns) // self._interval_ns + 1
                    deadline_ns += missed * self._interval_ns
        finally:
            if gpu is not None:
                gpu.close()
            self._sampler_cpu_ms = (time.thread_time_ns() - cpu_start_ns) / _NS_PER_MS

    def _tick(self, gpu: NvmlReader | None) -> None:
        try:
            sample = self._take_sample(gpu)
        # The loop must outlive any surprise (a psutil or NVML oddity): one
        # missing tick is data loss, a dead thread is silent data loss.
        except Exception:
            self._failed_ticks += 1
            if self._failed_ticks == 1:
                log.warning("system sampler tick failed", exc_info=True)
            return
        with self._lock:
            self._samples.append(sample)

    def _take_sample(self, gpu: NvmlReader | None) -> Sample:
        t_ns = time.monotonic_ns()
        cpu_pct = psutil.cpu_percent(interval=None)
        core_cpu_pct = tuple(psutil.cpu_percent(interval=None, percpu=True))
        memory = psutil.virtual_memory()
        load_1m = psutil.getloadavg()[0]
        with self._lock:
            watched = list(self._watched.values())
        processes: dict[str, ProcessSample] = {}
        for entry in watched:
            reading = self._read_process(entry)
            if reading is None:
                log.debug("process %s <pid=%d> is gone; no longer sampled", entry.name, entry.proc.pid)
                with self._lock:
                    if self._watched.get(entry.name) is entry:
                        del self._watched[entry.name]
            else:
                processes[entry.name] = reading
        return Sample(
            t_ns=t_ns,
            cpu_pct=cpu_pct,
            core_cpu_pct=core_cpu_pct,
            mem_used_mb=(memory.total - memory.available) / _MIB,
            mem_pct=memory.percent,
            load_avg_1m=load_1m,
            processes=processes,
            gpus=gpu.read() if gpu is not None else (),
        )

    def _read_process(self, entry: _Watched) -> ProcessSample | None:
        """The process (and its children) now; None when it is gone."""
        total = _read_one(entry.proc)
        if total is None:
            return None
        first_tick = not entry.primed
        entry.primed = True
        if self.include_children:
            pids = _descendants(entry.proc)
            if pids is None:
                return None
            alive: dict[int, psutil.Process] = {}
            for pid in pids:
                # Reuse last tick's object: it holds the primed CPU counter. A child
                # seen for the first time adds 0 CPU on this tick (its priming read).
                proc = entry.children.get(pid)
                primed = proc is not None
                if proc is None:
                    try:
                        proc = psutil.Process(pid)
                    except _GONE:
                        continue
                reading = _read_one(proc)
                if reading is None:
                    continue
                alive[pid] = proc
                total.rss_bytes += reading.rss_bytes
                total.threads += reading.threads
                if primed:
                    total.cpu_pct += reading.cpu_pct
            entry.children = alive
        return ProcessSample(
            cpu_pct=None if first_tick else total.cpu_pct,
            rss_mb=total.rss_bytes / _MIB,
            threads=total.threads,
        )


def _read_one(proc: psutil.Process) -> _Reading | None:
    """One process's RSS, threads and CPU % since its previous read; None when gone."""
    try:
        # is_running() also compares the start time, so a reused pid counts as gone.
        if not proc.is_running():
            return None
        with proc.oneshot():
            # An exited child not yet reaped by its parent: its numbers are not a process's.
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return _Reading(
                rss_bytes=proc.memory_info().rss,
                threads=proc.num_threads(),
                cpu_pct=proc.cpu_percent(interval=None),
            )
    except _GONE:
        return None


def _descendants(proc: psutil.Process) -> list[int] | None:
    """Pids of all the process's descendants; None when the process is gone.

    Linux lists each thread's children in ``/proc/<pid>/task/<tid>/children``:
    reading those costs microseconds per process in the tree, where psutil's
    ``children()`` reads the status of every process on the machine
    (milliseconds, per watched process, per tick). Without that file (another
    OS, or a kernel without CONFIG_PROC_CHILDREN) psutil's way is used.
    """
    if not _proc_children_supported():
        try:
            return [child.pid for child in proc.children(recursive=True)]
        except _GONE:
            return None
    found: list[int] = []
    pending = [proc.pid]
    while pending:
        pid = pending.pop()
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:  # gone meanwhile
            if pid == proc.pid:
                return None
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as children:
                    kids = [int(kid) for kid in children.read().split()]
            except OSError:  # the thread or process ended meanwhile
                continue
            found.extend(kids)
            pending.extend(kids)
    return found


@functools.cache
def _proc_children_supported() -> bool:
    return os.path.exists(f"/proc/self/task/{os.getpid()}/children")
