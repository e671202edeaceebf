"""The ``cfexp`` console script's own options (its commands have their tests beside their packages)."""

from __future__ import annotations

import pytest

import cfexp
from cfexp.cli import main


def test_cfexp_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"cfexp {cfexp.__version__}\n"
    assert cfexp.__version__ != "0+unknown"  # the installed distribution's, from its metadata
