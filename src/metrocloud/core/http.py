"""HTTP clients for metrocloud's services: ``httpx`` over TLS checked against a PEM bundle.

Every client takes any ``httpx.Client`` (FastAPI's ``TestClient(app)`` reaches an application
in the same process with no network); :func:`open_http` makes one for a server.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx


def open_http(
    base_url: str, *, tls_trust: Path | None = None, timeout_s: float = 10.0
) -> httpx.Client:
    """A client of the server at ``base_url``; an ``https`` URL is checked against
    ``tls_trust`` (PEM bundle, the PKI's ``root.pem``), a plain ``http`` one needs none.
    Proxy settings from the environment are ignored: metrocloud talks to its own hosts."""
    verify: ssl.SSLContext | bool = True
    if tls_trust is not None:
        verify = ssl.create_default_context(cafile=str(tls_trust))
    return httpx.Client(base_url=base_url, verify=verify, timeout=timeout_s, trust_env=False)
