"""The PKI over HTTP: certificates from CSRs for authenticated requesters, signed CRLs.

Requests that change something are signed :class:`~metrocloud.core.messages.Envelope`
messages (``application/octet-stream``), like every other metrocloud message: the requester's
certificate must validate against the PKI's own trust store (chain, CRLs, role), its
signature must hold, the request must be fresh and not seen before, and the requester's role
must be allowed to ask for what it asks (:data:`MAY_REQUEST`, :data:`MAY_REVOKE`). A holder
may always renew its own certificate (same role and name) or revoke it.

Endpoints::

    GET  /trust.pem                 root and sub-CA certificates (PEM)
    GET  /crl/{ca}.crl              the current CRL of ``root`` or a sub-CA (DER)
    GET  /certificates/{serial}     a certificate issued here (PEM)
    POST /certificates              CertificateRequest envelope -> chain (PEM), 201
    POST /revocations               RevocationRequest envelope -> 200
    GET  /health

Refusals answer ``{"reason": ..., "detail": ...}`` with 400 (malformed), 401 (not
authenticated), 403 (not allowed) or 409 (conflict), and each is in the logbook.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from metrocloud.core.errors import Rejected
from metrocloud.core.messages import (
    CertificateRequest,
    Envelope,
    Message,
    RevocationRequest,
    check_fresh,
)
from metrocloud.pki.authority import Pki, serial_hex
from metrocloud.pki.roles import Role, SubCa
from metrocloud.pki.validate import (
    TrustStore,
    certificate_role,
    common_name,
    subject_common_name,
    verify_signature,
)

PEM = "application/x-pem-file"
CRL = "application/pkix-crl"
MAX_REQUEST_BYTES = 64 * 1024
_REPLAY_MEMORY = 100_000

MAY_REQUEST: dict[Role, frozenset[Role]] = {
    Role.AUTHORITY: frozenset(Role),
    Role.GATEWAY_ADMINISTRATOR: frozenset({Role.GATEWAY}),
}
"""Who may have certificates issued for others, and of which roles."""

MAY_REVOKE: dict[Role, frozenset[Role]] = {
    Role.AUTHORITY: frozenset(Role),
    Role.GATEWAY_ADMINISTRATOR: frozenset({Role.GATEWAY}),
}
"""Who may revoke certificates of others, and of which roles."""

_STATUS = {
    "malformed-message": 400,
    "malformed-csr": 400,
    "bad-csr-signature": 400,
    "bad-common-name": 400,
    "bad-subject-name": 400,
    "wrong-curve": 400,
    "forbidden-extension": 400,
    "validity-too-long": 400,
    "stale-message": 400,
    "unknown-role": 400,
    "oversized-message": 413,
    "not-authorized": 403,
    "unknown-certificate": 404,
    "already-revoked": 409,
    "replayed-request": 409,
}


def _status(reason: str) -> int:
    return _STATUS.get(reason, 401)  # anything about the requester's credentials


class _Replays:
    """Digests of accepted requests within the freshness window (bounded memory)."""

    def __init__(self) -> None:
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def check_and_add(self, body: bytes) -> None:
        digest = hashlib.sha256(body).digest()
        with self._lock:
            if digest in self._seen:
                raise Rejected("replayed-request", "this request was already handled")
            self._seen[digest] = None
            while len(self._seen) > _REPLAY_MEMORY:
                self._seen.popitem(last=False)


def create_app(pki: Pki, *, after_change: Callable[[], Awaitable[None]] | None = None) -> FastAPI:
    """The FastAPI application over ``pki``.

    ``after_change`` runs after every issuance or revocation attempt (the cloud's PKI
    service uses it to forward the PKI's logbook events to the cloud logbook).
    """
    app = FastAPI(title="metrocloud PKI", version="1")
    replays = _Replays()

    def trust() -> TrustStore:
        # Rebuilt from the current CRLs for every request: a revocation counts at once.
        return pki.trust_store()

    def refuse(what: str, subject: str, exc: Rejected, requester: str) -> JSONResponse:
        pki.refused(what, subject, exc, requester)
        return JSONResponse(
            {"reason": exc.reason, "detail": exc.detail}, status_code=_status(exc.reason)
        )

    def authenticate(raw: bytes, body_type: type[Message]) -> tuple[x509.Certificate, Message]:
        if len(raw) > MAX_REQUEST_BYTES:
            raise Rejected("oversized-message", f"{len(raw)} bytes, limit {MAX_REQUEST_BYTES}")
        envelope = Envelope.decode(raw)
        requester = trust().verify(envelope.certificate)
        verify_signature(requester, envelope.body, envelope.signature)
        body = body_type.decode(envelope.body)
        check_fresh(str(getattr(body, "sent_at", "")), datetime.now(timezone.utc))
        replays.check_and_add(envelope.body)
        return requester, body

    @app.middleware("http")
    async def report_changes(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        try:
            return await call_next(request)
        finally:
            if after_change is not None and request.method == "POST":
                await after_change()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/trust.pem")
    def trust_bundle() -> Response:
        certs = [pki.root, *pki.sub_cas.values()]
        return Response(b"".join(c.public_bytes(Encoding.PEM) for c in certs), media_type=PEM)

    @app.get("/crl/{name}.crl")
    def crl(name: str) -> Response:
        if name == "root":
            sub_ca: SubCa | None = None
        elif name in {s.value for s in SubCa}:
            sub_ca = SubCa(name)
        else:
            return JSONResponse({"reason": "unknown-ca", "detail": name}, status_code=404)
        return Response(pki.crl(sub_ca).public_bytes(Encoding.DER), media_type=CRL)

    @app.get("/certificates/{serial}")
    def certificate(serial: str) -> Response:
        try:
            cert = pki.certificate(int(serial, 16))
        except (KeyError, ValueError):
            return JSONResponse({"reason": "unknown-certificate", "detail": serial}, 404)
        return Response(cert.public_bytes(Encoding.PEM), media_type=PEM)

    @app.post("/certificates", status_code=201)
    async def request_certificate(request: Request) -> Response:
        raw = await request.body()
        requester_name = "<unauthenticated>"
        subject = "<unparsed CSR>"
        try:
            requester, body = authenticate(raw, CertificateRequest)
            assert isinstance(body, CertificateRequest)
            requester_name = subject_common_name(requester)
            try:
                role = Role(body.role)
            except ValueError:
                raise Rejected("unknown-role", f"no role {body.role!r}") from None
            csr = x509.load_der_x509_csr(body.csr) if body.csr else None
            if csr is None:
                raise Rejected("malformed-csr", "the request holds no CSR")
            subject = common_name(csr.subject)
            _authorize(requester, role, subject, MAY_REQUEST, "request")
        except Rejected as exc:
            return refuse("certificate-request", subject, exc, requester_name)
        except ValueError as exc:
            error = Rejected("malformed-csr", f"the CSR cannot be parsed: {exc}")
            return refuse("certificate-request", subject, error, requester_name)
        try:
            issued = pki.issue_from_csr(
                csr,
                role,
                validity_days=body.validity_days or None,
                requested_by=requester_name,
            )
        except Rejected as exc:  # already in the logbook
            return JSONResponse(
                {"reason": exc.reason, "detail": exc.detail}, status_code=_status(exc.reason)
            )
        chain = [issued, *pki.chain(role)[:-1]]
        return Response(b"".join(c.public_bytes(Encoding.PEM) for c in chain), 201, media_type=PEM)

    @app.post("/revocations")
    async def revoke(request: Request) -> Response:
        raw = await request.body()
        requester_name = "<unauthenticated>"
        serial = "<unparsed>"
        try:
            requester, body = authenticate(raw, RevocationRequest)
            assert isinstance(body, RevocationRequest)
            requester_name = subject_common_name(requester)
            serial = body.serial
            try:
                number = int(body.serial, 16)
                reason = x509.ReasonFlags(body.reason)
            except ValueError:
                raise Rejected("malformed-message", "bad serial or revocation reason") from None
            try:
                target = pki.certificate(number)
            except KeyError:
                raise Rejected(
                    "unknown-certificate", f"{body.serial} was not issued here"
                ) from None
            _authorize(
                requester,
                certificate_role(target),
                subject_common_name(target),
                MAY_REVOKE,
                "revoke",
            )
        except Rejected as exc:
            return refuse("revocation", serial, exc, requester_name)
        try:
            revoked = pki.revoke(number, reason, requested_by=requester_name)
        except Rejected as exc:
            return JSONResponse(
                {"reason": exc.reason, "detail": exc.detail}, status_code=_status(exc.reason)
            )
        return JSONResponse(
            {"serial": serial_hex(revoked.serial_number), "reason": reason.value}, 200
        )

    return app


def _authorize(
    requester: x509.Certificate,
    role: Role,
    subject: str,
    policy: dict[Role, frozenset[Role]],
    action: str,
) -> None:
    """Allowed by ``policy``, or the requester acting on its own name and role."""
    requester_role = certificate_role(requester)
    own = requester_role is role and subject_common_name(requester) == subject
    if own or role in policy.get(requester_role, frozenset()):
        return
    raise Rejected(
        "not-authorized",
        f"a {requester_role.value} may not {action} a {role.value} certificate for {subject}",
    )
