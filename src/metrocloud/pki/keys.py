"""ECDSA P-256 private keys in PKCS#8 PEM files, and the key store seam.

In this embedded mode keys live in files, unencrypted unless a passphrase is given. The
full PKI (sub-CAs, CRLs, HSM) will add a PKCS#11 :class:`KeyStore` and make encrypted
PKCS#8 the default; code that needs keys should go through a :class:`KeyStore`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from metrocloud.core.errors import ConfigurationError
from metrocloud.pki.pem import write_atomically

PrivateKey = ec.EllipticCurvePrivateKey
PublicKey = ec.EllipticCurvePublicKey


class KeyFileError(ConfigurationError):
    """A key file cannot be used: wrong or missing passphrase, damaged, or not an EC key."""


def generate_private_key() -> PrivateKey:
    """A fresh ECDSA key on NIST P-256 (secp256r1)."""
    return ec.generate_private_key(ec.SECP256R1())


def save_private_key(path: Path, key: PrivateKey, passphrase: bytes | None = None) -> None:
    """Write ``key`` as PKCS#8 PEM (mode 0600, atomically), encrypted if ``passphrase``."""
    encryption: serialization.KeySerializationEncryption
    if passphrase is None:
        encryption = serialization.NoEncryption()
    elif not passphrase:
        raise ValueError("the passphrase must not be empty (use None for no encryption)")
    else:
        encryption = serialization.BestAvailableEncryption(passphrase)
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    write_atomically(path, data, 0o600)


def load_private_key(path: Path, passphrase: bytes | None = None) -> PrivateKey:
    """Read an EC private key written by :func:`save_private_key`.

    Raises :class:`KeyFileError` for a wrong or missing passphrase, a passphrase given for an
    unencrypted key, a damaged file or a non-EC key; ``FileNotFoundError`` if there is none.
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
    return key


class KeyStore(Protocol):
    """Private keys by name: the seam where the PKI issue plugs in PKCS#11 (HSM)."""

    def exists(self, name: str) -> bool:
        """Whether a key of this name is stored."""
        ...

    def load(self, name: str) -> PrivateKey:
        """The stored key of this name."""
        ...

    def save(self, name: str, key: PrivateKey) -> None:
        """Store ``key`` under ``name``, replacing any previous one."""
        ...


class FileKeyStore:
    """Keys as ``<directory>/<name>.key`` PKCS#8 PEM files (directory mode 0700)."""

    def __init__(self, directory: Path, passphrase: bytes | None = None) -> None:
        self.directory = directory
        self._passphrase = passphrase

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.key"

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def load(self, name: str) -> PrivateKey:
        return load_private_key(self.path(name), self._passphrase)

    def save(self, name: str, key: PrivateKey) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        save_private_key(self.path(name), key, self._passphrase)
