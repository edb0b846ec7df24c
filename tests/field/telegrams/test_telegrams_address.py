"""M-field and A-field: manufacturer letters, identification number, meter addresses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from telegram_strategies import ELS_LINK, wmbus_frame

from metrocloud.core.errors import Rejected
from metrocloud.field.telegrams import (
    DeviceType,
    MeterAddress,
    decode_manufacturer,
    decode_wmbus,
    manufacturer_code,
)
from metrocloud.field.telegrams.address import address_from_fields


@pytest.mark.parametrize(
    ("letters", "code"),
    [
        ("ELS", 0x1593),  # OMS Annex N examples: bytes 93 15
        ("SON", 0x4DEE),  # wmbusmeters: "(SON) Sontex, Switzerland (0x4dee)"
        ("KAM", 0x2C2D),
        ("EFE", 0x14C5),
        ("AMB", 0x05A2),  # Amber manual: "Manufacturer: AMB (0x05A2)"
        ("QDS", 0x4493),
        ("TCH", 0x5068),
        ("AAA", 0x0421),
        ("ZZZ", 0x6B5A),
    ],
)
def test_known_manufacturer_codes(letters: str, code: int) -> None:
    assert manufacturer_code(letters) == code
    assert decode_manufacturer(code) == letters


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=3))
def test_manufacturer_codes_round_trip(letters: str) -> None:
    code = manufacturer_code(letters)
    assert 0 <= code <= 0x7FFF
    assert decode_manufacturer(code) == letters


@pytest.mark.parametrize("letters", ["", "EL", "ELSE", "els", "E1S", "ÄLS"])
def test_manufacturer_code_refuses_anything_but_three_capitals(letters: str) -> None:
    with pytest.raises(ValueError):
        manufacturer_code(letters)


@pytest.mark.parametrize("code", [0x0000, 0x8614, 0x7FFF, 0x041B, -1, 0x10000])
def test_decode_manufacturer_refuses_non_letters(code: int) -> None:
    with pytest.raises(ValueError):
        decode_manufacturer(code)


def test_meter_address_wire_bytes() -> None:
    address = MeterAddress("ELS", "12345678", 0x33, DeviceType.GAS)
    assert address.m_field() == bytes.fromhex("9315")
    assert address.a_field() == bytes.fromhex("785634123303")
    assert address.wire() == ELS_LINK[2:]
    assert str(address) == "ELS-12345678"
    assert address_from_fields(address.m_field(), address.a_field()) == address


@pytest.mark.parametrize(
    "fields",
    [
        {"manufacturer": "els", "identification": "12345678"},
        {"manufacturer": "ELS", "identification": "1234567"},
        {"manufacturer": "ELS", "identification": "1234567G"},
        {"manufacturer": "ELS", "identification": "12345678", "version": 256},
        {"manufacturer": "ELS", "identification": "12345678", "device_type": -1},
    ],
)
def test_meter_address_validates(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        MeterAddress(**fields)  # type: ignore[arg-type]


def test_hexadecimal_identification_numbers_are_kept() -> None:
    address = address_from_fields(bytes.fromhex("9315"), bytes.fromhex("7CC30B000303"))
    assert address.identification == "000BC37C"
    assert MeterAddress("ELS", "000BC37C", 3, 3) == address


def test_a_telegram_with_an_invalid_m_field_is_rejected() -> None:
    body = bytes.fromhex("0044FFFF785634123303") + bytes.fromhex("7A2A000000")
    with pytest.raises(Rejected) as caught:
        decode_wmbus(wmbus_frame(body))
    assert caught.value.reason == "bad-manufacturer"
