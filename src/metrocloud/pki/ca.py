"""The metrocloud root CA: created at first start, issues end-entity certificates.

Files: ``<directory>/ca.key`` (private key) and ``<directory>/ca.pem`` (certificate).
The root allows one intermediate level (pathlen 1) so that the full PKI can later put
sub-CAs under it without replacing the trust anchor deployed on gateways.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from metrocloud.core.errors import Rejected
from metrocloud.pki.keys import FileKeyStore, PrivateKey, PublicKey, generate_private_key
from metrocloud.pki.pem import load_certificate, save_certificate
from metrocloud.pki.roles import ROLE_OID, Role

ORGANIZATION = "metrocloud"
ROOT_VALIDITY_DAYS = 365 * 20
END_ENTITY_VALIDITY_DAYS = 365 * 2
BACKDATE = timedelta(minutes=1)
_KEY_NAME = "ca"
_CERT_FILE = "ca.pem"


def _key_usage(*, digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


class CertificateAuthority:
    """A CA key with its self-signed root certificate."""

    def __init__(self, certificate: x509.Certificate, private_key: PrivateKey) -> None:
        if certificate.public_key() != private_key.public_key():
            raise ValueError("the CA certificate does not belong to the CA private key")
        self._certificate = certificate
        self._key = private_key

    @property
    def certificate(self) -> x509.Certificate:
        """The root certificate: the trust anchor to hand to verifiers."""
        return self._certificate

    @classmethod
    def create(
        cls,
        directory: Path,
        common_name: str = "metrocloud root CA",
        validity_days: int = ROOT_VALIDITY_DAYS,
        *,
        passphrase: bytes | None = None,
    ) -> CertificateAuthority:
        """Create a new root CA in ``directory``; refuses to overwrite an existing one."""
        keys = FileKeyStore(directory, passphrase)
        if keys.exists(_KEY_NAME) or (directory / _CERT_FILE).exists():
            raise FileExistsError(f"a CA already exists in {directory}")
        key = generate_private_key()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        now = datetime.now(timezone.utc)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + timedelta(days=_positive(validity_days)))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        keys.save(_KEY_NAME, key)
        save_certificate(directory / _CERT_FILE, certificate)
        return cls(certificate, key)

    @classmethod
    def load(cls, directory: Path, *, passphrase: bytes | None = None) -> CertificateAuthority:
        """Load the CA that :meth:`create` wrote to ``directory``."""
        key = FileKeyStore(directory, passphrase).load(_KEY_NAME)
        return cls(load_certificate(directory / _CERT_FILE), key)

    def issue(
        self,
        common_name: str,
        role: Role,
        public_key: PublicKey,
        validity_days: int = END_ENTITY_VALIDITY_DAYS,
    ) -> x509.Certificate:
        """Issue an end-entity certificate carrying ``role`` for an EC ``public_key``.

        The validity is capped at the root's own expiry.
        """
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise Rejected("unsupported-key", f"{common_name}: only EC public keys are issued")
        now = datetime.now(timezone.utc)
        not_after = min(
            now + timedelta(days=_positive(validity_days)),
            self._certificate.not_valid_after_utc,
        )
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                x509.NameAttribute(ROLE_OID, Role(role).value),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(self._authority_key_identifier(), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .sign(self._key, hashes.SHA256())
        )

    def _authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        try:
            ski = self._certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        except x509.ExtensionNotFound:
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key())
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)


def _positive(days: int) -> int:
    if days < 1:
        raise ValueError(f"validity must be at least one day, not {days}")
    return days
