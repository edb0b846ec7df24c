"""Security of the application layer: OMS security mode 5 and metrocloud's ECDSA block.

**Mode 5** (OMS Volume 2, EN 13757-7): AES-128 in CBC mode, no padding scheme beyond
0x2F fillers. The initialisation vector is the meter's M-field (2 bytes) and A-field
(6 bytes) as sent, followed by the access number eight times. The plaintext begins with
0x2F 0x2F, the decryption check: a wrong key or a tampered ciphertext fails it.

AES comes from ``cryptography`` (hazmat ``Cipher``), with its contexts kept per key and
thread for reuse: a fresh ``Cipher(..., modes.CBC(iv))`` costs more than the whole telegram
otherwise (see :func:`encrypt_cbc` and :func:`decrypt_cbc` for how a kept context serves
any IV). The tests check both against fresh ``modes.CBC`` contexts byte for byte.

**ECDSA-signed readings** are metrocloud's own extension and **not part of OMS**: a
manufacturer-specific data block (after DIF 0x0F) of exactly 68 bytes::

    0x4D 0x43 ("MC")  0x01 (ECDSA P-256, SHA-256)  r (32, big endian)  s (32)  0x16 (end)

signing ``SIGNATURE_DOMAIN ‖ M-field ‖ A-field ‖ access number ‖ status ‖ records``, where
*records* are the application bytes from the first data record to the 0x0F DIF exactly as
sent (after the decryption check in mode 5). The end byte keeps the block from ending in
0x2F, the filler that pads encrypted payloads.
"""

from __future__ import annotations

import threading
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from metrocloud.field.telegrams import errors

#: Security modes of the configuration word that this package implements.
MODE_NONE: Final = 0
MODE_AES_CBC: Final = 5
BLOCK: Final = 16
#: The decryption check at the start of every mode 5 plaintext, and the filler byte.
CHECK: Final = b"\x2f\x2f"
FILLER: Final = 0x2F

SIGNATURE_TAG: Final = b"MC\x01"
SIGNATURE_END: Final = 0x16
SIGNATURE_BLOCK_LENGTH: Final = len(SIGNATURE_TAG) + 64 + 1
SIGNATURE_DOMAIN: Final = b"metrocloud/telegram-ecdsa/v1\x00"

_CACHE_LIMIT: Final = 4096
_local = threading.local()


def mode5_iv(address_bytes: bytes, access_number: int) -> bytes:
    """IV of security mode 5: M-field and A-field as sent (8 bytes), then 8 × access number."""
    return address_bytes + bytes((access_number,)) * 8


class _KeyContexts:
    """Per key and thread: a CBC encryptor started with a zero IV and the ciphertext block it
    last produced, and an ECB decryptor (both stateless between calls, see below)."""

    __slots__ = ("decrypt", "encrypt", "last")

    def __init__(self, key: bytes) -> None:
        self.encrypt = Cipher(algorithms.AES(key), modes.CBC(bytes(BLOCK))).encryptor()
        self.decrypt = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
        self.last = 0


def _contexts(key: bytes) -> _KeyContexts:
    cache: dict[bytes, _KeyContexts] | None = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    contexts = cache.get(key)
    if contexts is None:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        contexts = cache[key] = _KeyContexts(bytes(key))
    return contexts


def encrypt_cbc(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """AES-128-CBC of ``plaintext`` (a multiple of 16 bytes) under ``iv``, no padding added.

    The kept CBC context chains every block to the previous ciphertext block, across calls;
    XORing the first block with ``iv`` and with the context's last ciphertext block makes
    its input exactly ``P₁ ⊕ IV``, so the output is that of a fresh ``modes.CBC(iv)``.
    """
    if len(key) != BLOCK:
        raise ValueError("AES-128 keys are 16 bytes")
    n = len(plaintext)
    if n % BLOCK or len(iv) != BLOCK:
        raise ValueError("CBC needs a 16-byte IV and a multiple of 16 bytes")
    if not n:
        return b""
    contexts = _contexts(key)
    first = int.from_bytes(plaintext[:BLOCK], "big") ^ int.from_bytes(iv, "big") ^ contexts.last
    ciphertext: bytes = contexts.encrypt.update(first.to_bytes(BLOCK, "big") + plaintext[BLOCK:])
    contexts.last = int.from_bytes(ciphertext[-BLOCK:], "big")
    return ciphertext


def decrypt_cbc(key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    """AES-128-CBC decryption of ``ciphertext`` (a multiple of 16 bytes): one ECB pass,
    then each block XORed with the ciphertext block before it (``iv`` for the first)."""
    if len(key) != BLOCK:
        raise ValueError("AES-128 keys are 16 bytes")
    n = len(ciphertext)
    if n % BLOCK or len(iv) != BLOCK:
        raise ValueError("CBC needs a 16-byte IV and a multiple of 16 bytes")
    if not n:
        return b""
    decrypted = _contexts(key).decrypt.update(ciphertext)
    chain = int.from_bytes(iv + ciphertext[:-BLOCK], "big")
    return (int.from_bytes(decrypted, "big") ^ chain).to_bytes(n, "big")


def signed_message(address_bytes: bytes, access_number: int, status: int, records: bytes) -> bytes:
    """The bytes an ECDSA reading signature covers."""
    return SIGNATURE_DOMAIN + address_bytes + bytes((access_number, status)) + records


def signature_block(private_key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """The 68-byte manufacturer-specific block carrying an ECDSA P-256 signature of ``message``."""
    if not isinstance(private_key.curve, ec.SECP256R1):
        raise ValueError("telegram signatures use ECDSA on P-256")
    r, s = decode_dss_signature(private_key.sign(message, ec.ECDSA(hashes.SHA256())))
    return pack_signature(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def pack_signature(signature: bytes) -> bytes:
    """The block around a 64-byte ``r ‖ s`` signature."""
    if len(signature) != 64:
        raise ValueError("an ECDSA P-256 signature is 64 bytes (r ‖ s)")
    return SIGNATURE_TAG + signature + bytes((SIGNATURE_END,))


def unpack_signature(block: bytes) -> bytes | None:
    """The ``r ‖ s`` of a signature block, or ``None`` if ``block`` is not one."""
    if (
        len(block) == SIGNATURE_BLOCK_LENGTH
        and block.startswith(SIGNATURE_TAG)
        and block[-1] == SIGNATURE_END
    ):
        return bytes(block[len(SIGNATURE_TAG) : -1])
    return None


def verify_signature(public_key: object, signature: bytes, message: bytes) -> None:
    """``Rejected("bad-signature")`` unless ``signature`` (r ‖ s) signs ``message``."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        errors.reject(errors.BAD_SIGNATURE, "the meter's verification key is not ECDSA P-256")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        errors.reject(errors.BAD_SIGNATURE, "the ECDSA signature does not verify")
