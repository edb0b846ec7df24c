"""CRC-16/EN-13757: the table-driven implementation against a bitwise reference."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from metrocloud.field.telegrams.crc import (
    POLYNOMIAL,
    RESIDUE,
    block_crcs,
    block_plan,
    block_sizes,
    crc16_en13757,
)


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


@given(st.lists(st.binary(max_size=20), min_size=1, max_size=6), st.integers(0, 5))
def test_block_plans_fold_any_block_sizes(blocks: list[bytes], offset: int) -> None:
    """Blocks of any size, odd ones too: the CRC of each; with each CRC appended, intact."""
    plan = block_plan(tuple(len(b) for b in blocks))
    data = bytes(offset) + b"".join(blocks)
    assert plan.crcs(data, offset) == [reference_crc(b) for b in blocks]
    framed = b"".join(b + reference_crc(b).to_bytes(2, "big") for b in blocks)
    checks = block_plan(tuple(len(b) + 2 for b in blocks))
    assert checks.intact(bytes(offset) + framed, offset)
    assert all(r == RESIDUE for r in checks.registers(framed))


@given(st.lists(st.binary(max_size=20), min_size=1, max_size=6), st.data())
def test_a_block_plan_notices_every_single_bit_error(
    blocks: list[bytes], draw: st.DataObject
) -> None:
    framed = bytearray(b"".join(b + reference_crc(b).to_bytes(2, "big") for b in blocks))
    bit = draw.draw(st.integers(0, 8 * len(framed) - 1))
    framed[bit // 8] ^= 1 << (bit % 8)
    assert not block_plan(tuple(len(b) + 2 for b in blocks)).intact(bytes(framed))


def test_block_sizes_of_frame_format_a() -> None:
    assert block_sizes(0) == ()
    assert block_sizes(7) == (7,)
    assert block_sizes(10) == (10,)
    assert block_sizes(27) == (10, 16, 1)
    assert block_sizes(42) == (10, 16, 16)
    assert block_sizes(37, 16, 16) == (16, 16, 5)
