"""Wired M-Bus: long frames, short frames, the single-character acknowledgement."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, reject, settings
from telegram_strategies import mbus_frame, telegrams

from metrocloud.core.errors import Rejected
from metrocloud.field.telegrams import (
    Ack,
    ApplicationHeader,
    MeterAddress,
    ShortFrame,
    WiredTelegram,
    decode_mbus,
    decode_mbus_frame,
    encode_mbus,
    encode_mbus_short,
)
from metrocloud.field.telegrams.wired import REQ_UD2, encode_ack

#: OMS Vol. 2 Annex N.2.2 (see test_telegrams_vectors.py)
FRAME = bytes.fromhex(
    "6820206808FD7278563412931533032A0000000C1427048502046D32371F1502FD1700008916"
)


def reason(frame: bytes) -> str:
    with pytest.raises(Rejected) as caught:
        decode_mbus_frame(frame)
    return caught.value.reason


def test_ack_and_short_frames() -> None:
    assert encode_ack() == b"\xe5"
    assert decode_mbus_frame(b"\xe5") == Ack()
    request = ShortFrame(c_field=REQ_UD2, address=0xFE)
    assert encode_mbus_short(request) == bytes.fromhex("105BFE5916")
    assert decode_mbus_frame(bytes.fromhex("105BFE5916")) == request
    assert reason(bytes.fromhex("105BFE5816")) == "bad-checksum"
    assert reason(bytes.fromhex("105BFE5917")) == "malformed-telegram"
    assert reason(bytes.fromhex("105BFE59")) == "truncated"
    assert reason(bytes.fromhex("105BFE591600")) == "bad-length"
    assert reason(b"\xe5\xe5") == "bad-length"
    with pytest.raises(ValueError):
        encode_mbus_short(ShortFrame(c_field=256, address=0))


def test_decode_mbus_wants_a_long_frame() -> None:
    with pytest.raises(Rejected) as caught:
        decode_mbus(b"\xe5")
    assert caught.value.reason == "unexpected-frame"
    assert decode_mbus(FRAME).header.address == MeterAddress("ELS", "12345678", 0x33, 3)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (b"", "truncated"),
        (b"\x68\x20", "truncated"),
        (FRAME[:-1], "truncated"),
        (FRAME + b"\x16", "bad-length"),
        (FRAME[:1] + b"\x21" + FRAME[2:], "bad-length"),  # L-fields differ
        (FRAME[:3] + b"\x69" + FRAME[4:], "malformed-telegram"),  # second start character
        (FRAME[:-1] + b"\x17", "malformed-telegram"),  # stop character
        (FRAME[:-2] + b"\x88\x16", "bad-checksum"),
        (b"\x00" + FRAME[1:], "malformed-telegram"),  # no M-Bus start character
        (bytes.fromhex("68020268087A8216"), "bad-length"),  # L < 3
        (mbus_frame(bytes.fromhex("08FD51")), "unknown-ci"),
        (mbus_frame(bytes.fromhex("08FD7A0100")), "truncated"),
    ],
)
def test_malformed_long_frames(frame: bytes, expected: str) -> None:
    assert reason(frame) == expected


def test_short_header_on_wired_mbus() -> None:
    telegram = WiredTelegram(primary_address=5, header=ApplicationHeader(access_number=1))
    frame = encode_mbus(telegram)
    assert frame == bytes.fromhex("6807076808057A01000000" + "8816")
    assert decode_mbus(frame) == telegram


def test_encoder_refuses_oversized_frames() -> None:
    with pytest.raises(ValueError):
        encode_mbus(WiredTelegram(header=ApplicationHeader(), manufacturer_data=bytes(250)))
    with pytest.raises(ValueError):
        encode_mbus(WiredTelegram(header=ApplicationHeader(), primary_address=300))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(telegrams(wired=True))
def test_wired_round_trip(drawn: tuple[WiredTelegram, bytes | None]) -> None:
    telegram, key = drawn
    try:
        frame = encode_mbus(telegram, key)
    except ValueError as exc:
        if "exceed" in str(exc):
            reject()
        raise
    assert decode_mbus(frame, lambda meter: key) == telegram
