"""Signing keys behind one interface: encrypted PKCS#8 files or a PKCS#11 token (HSM).

Everything that signs in metrocloud (a CA issuing certificates and CRLs, a gateway sealing a
transmission, a service signing a result) holds a :class:`SigningKey` and never the private
key itself. Two stores make them:

- :class:`FileKeyStore`: PKCS#8 PEM files, encrypted with a passphrase (the embedded default).
- :class:`~metrocloud.pki.pkcs11.Pkcs11KeyStore`: keys generated inside a PKCS#11 token that
  never leave it (SoftHSM2 in tests, a real HSM in production).

All signatures are ECDSA over SHA-256, DER-encoded (``Ecdsa-Sig-Value``), on one of the two
curves of :class:`Curve`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from metrocloud.core.errors import ConfigurationError
from metrocloud.pki.pem import write_atomically

PrivateKey = ec.EllipticCurvePrivateKey
PublicKey = ec.EllipticCurvePublicKey


PASSPHRASE_ENV = "METROCLOUD_KEY_PASSPHRASE"
"""The environment variable that gives the passphrase of key files."""
HSM_PIN_ENV = "METROCLOUD_HSM_PIN"
"""The environment variable that gives the user PIN of a PKCS#11 token."""


class KeyFileError(ConfigurationError):
    """A key file cannot be used: wrong or missing passphrase, damaged, or not an EC key."""


class Curve(str, Enum):
    """The elliptic curves metrocloud keys may use."""

    P256 = "P-256"
    """NIST P-256 (secp256r1): what TLS peers such as the NATS server (Go) accept."""
    BRAINPOOL_P256R1 = "brainpoolP256r1"
    """RFC 5639 brainpoolP256r1: the curve of the German smart-meter PKI (BSI TR-03109-4)."""

    @property
    def ec_curve(self) -> ec.EllipticCurve:
        return ec.SECP256R1() if self is Curve.P256 else ec.BrainpoolP256R1()

    @property
    def oid(self) -> str:
        """The named-curve OID (dotted), as in a certificate's SubjectPublicKeyInfo."""
        return "1.2.840.10045.3.1.7" if self is Curve.P256 else "1.3.36.3.3.2.8.1.1.7"

    @classmethod
    def of(cls, key: PublicKey | PrivateKey) -> Curve:
        """The curve of ``key``; ``ValueError`` if it is on none of the allowed curves."""
        name = key.curve.name
        for curve in cls:
            if curve.ec_curve.name == name:
                return curve
        raise ValueError(f"curve {name} is not allowed (only P-256 and brainpoolP256r1)")


@runtime_checkable
class SigningKey(Protocol):
    """A private EC key that signs, wherever it is kept."""

    @property
    def name(self) -> str:
        """The key's name in its store (file stem or PKCS#11 label)."""
        ...

    @property
    def curve(self) -> Curve: ...

    def public_key(self) -> PublicKey:
        """The matching public key."""
        ...

    def sign(self, data: bytes) -> bytes:
        """ECDSA signature over SHA-256(``data``), DER-encoded."""
        ...


class KeyStore(Protocol):
    """Signing keys by name."""

    def exists(self, name: str) -> bool:
        """Whether a key of this name is stored."""
        ...

    def generate(self, name: str, curve: Curve) -> SigningKey:
        """Generate and keep a new key; ``FileExistsError`` if ``name`` is taken."""
        ...

    def load(self, name: str) -> SigningKey:
        """The stored key of this name; ``KeyError`` if there is none."""
        ...


class SoftwareKey:
    """A :class:`SigningKey` whose private key is in this process's memory."""

    def __init__(self, name: str, private_key: PrivateKey) -> None:
        self._name = name
        self._key = private_key
        self._curve = Curve.of(private_key)

    @property
    def name(self) -> str:
        return self._name

    @property
    def curve(self) -> Curve:
        return self._curve

    @property
    def private_key(self) -> PrivateKey:
        """The key object itself, for the few places that need one (a TLS key file)."""
        return self._key

    def public_key(self) -> PublicKey:
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))

    def __repr__(self) -> str:
        return f"SoftwareKey({self._name!r}, {self._curve.value})"


def generate_private_key(curve: Curve = Curve.P256) -> PrivateKey:
    """A fresh ECDSA private key on ``curve``."""
    return ec.generate_private_key(Curve(curve).ec_curve)


