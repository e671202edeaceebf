"""Servers started before the first job, while the tracking store opens (ServerPool.start_early)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from cfexp.backends.pool import ServerPool, launch_specs
from cfexp.config.validate import to_settings
from cfexp.errors import CfexpError

pytestmark = pytest.mark.slow


def _early_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "cfexp-servers-early"]


def test_the_first_job_gets_the_servers_started_early_and_they_outlive_the_starting_thread(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = to_settings(compose_cfg("backend=sim", "topology.lifecycle=per_sweep"))
    launches = launch_specs(cfg, [(cfg.gpu_layers, cfg.ctx)])
    pool = ServerPool()
    try:
        pool.start_early(cfg, tmp_path / "servers", launches)
        time.sleep(1.0)  # the start is done: the kernel would kill a child whose starting thread ended
        instances = pool.acquire(cfg, tmp_path / "servers", launches)
        assert len(instances) == 1 and instances[0].alive()
        assert instances[0].launch == launches[0]
        # One start only: the server log holds one ready line.
        assert (tmp_path / "servers" / "server0.log").read_text().count("CFEXP_SERVING_READY") == 1
        pool.release(instances)  # per_sweep: kept
        time.sleep(0.5)
        assert instances[0].alive()
        pool.close()
        assert not instances[0].alive()
        for thread in _early_threads():
            thread.join(timeout=5)
        assert _early_threads() == []  # the thread ends with its servers
    finally:
        pool.close()


def test_servers_started_for_other_launches_are_stopped_and_the_job_gets_its_own(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    base = to_settings(compose_cfg("backend=sim", "topology.lifecycle=per_sweep"))
    first_job = to_settings(compose_cfg("backend=sim", "topology.lifecycle=per_sweep", "ctx=1024"))
    pool = ServerPool()
    try:
        pool.start_early(base, tmp_path / "servers", launch_specs(base, [(base.gpu_layers, base.ctx)]))
        wanted = launch_specs(first_job, [(first_job.gpu_layers, 1024)])
        instances = pool.acquire(first_job, tmp_path / "servers", wanted)
        assert instances[0].launch == wanted[0] and instances[0].launch.ctx == 1024
        assert instances[0].alive()
        # Two starts in the log: the early one (stopped) and the job's own.
        assert (tmp_path / "servers" / "server0.log").read_text().count("CFEXP_SERVING_READY") == 2
        assert _wait_gone()  # the early start's thread ended with its stopped server
    finally:
        pool.close()


def test_a_failed_early_start_is_the_first_jobs_failure(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    # A model file that is not a GGUF: the embedded llama.cpp server cannot load it.
    (tmp_path / "broken.gguf").write_bytes(b"not a model" * 100)
    cfg = to_settings(compose_cfg(
        "backend=llamacpp", "topology.lifecycle=per_sweep", f"model.file={tmp_path}/broken.gguf",
        "timeouts.server_start_s=60",
    ))
    launches = launch_specs(cfg, [(cfg.gpu_layers, cfg.ctx)])
    pool = ServerPool()
    try:
        pool.start_early(cfg, tmp_path / "servers", launches)
        with pytest.raises(CfexpError):
            pool.acquire(cfg, tmp_path / "servers", launches)
    finally:
        pool.close()


def test_closing_the_pool_stops_servers_no_job_asked_for(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    # The tracking store could not be opened: no job runs, the early servers must not linger.
    cfg = to_settings(compose_cfg("backend=sim", "topology.lifecycle=per_sweep"))
    pool = ServerPool()
    pool.start_early(cfg, tmp_path / "servers", launch_specs(cfg, [(cfg.gpu_layers, cfg.ctx)]))
    pool.close()  # waits for the start, then stops it
    log_text = (tmp_path / "servers" / "server0.log").read_text()
    assert "CFEXP_SERVING_READY" in log_text
    assert _wait_gone()


def _wait_gone(timeout_s: float = 5.0) -> bool:
    """Whether every early-start thread has ended (it lives exactly as long as its servers)."""
    deadline = time.monotonic() + timeout_s
    while _early_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _early_threads()


# ------------------------------------------------ through the command line


@pytest.mark.parametrize(
    ("args", "early", "starts"),
    [
        ((), True, 1),  # a single run: its own config
        (("-m", "temperature=0.6,0.8"), True, 1),  # a per_sweep sweep whose base config fits every job
        # The base config's ctx (512) is no job's: the early server is stopped, each job starts its own.
        (("-m", "ctx=1024,2048"), False, 3),
        (("-m", "topology.lifecycle=per_job", "temperature=0.6,0.8"), False, 2),  # nothing early
    ],
    ids=["run", "sweep", "sweep-other-launches", "per-job"],
)
def test_the_first_job_uses_early_servers_only_when_they_are_its_own(
    tmp_path: Path, args: tuple[str, ...], early: bool, starts: int
) -> None:
    from tests.app.test_e2e_sim import FAST_SIM, leftover_processes, run_cfexp

    done = run_cfexp(tmp_path, *args, *FAST_SIM, "scenario=single_inference", "num_predict=4")

    assert done.returncode == 0, done.stderr[-3000:]
    top = tmp_path / ("multirun" if args else "run")
    first_job = top / "0" if args else top
    job_log = (first_job / "__main__.log").read_text()
    assert ("servers started while the tracking store opened" in job_log) is early, job_log
    assert ("starting server instance 0" in job_log) is not early, job_log
    assert (top / "servers" / "server0.log").read_text().count("CFEXP_SERVING_READY") == starts
    assert "HTTP Request" not in done.stdout + done.stderr  # httpx stays quiet before the first job too
    assert leftover_processes(tmp_path) == []
