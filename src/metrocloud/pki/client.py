"""Client of the PKI's HTTP service (:mod:`metrocloud.pki.service`).

Built on ``httpx``: give it any ``httpx.Client``, such as FastAPI's ``TestClient(app)`` to
talk to an application in the same process with no network, or use :meth:`PkiClient.connect`
for a server, whose TLS certificate is checked against a PEM bundle (the PKI's ``root.pem``).
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from metrocloud.core.errors import MetrocloudError, Rejected
from metrocloud.core.http import open_http
from metrocloud.core.messages import CertificateRequest, RevocationRequest, seal
from metrocloud.pki.authority import split_hosts
from metrocloud.pki.identity import Identity
from metrocloud.pki.keys import SigningKey
from metrocloud.pki.roles import Role, SubCa
from metrocloud.pki.signing import sign_csr
from metrocloud.pki.validate import TrustStore

CRL_NAMES: tuple[str, ...] = ("root", *(s.value for s in SubCa))


class PkiUnreachable(MetrocloudError):
    """The PKI service did not answer (network, TLS or server error)."""


def make_csr(key: SigningKey, common_name: str, *, hosts: tuple[str, ...] = ()) -> bytes:
    """A DER CSR for ``key`` naming ``common_name`` (and TLS host names), signed by it."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    if hosts:
        dns_names, ip_addresses = split_hosts(hosts)
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return sign_csr(builder, key).public_bytes(Encoding.DER)


class PkiClient:
    """Requests certificates and revocations, and fetches CRLs, from the PKI service."""

    def __init__(self, http: httpx.Client) -> None:
        self._http = http

    @classmethod
    def connect(
        cls, base_url: str, *, tls_trust: Path | None = None, timeout_s: float = 10.0
    ) -> PkiClient:
        """A client of the service at ``base_url``; an ``https`` URL is checked against
        ``tls_trust`` (PEM bundle), a plain ``http`` one needs none."""
        return cls(open_http(base_url, tls_trust=tls_trust, timeout_s=timeout_s))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PkiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise PkiUnreachable(f"PKI service at {self._http.base_url}: {exc}") from exc
        if response.status_code >= 500:
            raise PkiUnreachable(f"PKI service answered {response.status_code}")
        if response.status_code >= 400:
            try:
                problem = response.json()
                raise Rejected(str(problem["reason"]), str(problem.get("detail", "")))
            except (ValueError, KeyError, TypeError):
                raise Rejected("pki-error", f"HTTP {response.status_code}") from None
        return response

    def crl(self, name: str) -> x509.CertificateRevocationList:
        """The current CRL of ``root`` or a sub-CA (signature not yet checked)."""
        try:
            return x509.load_der_x509_crl(self._send("GET", f"/crl/{name}.crl").content)
        except ValueError as exc:
            raise Rejected("malformed-crl", f"CRL of {name}: {exc}") from None

    def refresh(self, trust: TrustStore) -> int:
        """Fetch every CRL into ``trust`` (which checks each); returns how many were new."""
        return sum(trust.update_crl(self.crl(name)) for name in CRL_NAMES)

    def request_certificate(
        self,
        requester: Identity,
        csr_der: bytes,
        role: Role,
        *,
        validity_days: int = 0,
    ) -> list[x509.Certificate]:
        """Have the PKI certify the key in ``csr_der`` for ``role``; returns the chain."""
        body = CertificateRequest(
            csr=csr_der,
            role=Role(role).value,
            validity_days=validity_days,
            sent_at=datetime.now(timezone.utc).isoformat(),
        )
        response = self._send(
            "POST",
            "/certificates",
            content=seal(requester, body),
            headers={"content-type": "application/octet-stream"},
        )
        return x509.load_pem_x509_certificates(response.content)

    def revoke(
        self,
        requester: Identity,
        serial: int,
        reason: x509.ReasonFlags = x509.ReasonFlags.unspecified,
    ) -> None:
        """Have the PKI revoke the certificate with ``serial``."""
        body = RevocationRequest(
            serial=format(serial, "x"),
            reason=reason.value,
            sent_at=datetime.now(timezone.utc).isoformat(),
        )
        self._send(
            "POST",
            "/revocations",
            content=seal(requester, body),
            headers={"content-type": "application/octet-stream"},
        )
