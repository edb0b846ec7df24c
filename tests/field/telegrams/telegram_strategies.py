"""Hypothesis strategies for telegrams: every record, header and telegram they draw is
encodable, and decoding its bytes must give it back unchanged."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from hypothesis import strategies as st

from metrocloud.field.telegrams import (
    ApplicationHeader,
    Coding,
    Function,
    MeterAddress,
    Quantity,
    Record,
    Telegram,
    WiredTelegram,
)
from metrocloud.field.telegrams.records import (
    PRIMARY,
    TABLE_FB,
    TABLE_FD,
    Kind,
    VifInfo,
)

INT_CODINGS = (Coding.INT8, Coding.INT16, Coding.INT24, Coding.INT32, Coding.INT48, Coding.INT64)
INT_SIZES = {Coding.INT8: 1, Coding.INT16: 2, Coding.INT24: 3, Coding.INT32: 4}
INT_SIZES |= {Coding.INT48: 6, Coding.INT64: 8}
BCD_DIGITS = {Coding.BCD2: 2, Coding.BCD4: 4, Coding.BCD6: 6, Coding.BCD8: 8, Coding.BCD12: 12}
VIFS: list[VifInfo] = [*PRIMARY.values(), *TABLE_FD.values(), *TABLE_FB.values()]

letters = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=3)
addresses = st.builds(
    MeterAddress,
    manufacturer=letters,
    identification=st.integers(0, 99_999_999).map(lambda n: f"{n:08d}"),
    version=st.integers(0, 255),
    device_type=st.integers(0, 255),
)
keys = st.binary(min_size=16, max_size=16)


def legacy_years() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(1981, 2080), st.integers(2100, 2127))


@st.composite
def numbers(draw: st.DrawFn, coding: Coding, signed: bool) -> Any:
    if coding in INT_SIZES:
        bits = 8 * INT_SIZES[coding]
        if signed:
            return draw(st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1))
        return draw(st.integers(0, 2**bits - 1))
    if coding in BCD_DIGITS:
        digits = BCD_DIGITS[coding]
        return draw(st.integers(-(10 ** (digits - 1) - 1), 10**digits - 1))
    if coding == Coding.REAL32:
        return draw(st.floats(width=32, allow_nan=False))
    if coding == Coding.VARIABLE:
        return draw(
            st.one_of(
                st.text(alphabet=st.characters(max_codepoint=255), max_size=40),
                st.binary(max_size=15),
                st.sampled_from([16, 20, 24, 28, 32, 48, 64]).flatmap(
                    lambda n: st.binary(min_size=n, max_size=n)
                ),
                st.integers(-(10**18) + 1, 10**18 - 1),
            )
        )
    return None


@st.composite
def time_values(draw: st.DrawFn, kind: Kind) -> tuple[Coding, Any, int | None]:
    choices = {
        Kind.DATE: [Coding.INT16],
        Kind.DATE_TIME: [Coding.INT32, Coding.INT48],
        Kind.DATE_ANY: [Coding.INT16, Coding.INT32, Coding.INT48],
    }[kind]
    coding = draw(st.sampled_from(choices))
    if coding == Coding.INT16:
        year = draw(legacy_years())
        return coding, draw(st.dates(date(year, 1, 1), date(year, 12, 31))), None
    if coding == Coding.INT32:
        hundred = draw(st.integers(0, 3))
        year = 1900 + 100 * hundred + draw(st.integers(0, 99)) if hundred else draw(legacy_years())
        moment = draw(st.datetimes(datetime(year, 1, 1), datetime(year, 12, 31, 23, 59)))
        moment = moment.replace(second=0, microsecond=0)
        flags = (hundred << 13) | draw(st.sampled_from([0, 0x40, 0x80, 0x8000, 0x80C0]))
        canonical = ((year - 1900) // 100) << 13 if 2000 <= year <= 2299 else -1
        return coding, moment, None if flags == canonical else flags
    year = draw(legacy_years())
    moment = draw(st.datetimes(datetime(year, 1, 1), datetime(year, 12, 31, 23, 59, 59)))
    flags = draw(st.integers(0, 2**48 - 1)) & 0xFF00_00E0_C0C0
    return coding, moment.replace(microsecond=0), flags or None


@st.composite
def records(draw: st.DrawFn) -> Record:
    choice = draw(st.integers(0, 9))
    unit = ""
    if choice == 0:
        quantity, exponent, kind = Quantity.PLAIN_TEXT_UNIT, 0, Kind.NUMBER
        unit = draw(st.text(alphabet=st.characters(max_codepoint=255), max_size=12))
    elif choice == 1:
        quantity, exponent, kind = Quantity.MANUFACTURER_SPECIFIC, 0, Kind.UNSIGNED
    else:
        info = draw(st.sampled_from(VIFS))
        quantity, unit, exponent, kind = info.quantity, info.unit, info.exponent, info.kind
    flags: int | None = None
    if kind >= Kind.DATE:
        coding, value, flags = draw(time_values(kind))
    else:
        coding = draw(
            st.sampled_from(
                [*INT_CODINGS, *BCD_DIGITS, Coding.REAL32, Coding.VARIABLE, Coding.NONE]
            )
        )
        value = draw(numbers(coding, kind == Kind.NUMBER))
    manufacturer_vife = quantity is Quantity.MANUFACTURER_SPECIFIC
    vife_codes = (
        st.integers(0, 0x7F)
        if manufacturer_vife
        else st.integers(0, 0x7F).filter(lambda code: code != 0x7C)
    )
    vife = tuple(draw(st.lists(vife_codes, max_size=3)))
    if 0x7F in vife:  # manufacturer-specific VIFEs may be anything after 0x7F
        vife = vife[: vife.index(0x7F) + 1] + tuple(
            draw(st.lists(st.integers(0, 0x7F), max_size=2))
        )
    return Record(
        quantity=quantity,
        value=value,
        unit=unit,
        exponent=exponent,
        coding=coding,
        function=draw(st.sampled_from(list(Function))),
        storage=draw(st.one_of(st.integers(0, 3), st.integers(0, 2**41 - 1))),
        tariff=draw(st.one_of(st.just(0), st.integers(0, 2**20 - 1))),
        subunit=draw(st.one_of(st.just(0), st.integers(0, 2**10 - 1))),
        vife=vife,
        time_flags=flags,
    )


def headers(
    *, long: bool | None = None, mode: int | None = None
) -> st.SearchStrategy[ApplicationHeader]:
    return st.builds(
        ApplicationHeader,
        access_number=st.integers(0, 255),
        status=st.integers(0, 255),
        security_mode=st.sampled_from([0, 5]) if mode is None else st.just(mode),
        config_flags=st.integers(0, 0xFFFF).map(lambda word: word & ~0x1FF0),
        address=(
            st.one_of(st.none(), addresses) if long is None else (addresses if long else st.none())
        ),
    )


@st.composite
def telegrams(draw: st.DrawFn, wired: bool = False, max_records: int = 4) -> Any:
    """A telegram (wireless, or wired with a long header) and the key it needs."""
    header = draw(headers(long=True if wired else None))
    recs = tuple(draw(st.lists(records(), max_size=max_records)))
    plaintext = 0
    if header.security_mode == 5 and recs:
        plaintext = draw(st.integers(0, len(recs)))
    special = draw(st.sampled_from(["none", "data", "more"]))
    manufacturer_data = None
    more = False
    if special != "none":
        manufacturer_data = draw(st.binary(max_size=12)).rstrip(b"\x2f")
        more = special == "more"
    fields: dict[str, Any] = {
        "header": header,
        "records": recs,
        "manufacturer_data": manufacturer_data,
        "more_records_follow": more,
        "plaintext_records": plaintext,
    }
    key = draw(keys) if header.security_mode == 5 else None
    if wired:
        wired_telegram = WiredTelegram(
            primary_address=draw(st.integers(0, 255)), c_field=draw(st.integers(0, 255)), **fields
        )
        return wired_telegram, key
    telegram = Telegram(address=draw(addresses), c_field=draw(st.integers(0, 255)), **fields)
    return telegram, key


def wmbus_frame(body: bytes) -> bytes:
    """A frame format A frame around ``body`` (L through the last data byte, L included
    but to be overwritten): L set from the length, CRCs computed. For raw, possibly
    malformed application data."""
    from metrocloud.field.telegrams.crc import crc16_en13757

    body = bytes((len(body) - 1,)) + body[1:]
    parts = [body[:10], crc16_en13757(body[:10]).to_bytes(2, "big")]
    for pos in range(10, len(body), 16):
        block = body[pos : pos + 16]
        parts += [block, crc16_en13757(block).to_bytes(2, "big")]
    return b"".join(parts)


def mbus_frame(body: bytes) -> bytes:
    """A wired long frame around ``body`` (C, A, CI, data): L and checksum computed."""
    return bytes((0x68, len(body), len(body), 0x68)) + body + bytes((sum(body) & 0xFF, 0x16))


#: Link-layer bytes (L placeholder, C, M, A) of the meter ELS-12345678, version 0x33, gas.
ELS_LINK = bytes.fromhex("00449315785634123303")
