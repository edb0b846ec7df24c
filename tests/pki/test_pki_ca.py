"""The root CA and the certificates it issues."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from metrocloud.core.errors import Rejected
from metrocloud.pki import CertificateAuthority, Role, generate_private_key


def ext(cert: x509.Certificate, kind: type[Any]) -> x509.Extension[Any]:
    return cert.extensions.get_extension_for_class(kind)


def test_root_certificate(ca: CertificateAuthority) -> None:
    root = ca.certificate
    assert root.subject == root.issuer
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "metrocloud root CA"
    )
    root.verify_directly_issued_by(root)
    constraints = ext(root, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 1
    usage = ext(root, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    ski = ext(root, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(root.public_key())


def test_create_refuses_to_overwrite_and_load_reads_back(
    ca: CertificateAuthority, ca_dir: Path
) -> None:
    with pytest.raises(FileExistsError):
        CertificateAuthority.create(ca_dir)
    assert CertificateAuthority.load(ca_dir).certificate == ca.certificate


def test_custom_name_validity_and_passphrase(tmp_path: Path) -> None:
    created = CertificateAuthority.create(tmp_path, "test CA", validity_days=30, passphrase=b"pw")
    root = created.certificate
    assert root.not_valid_after_utc - root.not_valid_before_utc < timedelta(days=31)
    assert CertificateAuthority.load(tmp_path, passphrase=b"pw").certificate == root


def test_end_entity_certificate(ca: CertificateAuthority) -> None:
    key = generate_private_key()
    before = datetime.now(timezone.utc)
    cert = ca.issue("gw-0001", Role.GATEWAY, key.public_key())
    assert cert.public_key() == key.public_key()
    assert cert.issuer == ca.certificate.subject
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw-0001"
    ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    assert [a.value for a in ou] == ["gateway"]
    constraints = ext(cert, x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    aki = ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ext(ca.certificate, x509.SubjectKeyIdentifier).value.digest
    assert ext(cert, x509.SubjectKeyIdentifier).value == (
        x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    )
    backdate = before - cert.not_valid_before_utc
    assert timedelta(seconds=50) <= backdate <= timedelta(seconds=70)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == timedelta(days=730, minutes=1)
    cert.verify_directly_issued_by(ca.certificate)


def test_serials_are_random(ca: CertificateAuthority) -> None:
    key = generate_private_key().public_key()
    serials = {ca.issue("svc", Role.SERVICE, key).serial_number for _ in range(5)}
    assert len(serials) == 5
    assert all(s.bit_length() > 64 for s in serials)


def test_validity_is_capped_at_the_root(tmp_path: Path) -> None:
    short = CertificateAuthority.create(tmp_path, validity_days=10)
    cert = short.issue("svc", Role.SERVICE, generate_private_key().public_key())
    assert cert.not_valid_after_utc == short.certificate.not_valid_after_utc


def test_bad_validity_and_non_ec_key_are_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="at least one day"):
        ca.issue("svc", Role.SERVICE, generate_private_key().public_key(), validity_days=0)
    ed_key = ed25519.Ed25519PrivateKey.generate().public_key()
    with pytest.raises(Rejected) as info:
        ca.issue("svc", Role.SERVICE, ed_key)  # type: ignore[arg-type]
    assert info.value.reason == "unsupported-key"


def test_key_must_match_certificate(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="does not belong"):
        CertificateAuthority(ca.certificate, generate_private_key())
