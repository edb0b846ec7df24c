"""The gateway's WAN side: the gateway administrator's API, over mutual TLS (BSI TR-03109-1).

The administrator configures the gateway: which meters it listens to (medium, customer,
security and key), their keys, their tariff profiles (TAF 1 to 4) and the consumers'
passwords for the local display (:mod:`metrocloud.field.han`). The administrator sees the
configuration and the administrator (system) log, and **never a reading**: no endpoint
answers a register, a measured value or a key.

Authentication is mutual TLS. The server (:func:`metrocloud.field.interfaces.serve_gateway`)
requires a client certificate that chains to the metrocloud root; then every request is
checked by this application with the PKI's own rules (:meth:`TrustStore.verify
<metrocloud.pki.validate.TrustStore.verify>`: issuing sub-CA, validity, CRLs, and the role
:attr:`Role.GATEWAY_ADMINISTRATOR <metrocloud.pki.roles.Role.GATEWAY_ADMINISTRATOR>` in
subject, extended key usage and issuer). A certificate of another role (a receiver's, say)
gets 403 with the PKI's reason; the refusal is in the administrator log. Every change goes
through a :class:`~metrocloud.field.smgw.SmartMeterGateway` method, so it lands in the
administrator and metrological logs with ``by`` = the certificate's common name.

TLS and curves: OpenSSL 3.0 signs TLS 1.3 handshakes with brainpool keys not at all, and
TLS 1.2 ones only when both sides list the curve among their groups, which Python's ``ssl``
cannot set. So an administrator's TLS certificate is on P-256 (the profile allows both
curves; :func:`administrator_identity` issues it so), as the services' certificates are for
the NATS server. The gateway's role profile names no TLS server usage and no host names, so
the WAN side presents a certificate of the service profile, ``<gateway>-wan`` for 127.0.0.1
and localhost (:func:`wan_server_identity`).

Endpoints (JSON; refusals answer ``{"reason": ..., "detail": ...}``)::

    GET    /                                  the gateway and who is asking
    GET    /meters                            configured meters (no readings, no keys)
    GET    /meters/{meter_id}                 one meter's configuration
    PUT    /meters/{meter_id}                 {"medium", "customer", "security", "key"}: add
                                              (201) or replace (200) a meter
    PUT    /meters/{meter_id}/key             {"key"}: a new key for the meter
    DELETE /meters/{meter_id}                 remove the meter
    PUT    /meters/{meter_id}/tariff          {"name": "taf1".."taf4", "config": {...}}
    PUT    /consumers/{customer_id}/password  {"password"}: the consumer's HAN password
    GET    /log?start=0&limit=1000            the administrator log

Status codes: 401 no client certificate (only without TLS: the TLS server already refuses
the handshake), 403 a certificate the PKI refuses or of another role, 404 an unknown meter,
411 a body without Content-Length (chunked), 413 a body over 64 KiB, 422 malformed input
(bad JSON, an unknown field or medium, a key that is not hex or of the wrong length, a
tariff configuration its program refuses). Input
is checked completely before anything changes, so a refused request changes nothing.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from fastapi import FastAPI, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from metrocloud.bus.connect import client_tls_context
from metrocloud.core.errors import Rejected
from metrocloud.field.han import ConsumerAccounts, check_customer_id
from metrocloud.field.sensors import Medium, Security
from metrocloud.field.smgw import MeterRecord, SmartMeterGateway, TariffProfile
from metrocloud.pki import Curve, Identity, IdentityStore, Role, TrustStore
from metrocloud.pki.validate import subject_common_name
from metrocloud.tariffs import PROGRAMS, TariffConfigError, load_program

ADMINISTRATOR = Role.GATEWAY_ADMINISTRATOR
LOCAL_HOSTS = ("127.0.0.1", "localhost")
"""The names in the WAN side's TLS certificate: it answers on loopback."""
MAX_BODY_BYTES = 64 * 1024
AES_KEY_BYTES = 16
_METER_ID = re.compile(r"[A-Z]{3}-[0-9]{8}")

