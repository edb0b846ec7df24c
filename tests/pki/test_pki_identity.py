"""Identities and the identity store of the embedded mode."""

from __future__ import annotations

import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from metrocloud.core.errors import Rejected
from metrocloud.pki import (
    CertificateAuthority,
    FileKeyStore,
    Identity,
    IdentityStore,
    KeyFileError,
    Role,
    generate_private_key,
    load_certificate,
    load_private_key,
    save_certificate,
    verify_certificate,
    verify_signature,
)


def test_first_use_creates_ca_and_identity(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path)
    assert not (tmp_path / "ca").exists()  # lazily, on first use
    gateway = store.identity("gw-0001", Role.GATEWAY)
    assert (tmp_path / "ca" / "ca.key").is_file() and (tmp_path / "ca" / "ca.pem").is_file()
    key_file = tmp_path / "identities" / "gw-0001.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert load_certificate(tmp_path / "identities" / "gw-0001.pem") == gateway.certificate
    assert gateway.common_name == "gw-0001" and gateway.role is Role.GATEWAY
    cert = verify_certificate(
        gateway.certificate_der, store.trust_anchor, expected_role=Role.GATEWAY
    )
    assert cert == gateway.certificate


def test_second_instance_reloads_the_same_identity(tmp_path: Path) -> None:
    first = IdentityStore(tmp_path).identity("svc-legal", Role.SERVICE)
    again = IdentityStore(tmp_path)
    second = again.identity("svc-legal", Role.SERVICE)
    assert second.private_key.public_key() == first.private_key.public_key()
    assert second.certificate.serial_number == first.certificate.serial_number
    assert second.certificate_der == first.certificate_der
    assert again.trust_anchor == IdentityStore(tmp_path).trust_anchor


def test_identities_differ(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path)
    a = store.identity("gw-a", Role.GATEWAY)
    b = store.identity("gw-b", Role.GATEWAY)
    assert a.private_key.public_key() != b.private_key.public_key()


def test_sign_and_verify(tmp_path: Path) -> None:
    identity = IdentityStore(tmp_path).identity("gw-0002", Role.GATEWAY)
    signature = identity.sign(b"payload")
    verify_signature(identity.certificate, b"payload", signature)
    with pytest.raises(Rejected) as info:
        verify_signature(identity.certificate, b"payloaD", signature)
    assert info.value.reason == "bad-signature"


def test_stored_identity_keeps_its_role(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path)
    store.identity("gw-0003", Role.GATEWAY)
    with pytest.raises(Rejected) as info:
        store.identity("gw-0003", Role.AUTHORITY)
    assert info.value.reason == "wrong-role"


@pytest.mark.parametrize("bad", ["", "../escape", "a/b", ".hidden", "x" * 65, "gw 1"])
def test_names_must_be_safe_file_names(tmp_path: Path, bad: str) -> None:
    with pytest.raises(Rejected) as info:
        IdentityStore(tmp_path).identity(bad, Role.GATEWAY)
    assert info.value.reason == "bad-common-name"


def test_passphrase_store(tmp_path: Path) -> None:
    first = IdentityStore(tmp_path, passphrase=b"s3cret").identity("gw-enc", Role.GATEWAY)
    for path in (tmp_path / "ca" / "ca.key", tmp_path / "identities" / "gw-enc.key"):
        assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    second = IdentityStore(tmp_path, passphrase=b"s3cret").identity("gw-enc", Role.GATEWAY)
    assert second.certificate == first.certificate
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        IdentityStore(tmp_path, passphrase=b"wrong").identity("gw-enc", Role.GATEWAY)


def test_custom_key_store(tmp_path: Path) -> None:
    keys = FileKeyStore(tmp_path / "elsewhere")
    identity = IdentityStore(tmp_path / "store", keys=keys).identity("gw-k", Role.GATEWAY)
    assert keys.exists("gw-k")
    assert not (tmp_path / "store" / "identities" / "gw-k.key").exists()
    assert keys.load("gw-k").public_key() == identity.certificate.public_key()


def test_missing_certificate_is_reissued_for_the_stored_key(tmp_path: Path) -> None:
    first = IdentityStore(tmp_path).identity("gw-r", Role.GATEWAY)
    (tmp_path / "identities" / "gw-r.pem").unlink()
    second = IdentityStore(tmp_path).identity("gw-r", Role.GATEWAY)
    assert second.certificate.public_key() == first.certificate.public_key()
    assert second.certificate.serial_number != first.certificate.serial_number


def test_expired_certificate_is_renewed(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path)
    first = store.identity("gw-exp", Role.GATEWAY)
    ca = CertificateAuthority.load(tmp_path / "ca")
    ca_key = load_private_key(tmp_path / "ca" / "ca.key")
    now = datetime.now(timezone.utc)
    expired = (
        x509.CertificateBuilder()
        .subject_name(first.certificate.subject)
        .issuer_name(ca.certificate.subject)
        .public_key(first.certificate.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=10))
        .not_valid_after(now - timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    save_certificate(tmp_path / "identities" / "gw-exp.pem", expired)
    renewed = IdentityStore(tmp_path).identity("gw-exp", Role.GATEWAY)
    assert renewed.certificate.not_valid_after_utc > now
    assert renewed.certificate.public_key() == first.certificate.public_key()


def test_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    IdentityStore(tmp_path / "a").identity("gw-x", Role.GATEWAY)
    foreign = IdentityStore(tmp_path / "b").identity("gw-x", Role.GATEWAY)
    target = tmp_path / "a" / "identities"
    save_certificate(target / "gw-x.pem", foreign.certificate)
    (target / "gw-x.key").write_bytes((tmp_path / "b" / "identities" / "gw-x.key").read_bytes())
    with pytest.raises(Rejected) as info:
        IdentityStore(tmp_path / "a").identity("gw-x", Role.GATEWAY)
    assert info.value.reason == "bad-certificate-signature"


def test_identity_key_must_match_certificate(tmp_path: Path) -> None:
    identity = IdentityStore(tmp_path).identity("gw-m", Role.GATEWAY)
    with pytest.raises(ValueError, match="does not match"):
        Identity("gw-m", Role.GATEWAY, generate_private_key(), identity.certificate)
    assert "private_key" not in repr(identity)


def test_signature_is_der_ecdsa_sha256(tmp_path: Path) -> None:
    identity = IdentityStore(tmp_path).identity("gw-d", Role.GATEWAY)
    signature = identity.sign(b"m")
    assert signature[0] == 0x30  # DER SEQUENCE
    identity.private_key.public_key().verify(signature, b"m", ec.ECDSA(hashes.SHA256()))
