"""Identities (key plus certificate) of gateways and services, and where they are kept.

Embedded mode: :class:`IdentityStore` creates the root CA on first use and keeps every key
as an unencrypted PKCS#8 file unless a passphrase is given. The full PKI issue will add
encrypted PKCS#8 by default and PKCS#11 (HSM) keys through :class:`~metrocloud.pki.keys.KeyStore`.

Layout::

    <directory>/ca/ca.key, ca.pem                    root CA
    <directory>/identities/<common_name>.key, .pem   one identity each
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from metrocloud.core.errors import Rejected
from metrocloud.pki.ca import CertificateAuthority
from metrocloud.pki.keys import FileKeyStore, KeyStore, PrivateKey, generate_private_key
from metrocloud.pki.pem import load_certificate, save_certificate
from metrocloud.pki.roles import Role
from metrocloud.pki.validate import verify_certificate

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Identity:
    """Who signs: a common name with its role, private key and certificate."""

    common_name: str
    role: Role
    private_key: PrivateKey = field(repr=False)
    certificate: x509.Certificate

    def __post_init__(self) -> None:
        if self.certificate.public_key() != self.private_key.public_key():
            raise ValueError(f"certificate of {self.common_name} does not match its key")

    def sign(self, data: bytes) -> bytes:
        """ECDSA/SHA-256 signature over ``data``, DER-encoded."""
        return self.private_key.sign(data, ec.ECDSA(hashes.SHA256()))

    @property
    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(Encoding.DER)


class IdentityStore:
    """Creates the CA on first use, then loads or issues identities by common name.

    ``passphrase`` encrypts every key file (CA and identities); ``keys`` replaces the file
    store of identity keys. Not safe for several processes starting it at the same time.
    """

    def __init__(
        self,
        directory: Path,
        *,
        passphrase: bytes | None = None,
        keys: KeyStore | None = None,
    ) -> None:
        self.directory = directory
        self._passphrase = passphrase
        self._identities = directory / "identities"
        self._keys = keys if keys is not None else FileKeyStore(self._identities, passphrase)
        self._ca: CertificateAuthority | None = None

    @property
    def ca(self) -> CertificateAuthority:
        """The root CA, created under ``<directory>/ca/`` if there is none yet."""
        if self._ca is None:
            ca_dir = self.directory / "ca"
            if (ca_dir / "ca.pem").exists():
                self._ca = CertificateAuthority.load(ca_dir, passphrase=self._passphrase)
            else:
                self._ca = CertificateAuthority.create(ca_dir, passphrase=self._passphrase)
        return self._ca

    @property
    def trust_anchor(self) -> x509.Certificate:
        return self.ca.certificate

    def identity(self, common_name: str, role: Role) -> Identity:
        """Load the identity ``common_name`` or issue and save it.

        A stored certificate must carry ``role`` (else ``Rejected("wrong-role")``) and match
        the key; an expired one, or one for another key, is reissued for the stored key.
        """
        if not _NAME.fullmatch(common_name):
            raise Rejected("bad-common-name", f"{common_name!r} is not a valid identity name")
        role = Role(role)
        if self._keys.exists(common_name):
            key = self._keys.load(common_name)
        else:
            key = generate_private_key()
            self._keys.save(common_name, key)
        certificate = self._stored_certificate(common_name, role, key)
        if certificate is None:
            self._identities.mkdir(mode=0o700, parents=True, exist_ok=True)
            certificate = self.ca.issue(common_name, role, key.public_key())
            save_certificate(self._cert_path(common_name), certificate)
        return Identity(common_name, role, key, certificate)

    def _cert_path(self, common_name: str) -> Path:
        return self._identities / f"{common_name}.pem"

    def _stored_certificate(
        self, common_name: str, role: Role, key: PrivateKey
    ) -> x509.Certificate | None:
        """The stored certificate if still usable; None if it must be (re)issued."""
        path = self._cert_path(common_name)
        if not path.exists():
            return None
        certificate = load_certificate(path)
        if certificate.public_key() != key.public_key():
            return None
        der = certificate.public_bytes(Encoding.DER)
        try:
            verify_certificate(der, self.trust_anchor, expected_role=role)
        except Rejected as exc:
            if exc.reason == "certificate-expired":
                return None
            raise
        return certificate
