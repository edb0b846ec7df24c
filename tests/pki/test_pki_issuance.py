"""Issuing and revoking: what the PKI refuses (a reason, a logbook entry) and what it logs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from asn1crypto import csr as asn1_csr
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pki_support import (
    csr_for,
    csr_on_curve,
    der,
    extension,
    flip_last_byte,
    log_events,
    public_key,
    refused_by_pki,
    subject,
    units,
)

from metrocloud.core.events import EventKind
from metrocloud.pki import PROFILES, Curve, Pki, Role, SoftwareKey, SubCa, generate_private_key
from metrocloud.pki.roles import MAX_VALIDITY_DAYS, key_usage
from metrocloud.pki.signing import sign_csr


def ec_key(curve: ec.EllipticCurve) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve)


def issued_serials(pki: Pki) -> set[str]:
    return {row["serial"] for row in pki.issued()}


def refused_request(pki: Pki, reason: str, action: Callable[[], object]) -> None:
    """Refused with ``reason``, logged as a refused certificate request, nothing issued."""
    before = issued_serials(pki)
    issued_events = len(log_events(pki, EventKind.CERTIFICATE_ISSUED))
    event = refused_by_pki(pki, reason, action)
    assert event.detail["what"] == "certificate-request"
    assert issued_serials(pki) == before
    assert len(log_events(pki, EventKind.CERTIFICATE_ISSUED)) == issued_events


# -- what gets issued ----------------------------------------------------------------------------


def test_issuance_is_logged(pki: Pki) -> None:
    cert = pki.issue(
        Role.GATEWAY, "gw-logged", public_key(Curve.BRAINPOOL_P256R1), requested_by="alice"
    )
    event = log_events(pki, EventKind.CERTIFICATE_ISSUED)[-1]
    assert event.actor == "pki" and event.subject == "gw-logged"
    assert event.detail["serial"] == format(cert.serial_number, "x")
    assert event.detail["role"] == "gateway" and event.detail["issuer"] == "gateways"
    assert event.detail["curve"] == "brainpoolP256r1"
    assert event.detail["requested_by"] == "alice"
    assert event.detail["not_after"] == cert.not_valid_after_utc.isoformat()


@pytest.mark.parametrize("role", list(Role))
def test_issue_from_csr_for_every_role(pki: Pki, role: Role) -> None:
    key = SoftwareKey("k", generate_private_key(PROFILES[role].default_curve))
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        subject(f"csr-{role.value}", "authority")  # a role asked for in the CSR counts for nothing
    )
    request = sign_csr(builder, key)
    for form in (request, request.public_bytes(Encoding.DER), request.public_bytes(Encoding.PEM)):
        cert = pki.issue_from_csr(form, role)
        assert cert.public_key() == key.public_key()
        assert units(cert) == [role.value]
        assert cert.issuer == pki.sub_cas[PROFILES[role].issuer].subject
        logged = log_events(pki, EventKind.CERTIFICATE_ISSUED)[-1]
        assert logged.detail["serial"] == format(cert.serial_number, "x")
        assert logged.subject == f"csr-{role.value}"


def test_csr_subject_beyond_the_common_name_is_ignored(pki: Pki) -> None:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "evil corp"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "authority"),
            x509.NameAttribute(NameOID.COMMON_NAME, "gw-plain"),
        ]
    )
    request = csr_for(ec_key(ec.BrainpoolP256R1()), name=name)
    cert = pki.issue_from_csr(request, Role.GATEWAY)
    assert cert.subject == subject("gw-plain", "gateway")


def test_service_csr_names_are_copied(pki: Pki) -> None:
    import ipaddress

    names = x509.SubjectAlternativeName(
        [x509.DNSName("svc.example"), x509.IPAddress(ipaddress.ip_address("192.0.2.1"))]
    )
    cert = pki.issue_from_csr(csr_for(ec_key(ec.SECP256R1()), "svc-1", [names]), Role.SERVICE)
    assert extension(cert, x509.SubjectAlternativeName).value == names


# -- refused requests ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("curve", "role"),
    [
        (ec.SECP384R1(), Role.GATEWAY),
        (ec.SECP256K1(), Role.GATEWAY),
        (ec.SECP384R1(), Role.SERVICE),
        (ec.SECP256K1(), Role.AUTHORITY),
        (ec.BrainpoolP384R1(), Role.MARKET_PARTICIPANT),
        (ec.BrainpoolP256R1(), Role.SERVICE),  # services speak TLS with Go: P-256 only
    ],
    ids=["p384-gw", "k1-gw", "p384-svc", "k1-authority", "bp384-mp", "bp256-svc"],
)
def test_csr_on_a_wrong_curve(pki: Pki, curve: ec.EllipticCurve, role: Role) -> None:
    request = csr_for(ec_key(curve), "dev-curve")
    refused_request(pki, "wrong-curve", lambda: pki.issue_from_csr(request, role))
    refused_request(
        pki,
        "wrong-curve",
        lambda: pki.issue(role, "dev-curve", request.public_key()),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_csr_with_a_non_ec_key(pki: Pki, kind: str) -> None:
    key = (
        ed25519.Ed25519PrivateKey.generate()
        if kind == "ed25519"
        else rsa.generate_private_key(65537, 1024)
    )
    request = csr_for(key, "dev-non-ec")
    refused_request(pki, "wrong-curve", lambda: pki.issue_from_csr(request, Role.GATEWAY))


@pytest.mark.parametrize("curve_oid", ["1.3.132.0.1", "1.2.3.4"], ids=["sect163k1", "nonsense"])
def test_csr_on_a_curve_the_library_cannot_load(pki: Pki, curve_oid: str) -> None:
    raw = csr_on_curve(ec_key(ec.SECP256R1()), curve_oid, "dev-odd")
    refused_request(pki, "wrong-curve", lambda: pki.issue_from_csr(raw, Role.GATEWAY))


@pytest.mark.parametrize(
    "requested",
    [
        x509.BasicConstraints(ca=True, path_length=None),
        x509.BasicConstraints(ca=False, path_length=None),
        key_usage(cert_sign=True),
        key_usage(digital_signature=True),
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
        x509.ExtendedKeyUsage([Role.AUTHORITY.oid]),
        x509.SubjectKeyIdentifier(b"\x01" * 20),
    ],
    ids=["ca", "not-ca", "key-cert-sign", "digital-signature", "eku", "role-eku", "ski"],
)
def test_csr_with_a_forbidden_extension(pki: Pki, requested: x509.ExtensionType) -> None:
    request = csr_for(ec_key(ec.BrainpoolP256R1()), "gw-greedy", [requested])
    refused_request(pki, "forbidden-extension", lambda: pki.issue_from_csr(request, Role.GATEWAY))


@pytest.mark.parametrize("role", [r for r in Role if r not in (Role.SERVICE, Role.AUTHORITY)])
def test_csr_with_names_for_a_role_without_tls(pki: Pki, role: Role) -> None:
    names = x509.SubjectAlternativeName([x509.DNSName("gw.example")])
    key = ec_key(PROFILES[role].default_curve.ec_curve)
    request = csr_for(key, "dev-named", [names])
    refused_request(pki, "forbidden-extension", lambda: pki.issue_from_csr(request, role))


def test_csr_with_a_broken_signature(pki: Pki) -> None:
    good = csr_for(ec_key(ec.BrainpoolP256R1()), "gw-broken")
    broken = flip_last_byte(good.public_bytes(Encoding.DER))
    assert not x509.load_der_x509_csr(broken).is_signature_valid
    refused_request(pki, "bad-csr-signature", lambda: pki.issue_from_csr(broken, Role.GATEWAY))
    assert log_events(pki, EventKind.REJECTION)[-1].subject == "gw-broken"


def test_csr_for_a_key_the_requester_does_not_hold(pki: Pki) -> None:
    """Signed by one key, asking a certificate for another (no proof of possession)."""
    own, victim = ec_key(ec.SECP256R1()), ec_key(ec.SECP256R1())
    parsed = asn1_csr.CertificationRequest.load(csr_for(own, "gw-theft").public_bytes(Encoding.DER))
    info = parsed["certification_request_info"].copy()
    victim_spki = victim.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    info["subject_pk_info"] = asn1_x509.PublicKeyInfo.load(victim_spki)
    raw = asn1_csr.CertificationRequest(
        {
            "certification_request_info": info,
            "signature_algorithm": parsed["signature_algorithm"],
            "signature": own.sign(info.dump(), ec.ECDSA(hashes.SHA256())),
        }
    ).dump()
    refused_request(pki, "bad-csr-signature", lambda: pki.issue_from_csr(raw, Role.GATEWAY))


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", b"\x30\x03\x02\x01\x01", b"-----BEGIN CERTIFICATE REQUEST-----\nxx\n"],
    ids=["empty", "text", "wrong-structure", "bad-pem"],
)
def test_malformed_csr(pki: Pki, data: bytes) -> None:
    refused_request(pki, "malformed-csr", lambda: pki.issue_from_csr(data, Role.GATEWAY))


def test_certificate_instead_of_csr(pki: Pki) -> None:
    cert = pki.issue(Role.GATEWAY, "gw-cert", public_key(Curve.BRAINPOOL_P256R1))
    refused_request(pki, "malformed-csr", lambda: pki.issue_from_csr(der(cert), Role.GATEWAY))


def test_csr_with_a_duplicated_extension(pki: Pki) -> None:
    key = ec_key(ec.SECP256R1())
    names = x509.SubjectAlternativeName([x509.DNSName("svc.example")])
    parsed = asn1_csr.CertificationRequest.load(
        csr_for(key, "svc-dup", [names]).public_bytes(Encoding.DER)
    )
    info = parsed["certification_request_info"].copy()
    attribute = info["attributes"][0]
    extensions = list(attribute["values"][0])
    info["attributes"] = [{"type": "extension_request", "values": [[*extensions, *extensions]]}]
    raw = asn1_csr.CertificationRequest(
        {
            "certification_request_info": info,
            "signature_algorithm": parsed["signature_algorithm"],
            "signature": key.sign(info.dump(), ec.ECDSA(hashes.SHA256())),
        }
    ).dump()
    refused_request(pki, "malformed-csr", lambda: pki.issue_from_csr(raw, Role.SERVICE))


@pytest.mark.parametrize("damage", ["version", "bit-string-name", "key-algorithm"])
def test_damaged_csr_fields_are_refused_not_crashes(pki: Pki, damage: str) -> None:
    raw = csr_for(ec_key(ec.SECP256R1()), "gw-bits").public_bytes(Encoding.DER)
    if damage == "version":  # v1 (0) becomes 3
        at = raw.index(b"\x02\x01\x00") + 2
        damaged = raw[:at] + b"\x03" + raw[at + 1 :]
        reason = "malformed-csr"
    elif damage == "bit-string-name":  # the CN becomes a BIT STRING
        damaged = raw.replace(b"\x0c\x07gw-bits", b"\x03\x07\x00w-bits")
        reason = "malformed-csr"
    else:  # id-ecPublicKey becomes an unknown key algorithm
        ec_public_key = bytes.fromhex("06072a8648ce3d0201")
        damaged = raw.replace(ec_public_key, bytes.fromhex("06072a8648ce3d0209"))
        reason = "wrong-curve"
    assert damaged != raw
    refused_request(pki, reason, lambda: pki.issue_from_csr(damaged, Role.GATEWAY))


@pytest.mark.parametrize(
    "cn",
    ["../escape", "a/b", ".hidden", "-dash", "gw 1", "x" * 65, "gw-1\n", "gw\u00e9"],
)
def test_bad_common_name(pki: Pki, cn: str) -> None:
    if len(cn) <= 64:  # cryptography builds no longer common name into a CSR
        request = csr_for(ec_key(ec.BrainpoolP256R1()), cn)
        refused_request(pki, "bad-common-name", lambda: pki.issue_from_csr(request, Role.GATEWAY))
    key = public_key(Curve.BRAINPOOL_P256R1)
    refused_request(pki, "bad-common-name", lambda: pki.issue(Role.GATEWAY, cn, key))


def test_csr_without_common_name(pki: Pki) -> None:
    request = csr_for(ec_key(ec.BrainpoolP256R1()), None, name=x509.Name([]))
    refused_request(pki, "bad-common-name", lambda: pki.issue_from_csr(request, Role.GATEWAY))


def test_longest_name_is_accepted(pki: Pki) -> None:
    cert = pki.issue(Role.GATEWAY, "g" * 64, public_key(Curve.BRAINPOOL_P256R1))
    assert cert.subject == subject("g" * 64, "gateway")


@pytest.mark.parametrize("days", [MAX_VALIDITY_DAYS + 1, 10 * 365, -1])
def test_validity_outside_seven_years(pki: Pki, days: int) -> None:
    request = csr_for(ec_key(ec.SECP256R1()), "rcv-long")
    refused_request(
        pki,
        "validity-too-long",
        lambda: pki.issue_from_csr(request, Role.RECEIVER, validity_days=days),
    )
    key = request.public_key()
    refused_request(
        pki,
        "validity-too-long",
        lambda: pki.issue(Role.RECEIVER, "rcv-long", key, validity_days=days),  # type: ignore[arg-type]
    )


def test_zero_validity_is_refused(pki: Pki) -> None:
    """Zero days is no validity; it must not silently become the role's default."""
    key = public_key(Curve.P256)
    refused_request(
        pki, "validity-too-long", lambda: pki.issue(Role.RECEIVER, "rcv-zero", key, validity_days=0)
    )


