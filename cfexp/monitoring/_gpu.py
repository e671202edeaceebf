"""GPU readings through NVML (nvidia-ml-py, module ``pynvml``) — or their absence.

Without an NVIDIA driver, library or device, :meth:`NvmlReader.open` returns
None and the run records ``gpu_available: false`` with no GPU series: a
machine without a GPU must not look like a GPU at 0 %.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from cfexp.monitoring._samples import GpuSample

log = logging.getLogger(__name__)

_MIB = 2**20
_MW_PER_W = 1000.0


class NvmlReader:
    """Reads utilisation, memory and power of every NVIDIA device NVML reports."""

    # Absence is logged once per process, not once per job of a multirun.
    _absence_logged: ClassVar[bool] = False

    def __init__(self, nvml: Any, handles: list[Any]) -> None:
        # nvml is the pynvml module (it ships no type information).
        self._nvml = nvml
        self._handles = handles

    @classmethod
    def open(cls) -> NvmlReader | None:
        """Initialise NVML; None when there is no usable NVIDIA GPU."""
        try:
            # Imported here, not at module level: absence of the package is one
            # more way of having no GPU. (pynvml ships no type information.)
            pynvml: Any = importlib.import_module("pynvml")
            pynvml.nvmlInit()
        # Any failure here — the package missing, no libnvidia-ml.so, no driver,
        # a driver/library mismatch — means the same thing: no GPU metrics.
        except Exception as exc:
            NvmlReader._log_absence(exc)
            return None
        try:
            count = pynvml.nvmlDeviceGetCount()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as exc:
            _shutdown(pynvml)
            NvmlReader._log_absence(exc)
            return None
        if not handles:
            _shutdown(pynvml)
            NvmlReader._log_absence("NVML reports no device")
            return None
        return cls(pynvml, handles)

    @staticmethod
    def _log_absence(reason: object) -> None:
        if not NvmlReader._absence_logged:
            NvmlReader._absence_logged = True
            log.debug("GPU metrics absent (NVML unavailable): %s", reason)

    @property
    def device_count(self) -> int:
        return len(self._handles)

    def read(self) -> tuple[GpuSample, ...]:
        """One reading per device; a quantity the device does not report is None."""
        nvml = self._nvml
        readings = []
        for index, handle in enumerate(self._handles):
            util = self._query(nvml.nvmlDeviceGetUtilizationRates, handle)
            memory = self._query(nvml.nvmlDeviceGetMemoryInfo, handle)
            power_mw = self._query(nvml.nvmlDeviceGetPowerUsage, handle)
            readings.append(
                GpuSample(
                    index=index,
                    util_pct=None if util is None else float(util.gpu),
                    mem_used_mb=None if memory is None else memory.used / _MIB,
                    power_w=None if power_mw is None else power_mw / _MW_PER_W,
                )
            )
        return tuple(readings)

    def _query(self, getter: Callable[[Any], Any], handle: Any) -> Any:
        try:
            return getter(handle)
        except self._nvml.NVMLError:  # e.g. NVML_ERROR_NOT_SUPPORTED for power on some boards
            return None

    def close(self) -> None:
        _shutdown(self._nvml)


def _shutdown(nvml: Any) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception:  # a failed shutdown changes nothing for the run
        log.debug("nvmlShutdown failed", exc_info=True)
