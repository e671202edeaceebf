"""Every file and test the docs name exists.

The fault model, the security page and the metric pages prove their
guarantees by naming tests (``tests/app/test_faults.py::test_…``). A renamed
test or a moved file would leave a guarantee pointing at nothing; this test
reads every page and checks each reference: the file exists, and a named test
is defined in it (a name cut short with ``…`` must start one).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])

# A repository path, optionally followed by ::test_name (a parametrised id in [...] is not part of the name).
REFERENCE = re.compile(
    r"(?<![\w/.])((?:tests|benchmarks|rust|cfexp|conf|scripts|hydra_plugins)/[\w./-]+\.(?:py|rs|yaml|toml|sh))"
    r"(?:::(\w+…?))?"
)


def references(text: str) -> list[tuple[str, str | None]]:
    return [(match.group(1), match.group(2)) for match in REFERENCE.finditer(text)]


def defines(source: str, name: str) -> bool:
    """``def name`` / ``fn name`` / ``class name`` in the source; ``name…`` is a prefix."""
    stem = re.escape(name.rstrip("…")) + (r"\w*" if name.endswith("…") else r"\b")
    return re.search(rf"^\s*(?:async\s+)?(?:def|fn|class)\s+{stem}", source, re.MULTILINE) is not None


def test_the_reference_pattern_reads_the_forms_the_docs_use() -> None:
    text = (
        "`tests/app/test_kills.py::test_a_killed_process_fails_the_run_cleanly[cfexp.serving-…]`, "
        "`tests/backends/test_llama_server_build.py` (`test_a_failed_build_…`), "
        "`tests/app/test_x.py::test_a_…` and rust/cfexp-agent/tests/streams.rs; not docs/tests/x.py"
    )
    assert references(text) == [
        ("tests/app/test_kills.py", "test_a_killed_process_fails_the_run_cleanly"),
        ("tests/backends/test_llama_server_build.py", None),
        ("tests/app/test_x.py", "test_a_…"),
        ("rust/cfexp-agent/tests/streams.rs", None),
    ]
    assert defines("def test_a_b(x):\n", "test_a_b") and not defines("def test_a_bc():\n", "test_a_b")
    assert defines("    def test_a_bc():\n", "test_a_…") and not defines("def other():\n", "test_a_…")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_path_and_test_a_page_names_exists(page: Path) -> None:
    missing = []
    for path, name in references(page.read_text(encoding="utf-8")):
        target = REPO / path
        if not target.is_file():
            missing.append(path)
        elif name is not None and not defines(target.read_text(encoding="utf-8"), name):
            missing.append(f"{path}::{name}")
    assert not missing, f"{page.relative_to(REPO)} names what does not exist: {sorted(set(missing))}"
