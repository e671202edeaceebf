"""The per-host lock for managed real servers (cfexp.backends.host_lock)."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra.errors import HydraException
from omegaconf import DictConfig

from cfexp.backends import host_lock
from cfexp.backends.host_lock import HostLock, lock_needed
from cfexp.backends.pool import ServerPool, launch_specs
from cfexp.config.validate import to_settings
from cfexp.errors import SetupError

REPO = Path(__file__).resolve().parents[2]

# Takes the lock at argv[1] as job argv[2], logging to stdout, then says so and
# keeps it until stdin closes (or the process is killed).
HOLDER = """
import logging, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
from cfexp.backends.host_lock import HostLock
HostLock(Path(sys.argv[1])).acquire(holder=sys.argv[2])
print("acquired", flush=True)
sys.stdin.read()
"""


def _holder(lock_path: Path, job: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_path), job],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )


@pytest.mark.parametrize(
    ("overrides", "needed"),
    [
        (("backend=llamacpp",), True),
        (("backend=ollama",), True),
        (("backend=ollama", "backend.start_if_absent=false"), False),
        (("backend=sim",), False),
        (("backend=openai", "backend.url=http://127.0.0.1:8000"), False),
        (("backend=llamacpp", "backend.url=http://127.0.0.1:8080"), False),
        (("backend=llamacpp", "topology.lifecycle=external", "backend.url=http://127.0.0.1:8080"), False),
        (("backend=sim", "topology.host_lock=always"), True),
        (("backend=llamacpp", "topology.host_lock=never"), False),
    ],
)
def test_auto_locks_for_real_servers_cfexp_starts(
    compose_cfg: Callable[..., DictConfig], overrides: tuple[str, ...], needed: bool
) -> None:
    assert lock_needed(to_settings(compose_cfg(*overrides))) is needed


def test_an_unknown_mode_is_refused_naming_the_key(compose_cfg: Callable[..., DictConfig]) -> None:
    """A closed vocabulary (cfexp.vocab.HostLockMode): refused while composing, with the allowed words."""
    with pytest.raises(HydraException, match=r"topology.host_lock=on") as caught:
        compose_cfg("topology.host_lock=on")
    assert "expected one of [auto, always, never]" in str(caught.value.__cause__)


def test_a_second_process_waits_and_the_lock_dies_with_its_holder(tmp_path: Path) -> None:
    lock_path = tmp_path / "host.lock"
    first = _holder(lock_path, "job-a")
    second = None
    try:
        assert first.stdout is not None and first.stdout.readline() == "acquired\n"
        second = _holder(lock_path, "job-b")
        assert second.stdout is not None
        waiting = second.stdout.readline()
        # It names the holder (pid and job) and has not taken the lock.
        assert waiting.startswith(f"waiting for the host lock {lock_path}, held by pid={first.pid} "), waiting
        assert "job=job-a" in waiting
        assert second.poll() is None
        # The holder crashes: the kernel drops its lock, the waiter gets it.
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert second.stdout.readline().startswith(f"host lock {lock_path} acquired after ")
        assert second.stdout.readline() == "acquired\n"
        assert f"pid={second.pid} " in lock_path.read_text()
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.kill()
                proc.communicate()


def test_a_lock_is_exclusive_between_two_holders_of_one_process(tmp_path: Path) -> None:
    lock_path = tmp_path / "host.lock"
    first, second = HostLock(lock_path), HostLock(lock_path)
    first.acquire(holder="job-a")
    assert first.held and not _free(lock_path)
    first.release()
    assert _free(lock_path)
    assert second.acquire(holder="job-b") == 0.0  # free: taken at once
    second.release()


def test_the_lock_folder_is_private_to_the_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFEXP_LOCK_DIR", str(tmp_path / "locks"))
    lock = HostLock()
    assert lock.path == tmp_path / "locks" / host_lock.LOCK_FILE
    assert (tmp_path / "locks").stat().st_mode & 0o777 == 0o700
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    monkeypatch.setenv("CFEXP_LOCK_DIR", str(tmp_path / "link"))
    with pytest.raises(SetupError, match="symlink or belongs to another user"):
        HostLock()


@pytest.mark.slow
def test_the_pool_holds_the_lock_from_server_start_until_the_servers_stop(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CFEXP_LOCK_DIR", str(tmp_path / "locks"))
    lock_path = tmp_path / "locks" / host_lock.LOCK_FILE
    cfg = to_settings(compose_cfg("backend=sim", "topology.host_lock=always", "topology.lifecycle=per_sweep"))
    launches = launch_specs(cfg, [(cfg.gpu_layers, cfg.ctx)])
    pool = ServerPool()
    try:
        instances = pool.acquire(cfg, tmp_path / "servers", launches)
        assert not _free(lock_path)
        pool.release(instances)  # per_sweep: kept for the next job, with the lock
        assert instances[0].alive() and not _free(lock_path)
        assert pool.acquire(cfg, tmp_path / "servers", launches) == instances  # reused, lock still held
        pool.close()
        assert not instances[0].alive() and _free(lock_path)
    finally:
        pool.close()


def test_per_sweep_servers_are_shared_only_in_the_launching_process() -> None:
    in_sweep = ServerPool()
    in_sweep.sweep_started()  # this process launched the sweep (the basic launcher)
    in_sweep.job_started(multirun=True, launcher="basic")
    assert in_sweep.shared_across_jobs
    elsewhere = ServerPool()  # a job process of submitit or Ray: no sweep started here
    elsewhere.job_started(multirun=True, launcher="submitit_local")
    assert not elsewhere.shared_across_jobs
    single = ServerPool()
    single.job_started(multirun=False, launcher="basic")
    assert single.shared_across_jobs


def _free(lock_path: Path) -> bool:
    """Whether the lock can be taken now (through a file description of our own)."""
    fd = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True