def test_seven_years_exactly_is_accepted(pki: Pki) -> None:
    cert = pki.issue(
        Role.RECEIVER, "rcv-max", public_key(Curve.P256), validity_days=MAX_VALIDITY_DAYS
    )
    assert cert.not_valid_after_utc == pki.sub_cas[SubCa.MARKET_PARTICIPANTS].not_valid_after_utc


def test_bad_ip_address_for_a_service(pki: Pki) -> None:
    key = public_key(Curve.P256)
    refused_request(
        pki,
        "bad-subject-name",
        lambda: pki.issue(Role.SERVICE, "svc-ip", key, ip_addresses=["10.0.0.300"]),
    )


def test_requester_is_named_in_the_refusal(pki: Pki) -> None:
    request = csr_for(ec_key(ec.SECP384R1()), "dev-who")
    refused_by_pki(
        pki,
        "wrong-curve",
        lambda: pki.issue_from_csr(request, Role.GATEWAY, requested_by="mallory"),
    )
    assert log_events(pki, EventKind.REJECTION)[-1].detail["requested_by"] == "mallory"


# -- revoking ------------------------------------------------------------------------------------


def test_revocation_is_logged(pki: Pki) -> None:
    cert = pki.issue(Role.AUTHORITY, "ptb-1", public_key(Curve.P256))
    returned = pki.revoke(
        cert.serial_number, x509.ReasonFlags.superseded, requested_by="operator-2"
    )
    assert returned == cert
    event = log_events(pki, EventKind.CERTIFICATE_REVOKED)[-1]
    assert event.subject == "ptb-1"
    assert event.detail == {
        "serial": format(cert.serial_number, "x"),
        "reason": "superseded",
        "issuer": "authorities",
        "requested_by": "operator-2",
    }


