"""GPU metrics through a fake ``pynvml``: present, unreported fields, and every kind of absence."""

from __future__ import annotations

import logging
import sys
import types
from typing import Any

import pytest

from cfexp.monitoring import SystemSampler, _gpu
from cfexp.monitoring._gpu import NvmlReader
from tests.monitoring.children import wait_for

MIB = 2**20


class FakeNVMLError(Exception):
    pass


def fake_pynvml(
    *, devices: int = 1, init_error: BaseException | None = None, power_supported: bool = True
) -> types.ModuleType:
    nvml: Any = types.ModuleType("pynvml")
    nvml.calls = []
    nvml.NVMLError = FakeNVMLError

    def init() -> None:
        nvml.calls.append("init")
        if init_error is not None:
            raise init_error

    def power(handle: str) -> int:
        if not power_supported:
            raise FakeNVMLError("Not Supported")
        return 71_500  # mW

    nvml.nvmlInit = init
    nvml.nvmlShutdown = lambda: nvml.calls.append("shutdown")
    nvml.nvmlDeviceGetCount = lambda: devices
    nvml.nvmlDeviceGetHandleByIndex = lambda i: f"handle{i}"
    nvml.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=37, memory=12)
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=1536 * MIB, total=8192 * MIB)
    nvml.nvmlDeviceGetPowerUsage = power
    return nvml


@pytest.fixture(autouse=True)
def _fresh_absence_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(NvmlReader, "_absence_logged", False)


def test_present_gpu_is_read_in_watts_and_megabytes(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fake_pynvml(devices=2)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    reader = NvmlReader.open()
    assert reader is not None and reader.device_count == 2
    first, second = reader.read()
    assert (first.index, first.util_pct, first.mem_used_mb, first.power_w) == (0, 37.0, 1536.0, 71.5)
    assert second.index == 1
    reader.close()
    assert nvml.calls == ["init", "shutdown"]


def test_sampler_with_a_gpu_records_gpu_series(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    with SystemSampler(interval_s=0.02) as sampler:
        wait_for(lambda: sampler.samples_taken >= 3)
    result = sampler.stop()
    summary = result.summary()
    assert summary["gpu_available"] == 1.0
    assert summary["gpu0_util_pct_mean"] == 37.0
    assert summary["gpu0_mem_used_mb_max"] == 1536.0
    assert summary["gpu0_power_w_mean"] == 71.5
    assert len(result.series()["gpu0_util_pct"]) == len(result)
    assert nvml.calls == ["init", "shutdown"]


def test_an_unsupported_quantity_is_absent_not_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(power_supported=False))
    reader = NvmlReader.open()
    assert reader is not None
    (gpu,) = reader.read()
    assert gpu.power_w is None and gpu.util_pct == 37.0


@pytest.mark.parametrize(
    "nvml",
    [
        pytest.param(None, id="package-missing"),  # sys.modules[name] = None makes import fail
        pytest.param(fake_pynvml(init_error=FakeNVMLError("NVML Shared Library Not Found")), id="no-driver"),
        pytest.param(fake_pynvml(init_error=OSError("libnvidia-ml.so.1: cannot open")), id="os-error"),
        pytest.param(fake_pynvml(devices=0), id="no-device"),
    ],
)
def test_every_init_failure_means_gpu_absent(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, nvml: types.ModuleType | None
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    caplog.set_level(logging.DEBUG, logger=_gpu.__name__)
    assert NvmlReader.open() is None
    assert NvmlReader.open() is None
    assert len([r for r in caplog.records if "GPU metrics absent" in r.message]) == 1  # logged once
    assert all(r.levelno == logging.DEBUG for r in caplog.records)

    with SystemSampler(interval_s=0.02) as sampler:
        wait_for(lambda: sampler.samples_taken >= 2)
    result = sampler.stop()
    assert result.gpu_available is False
    assert [k for k in result.summary() if k.startswith("gpu")] == ["gpu_available"]
    assert result.summary()["gpu_available"] == 0.0
    assert not [k for k in result.to_rows()[0] if k.startswith("gpu")]


def test_no_device_shuts_nvml_down_again(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fake_pynvml(devices=0)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert NvmlReader.open() is None
    assert nvml.calls == ["init", "shutdown"]


def test_this_machine_without_a_gpu_records_absence() -> None:
    """The real pynvml on a machine without an NVIDIA driver (skipped where one exists)."""
    reader = NvmlReader.open()
    if reader is not None:
        reader.close()
        pytest.skip("an NVIDIA GPU is present")
    with SystemSampler(interval_s=0.02) as sampler:
        wait_for(lambda: sampler.samples_taken >= 2)
    summary = sampler.stop().summary()
    assert summary["gpu_available"] == 0.0
    assert not any(k.startswith("gpu") and k != "gpu_available" for k in summary)
