"""The one ``httpx.AsyncClient`` the process uses for Graph."""

from __future__ import annotations

import ssl

import httpx


def build_http_client(*, ca_bundle: str | None, timeout: float = 10.0) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for Graph, trusting only ``ca_bundle`` when one is given.

    With a CA bundle (the sandbox tenant) the client ignores the environment: this machine sets
    ``SSL_CERT_FILE``/``REQUESTS_CA_BUNDLE`` and proxies could otherwise replace our choice.
    The caller owns the client and closes it (``await client.aclose()``) at shutdown.
    """
    if ca_bundle is None:
        return httpx.AsyncClient(timeout=timeout)
    context = ssl.create_default_context(cafile=ca_bundle)
    return httpx.AsyncClient(verify=context, trust_env=False, timeout=timeout)