def test_revoking_an_unknown_serial(pki: Pki) -> None:
    before = len(list(pki.crl(SubCa.GATEWAYS)))
    event = refused_by_pki(pki, "unknown-certificate", lambda: pki.revoke(0x1234567))
    assert event.detail["what"] == "revocation"
    assert event.subject == "1234567"
    assert len(list(pki.crl(SubCa.GATEWAYS))) == before
    refused_by_pki(pki, "unknown-certificate", lambda: pki.revoke(pki.root.serial_number))


def test_revoking_twice(pki: Pki) -> None:
    cert = pki.issue(Role.GATEWAY, "gw-twice", public_key(Curve.BRAINPOOL_P256R1))
    pki.revoke(cert.serial_number)
    revoked = len(log_events(pki, EventKind.CERTIFICATE_REVOKED))
    crl = pki.crl(SubCa.GATEWAYS)
    event = refused_by_pki(pki, "already-revoked", lambda: pki.revoke(cert.serial_number))
    assert event.detail["what"] == "revocation"
    assert event.subject == format(cert.serial_number, "x")
    assert len(log_events(pki, EventKind.CERTIFICATE_REVOKED)) == revoked
    assert pki.crl(SubCa.GATEWAYS) == crl  # no new CRL either


def test_revoking_a_sub_ca_twice(fresh_pki: Pki) -> None:
    serial = fresh_pki.sub_cas[SubCa.AUTHORITIES].serial_number
    fresh_pki.revoke(serial)
    refused_by_pki(fresh_pki, "already-revoked", lambda: fresh_pki.revoke(serial))
