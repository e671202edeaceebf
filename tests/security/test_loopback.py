"""Managed servers listen on the loopback interface only."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from omegaconf import DictConfig

from cfexp.backends.cfexp_server import CfexpServerBackend
from cfexp.backends.pool import launch_spec
from cfexp.config.validate import to_settings
from cfexp.errors import ConfigError


def _listening(pid: int) -> list[str]:
    """Addresses the process (and its children) accept connections on."""
    process = psutil.Process(pid)
    found = []
    for proc in (process, *process.children(recursive=True)):
        for conn in proc.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                found.append(conn.laddr.ip)
    return found


@pytest.mark.slow
def test_a_started_server_listens_on_loopback_only(compose_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    settings = to_settings(compose_cfg("backend=sim"))
    instance = CfexpServerBackend("sim").start(launch_spec(settings, 0, 80, 512), 0, tmp_path, 60)
    try:
        assert instance.process is not None
        addresses = _listening(instance.process.pid)
        assert addresses, "the server listens nowhere"
        assert all(ipaddress.ip_address(a).is_loopback for a in addresses), addresses
        assert instance.base_url.startswith("http://127.0.0.1:")
    finally:
        if instance.process is not None:
            instance.process.stop()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.org"])
def test_a_server_bound_beyond_loopback_is_refused(compose_cfg: Callable[..., DictConfig], host: str) -> None:
    with pytest.raises(ConfigError, match=f"backend.host={host}"):
        to_settings(compose_cfg("backend=sim", f"backend.host={host}"))


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_hosts_are_accepted(compose_cfg: Callable[..., DictConfig], host: str) -> None:
    assert to_settings(compose_cfg("backend=sim", f"backend.host={host}")).backend.host == host
