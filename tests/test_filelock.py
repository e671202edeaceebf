"""cfexp.filelock: the inter-process lock every piece of shared state is created under."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cfexp.filelock import FileLock
from tests.together import run_together

# Each process takes the lock, appends "<pid> in" and "<pid> out" around a pause, and releases it.
CRITICAL_SECTION = """
import os, time
from pathlib import Path
from cfexp.filelock import FileLock
lock, log = Path(sys.argv[1]), Path(sys.argv[2])
go()
with FileLock(lock, "test lock", notice_after_s=0.05):
    with log.open("a") as out:
        out.write(f"{os.getpid()} in\\n")
    time.sleep(0.2)
    with log.open("a") as out:
        out.write(f"{os.getpid()} out\\n")
"""


def test_processes_started_together_hold_it_one_at_a_time(tmp_path: Path) -> None:
    log = tmp_path / "log"
    results = run_together(CRITICAL_SECTION, [[str(tmp_path / "x.lock"), str(log)]] * 4)
    assert [r.returncode for r in results] == [0] * 4, [r.stderr for r in results]
    lines = log.read_text().splitlines()
    assert len(lines) == 8
    for entered, left in zip(lines[::2], lines[1::2], strict=True):  # never two inside at once
        assert entered.endswith(" in") and left == entered.replace(" in", " out")
    # The waiters said whom they waited for (the holder's pid) and why.
    assert sum("waiting for the test lock" in r.stderr and "held by pid=" in r.stderr for r in results) >= 1


def test_a_waiter_speaks_only_when_the_wait_is_long(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cfexp.filelock")
    path = tmp_path / "x.lock"
    holder = FileLock(path, "test lock")
    holder.acquire(holder="doing something")
    assert "doing something" in holder.holder()
    patient = FileLock(path, "test lock", reason="it is busy", notice_after_s=0.3)
    releaser = threading.Timer(0.1, holder.release)
    releaser.start()
    assert patient.acquire() < 0.3  # short wait: nothing said
    releaser.join()
    assert not caplog.records
    patient.release()

    holder.acquire(holder="doing something")
    releaser = threading.Timer(0.8, holder.release)
    releaser.start()
    assert patient.acquire() >= 0.3
    releaser.join()
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith(f"waiting for the test lock {path}, held by pid=") and "doing something: it is busy" in m
               for m in messages), messages
    assert any(m.startswith(f"test lock {path} acquired after ") for m in messages)
    patient.release()


def test_two_objects_of_one_process_exclude_each_other(tmp_path: Path) -> None:
    first, second = FileLock(tmp_path / "x.lock", "a"), FileLock(tmp_path / "x.lock", "a")
    assert first.try_acquire() and not second.try_acquire()
    first.release()
    assert second.try_acquire() and second.held
    second.release()
    assert second.holder() == ""  # emptied on release


def test_a_child_started_while_it_is_held_does_not_keep_it(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "x.lock", "a")
    lock.acquire()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.release()
        assert FileLock(tmp_path / "x.lock", "a").try_acquire()  # the child did not inherit it
    finally:
        child.kill()
        child.wait()


def test_a_wait_can_be_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    holder = FileLock(tmp_path / "x.lock", "a")
    holder.acquire()
    waiter = FileLock(tmp_path / "x.lock", "a")
    naps = {"n": 0}

    def nap_then_ctrl_c(seconds: float) -> None:  # Ctrl-C arrives during the third nap
        naps["n"] += 1
        if naps["n"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr("cfexp.filelock.time.sleep", nap_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        waiter.acquire()
    assert not waiter.held
    holder.release()
    assert waiter.try_acquire()  # its file was closed: nothing leaked
    waiter.release()
