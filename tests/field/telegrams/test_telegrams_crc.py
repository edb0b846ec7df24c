"""CRC-16/EN-13757: the table-driven implementation against a bitwise reference."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from metrocloud.field.telegrams.crc import POLYNOMIAL, block_crcs, crc16_en13757


def reference_crc(data: bytes) -> int:
    """Bit by bit, straight from the definition."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ POLYNOMIAL) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc ^ 0xFFFF


@given(st.binary(max_size=300))
def test_crc_equals_the_bitwise_definition(data: bytes) -> None:
    assert crc16_en13757(data) == reference_crc(data)


def test_crc_accepts_bytearray_and_memoryview() -> None:
    assert crc16_en13757(bytearray(b"123456789")) == 0xC2B7
    assert crc16_en13757(memoryview(b"0123456789")[1:]) == 0xC2B7
    assert crc16_en13757(b"") == 0xFFFF


@given(st.binary(max_size=300), st.integers(0, 5))
def test_block_crcs_are_the_crcs_of_the_frame_format_a_blocks(data: bytes, offset: int) -> None:
    padded = bytes(offset) + data
    expected = []
    if data:
        expected.append(crc16_en13757(data[:10]))
        expected += [crc16_en13757(data[pos : pos + 16]) for pos in range(10, len(data), 16)]
    assert block_crcs(padded, 10, 16, offset) == expected


@given(st.binary(min_size=1, max_size=40), st.data())
def test_every_single_bit_error_changes_the_crc(data: bytes, draw: st.DataObject) -> None:
    bit = draw.draw(st.integers(0, 8 * len(data) - 1))
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    assert crc16_en13757(bytes(flipped)) != crc16_en13757(data)
