"""The PKI's HTTP service, through :class:`PkiClient` on FastAPI's in-process test client.

Every request that changes something is a signed envelope; each refusal must come back
with its reason and leave a rejection entry in the PKI's logbook.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from metrocloud.core.errors import Rejected
from metrocloud.core.events import EventKind
from metrocloud.core.messages import CertificateRequest, Envelope, RevocationRequest, seal
from metrocloud.logbook import HashChainLogbook
from metrocloud.pki import Curve, Identity, IdentityStore, Role, SoftwareKey, TrustStore
from metrocloud.pki.client import PkiClient, make_csr
from metrocloud.pki.keys import generate_private_key
from metrocloud.pki.service import MAX_REQUEST_BYTES, create_app


@dataclasses.dataclass
class World:
    ids: IdentityStore
    client: PkiClient
    http: TestClient
    authority: Identity
    administrator: Identity
    supplier: Identity
    logbook: Path

    def refusals(self) -> list[dict[str, object]]:
        with HashChainLogbook(self.logbook) as book:
            return [e.event.detail for e in book.entries() if e.event.kind is EventKind.REJECTION]

    def post(self, path: str, raw: bytes) -> tuple[int, dict[str, object]]:
        """Status and JSON problem of a refused request (an empty dict when it succeeded)."""
        response = self.http.post(
            path, content=raw, headers={"content-type": "application/octet-stream"}
        )
        if response.is_success:
            return response.status_code, {}
        return response.status_code, response.json()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    ids = IdentityStore.open_local(tmp_path)
    assert ids.pki is not None
    http = TestClient(create_app(ids.pki), base_url="http://pki.test")
    yield World(
        ids=ids,
        client=PkiClient(http),
        http=http,
        authority=ids.identity("notified-body", Role.AUTHORITY),
        administrator=ids.identity("gwa-0001", Role.GATEWAY_ADMINISTRATOR),
        supplier=ids.identity("supplier-0001", Role.MARKET_PARTICIPANT),
        logbook=tmp_path / "pki" / "logbook.sqlite",
    )
    http.close()
    ids.pki.close()


def new_key(curve: Curve = Curve.BRAINPOOL_P256R1, name: str = "new") -> SoftwareKey:
    return SoftwareKey(name, generate_private_key(curve))


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def request(
    requester: Identity,
    csr: bytes,
    role: Role,
    *,
    sent_at: datetime | None = None,
    validity_days: int = 0,
) -> bytes:
    body = CertificateRequest(
        csr=csr,
        role=role.value,
        validity_days=validity_days,
        sent_at=(sent_at or datetime.now(timezone.utc)).isoformat(),
    )
    return seal(requester, body)


def test_an_administrator_gets_a_gateway_certificate_that_verifies(world: World) -> None:
    key = new_key()
    chain = world.client.request_certificate(
        world.administrator, make_csr(key, "gw-0042"), Role.GATEWAY
    )
    assert len(chain) == 2 and chain[0].public_key() == key.public_key()
    trust = world.ids.pki.trust_store()  # type: ignore[union-attr]
    checked = trust.verify(der(chain[0]), expected_role=Role.GATEWAY)
    assert checked.issuer == chain[1].subject
    issued = world.ids.pki.issued()  # type: ignore[union-attr]
    assert issued[-1]["common_name"] == "gw-0042"


def test_a_service_gets_its_tls_names(world: World) -> None:
    key = new_key(Curve.P256)
    csr = make_csr(key, "storage-2", hosts=("127.0.0.1", "storage.internal"))
    chain = world.client.request_certificate(world.authority, csr, Role.SERVICE)
    names = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["storage.internal"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_a_holder_may_renew_its_own_certificate(world: World) -> None:
    key = new_key()
    chain = world.client.request_certificate(
        world.supplier, make_csr(key, "supplier-0001"), Role.MARKET_PARTICIPANT
    )
    assert chain[0].public_key() == key.public_key()


@pytest.mark.parametrize(
    ("requester", "role", "name"),
    [
        ("supplier", Role.GATEWAY, "gw-0043"),  # a market participant cannot make gateways
        ("administrator", Role.SERVICE, "legal"),  # an administrator only makes gateways
        ("supplier", Role.MARKET_PARTICIPANT, "supplier-0002"),  # renew only one's own name
    ],
)
def test_a_requester_outside_its_authority_is_refused(
    world: World, requester: str, role: Role, name: str
) -> None:
    who: Identity = getattr(world, requester)
    curve = Curve.P256 if role is Role.SERVICE else Curve.BRAINPOOL_P256R1
    with pytest.raises(Rejected) as refused:
        world.client.request_certificate(who, make_csr(new_key(curve), name), role)
    assert refused.value.reason == "not-authorized"
    last = world.refusals()[-1]
    assert last["reason"] == "not-authorized" and last["requested_by"] == who.common_name


def test_a_revoked_requester_is_refused(world: World) -> None:
    pki = world.ids.pki
    assert pki is not None
    pki.revoke(world.administrator.certificate.serial_number)
    raw = request(world.administrator, make_csr(new_key(), "gw-0044"), Role.GATEWAY)
    status, problem = world.post("/certificates", raw)
    assert (status, problem["reason"]) == (401, "certificate-revoked")
    assert world.refusals()[-1]["reason"] == "certificate-revoked"


def test_a_requester_from_another_pki_is_refused(world: World, tmp_path: Path) -> None:
    stranger = IdentityStore.open_local(tmp_path / "elsewhere").identity(
        "notified-body", Role.AUTHORITY
    )
    raw = request(stranger, make_csr(new_key(), "gw-0045"), Role.GATEWAY)
    status, problem = world.post("/certificates", raw)
    assert (status, problem["reason"]) == (401, "bad-certificate-signature")
    assert world.refusals()[-1]["reason"] == "bad-certificate-signature"


def test_bad_requests_are_refused_with_their_reason(world: World) -> None:
    csr = make_csr(new_key(), "gw-0046")
    good = request(world.administrator, csr, Role.GATEWAY)
    env = Envelope.decode(good)
    cases: dict[str, tuple[bytes, int, str]] = {
        "garbage": (b"\x00not msgpack", 400, "malformed-message"),
        "oversized": (b"\x00" * (MAX_REQUEST_BYTES + 1), 413, "oversized-message"),
        "forged signature": (
            Envelope(env.body, env.certificate, bytes(len(env.signature))).encode(),
            401,
            "bad-signature",
        ),
        "stale": (
            request(
                world.administrator,
                csr,
                Role.GATEWAY,
                sent_at=datetime.now(timezone.utc) - timedelta(hours=1),
            ),
            400,
            "stale-message",
        ),
        "revocation sent as a request": (
            seal(world.authority, RevocationRequest("ab", "unspecified", "2026-01-01T00:00Z")),
            400,
            "malformed-message",
        ),
        "CSR on a wrong curve": (
            request(
                world.administrator,
                _csr_p384("gw-0047"),
                Role.GATEWAY,
            ),
            400,
            "wrong-curve",
        ),
        "validity beyond seven years": (
            request(world.administrator, csr, Role.GATEWAY, validity_days=8 * 365),
            400,
            "validity-too-long",
        ),
        "broken CSR": (
            request(world.administrator, b"\x30\x03abc", Role.GATEWAY),
            400,
            "malformed-csr",
        ),
    }
    for label, (raw, status, reason) in cases.items():
        before = len(world.refusals())
        got_status, problem = world.post("/certificates", raw)
        assert (got_status, problem["reason"]) == (status, reason), label
        refusals = world.refusals()
        assert len(refusals) == before + 1 and refusals[-1]["reason"] == reason, label
    assert world.ids.pki.issued()[-1]["common_name"] != "gw-0046"  # type: ignore[union-attr]


def _csr_p384(common_name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(Encoding.DER)


def test_a_replayed_request_is_refused(world: World) -> None:
    raw = request(world.administrator, make_csr(new_key(), "gw-0048"), Role.GATEWAY)
    assert world.post("/certificates", raw)[0] == 201
    status, problem = world.post("/certificates", raw)
    assert (status, problem["reason"]) == (409, "replayed-request")
    names = [row["common_name"] for row in world.ids.pki.issued()]  # type: ignore[union-attr]
    assert names.count("gw-0048") == 1


def test_revocation_over_http_reaches_a_verifier_with_the_next_crl(world: World) -> None:
    pki = world.ids.pki
    assert pki is not None
    gateway = world.ids.identity("gw-0049", Role.GATEWAY)
    verifier: TrustStore = pki.trust_store()
    verifier.verify(gateway.certificate_der, expected_role=Role.GATEWAY)
    world.client.revoke(
        world.administrator, gateway.certificate.serial_number, x509.ReasonFlags.key_compromise
    )
    verifier.verify(gateway.certificate_der)  # the verifier still holds the old CRL
    assert world.client.refresh(verifier) >= 1
    with pytest.raises(Rejected) as refused:
        verifier.verify(gateway.certificate_der)
    assert refused.value.reason == "certificate-revoked"
    crl = verifier.crl(gateway.certificate.issuer)
    assert crl is not None
    entry = crl.get_revoked_certificate_by_serial_number(gateway.certificate.serial_number)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise


def test_revocation_refusals(world: World) -> None:
    gateway = world.ids.identity("gw-0050", Role.GATEWAY)
    service = world.ids.identity("legal", Role.SERVICE)
    with pytest.raises(Rejected) as refused:
        world.client.revoke(world.supplier, gateway.certificate.serial_number)
    assert refused.value.reason == "not-authorized"
    with pytest.raises(Rejected) as refused:
        world.client.revoke(world.administrator, service.certificate.serial_number)
    assert refused.value.reason == "not-authorized"
    with pytest.raises(Rejected) as refused:
        world.client.revoke(world.authority, 0xDEAD)
    assert refused.value.reason == "unknown-certificate"
    world.client.revoke(world.authority, gateway.certificate.serial_number)
    with pytest.raises(Rejected) as refused:
        world.client.revoke(world.authority, gateway.certificate.serial_number)
    assert refused.value.reason == "already-revoked"
    reasons = [r["reason"] for r in world.refusals()]
    assert reasons[-4:] == [
        "not-authorized",
        "not-authorized",
        "unknown-certificate",
        "already-revoked",
    ]


def test_crls_and_the_trust_bundle_are_served(world: World) -> None:
    bundle = x509.load_pem_x509_certificates(world.http.get("/trust.pem").content)
    pki = world.ids.pki
    assert pki is not None
    assert bundle[0] == pki.root and set(bundle[1:]) == set(pki.sub_cas.values())
    for name in ("root", "gateways", "services"):
        response = world.http.get(f"/crl/{name}.crl")
        assert response.headers["content-type"] == "application/pkix-crl"
        crl = x509.load_der_x509_crl(response.content)
        issuer = (
            pki.root
            if name == "root"
            else pki.sub_cas[next(s for s in pki.sub_cas if s.value == name)]
        )
        assert crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    assert world.http.get("/crl/nobody.crl").status_code == 404
    assert world.http.get("/certificates/zz").status_code == 404
    serial = format(world.authority.certificate.serial_number, "x")
    served = x509.load_pem_x509_certificate(world.http.get(f"/certificates/{serial}").content)
    assert served == world.authority.certificate
