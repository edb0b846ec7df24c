"""Wired M-Bus (EN 13757-2) frames: long frame, short frame, single character.

::

    long frame:   0x68  L  L  0x68  C  A  CI  …data…  CS  0x16
    short frame:  0x10  C  A  CS  0x16
    single char:  0xE5  (acknowledgement)

L counts C, A, CI and the data (3 … 255); CS is the sum of those bytes modulo 256. The
decoder checks, in order: start character, the two L-fields against each other and the
frame length, the second start character, the checksum, the stop character, then the
application layer (:mod:`~metrocloud.field.telegrams.application`), where a long transport
header (CI 0x72) carries the meter's address.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec

from metrocloud.field.telegrams import errors
from metrocloud.field.telegrams.application import (
    ApplicationData,
    KeyLookup,
    VerifyKeyLookup,
    decode_application,
    encode_application,
    frozen_instance,
)

ACK: Final = 0xE5
START_LONG: Final = 0x68
START_SHORT: Final = 0x10
STOP: Final = 0x16
#: C-fields: respond user data (meter to master), and the master's common requests.
RSP_UD: Final = 0x08
SND_NKE: Final = 0x40
SND_UD: Final = 0x53
REQ_UD2: Final = 0x5B
#: Primary address that selects a meter by its secondary (long header) address.
SECONDARY_ADDRESSING: Final = 0xFD


@dataclass(frozen=True, kw_only=True)
class WiredTelegram(ApplicationData):
    """A wired M-Bus long frame: C-field, primary address, plus the application data."""

    primary_address: int = SECONDARY_ADDRESSING
    c_field: int = RSP_UD


@dataclass(frozen=True)
class ShortFrame:
    """A wired M-Bus short frame (requests such as REQ_UD2, SND_NKE)."""

    c_field: int
    address: int


@dataclass(frozen=True)
class Ack:
    """The single-character acknowledgement 0xE5."""


MbusFrame = WiredTelegram | ShortFrame | Ack


def encode_mbus(
    telegram: WiredTelegram,
    key: bytes | None = None,
    *,
    signer: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    """Long-frame bytes of ``telegram`` (encrypted with ``key`` in security mode 5)."""
    if not 0 <= telegram.c_field <= 0xFF or not 0 <= telegram.primary_address <= 0xFF:
        raise ValueError("C-field and primary address are one byte each")
    body = bytes((telegram.c_field, telegram.primary_address)) + encode_application(
        telegram, None, key, signer
    )
    if len(body) > 0xFF:
        raise ValueError(f"long frame of L = {len(body)} exceeds 255")
    length = len(body)
    return bytes((START_LONG, length, length, START_LONG)) + body + bytes((sum(body) & 0xFF, STOP))


def encode_mbus_short(frame: ShortFrame) -> bytes:
    """Short-frame bytes: 0x10 C A CS 0x16."""
    if not 0 <= frame.c_field <= 0xFF or not 0 <= frame.address <= 0xFF:
        raise ValueError("C-field and address are one byte each")
    return bytes(
        (START_SHORT, frame.c_field, frame.address, (frame.c_field + frame.address) & 0xFF, STOP)
    )


def encode_ack() -> bytes:
    """The single character 0xE5."""
    return bytes((ACK,))


def decode_mbus_frame(
    frame: bytes | bytearray | memoryview,
    key_for: KeyLookup | None = None,
    *,
    verify_key_for: VerifyKeyLookup | None = None,
) -> MbusFrame:
    """Decode any wired M-Bus frame; ``Rejected`` with a reason if anything is wrong."""
    frame = bytes(frame)
    n = len(frame)
    if not n:
        errors.reject(errors.TRUNCATED, "empty frame")
    start = frame[0]
    if start == ACK:
        if n != 1:
            errors.reject(errors.BAD_LENGTH, f"single character frame of {n} bytes")
        return Ack()
    if start == START_SHORT:
        if n != 5:
            errors.reject(
                errors.TRUNCATED if n < 5 else errors.BAD_LENGTH, f"short frame of {n} bytes"
            )
        if (frame[1] + frame[2]) & 0xFF != frame[3]:
            errors.reject(errors.BAD_CHECKSUM, "checksum of the short frame does not match")
        if frame[4] != STOP:
            errors.reject(errors.MALFORMED, f"stop character 0x{frame[4]:02X}, not 0x16")
        return ShortFrame(c_field=frame[1], address=frame[2])
    if start != START_LONG:
        errors.reject(errors.MALFORMED, f"start character 0x{start:02X} is no M-Bus frame")
    if n < 4:
        errors.reject(errors.TRUNCATED, f"long frame of {n} bytes")
    length = frame[1]
    if frame[2] != length:
        errors.reject(errors.BAD_LENGTH, f"the two L-fields differ ({length}, {frame[2]})")
    if frame[3] != START_LONG:
        errors.reject(errors.MALFORMED, f"second start character 0x{frame[3]:02X}, not 0x68")
    if length < 3:
        errors.reject(errors.BAD_LENGTH, f"L = {length} leaves no room for C, A and CI")
    if n != length + 6:
        reason = errors.TRUNCATED if n < length + 6 else errors.BAD_LENGTH
        errors.reject(reason, f"L = {length} means {length + 6} bytes, got {n}")
    end = 4 + length
    if sum(frame[4:end]) & 0xFF != frame[end]:
        errors.reject(errors.BAD_CHECKSUM, "checksum of the long frame does not match")
    if frame[end + 1] != STOP:
        errors.reject(errors.MALFORMED, f"stop character 0x{frame[end + 1]:02X}, not 0x16")
    fields = decode_application(frame, 6, end, None, None, key_for, verify_key_for)
    fields["primary_address"] = frame[5]
    fields["c_field"] = frame[4]
    return frozen_instance(WiredTelegram, fields)


def decode_mbus(
    frame: bytes | bytearray | memoryview,
    key_for: KeyLookup | None = None,
    *,
    verify_key_for: VerifyKeyLookup | None = None,
) -> WiredTelegram:
    """Decode a wired M-Bus long frame; other frames are ``Rejected("unexpected-frame")``."""
    decoded = decode_mbus_frame(frame, key_for, verify_key_for=verify_key_for)
    if not isinstance(decoded, WiredTelegram):
        errors.reject(errors.UNEXPECTED_FRAME, f"a {type(decoded).__name__}, not a long frame")
    return decoded
