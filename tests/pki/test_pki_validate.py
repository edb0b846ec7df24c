"""Certificate validation: chain, time, end-entity status and role; signatures."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from metrocloud.core.errors import Rejected
from metrocloud.pki import (
    CertificateAuthority,
    Role,
    certificate_role,
    generate_private_key,
    verify_certificate,
    verify_signature,
)

BuildCert = Callable[..., x509.Certificate]


def name(common_name: str, role: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if role is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role))
    return x509.Name(attributes)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def issue_der(ca: CertificateAuthority, cn: str, role: Role, days: int = 730) -> bytes:
    return der(ca.issue(cn, role, generate_private_key().public_key(), validity_days=days))


def rejected(
    cert_der: bytes,
    anchor: x509.Certificate,
    *,
    expected_role: Role | None = None,
    at: datetime | None = None,
) -> Rejected:
    with pytest.raises(Rejected) as info:
        verify_certificate(cert_der, anchor, expected_role=expected_role, at=at)
    return info.value


@pytest.mark.parametrize("role", list(Role))
def test_issue_and_verify_each_role(ca: CertificateAuthority, role: Role) -> None:
    cert_der = issue_der(ca, f"holder-{role.value}", role)
    cert = verify_certificate(cert_der, ca.certificate, expected_role=role)
    assert der(cert) == cert_der
    assert certificate_role(cert) is role
    assert verify_certificate(cert_der, ca.certificate) == cert  # any role


@pytest.mark.parametrize("role", list(Role))
def test_wrong_role(ca: CertificateAuthority, role: Role) -> None:
    other = next(r for r in Role if r is not role)
    error = rejected(issue_der(ca, "holder-1", role), ca.certificate, expected_role=other)
    assert error.reason == "wrong-role"
    assert "holder-1" in error.detail


def test_missing_or_unknown_role(ca: CertificateAuthority, build_cert: BuildCert) -> None:
    for subject in (name("no-ou"), name("bad-ou", "janitor")):
        error = rejected(der(build_cert(subject)), ca.certificate)
        assert error.reason == "wrong-role"
        assert str(subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value) in (error.detail)
    two_roles = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "two"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "gateway"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "service"),
        ]
    )
    error = rejected(der(build_cert(two_roles)), ca.certificate, expected_role=Role.GATEWAY)
    assert error.reason == "wrong-role"


def test_expired(ca: CertificateAuthority) -> None:
    cert_der = issue_der(ca, "gw-old", Role.GATEWAY, days=1)
    later = datetime.now(timezone.utc) + timedelta(days=2)
    error = rejected(cert_der, ca.certificate, at=later)
    assert error.reason == "certificate-expired"
    assert "gw-old" in error.detail


def test_expired_without_at(ca: CertificateAuthority, build_cert: BuildCert) -> None:
    now = datetime.now(timezone.utc)
    cert = build_cert(
        name("gw-old", "gateway"),
        not_before=now - timedelta(days=10),
        not_after=now - timedelta(days=1),
    )
    assert rejected(der(cert), ca.certificate).reason == "certificate-expired"


def test_not_yet_valid(ca: CertificateAuthority, build_cert: BuildCert) -> None:
    cert_der = issue_der(ca, "gw-new", Role.GATEWAY)
    earlier = datetime.now(timezone.utc) - timedelta(hours=1)
    error = rejected(cert_der, ca.certificate, at=earlier)
    assert error.reason == "certificate-not-yet-valid"
    assert "gw-new" in error.detail
    future = datetime.now(timezone.utc) + timedelta(days=1)
    cert = build_cert(name("gw-new", "gateway"), not_before=future)
    assert rejected(der(cert), ca.certificate).reason == "certificate-not-yet-valid"


def test_naive_time_is_a_programming_error(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_certificate(issue_der(ca, "gw", Role.GATEWAY), ca.certificate, at=datetime.now())


def test_unrelated_ca_with_the_same_name(ca: CertificateAuthority, tmp_path: Path) -> None:
    impostor = CertificateAuthority.create(tmp_path / "impostor")
    assert impostor.certificate.subject == ca.certificate.subject
    error = rejected(issue_der(impostor, "gw-evil", Role.GATEWAY), ca.certificate)
    assert error.reason == "bad-certificate-signature"
    assert "gw-evil" in error.detail
    # The impostor's own self-signed root is not the anchor either.
    error = rejected(der(impostor.certificate), ca.certificate)
    assert error.reason == "untrusted-issuer"


def test_other_ca_with_another_name(ca: CertificateAuthority, tmp_path: Path) -> None:
    other = CertificateAuthority.create(tmp_path / "other", "someone else's CA")
    error = rejected(issue_der(other, "gw-foreign", Role.GATEWAY), ca.certificate)
    assert error.reason == "untrusted-issuer"
    assert "gw-foreign" in error.detail
    assert rejected(der(other.certificate), ca.certificate).reason == "untrusted-issuer"


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x00" * 10, b"not a certificate", b"\x30\x82\xff\xff" + b"\x00" * 40],
)
def test_garbage_is_malformed(ca: CertificateAuthority, garbage: bytes) -> None:
    assert rejected(garbage, ca.certificate).reason == "malformed-certificate"


def test_truncated_and_pem_are_malformed(ca: CertificateAuthority) -> None:
    cert = ca.issue("gw", Role.GATEWAY, generate_private_key().public_key())
    assert rejected(der(cert)[:-10], ca.certificate).reason == "malformed-certificate"
    pem = cert.public_bytes(Encoding.PEM)
    assert rejected(pem, ca.certificate).reason == "malformed-certificate"


def test_tampered_certificate_fails_its_signature(ca: CertificateAuthority) -> None:
    cert_der = bytearray(issue_der(ca, "gw-tampered", Role.GATEWAY))
    index = bytes(cert_der).index(b"gw-tampered")
    cert_der[index] ^= 0x01  # "fw-tampered": still parses, signature no longer matches
    error = rejected(bytes(cert_der), ca.certificate)
    assert error.reason == "bad-certificate-signature"


@pytest.mark.parametrize("role", [None, Role.AUTHORITY])
def test_ca_certificate_is_not_an_end_entity(ca: CertificateAuthority, role: Role | None) -> None:
    error = rejected(der(ca.certificate), ca.certificate, expected_role=role)
    assert error.reason == "not-an-end-entity"
    assert "metrocloud root CA" in error.detail


def test_sub_ca_is_not_an_end_entity(ca: CertificateAuthority, build_cert: BuildCert) -> None:
    sub = build_cert(name("sub-ca", "service"), is_ca=True)
    error = rejected(der(sub), ca.certificate, expected_role=Role.SERVICE)
    assert error.reason == "not-an-end-entity"


def test_signature_round_trip_and_tampering(ca: CertificateAuthority) -> None:
    key = generate_private_key()
    cert = ca.issue("svc-legal", Role.SERVICE, key.public_key())
    data = b"reading 42 at index 7"
    signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
    verify_signature(cert, data, signature)

    bad_data = bytearray(data)
    bad_data[3] ^= 0x01
    bad_signature = bytearray(signature)
    bad_signature[-1] ^= 0x01
    for args in ((bytes(bad_data), signature), (data, bytes(bad_signature)), (data, b"")):
        with pytest.raises(Rejected) as info:
            verify_signature(cert, *args)
        assert info.value.reason == "bad-signature"
        assert "svc-legal" in info.value.detail


def test_signature_by_another_key(ca: CertificateAuthority) -> None:
    cert = ca.issue("svc", Role.SERVICE, generate_private_key().public_key())
    signature = generate_private_key().sign(b"data", ec.ECDSA(hashes.SHA256()))
    with pytest.raises(Rejected) as info:
        verify_signature(cert, b"data", signature)
    assert info.value.reason == "bad-signature"


def test_only_ec_keys_are_accepted(
    ca: CertificateAuthority, ca_key: ec.EllipticCurvePrivateKey
) -> None:
    ed_key = ed25519.Ed25519PrivateKey.generate()
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("ed-device", "gateway"))
        .issuer_name(ca.certificate.subject)
        .public_key(ed_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    with pytest.raises(Rejected) as info:
        verify_signature(cert, b"data", ed_key.sign(b"data"))
    assert info.value.reason == "unsupported-key"
    assert "ed-device" in info.value.detail
