"""Loopback addresses and free ports: what cfexp checks before it starts a server on one."""

from __future__ import annotations

import ipaddress
import socket


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP (cfexp starts servers only there: docs/security.md)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def port_free(host: str, port: int) -> bool:
    """Whether nothing listens on ``host:port`` (a bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
