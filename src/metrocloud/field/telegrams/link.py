"""Wireless M-Bus link layer, EN 13757-4 frame format A.

::

    block 1 (10 bytes + CRC):  L  C  M(2, LE)  ID(4, BCD LE)  VER  TYPE  CRC(2, BE)
    block 2 (16 bytes + CRC):  CI  …application data…                    CRC(2, BE)
    block n (≤ 16 bytes + CRC): …                                        CRC(2, BE)

L counts the bytes after itself without the CRCs (C through the last data byte), so a
frame is ``1 + L + 2·(1 + ⌈(L − 9) / 16⌉)`` bytes. Each CRC is CRC-16/EN-13757 of its
block. The decoder checks, in order: block 1's CRC (it covers L), the frame length that L
implies, every further block's CRC (naming the first bad one), the M-field, then the
application layer.

Radio modules that strip the CRCs before handing a frame on (many do) are served by
``crc=False``: then L must equal the frame length minus one.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec

from metrocloud.field.telegrams import errors
from metrocloud.field.telegrams.address import MeterAddress, address_from_fields
from metrocloud.field.telegrams.application import (
    ApplicationData,
    KeyLookup,
    VerifyKeyLookup,
    decode_application,
    encode_application,
    frozen_instance,
)
from metrocloud.field.telegrams.crc import (
    RESIDUE,
    BlockPlan,
    block_crcs,
    block_plan,
    block_sizes,
    crc16_en13757,
)

#: C-fields a meter sends: send/no reply, send installation request, access demand.
SND_NR: Final = 0x44
SND_IR: Final = 0x46
ACC_NR: Final = 0x47
ACC_DMD: Final = 0x48
FIRST_BLOCK: Final = 10
BLOCK: Final = 16
#: L-field range with at least a CI field.
MIN_L: Final = 10
MAX_L: Final = 255


@dataclass(frozen=True, kw_only=True)
class Telegram(ApplicationData):
    """A wireless M-Bus telegram: link-layer C-field and sender, plus the application data."""

    address: MeterAddress
    c_field: int = SND_NR


def frame_length(l_field: int) -> int:
    """Bytes of a frame format A frame with this L-field, CRCs included."""
    data = max(l_field - (FIRST_BLOCK - 1), 0)
    return 1 + l_field + 2 * (1 + (data + BLOCK - 1) // BLOCK)


def encode_wmbus(
    telegram: Telegram,
    key: bytes | None = None,
    *,
    signer: ec.EllipticCurvePrivateKey | None = None,
    crc: bool = True,
) -> bytes:
    """Frame format A bytes of ``telegram`` (encrypted with ``key`` in security mode 5,
    signed with ``signer`` if given); ``crc=False`` leaves the block CRCs out."""
    if not 0 <= telegram.c_field <= 0xFF:
        raise ValueError(f"C-field is one byte, not {telegram.c_field}")
    app = encode_application(telegram, telegram.address, key, signer)
    return frame_wmbus(telegram.c_field, telegram.address, app, crc=crc)


def frame_wmbus(c_field: int, address: MeterAddress, app: bytes, *, crc: bool = True) -> bytes:
    """The frame format A around already encoded application bytes (CI field onwards)."""
    length = FIRST_BLOCK - 1 + len(app)
    if length > MAX_L:
        raise ValueError(f"telegram of L = {length} exceeds 255")
    body = bytes((length, c_field)) + address.wire() + app
    if not crc:
        return body
    split, framed, blocks = _layout(length)
    items: list[bytes | int] = [0] * (2 * blocks)
    items[0::2] = split.unpack(body)
    items[1::2] = block_crcs(body)
    return framed.pack(*items)


_LAYOUTS: dict[int, tuple[struct.Struct, struct.Struct, int]] = {}


def _layout(length: int) -> tuple[struct.Struct, struct.Struct, int]:
    """For an L-field: a Struct splitting the frame's bytes without CRCs into blocks, one
    packing or unpacking the frame as block, CRC, block, CRC, ..., and the block count."""
    layout = _LAYOUTS.get(length)
    if layout is None:
        data = length - (FIRST_BLOCK - 1)
        sizes = (
            (FIRST_BLOCK,) + (BLOCK,) * (data // BLOCK) + ((data % BLOCK,) if data % BLOCK else ())
        )
        split = struct.Struct("".join(f"{size}s" for size in sizes))
        framed = struct.Struct(">" + "".join(f"{size}sH" for size in sizes))
        layout = _LAYOUTS[length] = (split, framed, len(sizes))
    return layout


@functools.cache  # L is one byte: at most 256 entries
def _checks(length: int) -> BlockPlan:
    """The CRC checks of the blocks after the first of a frame with this L-field (each
    block with its two CRC bytes)."""
    sizes = block_sizes(length - (FIRST_BLOCK - 1), BLOCK, BLOCK)
    return block_plan(tuple(size + 2 for size in sizes))


def decode_wmbus(
    frame: bytes | bytearray | memoryview,
    key_for: KeyLookup | None = None,
    *,
    verify_key_for: VerifyKeyLookup | None = None,
    crc: bool = True,
) -> Telegram:
    """Decode a frame format A telegram; ``Rejected`` with a reason if anything is wrong.

    ``key_for(meter)`` gives the AES key of an encrypted telegram's meter (``None``: none
    known); ``verify_key_for(meter)`` gives the ECDSA P-256 public key a meter must sign
    with (``None``: signatures of that meter are not checked).
    """
    frame = bytes(frame)
    n = len(frame)
    if crc:
        if n < FIRST_BLOCK + 2:
            errors.reject(errors.TRUNCATED, f"{n} bytes cannot hold the first block and its CRC")
        if crc16_en13757(frame[:FIRST_BLOCK]) != (frame[10] << 8) | frame[11]:
            errors.reject(errors.BAD_CRC, "CRC of block 1 does not match")
        length = frame[0]
        if length < MIN_L:
            errors.reject(errors.BAD_LENGTH, f"L = {length} leaves no room for a CI field")
        framed = _layout(length)[1]
        if n != framed.size:  # 1 + L + 2 per block
            reason = errors.TRUNCATED if n < framed.size else errors.BAD_LENGTH
            errors.reject(reason, f"L = {length} means {framed.size} bytes with CRCs, got {n}")
        checks = _checks(length)
        if not checks.intact(frame, FIRST_BLOCK + 2):
            registers = checks.registers(frame, FIRST_BLOCK + 2)
            number = next(i for i, crc in enumerate(registers) if crc != RESIDUE)
            errors.reject(errors.BAD_CRC, f"CRC of block {number + 2} does not match")
        body = b"".join(framed.unpack(frame)[0::2])
    else:
        if n < MIN_L + 1:
            errors.reject(errors.TRUNCATED, f"{n} bytes cannot hold a telegram")
        length = frame[0]
        if length < MIN_L:
            errors.reject(errors.BAD_LENGTH, f"L = {length} leaves no room for a CI field")
        if n != length + 1:
            reason = errors.TRUNCATED if n < length + 1 else errors.BAD_LENGTH
            errors.reject(reason, f"L = {length} means {length + 1} bytes, got {n}")
        body = frame
    address = address_from_fields(body[2:4], body[4:10])
    fields = decode_application(
        body, FIRST_BLOCK, len(body), address, body[2:10], key_for, verify_key_for
    )
    fields["address"] = address
    fields["c_field"] = body[1]
    return frozen_instance(Telegram, fields)