Trust = TrustStore | Callable[[], TrustStore]
"""A trust store, or a function that gives the current one (fresh CRLs) per request."""

_STATUS = {
    "not-authenticated": 401,
    "unknown-meter": 404,
    "oversized-request": 413,
    "length-required": 411,
}
_INPUT_REASONS = frozenset(
    {
        "malformed-request",
        "bad-meter-id",
        "bad-customer",
        "bad-key",
        "wrong-key-length",
        "unknown-tariff",
        "bad-tariff-config",
        "bad-password",
    }
)


def _status(reason: str) -> int:
    if reason in _INPUT_REASONS:
        return 422
    return _STATUS.get(reason, 403)  # anything else is about the client's certificate


# -- the request bodies ---------------------------------------------------------------------
class MeterBody(BaseModel):
    """A meter's configuration. ``key``: hex; the AES-128 key (32 hex digits) for security
    ``aes-128``, the meter's public key (DER SubjectPublicKeyInfo) for ``ecdsa``, none for
    ``none``."""

    model_config = ConfigDict(extra="forbid")
    medium: Medium
    customer: str
    security: Security
    key: str | None = None


class KeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str


class TariffBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    config: dict[str, Any] = {}


class PasswordBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str


# -- checks ---------------------------------------------------------------------------------
def check_meter_id(meter_id: str) -> str:
    if not _METER_ID.fullmatch(meter_id):
        raise Rejected(
            "bad-meter-id",
            f"{meter_id!r} is no meter id: three capital letters (manufacturer), '-', "
            "eight digits (identification number), as in MCL-10000001",
        )
    return meter_id


def meter_key(security: Security, key_hex: str | None) -> bytes | None:
    """The key bytes for a meter of ``security`` from their hex, checked; else ``Rejected``
    (``bad-key``, ``wrong-key-length``)."""
    if security is Security.NONE:
        if key_hex:
            raise Rejected("bad-key", "a meter with security 'none' takes no key")
        return None
    if not key_hex:
        raise Rejected("bad-key", f"a meter with security {security.value!r} needs a key (hex)")
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        raise Rejected("bad-key", "the key is not hexadecimal (two hex digits per byte)") from None
    if security is Security.AES:
        if len(key) != AES_KEY_BYTES:
            raise Rejected(
                "wrong-key-length",
                f"an AES-128 key has {AES_KEY_BYTES} bytes ({2 * AES_KEY_BYTES} hex digits), "
                f"not {len(key)}",
            )
        return key
    try:
        public = load_der_public_key(key)
    except (ValueError, UnsupportedAlgorithm):
        raise Rejected(
            "bad-key", "an ECDSA meter's key is its public key as DER SubjectPublicKeyInfo"
        ) from None
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise Rejected("bad-key", f"an ECDSA meter's key must be an EC key, not {type(public)}")
    return key


def tariff_profile(name: str, config: dict[str, Any]) -> TariffProfile:
    """The profile of tariff program ``name`` with ``config`` as the program completes it
    (defaults filled in), after the program checked it; ``Rejected`` (``unknown-tariff``,
    ``bad-tariff-config``) with the program's reason otherwise."""
    if name not in PROGRAMS:
        raise Rejected(
            "unknown-tariff", f"unknown tariff program {name!r}; known: {', '.join(PROGRAMS)}"
        )
    try:
        program = load_program(name, PROGRAMS[name].parameters, config)
    except TariffConfigError as exc:
        raise Rejected("bad-tariff-config", str(exc)) from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise Rejected("bad-tariff-config", f"{name}: {type(exc).__name__}: {exc}") from None
    return TariffProfile(name, dict(program.config))


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()))
        message = str(error.get("msg", "invalid"))
        cause = (error.get("ctx") or {}).get("error")
        if cause:
            message += f" ({cause})"
        parts.append(f"{where}: {message}")
    return "; ".join(parts) or "the request is malformed"


