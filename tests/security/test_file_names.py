"""Names from config or data never escape the folder they are written to."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cfexp.app.artifacts import write_texts
from cfexp.filenames import MAX_NAME_CHARS, safe_name
from tests.metrics.factory import measured

HOSTILE = [
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    ".",
    "",
    "...",
    "a/../../b",
    "C:\\Windows\\system32",
    "persona\x00name",
    "\x1b[31mred\x1b[0m",
    "line\nbreak\r\ttab",
    "gemma3:270m",
    "模型 名前 é",
    ".hidden",
    "a" * 1000,
    "x" * 99 + "/" + "y" * 500,
    "trial #7 | rm -rf ~ ; $(reboot)",
]
_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_name_becomes_one_plain_file_name(name: str, tmp_path: Path) -> None:
    safe = safe_name(name)
    assert _SAFE.match(safe), safe
    assert ".." not in safe and not safe.endswith(".")
    assert 0 < len(safe) <= MAX_NAME_CHARS
    target = (tmp_path / safe).resolve()
    assert target.parent == tmp_path.resolve()
    target.write_text("ok")  # a name the file system takes


def test_safe_names_are_kept_as_they_are() -> None:
    assert safe_name("agent_0_3_report") == "agent_0_3_report"
    assert safe_name("gemma3-270m.Q4_K_M") == "gemma3-270m.Q4_K_M"


def test_long_names_that_differ_only_at_the_end_stay_different() -> None:
    assert safe_name("a" * 500 + "1") != safe_name("a" * 500 + "2")
    assert safe_name("a" * 500 + "1") == safe_name("a" * 500 + "1")


def test_generated_texts_stay_in_their_folder_whatever_the_agent_is_called(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    calls = [measured(agent=name, call_index=i, step="../report", text="t") for i, name in enumerate(HOSTILE)]
    folder = write_texts(job_dir, calls)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) == len(HOSTILE)
    assert all(p.parent == folder for p in written)
