"""The TLS context cfexp's HTTP clients share."""

from __future__ import annotations

import ssl

from cfexp.backends.net import tls_context


def test_every_client_shares_one_context_that_verifies_as_httpx_does() -> None:
    context = tls_context()
    assert context is tls_context()  # built once: httpx would load the CA bundle for every client
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert tls_context(trust_env=False) is tls_context(trust_env=False)