def private_key_pem(key: PrivateKey, passphrase: bytes | None) -> bytes:
    """``key`` as PKCS#8 PEM, encrypted (AES-256-CBC, PBKDF2) when ``passphrase`` is given."""
    encryption: serialization.KeySerializationEncryption
    if passphrase is None:
        encryption = serialization.NoEncryption()
    elif not passphrase:
        raise ValueError("the passphrase must not be empty (use None for no encryption)")
    else:
        encryption = serialization.BestAvailableEncryption(passphrase)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def save_private_key(path: Path, key: PrivateKey, passphrase: bytes | None = None) -> None:
    """Write ``key`` as PKCS#8 PEM (mode 0600, atomically), encrypted if ``passphrase``."""
    write_atomically(path, private_key_pem(key, passphrase), 0o600)


def load_private_key(path: Path, passphrase: bytes | None = None) -> PrivateKey:
    """Read an EC private key written by :func:`save_private_key`.

    Raises :class:`KeyFileError` for a wrong or missing passphrase, a passphrase given for an
    unencrypted key, a damaged file, a non-EC key or a curve other than those of
    :class:`Curve`; ``FileNotFoundError`` if there is none.
    """
    data = path.read_bytes()
    encrypted = b"ENCRYPTED" in data  # PKCS#8 header or legacy "Proc-Type: 4,ENCRYPTED"
    if encrypted and passphrase is None:
        raise KeyFileError(f"{path} is encrypted: a passphrase is needed")
    if not encrypted and passphrase is not None:
        raise KeyFileError(f"{path} is not encrypted, but a passphrase was given")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except (ValueError, TypeError) as exc:
        problem = "wrong passphrase or damaged file" if encrypted else "not a PEM private key"
        raise KeyFileError(f"cannot read {path}: {problem}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an EC private key")
    try:
        Curve.of(key)
    except ValueError as exc:
        raise KeyFileError(f"{path}: {exc}") from None
    return key


class FileKeyStore:
    """Keys as ``<directory>/<name>.key`` PKCS#8 PEM files (directory mode 0700).

    With a ``passphrase`` (the default everywhere metrocloud creates keys) every file is
    encrypted; ``passphrase=None`` keeps them in clear, for tests and throw-away setups.
    """

    def __init__(self, directory: Path, passphrase: bytes | None = None) -> None:
        self.directory = directory
        self._passphrase = passphrase

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.key"

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def generate(self, name: str, curve: Curve) -> SoftwareKey:
        if self.exists(name):
            raise FileExistsError(f"a key named {name!r} exists in {self.directory}")
        key = generate_private_key(curve)
        self.save(name, key)
        return SoftwareKey(name, key)

    def load(self, name: str) -> SoftwareKey:
        path = self.path(name)
        if not path.is_file():
            raise KeyError(f"no key named {name!r} in {self.directory}")
        return SoftwareKey(name, load_private_key(path, self._passphrase))

    def save(self, name: str, key: PrivateKey) -> None:
        """Store an existing key object under ``name``, replacing any previous one."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        save_private_key(self.path(name), key, self._passphrase)


def open_key_store(
    settings: Mapping[str, Any], directory: Path, *, passphrase: bytes | None = None
) -> KeyStore:
    """The key store ``settings`` describe (``pki.json``'s ``key_store``).

    ``{"kind": "file"}``: encrypted files in ``directory`` with ``passphrase`` or, if None,
    ``$METROCLOUD_KEY_PASSPHRASE`` (``{"encrypted": false}`` for clear files);
    ``{"kind": "pkcs11", "module": PATH, "token": LABEL}``: a token, PIN from
    ``$METROCLOUD_HSM_PIN``.
    """
    kind = settings.get("kind", "file")
    if kind == "file":
        if not settings.get("encrypted", True):
            return FileKeyStore(directory, None)
        if passphrase is None:
            given = os.environ.get(PASSPHRASE_ENV, "")
            if not given:
                raise ConfigurationError(
                    f"the CA keys are encrypted: set {PASSPHRASE_ENV} to their passphrase"
                )
            passphrase = given.encode()
        return FileKeyStore(directory, passphrase)
    if kind == "pkcs11":
        from metrocloud.pki.pkcs11 import Pkcs11KeyStore

        pin = os.environ.get(HSM_PIN_ENV, "")
        if not pin:
            raise ConfigurationError(f"the CA keys are in an HSM: set {HSM_PIN_ENV} to its PIN")
        return Pkcs11KeyStore(str(settings["module"]), str(settings["token"]), pin)
    raise ConfigurationError(f"unknown key store kind {kind!r} (file or pkcs11)")
