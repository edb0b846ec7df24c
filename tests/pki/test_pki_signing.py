"""signing.py: certificates, CRLs and CSRs signed by a key that is not in memory (an HSM's)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import SignatureAlgorithmOID
from pki_support import ALL_BRAINPOOL, der, log_events, openssl, public_key, subject

from metrocloud.core.errors import ConfigurationError
from metrocloud.core.events import EventKind
from metrocloud.pki import (
    PROFILES,
    Curve,
    FileKeyStore,
    Pki,
    Role,
    SigningKey,
    SoftwareKey,
    SubCa,
    generate_private_key,
)
from metrocloud.pki.roles import key_usage
from metrocloud.pki.signing import sign_certificate, sign_crl, sign_csr

ECDSA = ec.ECDSA(hashes.SHA256())
START = datetime(2026, 1, 1, tzinfo=timezone.utc)


class RemoteKey:
    """A :class:`SigningKey` that is no :class:`SoftwareKey`: it only signs bytes, like an HSM."""

    def __init__(self, inner: SoftwareKey, signs_with: SoftwareKey | None = None) -> None:
        self.inner = inner
        self._signs_with = signs_with or inner
        self.signed: list[bytes] = []

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def curve(self) -> Curve:
        return self.inner.curve

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.inner.public_key()

    def sign(self, data: bytes) -> bytes:
        self.signed.append(data)
        return self._signs_with.sign(data)


class RemoteKeyStore:
    """A file key store that hands out :class:`RemoteKey` objects."""

    def __init__(self, directory: Path, liar: str | None = None) -> None:
        self._files = FileKeyStore(directory)
        self._liar = liar  # this key signs with a key of its own, not the certified one

    def exists(self, name: str) -> bool:
        return self._files.exists(name)

    def generate(self, name: str, curve: Curve) -> RemoteKey:
        return RemoteKey(self._files.generate(name, curve))

    def load(self, name: str) -> RemoteKey:
        key = self._files.load(name)
        if name == self._liar:
            return RemoteKey(key, SoftwareKey(name, generate_private_key(key.curve)))
        return RemoteKey(key)


def remote(curve: Curve) -> RemoteKey:
    return RemoteKey(SoftwareKey("remote", generate_private_key(curve)))


def certificate_builder(key: SigningKey) -> x509.CertificateBuilder:
    name = subject("hsm root", "root")
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x5EED)
        .not_valid_before(START)
        .not_valid_after(START + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(key_usage(cert_sign=True), critical=True)
    )


def test_remote_key_is_a_signing_key_but_no_software_key() -> None:
    key = remote(Curve.P256)
    assert isinstance(key, SigningKey)
    assert not isinstance(key, SoftwareKey)


@pytest.mark.parametrize("curve", list(Curve))
def test_certificate(curve: Curve) -> None:
    key = remote(curve)
    builder = certificate_builder(key)
    cert = sign_certificate(builder, key)
    assert key.signed == [cert.tbs_certificate_bytes]  # the real key signed the TBS, once
    direct = builder.sign(key.inner.private_key, hashes.SHA256())
    assert cert.tbs_certificate_bytes == direct.tbs_certificate_bytes
    assert cert.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
    cert.verify_directly_issued_by(cert)
    key.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ECDSA)
    assert x509.load_der_x509_certificate(der(cert)) == cert


@pytest.mark.parametrize("curve", list(Curve))
def test_crl(curve: Curve) -> None:
    key = remote(curve)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(subject("hsm root", "root"))
        .last_update(START)
        .next_update(START + timedelta(days=7))
        .add_extension(x509.CRLNumber(7), critical=False)
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(42).revocation_date(START).build()
        )
    )
    crl = sign_crl(builder, key)
    assert key.signed == [crl.tbs_certlist_bytes]
    direct = builder.sign(key.inner.private_key, hashes.SHA256())
    assert crl.tbs_certlist_bytes == direct.tbs_certlist_bytes
    assert crl.is_signature_valid(key.public_key())
    assert crl.get_revoked_certificate_by_serial_number(42) is not None


@pytest.mark.parametrize("curve", list(Curve))
def test_csr(curve: Curve, tmp_path: Path) -> None:
    key = remote(curve)
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject("dev-1", "gateway"))
    builder = builder.add_extension(
        x509.SubjectAlternativeName([x509.DNSName("dev.example")]), critical=False
    )
    request = sign_csr(builder, key)
    assert key.signed == [request.tbs_certrequest_bytes]
    assert request.public_key() == key.public_key()  # not the placeholder's
    assert request.is_signature_valid
    direct = builder.sign(key.inner.private_key, hashes.SHA256())
    assert request.tbs_certrequest_bytes == direct.tbs_certrequest_bytes
    path = tmp_path / "req.pem"
    path.write_bytes(request.public_bytes(Encoding.PEM))
    done = openssl("req", "-in", path, "-noout", "-verify")
    assert "self-signature verify OK" in done.stdout + done.stderr, done.stderr


def test_a_key_signing_with_something_else_is_caught() -> None:
    """The control: if the remote key signed with another key, the result would not verify."""
    inner = SoftwareKey("k", generate_private_key(Curve.P256))
    liar = RemoteKey(inner, SoftwareKey("other", generate_private_key(Curve.P256)))
    cert = sign_certificate(certificate_builder(liar), liar)
    with pytest.raises(InvalidSignature):
        cert.verify_directly_issued_by(cert)
    request = sign_csr(
        x509.CertificateSigningRequestBuilder().subject_name(subject("d", "g")), liar
    )
    assert not request.is_signature_valid


# -- a whole PKI behind remote keys --------------------------------------------------------------


@pytest.fixture(scope="module", params=["default", "brainpool"])
def remote_pki(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pki]:
    directory = tmp_path_factory.mktemp("remote-pki")
    options = (
        {}
        if request.param == "default"
        else {
            "root_curve": Curve.BRAINPOOL_P256R1,
            "ca_curves": ALL_BRAINPOOL,
        }
    )
    authority = Pki.init(directory / "pki", RemoteKeyStore(directory / "keys"), **options)
    yield authority
    authority.close()


def test_pki_on_remote_keys_is_valid_for_openssl(remote_pki: Pki, tmp_path: Path) -> None:
    role = Role.GATEWAY
    ee = remote_pki.issue(role, "gw-hsm", public_key(PROFILES[role].default_curve))
    revoked = remote_pki.issue(role, "gw-hsm-revoked", public_key(PROFILES[role].default_curve))
    remote_pki.revoke(revoked.serial_number)
    trust = remote_pki.trust_store()
    assert trust.verify(der(ee), expected_role=role) == ee
    files = {
        "root.pem": remote_pki.root.public_bytes(Encoding.PEM),
        "sub.pem": remote_pki.sub_cas[SubCa.GATEWAYS].public_bytes(Encoding.PEM),
        "root_crl.pem": remote_pki.crl(None).public_bytes(Encoding.PEM),
        "sub_crl.pem": remote_pki.crl(SubCa.GATEWAYS).public_bytes(Encoding.PEM),
        "ee.pem": ee.public_bytes(Encoding.PEM),
        "revoked.pem": revoked.public_bytes(Encoding.PEM),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)

    def check(leaf: str) -> str:
        done = openssl(
            "verify",
            "-x509_strict",
            "-crl_check_all",
            "-CAfile",
            tmp_path / "root.pem",
            "-untrusted",
            tmp_path / "sub.pem",
            "-CRLfile",
            tmp_path / "root_crl.pem",
            "-CRLfile",
            tmp_path / "sub_crl.pem",
            tmp_path / leaf,
        )
        return done.stdout + done.stderr

    assert check("ee.pem").strip() == f"{tmp_path / 'ee.pem'}: OK"
    assert "certificate revoked" in check("revoked.pem")


def test_issuing_with_a_key_that_does_not_match_its_certificate(tmp_path: Path) -> None:
    """An HSM key that signs with another key: nothing is issued or logged as issued."""
    Pki.init(tmp_path / "pki", RemoteKeyStore(tmp_path / "keys")).close()
    broken = Pki(tmp_path / "pki", RemoteKeyStore(tmp_path / "keys", liar="ca-gateways"))
    with pytest.raises((InvalidSignature, ConfigurationError)):
        broken.issue(Role.GATEWAY, "gw-x", public_key(Curve.BRAINPOOL_P256R1))
    assert broken.issued() == []
    assert log_events(broken, EventKind.CERTIFICATE_ISSUED) == []
    broken.close()
