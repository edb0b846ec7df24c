"""EN 13757-3 data records: layouts, value codings, VIF tables, rejections, round trips."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from telegram_strategies import records

from metrocloud.core.errors import Rejected
from metrocloud.field.telegrams import Coding, Function, Quantity, Record
from metrocloud.field.telegrams.records import (
    PRIMARY,
    TABLE_FB,
    TABLE_FD,
    decode_records,
    encode_records,
)


def decode(data: bytes) -> list[Record]:
    parsed = decode_records(data, 0, len(data))
    assert parsed.special == -1
    return parsed.records


def reason_of(data: bytes) -> str:
    with pytest.raises(Rejected) as caught:
        decode_records(data, 0, len(data))
    return caught.value.reason


def test_every_quantity_unit_and_exponent_has_one_vif() -> None:
    meanings = [
        (info.quantity, info.unit, info.exponent)
        for info in (*PRIMARY.values(), *TABLE_FD.values(), *TABLE_FB.values())
    ]
    assert len(meanings) == len(set(meanings))


@pytest.mark.parametrize(
    ("record", "wire"),
    [
        # energy register in Wh, 32-bit integer
        (Record(quantity=Quantity.ENERGY, value=123456, unit="Wh"), "0403" + "40E20100"),
        # kWh as Wh × 10^3, BCD 8 digits
        (
            Record(quantity=Quantity.ENERGY, value=1234, unit="Wh", exponent=3, coding=Coding.BCD8),
            "0C06" + "34120000",
        ),
        # MWh through the FB table
        (
            Record(quantity=Quantity.ENERGY, value=7, unit="Wh", exponent=6, coding=Coding.INT8),
            "01FB01" + "07",
        ),
        (
            Record(quantity=Quantity.ENERGY, value=5, unit="J", exponent=9, coding=Coding.INT8),
            "01FB0905",
        ),
        (
            Record(quantity=Quantity.VOLUME, value=-5, unit="m³", exponent=-3, coding=Coding.BCD4),
            "0A13" + "05F0",
        ),
        (
            Record(quantity=Quantity.MASS, value=1, unit="kg", exponent=0, coding=Coding.INT16),
            "021B0100",
        ),
        (
            Record(quantity=Quantity.POWER, value=-2300, unit="W", coding=Coding.INT32),
            "042B" + (-2300).to_bytes(4, "little", signed=True).hex(),
        ),
        (
            Record(
                quantity=Quantity.VOLUME_FLOW, value=1, unit="m³/h", exponent=-3, coding=Coding.INT8
            ),
            "013B01",
        ),
        (
            Record(
                quantity=Quantity.FLOW_TEMPERATURE,
                value=-1050,
                unit="°C",
                exponent=-2,
                coding=Coding.INT16,
            ),
            "0259" + (-1050).to_bytes(2, "little", signed=True).hex(),
        ),
        (
            Record(quantity=Quantity.RETURN_TEMPERATURE, value=45, unit="°C", coding=Coding.INT8),
            "015F2D",
        ),
        (
            Record(
                quantity=Quantity.TEMPERATURE_DIFFERENCE,
                value=56,
                unit="K",
                exponent=-2,
                coding=Coding.INT8,
            ),
            "016138",
        ),
        # storage number 1: DIF bit 6; storage 2: a DIFE; tariff 1; sub-unit 1
        (
            Record(quantity=Quantity.DATE, value=date(2007, 4, 30), coding=Coding.INT16, storage=1),
            "426CFE04",
        ),
        (
            Record(quantity=Quantity.ENERGY, value=0, unit="Wh", coding=Coding.INT8, storage=2),
            "810103" + "00",
        ),
        (
            Record(quantity=Quantity.ENERGY, value=0, unit="Wh", coding=Coding.INT8, tariff=1),
            "811003" + "00",
        ),
        (
            Record(quantity=Quantity.ENERGY, value=0, unit="Wh", coding=Coding.INT8, subunit=1),
            "814003" + "00",
        ),
        (
            Record(quantity=Quantity.ENERGY, value=0, unit="Wh", coding=Coding.INT8, storage=32),
            "818001" + "03" + "00",
        ),
        (
            Record(
                quantity=Quantity.POWER,
                value=1,
                unit="W",
                coding=Coding.INT8,
                function=Function.MAXIMUM,
            ),
            "112B01",
        ),
        # date-times: type F (with hundred-year bits) and type I
        (
            Record(
                quantity=Quantity.DATE_TIME,
                value=datetime(2008, 5, 31, 23, 50),
                coding=Coding.INT32,
            ),
            "046D32371F15",
        ),
        (
            Record(
                quantity=Quantity.DATE_TIME,
                value=datetime(2024, 9, 18, 20, 50, 40),
                coding=Coding.INT48,
                time_flags=0x4000_0000_4040,
            ),
            "066D687214123940",
        ),
        # FD table: error flags, voltage, current, software version; VIFE forward/backward
        (Record(quantity=Quantity.ERROR_FLAGS, value=0xFFFF, coding=Coding.INT16), "02FD17FFFF"),
        (Record(quantity=Quantity.VOLTAGE, value=230, unit="V", coding=Coding.INT16), "02FD49E600"),
        (
            Record(quantity=Quantity.CURRENT, value=5, unit="A", exponent=-3, coding=Coding.INT8),
            "01FD5905",
        ),
        (
            Record(quantity=Quantity.ENERGY, value=1, unit="Wh", coding=Coding.INT8, vife=(0x3C,)),
            "01833C01",
        ),
        # fabrication number, unsigned 32 bit
        (
            Record(quantity=Quantity.FABRICATION_NUMBER, value=0xFFFFFFFF, coding=Coding.INT32),
            "0478FFFFFFFF",
        ),
        # variable length: text (last character first), binary, BCD
        (
            Record(quantity=Quantity.CUSTOMER, value="A20B410178", coding=Coding.VARIABLE),
            "0DFD110A383731303134423032" + "41",
        ),
        (
            Record(quantity=Quantity.CUSTOMER, value=b"\x01\x02", coding=Coding.VARIABLE),
            "0DFD11E20102",
        ),
        (Record(quantity=Quantity.CUSTOMER, value=-123, coding=Coding.VARIABLE), "0DFD11D22301"),
        # plain-text unit, no data; manufacturer-specific VIF
        (
            Record(
                quantity=Quantity.PLAIN_TEXT_UNIT, value=None, unit="ENC TEST", coding=Coding.NONE
            ),
            "007C085453455420434E45",
        ),
        (
            Record(quantity=Quantity.MANUFACTURER_SPECIFIC, value=148532, vife=(0x07,)),
            "04FF0734440200",
        ),
        (Record(quantity=Quantity.HCA_UNITS, value=1.5, coding=Coding.REAL32), "056E0000C03F"),
    ],
)
def test_record_layouts(record: Record, wire: str) -> None:
    assert encode_records([record]).hex().upper() == wire.upper()
    assert decode(bytes.fromhex(wire)) == [record]


def test_scaled_values_are_exact() -> None:
    volume = Record(quantity=Quantity.VOLUME, value=2850427, unit="m³", exponent=-2)
    assert volume.scaled == Decimal("28504.27")
    assert Record(quantity=Quantity.ENERGY, value=3, unit="Wh", exponent=3).scaled == 3000
    assert (
        Record(quantity=Quantity.DATE, value=date(2026, 1, 1), coding=Coding.INT16).scaled is None
    )
    assert Record(quantity=Quantity.HCA_UNITS, value=0.1, coding=Coding.REAL32).scaled == (
        Decimal.from_float(0.1)
    )


def test_fillers_are_skipped_and_manufacturer_data_ends_the_records() -> None:
    data = bytes.fromhex("2F2F0103052F0F0102032F")
    parsed = decode_records(data, 0, len(data))
    assert parsed.records == [
        Record(quantity=Quantity.ENERGY, value=5, unit="Wh", coding=Coding.INT8)
    ]
    assert parsed.special == 6 and not parsed.more_follow
    more = decode_records(b"\x1f", 0, 1)
    assert more.special == 0 and more.more_follow


def test_a_legacy_type_f_date_keeps_its_flags() -> None:
    # wmbusmeters' sensostar: hundred-year bits 0, year 19 → 2019 under the 1981-2080 rule
    [record] = decode(bytes.fromhex("046D040F632B"))
    assert record.value == datetime(2019, 11, 3, 15, 4)
    assert record.time_flags == 0
    assert encode_records([record]) == bytes.fromhex("046D040F632B")
    canonical = Record(quantity=Quantity.DATE_TIME, value=record.value, coding=Coding.INT32)
    assert encode_records([canonical]) == bytes.fromhex("046D042F632B")


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("3F", "unknown-dif"),  # reserved special function
        ("7F", "unknown-dif"),  # global readout request
        ("016F00", "unknown-vif"),  # reserved VIF
        ("01FD1900", "unknown-vif"),  # reserved in table FD
        ("01FB0200", "unknown-vif"),  # not implemented in table FB
        ("01FD", "unknown-vif"),  # FD with no code
        ("017D00", "unknown-vif"),  # FD without the extension bit
        ("0183FC0100", "unknown-vif"),  # combinable VIFE table FC
        ("81" + "80" * 10 + "000300", "bad-record"),  # 11 DIFEs
        ("01" + "83" + "A0" * 10 + "2000", "bad-record"),  # 11 VIFEs
        ("0A13A012", "bad-value"),  # BCD digit A
        ("0A1312FA", "bad-value"),  # F not in the leading nibble
        ("026C0F0D", "bad-value"),  # month 13
        ("026C1E02", "bad-value"),  # 30 February 2000
        ("046D3C000101", "bad-value"),  # minute 60
        ("046D002001D1", "bad-value"),  # hundred-year set with year 104
        ("0A6C1212", "bad-coding"),  # date as BCD
        ("046C00000000", "bad-coding"),  # type G date VIF with 32 bits
        ("026D0000", "bad-coding"),  # date-time VIF with 16 bits
        ("0D6C0100", "bad-coding"),  # variable-length date
        ("0D13F7", "bad-value"),  # reserved LVAR
        ("0D13CA", "bad-value"),  # reserved LVAR (BCD of 10 bytes)
        ("0D13C20A00", "bad-value"),  # non-decimal variable-length BCD
        ("0D13C0", "bad-value"),  # empty variable-length BCD
        ("0403010203", "truncated"),
        ("81", "truncated"),
        ("01", "truncated"),
        ("0183", "truncated"),
        ("007C05414243", "truncated"),
        ("007C", "truncated"),
        ("0D13", "truncated"),
        ("0D1305414243", "truncated"),
    ],
)
def test_malformed_records_are_rejected_with_a_reason(wire: str, reason: str) -> None:
    assert reason_of(bytes.fromhex(wire)) == reason


@pytest.mark.parametrize(
    "record",
    [
        Record(quantity=Quantity.ENERGY, value=128, unit="Wh", coding=Coding.INT8),
        Record(quantity=Quantity.FABRICATION_NUMBER, value=-1, coding=Coding.INT32),
        Record(quantity=Quantity.ENERGY, value=100, unit="Wh", coding=Coding.BCD2),
        Record(quantity=Quantity.ENERGY, value=-10, unit="Wh", coding=Coding.BCD2),
        Record(quantity=Quantity.ENERGY, value=1.5, unit="Wh", coding=Coding.INT32),
        Record(quantity=Quantity.ENERGY, value="1", unit="Wh", coding=Coding.INT32),
        Record(quantity=Quantity.ENERGY, value=1, unit="Wh", coding=Coding.NONE),
        Record(quantity=Quantity.ENERGY, value=1, unit="kWh"),
        Record(quantity=Quantity.ENERGY, value=1, unit="Wh", exponent=7),
        Record(quantity=Quantity.ENERGY, value=1, unit="Wh", storage=-1),
        Record(quantity=Quantity.ENERGY, value=1, unit="Wh", storage=2**41),
        Record(quantity=Quantity.ENERGY, value=1, unit="Wh", vife=(0x80,)),
        Record(quantity=Quantity.ENERGY, value=1, unit="Wh", vife=(0x7C, 0x01)),
        Record(quantity=Quantity.ENERGY, value=1, unit="Wh", vife=(0x20,) * 11),
        Record(quantity=Quantity.ENERGY, value=1, unit="Wh", time_flags=1),
        Record(quantity=Quantity.ENERGY, value=b"x" * 17, unit="Wh", coding=Coding.VARIABLE),
        Record(quantity=Quantity.ENERGY, value="€", unit="Wh", coding=Coding.VARIABLE),
        Record(quantity=Quantity.ENERGY, value=10**18, unit="Wh", coding=Coding.VARIABLE),
        Record(quantity=Quantity.ENERGY, value=None, unit="Wh", coding=Coding.VARIABLE),
        Record(quantity=Quantity.DATE, value=datetime(2026, 1, 1), coding=Coding.INT16),
        Record(quantity=Quantity.DATE, value=date(2026, 1, 1), coding=Coding.INT32),
        Record(quantity=Quantity.DATE, value=date(2090, 1, 1), coding=Coding.INT16),
        Record(quantity=Quantity.DATE_TIME, value=date(2026, 1, 1), coding=Coding.INT32),
        Record(
            quantity=Quantity.DATE_TIME, value=datetime(2026, 1, 1, 0, 0, 1), coding=Coding.INT32
        ),
        Record(quantity=Quantity.DATE_TIME, value=datetime(1999, 1, 1), coding=Coding.INT32),
        Record(
            quantity=Quantity.DATE_TIME,
            value=datetime(2026, 1, 1),
            coding=Coding.INT32,
            time_flags=1,
        ),
        Record(
            quantity=Quantity.DATE_TIME,
            value=datetime(2026, 1, 1),
            coding=Coding.INT48,
            time_flags=1,
        ),
        Record(quantity=Quantity.DATE_TIME, value=datetime(2026, 1, 1), coding=Coding.INT16),
        Record(quantity=Quantity.PLAIN_TEXT_UNIT, value=1, unit="€"),
    ],
)
def test_the_encoder_refuses_what_it_cannot_encode(record: Record) -> None:
    with pytest.raises(ValueError):
        encode_records([record])


@settings(max_examples=400)
@given(st.lists(records(), max_size=6))
def test_records_round_trip(recs: list[Record]) -> None:
    data = encode_records(recs)
    assert decode(data) == recs
    assert encode_records(decode(data)) == data


@given(records(), records())
def test_a_header_seen_before_decodes_the_same_at_any_offset(first: Record, second: Record) -> None:
    data = encode_records([first, second, first])
    assert decode(b"\x2f" + data) == [first, second, first]
