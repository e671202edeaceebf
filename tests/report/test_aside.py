"""The report's figures drawn by a forked child (cfexp/report/aside.py), and every way back to drawing in-process."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest

from cfexp.report import aside
from cfexp.report.aside import draw_aside


@pytest.fixture
def fork_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process forks even if an earlier test of the session left a thread behind (a server's
    serve_forever, say): the children here only write a file and log, so no lock is at stake."""
    monkeypatch.setattr(aside, "_fork_is_safe", lambda: True)


def _drawer(out: Path, fail_in_child: str | None = None):
    """A stand-in for a section's figure calls: writes one file per figure, named by the pid that drew it."""
    parent = os.getpid()

    def draw() -> list[str | None]:
        if os.getpid() != parent:
            if fail_in_child == "raise":
                raise RuntimeError("no figure in the child")
            if fail_in_child == "die":
                os._exit(9)  # as if killed: no answer on the pipe
        name = f"figure-{os.getpid()}.png"
        (out / name).write_text("drawn")
        return [name, None]  # None: a figure with nothing to show

    return draw


@pytest.mark.usefixtures("fork_allowed")
def test_figures_are_drawn_by_another_process_and_their_names_come_back(tmp_path: Path) -> None:
    figures = draw_aside(_drawer(tmp_path))
    names = figures()
    assert len(names) == 1  # the None is dropped
    assert names != [f"figure-{os.getpid()}.png"]  # a child drew it
    assert (tmp_path / names[0]).read_text() == "drawn"


@pytest.mark.usefixtures("fork_allowed")
@pytest.mark.parametrize("failure", ["raise", "die"])
def test_a_child_that_fails_or_dies_has_its_figures_drawn_here(
    tmp_path: Path, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="cfexp.report.aside"):
        names = draw_aside(_drawer(tmp_path, fail_in_child=failure))()
    assert names == [f"figure-{os.getpid()}.png"]
    assert "drawing the figures here" in caplog.text
    # Why it failed, in the one warning: the child's own error, or how it ended.
    assert ("RuntimeError: no figure in the child" if failure == "raise" else "exit code 9") in caplog.text


@pytest.mark.usefixtures("fork_allowed")
def test_an_error_that_is_not_the_childs_surfaces_with_its_own_traceback(tmp_path: Path) -> None:
    def draw() -> list[str | None]:
        raise ValueError("a bad figure")

    figures = draw_aside(draw)
    with pytest.raises(ValueError, match="a bad figure"):
        figures()


def test_beside_another_thread_the_figures_are_drawn_in_process(tmp_path: Path) -> None:
    """The real check (no fork_allowed): a thread of this test's own is running."""
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        names = draw_aside(_drawer(tmp_path))()
    finally:
        stop.set()
        other.join()
    assert names == [f"figure-{os.getpid()}.png"]