# -- the application ------------------------------------------------------------------------
def client_certificate(scope: dict[str, Any]) -> bytes | None:
    """The client's certificate (DER) from the ASGI TLS extension, None without one."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    if not chain:
        return None
    return ssl.PEM_cert_to_DER_cert(chain[0])


def _meter_json(gateway: SmartMeterGateway, record: MeterRecord) -> dict[str, Any]:
    try:
        tariff = gateway.tariff_of(record.meter_id)
    except KeyError:  # removed meanwhile
        tariff = None
    return {
        "meter_id": record.meter_id,
        "medium": record.medium.value,
        "unit": record.medium.unit,
        "customer": record.customer_id,
        "security": record.security.value,
        "key_set": record.key is not None,
        "tariff": None if tariff is None else {"name": tariff.name, "config": tariff.config},
    }


def create_wan_app(
    gateway: SmartMeterGateway,
    trust: Trust,
    accounts: ConsumerAccounts,
) -> FastAPI:
    """The WAN application of ``gateway`` for administrators that ``trust`` admits.

    Serve it with a TLS server that puts the client certificate into the ASGI ``tls``
    extension (:func:`metrocloud.field.interfaces.serve_gateway` does); without one every
    request is 401. ``accounts`` holds the consumers' HAN passwords.
    """
    app = FastAPI(
        title=f"metrocloud gateway {gateway.gateway_id} (WAN)",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    def current_trust() -> TrustStore:
        return trust if isinstance(trust, TrustStore) else trust()

    def refusal(exc: Rejected) -> JSONResponse:
        return JSONResponse(
            {"reason": exc.reason, "detail": exc.detail}, status_code=_status(exc.reason)
        )

    @app.middleware("http")
    async def authenticate(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Before anything else (body parsing included): only an administrator gets in."""
        try:
            der = client_certificate(dict(request.scope))
            if der is None:
                raise Rejected(
                    "not-authenticated", "the WAN side needs a gateway administrator's certificate"
                )
            cert = current_trust().verify(der, expected_role=ADMINISTRATOR)
        except Rejected as exc:
            client = request.client.host if request.client else None
            gateway.logs["administrator"].append(
                gateway.clock(),
                "wan-refused",
                None,
                {"reason": exc.reason, "detail": exc.detail, "client": client},
            )
            return refusal(exc)
        length = request.headers.get("content-length")
        if length is None and request.headers.get("transfer-encoding"):
            return refusal(  # a body of unknown length could grow past the limit unread
                Rejected("length-required", "a request body needs a Content-Length")
            )
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return refusal(
                Rejected("oversized-request", f"a request body has {MAX_BODY_BYTES} bytes at most")
            )
        request.state.administrator = subject_common_name(cert)
        return await call_next(request)

    @app.exception_handler(Rejected)
    async def rejected(request: Request, exc: Rejected) -> JSONResponse:
        return refusal(exc)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            jsonable_encoder({"reason": "malformed-request", "detail": _validation_detail(exc)}),
            status_code=422,
        )

    def by(request: Request) -> str:
        return str(request.state.administrator)

    def known(meter_id: str) -> MeterRecord:
        check_meter_id(meter_id)
        for record in gateway.meters():
            if record.meter_id == meter_id:
                return record
        raise Rejected("unknown-meter", f"gateway {gateway.gateway_id} has no meter {meter_id}")

    @app.get("/")
    def whoami(request: Request) -> dict[str, Any]:
        return {"gateway": gateway.gateway_id, "administrator": by(request)}

    @app.get("/meters")
    def meters() -> dict[str, Any]:
        records = sorted(gateway.meters(), key=lambda r: r.meter_id)
        return {"gateway": gateway.gateway_id, "meters": [_meter_json(gateway, r) for r in records]}

    @app.get("/meters/{meter_id}")
    def meter(meter_id: str) -> dict[str, Any]:
        return _meter_json(gateway, known(meter_id))

    @app.put("/meters/{meter_id}")
    def configure(meter_id: str, body: MeterBody, request: Request) -> JSONResponse:
        check_meter_id(meter_id)
        check_customer_id(body.customer)
        key = meter_key(body.security, body.key)
        existed = any(r.meter_id == meter_id for r in gateway.meters())
        record = MeterRecord(meter_id, body.medium, body.customer, body.security, key)
        gateway.configure_meter(record, by=by(request))
        return JSONResponse(_meter_json(gateway, record), status_code=200 if existed else 201)

    @app.put("/meters/{meter_id}/key")
    def change_key(meter_id: str, body: KeyBody, request: Request) -> dict[str, Any]:
        record = known(meter_id)
        key = meter_key(record.security, body.key)
        if key is None:
            raise Rejected("bad-key", f"{meter_id} has security 'none' and takes no key")
        gateway.change_key(meter_id, key, by=by(request))
        return _meter_json(gateway, known(meter_id))

    @app.delete("/meters/{meter_id}")
    def remove(meter_id: str, request: Request) -> dict[str, Any]:
        known(meter_id)
        gateway.remove_meter(meter_id, by=by(request))
        return {"removed": meter_id}

    @app.put("/meters/{meter_id}/tariff")
    def set_tariff(meter_id: str, body: TariffBody, request: Request) -> dict[str, Any]:
        known(meter_id)
        profile = tariff_profile(body.name, body.config)
        try:
            gateway.set_tariff(meter_id, profile, by=by(request))
        except KeyError:
            raise Rejected("unknown-meter", f"{meter_id} was removed meanwhile") from None
        return _meter_json(gateway, known(meter_id))

    @app.put("/consumers/{customer_id}/password")
    def set_password(customer_id: str, body: PasswordBody, request: Request) -> dict[str, Any]:
        accounts.set_password(customer_id, body.password)
        gateway.consumer_password_set(customer_id, by=by(request))
        return {"customer": customer_id, "password_set": True}

    @app.get("/log")
    def log(
        start: int = Query(0, ge=0), limit: int = Query(1000, ge=1, le=10_000)
    ) -> dict[str, Any]:
        entries = gateway.logs["administrator"].entries[start : start + limit]
        return {
            "start": start,
            "entries": [
                {"at": e.at, "kind": e.kind, "meter": e.meter, "detail": e.detail} for e in entries
            ],
            "next": start + len(entries),
        }

    return app


