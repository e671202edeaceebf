"""System metrics sampled in the background while a job runs (no tracking, no config).

- :class:`SystemSampler`: a daemon thread that samples the machine (CPU, memory,
  load), watched processes with their children (CPU, RSS, threads) and NVIDIA
  GPUs (utilisation, memory, power) every ``interval_s``;
- :class:`SystemSamples`: what one run recorded, with ``series()``,
  ``summary()`` and ``to_rows()`` for the caller to log.

Names, units and how an absent GPU is recorded: docs/system-metrics.md.

    sampler = SystemSampler(interval_s=0.5)
    with sampler:
        sampler.watch("server0", server_pid)
        sampler.watch("agent", agent_pid)
        ...
    summary = sampler.stop().summary()   # {"sys_cpu_pct_mean": ..., ...}
"""

from cfexp.monitoring._sampler import SystemSampler
from cfexp.monitoring._samples import GpuSample, ProcessSample, Sample, SystemSamples, summarize

__all__ = ["GpuSample", "ProcessSample", "Sample", "SystemSampler", "SystemSamples", "summarize"]
