"""CRC-16 of EN 13757 (wireless M-Bus frame formats A and B).

Polynomial x¹⁶+x¹³+x¹²+x¹¹+x¹⁰+x⁸+x⁶+x⁵+x²+1 (0x3D65), initial value 0x0000, no reflection,
final complement (XOR 0xFFFF); the catalogue check value of ``b"123456789"`` is 0xC2B7.

The CRC is computed two bytes per step with a 65,536-entry table (built once at import,
a few milliseconds): a 16-bit CRC register XORed with the next 16 input bits determines the
register after those 16 bits alone, so ``crc' = T16[crc ^ word]``.
"""

from __future__ import annotations

import struct
from array import array
from typing import Final

POLYNOMIAL: Final = 0x3D65


def _byte_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ POLYNOMIAL) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
        table.append(crc)
    return tuple(table)


_T8: Final = _byte_table()
# Register after shifting 16 zero bits through v: first the high byte, then the low byte.
# An array of 16-bit values (128 KiB) rather than a tuple of int objects: far fewer cache
# misses when the data varies.
_T16: Final = array(
    "H",
    (
        (((_T8[v >> 8] ^ ((v & 0xFF) << 8)) << 8) & 0xFF00) ^ _T8[(_T8[v >> 8] >> 8) ^ (v & 0xFF)]
        for v in range(65536)
    ),
)
_WORDS: dict[int, struct.Struct] = {}


def crc16_en13757(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/EN-13757 of ``data`` (as transmitted: big-endian, high byte first)."""
    n = len(data)
    crc = 0
    if n & 1:
        crc = _T8[data[0]]
        data = data[1:]
        n -= 1
    half = n >> 1
    unpack = _WORDS.get(half)
    if unpack is None:
        unpack = _WORDS.setdefault(half, struct.Struct(f">{half}H"))
    table = _T16
    for word in unpack.unpack(data):
        crc = table[crc ^ word]
    return crc ^ 0xFFFF


#: The CRC register after a block followed by its own (correct) CRC, whatever the block:
#: folding the sent CRC ``r ^ 0xFFFF`` into the register ``r`` always gives ``T16[0xFFFF]``.
RESIDUE: Final = _T16[0xFFFF]


class BlockPlan:
    """The blocks of one frame layout, for CRCs in one ``struct`` call per frame: every
    block read as 16-bit words (an odd-sized block's first byte alone, then words), then
    folded through the table block by block.

    ``sizes`` are the blocks' lengths: without their CRCs for :meth:`crcs`, with them (two
    bytes more each) for :meth:`intact`.
    """

    __slots__ = ("sizes", "spans", "words")

    def __init__(self, sizes: tuple[int, ...]) -> None:
        fmt = ">"
        spans: list[tuple[int, int, int]] = []
        n = 0
        for size in sizes:
            odd = size & 1
            fmt += ("B" if odd else "") + f"{size >> 1}H"
            spans.append((odd, n + odd, n + odd + (size >> 1)))
            n += odd + (size >> 1)
        self.sizes = sizes
        self.words = struct.Struct(fmt)
        self.spans = tuple(spans)

    def registers(self, data: bytes | bytearray | memoryview, offset: int = 0) -> list[int]:
        """The CRC register (before the final complement) after each block of
        ``data[offset:]``."""
        words = self.words.unpack_from(data, offset)
        table = _T16
        out: list[int] = []
        for odd, start, stop in self.spans:
            crc = _T8[words[start - 1]] if odd else 0
            for word in words[start:stop]:
                crc = table[crc ^ word]
            out.append(crc)
        return out

    def crcs(self, data: bytes | bytearray | memoryview, offset: int = 0) -> list[int]:
        """CRC-16/EN-13757 of each block of ``data[offset:]`` (blocks without CRCs)."""
        return [crc ^ 0xFFFF for crc in self.registers(data, offset)]

    def intact(self, frame: bytes | bytearray | memoryview, offset: int = 0) -> bool:
        """Whether each block of ``frame[offset:]`` (blocks with their CRCs) ends in its
        correct CRC."""
        words = self.words.unpack_from(frame, offset)
        table = _T16
        for odd, start, stop in self.spans:
            crc = _T8[words[start - 1]] if odd else 0
            for word in words[start:stop]:
                crc = table[crc ^ word]
            if crc != RESIDUE:
                return False
        return True


_PLANS: dict[tuple[int, ...], BlockPlan] = {}


def block_plan(sizes: tuple[int, ...]) -> BlockPlan:
    """The (kept) :class:`BlockPlan` of ``sizes``."""
    plan = _PLANS.get(sizes)
    if plan is None:
        if len(_PLANS) >= 1024:
            _PLANS.clear()
        plan = _PLANS[sizes] = BlockPlan(sizes)
    return plan


def block_sizes(n: int, first: int = 10, size: int = 16) -> tuple[int, ...]:
    """Frame format A block sizes of ``n`` bytes without CRCs: ``first``, then ``size``
    each, the last one possibly shorter."""
    if n <= first:
        return (n,) if n else ()
    rest = n - first
    return (first,) + (size,) * (rest // size) + ((rest % size,) if rest % size else ())


def block_crcs(body: bytes, first: int = 10, size: int = 16, offset: int = 0) -> list[int]:
    """CRC-16/EN-13757 of each block of ``body[offset:]``: ``first`` bytes, then
    ``size``-byte blocks, the last one possibly shorter (frame format A).

    One pass over the bytes as 16-bit words (a :class:`BlockPlan` kept per layout), so a
    whole telegram costs one ``struct`` call.
    """
    return block_plan(block_sizes(len(body) - offset, first, size)).crcs(body, offset)