# -- identities and a client ----------------------------------------------------------------
def wan_server_identity(ids: IdentityStore, gateway_id: str) -> Identity:
    """The TLS server identity of ``gateway_id``'s WAN side: ``<gateway>-wan``, service
    profile, for 127.0.0.1 and localhost (issued if ``ids`` has a PKI and it is missing)."""
    return ids.identity(f"{gateway_id}-wan", Role.SERVICE, hosts=LOCAL_HOSTS)


def administrator_identity(ids: IdentityStore, name: str) -> Identity:
    """Gateway administrator ``name``, with a P-256 key so that it can speak TLS (see the
    module's notes); issued if missing. A stored brainpool key is kept, and will not do TLS."""
    if not ids.keys.exists(name):
        ids.keys.generate(name, Curve.P256)
    return ids.identity(name, ADMINISTRATOR)


def administrator_client(
    base_url: str,
    *,
    ca_file: Path,
    cert_file: Path,
    key_file: Path,
    password: bytes | None = None,
    timeout_s: float = 10.0,
) -> httpx.Client:
    """An HTTPS client of the WAN side at ``base_url`` that presents the administrator's
    certificate (``cert_file``: certificate then sub-CA; ``key_file``: its PKCS#8 key) and
    checks the server against ``ca_file`` (the PKI's ``root.pem``)."""
    context = client_tls_context(ca_file, cert_file, key_file, password)
    return httpx.Client(base_url=base_url, verify=context, timeout=timeout_s, trust_env=False)
