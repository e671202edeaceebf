"""The public surface of cfexp.monitoring, and the layers it may use."""

from __future__ import annotations

import subprocess
import sys

import cfexp.monitoring


def test_public_names() -> None:
    assert cfexp.monitoring.__all__ == sorted(cfexp.monitoring.__all__)
    assert set(cfexp.monitoring.__all__) == {
        "GpuSample",
        "ProcessSample",
        "Sample",
        "SystemSampler",
        "SystemSamples",
        "summarize",
    }


def test_imports_nothing_above_floor_one() -> None:
    """A measurement helper: no mlflow, hydra, omegaconf, and of cfexp only errors."""
    code = (
        "import sys, cfexp.monitoring\n"
        "print('\\n'.join(m for m in sys.modules if m.split('.')[0] in "
        "('mlflow', 'hydra', 'omegaconf', 'cfexp')))"
    )
    loaded = set(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    )
    assert not {m for m in loaded if not m.startswith("cfexp")}
    assert {m for m in loaded if not m.startswith("cfexp.monitoring")} == {"cfexp", "cfexp.errors"}
