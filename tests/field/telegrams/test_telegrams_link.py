"""Wireless M-Bus frame format A: blocks, CRCs, L-field, C-field, round trips."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, reject, settings
from telegram_strategies import ELS_LINK, telegrams, wmbus_frame

from metrocloud.core.errors import Rejected
from metrocloud.field.telegrams import (
    SND_IR,
    ApplicationHeader,
    Coding,
    DeviceType,
    MeterAddress,
    Quantity,
    Record,
    Telegram,
    crc16_en13757,
    decode_wmbus,
    encode_wmbus,
)
from metrocloud.field.telegrams.link import frame_length

ELS = MeterAddress("ELS", "12345678", 0x33, DeviceType.GAS)
#: 7A short header (mode 0) and 2 × 18-byte records: 5 + 36 bytes after block 1 = 3 blocks
APP = (
    bytes.fromhex("7A2A000000")
    + bytes.fromhex("0E03112233445566") * 2
    + bytes.fromhex("0D13")
    + bytes((16,))
    + b"0123456789ABCDEF"
)
BODY = bytes((len(ELS_LINK + APP) - 1,)) + ELS_LINK[1:] + APP
FRAME = wmbus_frame(BODY)


def reason(frame: bytes, **kwargs: object) -> str:
    with pytest.raises(Rejected) as caught:
        decode_wmbus(frame, **kwargs)  # type: ignore[arg-type]
    return caught.value.reason


@pytest.mark.parametrize(
    ("l_field", "total"),
    [(10, 15), (25, 30), (26, 33), (27, 34), (41, 48), (42, 51), (255, 290)],
)
def test_frame_length(l_field: int, total: int) -> None:
    assert frame_length(l_field) == total


def test_a_valid_frame_decodes() -> None:
    telegram = decode_wmbus(FRAME)
    assert telegram.address == ELS
    assert telegram.c_field == 0x44
    assert [record.quantity for record in telegram.records] == [Quantity.ENERGY] * 2 + [
        Quantity.VOLUME
    ]
    assert encode_wmbus(telegram) == FRAME


@pytest.mark.parametrize("block", [1, 2, 3, 4])
def test_a_bad_crc_names_its_block(block: int) -> None:
    frame = bytearray(FRAME)
    position = 3 if block == 1 else 12 + 18 * (block - 2) + 5
    frame[position] ^= 0x10
    with pytest.raises(Rejected) as caught:
        decode_wmbus(bytes(frame))
    assert caught.value.reason == "bad-crc"
    assert f"block {block} " in caught.value.detail


def test_a_bad_crc_in_the_crc_bytes_themselves() -> None:
    frame = bytearray(FRAME)
    frame[-1] ^= 0x01
    assert reason(bytes(frame)) == "bad-crc"


def test_l_field_checks() -> None:
    assert reason(FRAME[:11]) == "truncated"
    assert reason(FRAME[:-1]) == "truncated"
    assert reason(FRAME + b"\x00") == "bad-length"
    for l_field in range(256):
        first = bytes((l_field,)) + BODY[1:10]
        frame = first + crc16_en13757(first).to_bytes(2, "big") + FRAME[12:]
        if l_field == BODY[0]:
            assert decode_wmbus(frame) == decode_wmbus(FRAME)
            continue
        assert reason(frame) in {"bad-length", "truncated"}


def test_without_crcs() -> None:
    assert decode_wmbus(BODY, crc=False) == decode_wmbus(FRAME)
    assert encode_wmbus(decode_wmbus(FRAME), crc=False) == BODY
    assert reason(BODY[:-1], crc=False) == "truncated"
    assert reason(BODY + b"\x00", crc=False) == "bad-length"
    assert reason(BODY[:10], crc=False) == "truncated"
    assert reason(bytes((9,)) + BODY[1:11], crc=False) == "bad-length"
    assert reason(bytes((5,)) + BODY[1:], crc=False) == "bad-length"


def test_l_below_ten_is_rejected() -> None:
    body = bytes((9,)) + BODY[1:10]
    assert reason(body + crc16_en13757(body).to_bytes(2, "big") + b"\x00\x00") == "bad-length"


@pytest.mark.parametrize("ci", [0x00, 0x51, 0x72 + 1, 0x78, 0x8C, 0xFF])
def test_unknown_ci_fields(ci: int) -> None:
    assert reason(wmbus_frame(ELS_LINK + bytes((ci,)) + bytes(12))) == "unknown-ci"


@pytest.mark.parametrize("app", ["7A", "7A2A0000", "72785634129315330300"])
def test_short_transport_headers_are_truncated(app: str) -> None:
    assert reason(wmbus_frame(ELS_LINK + bytes.fromhex(app))) == "truncated"


def test_long_header_meter_behind_a_radio_adapter() -> None:
    adapter = MeterAddress("AMB", "99999999", 1, DeviceType.RADIO_CONVERTER)
    meter = MeterAddress("ELS", "12345678", 0x33, DeviceType.GAS)
    key = bytes(range(16))
    telegram = Telegram(
        address=adapter,
        c_field=SND_IR,
        header=ApplicationHeader(access_number=5, security_mode=5, address=meter),
        records=(
            Record(quantity=Quantity.VOLUME, value=1, unit="m³", exponent=-3, coding=Coding.INT8),
        ),
    )
    frame = encode_wmbus(telegram, key)
    asked: list[MeterAddress] = []

    def key_for(address: MeterAddress) -> bytes:
        asked.append(address)
        return key

    assert decode_wmbus(frame, key_for) == telegram
    assert asked == [meter]  # the key (and IV) belong to the meter, not to the adapter


def test_encoder_refuses_oversized_or_invalid_link_fields() -> None:
    big = Record(quantity=Quantity.CUSTOMER, value="x" * 191, coding=Coding.VARIABLE)
    telegram = Telegram(address=ELS, header=ApplicationHeader(), records=(big, big))
    with pytest.raises(ValueError):
        encode_wmbus(telegram)
    with pytest.raises(ValueError):
        encode_wmbus(Telegram(address=ELS, header=ApplicationHeader(), c_field=256))
    with pytest.raises(ValueError):
        encode_wmbus(Telegram(address=ELS, header=ApplicationHeader(access_number=256)))
    with pytest.raises(ValueError):
        encode_wmbus(Telegram(address=ELS, header=ApplicationHeader(config_flags=0x0100)))
    with pytest.raises(ValueError):
        encode_wmbus(Telegram(address=ELS, header=ApplicationHeader(), more_records_follow=True))


def test_manufacturer_data_and_more_records_follow() -> None:
    telegram = Telegram(
        address=ELS,
        header=ApplicationHeader(),
        manufacturer_data=b"\x01\x02\x2f",
        more_records_follow=True,
    )
    body = encode_wmbus(telegram, crc=False)
    assert body.endswith(b"\x1f\x01\x02\x2f")
    assert decode_wmbus(body, crc=False) == telegram
    empty = Telegram(address=ELS, header=ApplicationHeader(), manufacturer_data=b"")
    assert decode_wmbus(encode_wmbus(empty)) == empty


def _encode_or_skip(telegram: Telegram, key: bytes | None, crc: bool) -> bytes:
    try:
        return encode_wmbus(telegram, key, crc=crc)
    except ValueError as exc:
        if "exceed" in str(exc):
            reject()
        raise


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(telegrams())
def test_wireless_round_trip(drawn: tuple[Telegram, bytes | None]) -> None:
    telegram, key = drawn
    frame = _encode_or_skip(telegram, key, crc=True)
    assert decode_wmbus(frame, lambda meter: key) == telegram
    assert decode_wmbus(_encode_or_skip(telegram, key, crc=False), lambda m: key, crc=False) == (
        telegram
    )
