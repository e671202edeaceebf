"""Loopback addresses and free ports (what cfexp checks before it starts a server on
one), and the TLS context cfexp's own HTTP clients share."""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl


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


@functools.cache
def tls_context(trust_env: bool = True) -> ssl.SSLContext:
    """The TLS context httpx would build for a client, built once per process.

    httpx loads the whole CA bundle for every client it makes (tens of ms on
    2 cores), and cfexp makes a few per job (warm-up, server state) even when
    every server is plain HTTP on loopback: the same context, shared, costs it once.
    """
    import httpx  # not at import time: the CLI imports this module for port_free

    return httpx.create_ssl_context(trust_env=trust_env)
