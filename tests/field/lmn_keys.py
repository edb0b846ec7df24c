"""Keys for the LMN tests: AES keys fixed per label, ECDSA keys made per run."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def aes_key(label: str) -> bytes:
    """An AES-128 key of its own per label, the same in every run: a wrong key passes the
    0x2F2F decryption check with probability 2^-16, so random keys would make rare flakes."""
    return hashlib.sha256(f"metrocloud tests {label}".encode()).digest()[:16]


def public_der(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The public key as a gateway is configured with it (SubjectPublicKeyInfo, DER)."""
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


SIGNER = ec.generate_private_key(ec.SECP256R1())
OTHER_SIGNER = ec.generate_private_key(ec.SECP256R1())
PUBLIC_DER = public_der(SIGNER)
