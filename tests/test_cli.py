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


@pytest.mark.parametrize(
    "settings, message",
    [
        ("notjson", "cfexp: --settings is not valid JSON: Expecting value at line 1 column 1"),
        ("[1, 2]", "cfexp: --settings must be a JSON object, got list"),
        ("@/nonexistent/settings.json", "cfexp: cannot read --settings file <path=/nonexistent/settings.json>"),
    ],
    ids=["not_json", "not_an_object", "no_file"],
)
def test_cfexp_serve_with_bad_settings_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], settings: str, message: str
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["serve", "sim", "--settings", settings])
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith(message)
