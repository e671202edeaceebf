"""A second SIGTERM during the clean-up exits at once (cfexp/signals.py, docs/fault-model.md).

A real process: the first SIGTERM raises Terminated and its clean-up runs
(here a slow one, as a stuck child's wait would be); the second stops the
children (the exit hooks) and exits 143 without waiting for that clean-up.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.app.test_e2e_sim import REPO

SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from cfexp.signals import Terminated, install_cleanup_handlers, on_exit

    marker = Path(sys.argv[1])
    on_exit(lambda: marker.write_text("children stopped"))
    install_cleanup_handlers()
    try:
        print("ready", flush=True)  # inside: the SIGTERM may land while it is written
        time.sleep(60)
    except Terminated:
        print("cleaning up", flush=True)
        time.sleep(60)  # a clean-up that would take a minute
        print("clean-up finished", flush=True)
""")


def test_a_second_sigterm_during_the_clean_up_exits_at_once(tmp_path: Path) -> None:
    marker = tmp_path / "hooks"
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(marker)], cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    try:
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(signal.SIGTERM)
        assert process.stdout.readline().strip() == "cleaning up"
        assert process.poll() is None  # the first SIGTERM only started the clean-up
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 128 + signal.SIGTERM
        assert time.monotonic() - sent < 20  # not the minute the clean-up would have taken
        assert "clean-up finished" not in process.stdout.read()
        assert marker.read_text() == "children stopped"  # the exit hooks ran on the way out
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


def test_a_stop_passed_on_to_launched_jobs_spares_the_children_that_are_not_jobs() -> None:
    """SIGTERM goes to a job's process and is waited for; the tracking writer (a child that is
    not a job, cfexp.signals.not_a_launched_job) is neither signalled nor waited for."""
    from cfexp.signals import _NOT_JOBS, not_a_launched_job, stop_launched_jobs

    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    with subprocess.Popen(sleep) as job, subprocess.Popen(sleep) as writer:
        not_a_launched_job(writer.pid)
        try:
            stop_launched_jobs(signal.SIGTERM, grace_s=None)  # would wait forever for the writer
            assert job.poll() is not None  # ended (psutil reaped it: its status is not kept)
            assert writer.poll() is None
        finally:
            _NOT_JOBS.discard(writer.pid)
            writer.kill()
