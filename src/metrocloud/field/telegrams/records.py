"""EN 13757-3 data records: DIF/DIFE, VIF/VIFE, and the value codings.

A data record is a data information block (DIB: DIF and up to ten DIFEs), a value
information block (VIB: VIF and up to ten VIFEs) and the data::

    DIF  [DIFE …]  VIF  [VIFE …]  data
    │                │
    │                └─ bit 7: another VIFE follows; 0x7D/0x7B select the FD/FB tables,
    │                   0x7C a plain-text unit, 0x7F a manufacturer-specific VIF
    └─ bit 7: a DIFE follows; bit 6: storage number bit 0; bits 5-4: function
       (instantaneous, maximum, minimum, value during error); bits 3-0: data field
       DIFE: bit 6 sub-unit bit, bits 5-4 tariff bits, bits 3-0 storage number bits

A :class:`Record` is the typed meaning of one such record: quantity, unit and decimal
exponent (from the VIF), the raw value, the coding (from the DIF's data field), the function,
storage number, tariff, sub-unit, and any combinable VIFEs. The scaled value is
``value × 10^exponent``, exactly (:attr:`Record.scaled`). Encoding a record and decoding the
bytes gives the same record; decoding a standard record and encoding it gives the same bytes
whenever the sender used the shortest DIFE chain (as every encoder does).

Special DIFs: 0x2F is an idle filler (skipped), 0x0F and 0x1F start manufacturer-specific
data that runs to the end of the payload (0x1F: more records follow in the next telegram).
"""

from __future__ import annotations

import operator
import struct
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum, IntEnum
from typing import Final, NamedTuple

from metrocloud.field.telegrams import errors


class Function(IntEnum):
    """The DIF's function field."""

    INSTANTANEOUS = 0
    MAXIMUM = 1
    MINIMUM = 2
    ERROR = 3  # value during error state


class Coding(IntEnum):
    """The DIF's data field: how the value is laid out on the wire."""

    NONE = 0x0
    INT8 = 0x1
    INT16 = 0x2
    INT24 = 0x3
    INT32 = 0x4
    REAL32 = 0x5
    INT48 = 0x6
    INT64 = 0x7
    SELECTION = 0x8  # selection for readout: no data
    BCD2 = 0x9
    BCD4 = 0xA
    BCD6 = 0xB
    BCD8 = 0xC
    VARIABLE = 0xD
    BCD12 = 0xE


#: Bytes of data per fixed-length coding (VARIABLE is length-prefixed).
DATA_LENGTH: Final[dict[int, int]] = {
    0x0: 0,
    0x1: 1,
    0x2: 2,
    0x3: 3,
    0x4: 4,
    0x5: 4,
    0x6: 6,
    0x7: 8,
    0x8: 0,
    0x9: 1,
    0xA: 2,
    0xB: 3,
    0xC: 4,
    0xE: 6,
}
_CODINGS: Final = {int(c): c for c in Coding}
_REAL: Final = struct.Struct("<f")
_FUNCTIONS: Final = tuple(Function)
_BCD: Final = frozenset({0x9, 0xA, 0xB, 0xC, 0xE})
_INT: Final = frozenset({0x1, 0x2, 0x3, 0x4, 0x6, 0x7})


class Quantity(str, Enum):
    """What a record measures or identifies (from its VIF)."""

    ENERGY = "energy"
    VOLUME = "volume"
    MASS = "mass"
    ON_TIME = "on-time"
    OPERATING_TIME = "operating-time"
    POWER = "power"
    VOLUME_FLOW = "volume-flow"
    MASS_FLOW = "mass-flow"
    FLOW_TEMPERATURE = "flow-temperature"
    RETURN_TEMPERATURE = "return-temperature"
    TEMPERATURE_DIFFERENCE = "temperature-difference"
    EXTERNAL_TEMPERATURE = "external-temperature"
    PRESSURE = "pressure"
    DATE = "date"
    DATE_TIME = "date-time"
    HCA_UNITS = "hca-units"
    AVERAGING_DURATION = "averaging-duration"
    ACTUALITY_DURATION = "actuality-duration"
    FABRICATION_NUMBER = "fabrication-number"
    ENHANCED_IDENTIFICATION = "enhanced-identification"
    BUS_ADDRESS = "bus-address"
    PLAIN_TEXT_UNIT = "plain-text-unit"
    ANY = "any"
    MANUFACTURER_SPECIFIC = "manufacturer-specific"
    # extension table 0xFD
    CREDIT = "credit"
    DEBIT = "debit"
    ACCESS_NUMBER = "access-number"
    MEDIUM = "medium"
    MANUFACTURER = "manufacturer"
    PARAMETER_SET_ID = "parameter-set-id"
    MODEL_VERSION = "model-version"
    HARDWARE_VERSION = "hardware-version"
    FIRMWARE_VERSION = "firmware-version"
    SOFTWARE_VERSION = "software-version"
    CUSTOMER_LOCATION = "customer-location"
    CUSTOMER = "customer"
    ACCESS_CODE_USER = "access-code-user"
    ACCESS_CODE_OPERATOR = "access-code-operator"
    ACCESS_CODE_SYSTEM_OPERATOR = "access-code-system-operator"
    ACCESS_CODE_DEVELOPER = "access-code-developer"
    PASSWORD = "password"
    ERROR_FLAGS = "error-flags"
    ERROR_MASK = "error-mask"
    DIGITAL_OUTPUT = "digital-output"
    DIGITAL_INPUT = "digital-input"
    BAUD_RATE = "baud-rate"
    RESPONSE_DELAY_TIME = "response-delay-time"
    RETRY = "retry"
    REMOTE_CONTROL = "remote-control"
    FIRST_STORAGE_NUMBER = "first-storage-number"
    LAST_STORAGE_NUMBER = "last-storage-number"
    STORAGE_BLOCK_SIZE = "storage-block-size"
    STORAGE_INTERVAL = "storage-interval"
    DURATION_SINCE_LAST_READOUT = "duration-since-last-readout"
    DIMENSIONLESS = "dimensionless"
    VOLTAGE = "voltage"
    CURRENT = "current"
    RESET_COUNTER = "reset-counter"
    CUMULATION_COUNTER = "cumulation-counter"
    CONTROL_SIGNAL = "control-signal"
    DAY_OF_WEEK = "day-of-week"
    WEEK_NUMBER = "week-number"
    TIME_POINT_OF_DAY_CHANGE = "time-point-of-day-change"
    STATE_OF_PARAMETER_ACTIVATION = "state-of-parameter-activation"
    SPECIAL_SUPPLIER_INFORMATION = "special-supplier-information"
    DURATION_SINCE_LAST_CUMULATION = "duration-since-last-cumulation"
    BATTERY_OPERATING_TIME = "battery-operating-time"
    BATTERY_CHANGE_DATE = "battery-change-date"
    RF_LEVEL = "rf-level"
    REMAINING_BATTERY_LIFETIME = "remaining-battery-lifetime"
    METER_STOPPED_COUNT = "meter-stopped-count"
    # extension table 0xFB
    RELATIVE_HUMIDITY = "relative-humidity"
    TEMPERATURE_LIMIT = "temperature-limit"
    MAX_POWER_CUMULATION_COUNT = "max-power-cumulation-count"


class Kind(IntEnum):
    """How a VIF's data is read."""

    NUMBER = 0  # signed numbers (EN 13757-3 type B integers, type A BCD, real)
    UNSIGNED = 1  # identifiers and bit fields (type C/D): integers read unsigned
    DATE = 2  # type G (16 bit)
    DATE_TIME = 3  # type F (32 bit) or type I (48 bit)
    DATE_ANY = 4  # type G, F or I by the data field


class VifInfo(NamedTuple):
    """Meaning of one VIF code: quantity, unit, decimal exponent and how to read the data."""

    quantity: Quantity
    unit: str
    exponent: int
    kind: Kind


Q = Quantity
_N, _U = Kind.NUMBER, Kind.UNSIGNED
_TIME_UNITS: Final = ("s", "min", "h", "d")


def _fill(
    table: dict[int, VifInfo],
    first: int,
    count: int,
    quantity: Quantity,
    unit: str,
    exponent0: int,
    kind: Kind = _N,
) -> None:
    for n in range(count):
        table[first + n] = VifInfo(quantity, unit, exponent0 + n, kind)


def _fill_units(
    table: dict[int, VifInfo], first: int, quantity: Quantity, units: tuple[str, ...]
) -> None:
    for n, unit in enumerate(units):
        table[first + n] = VifInfo(quantity, unit, 0, _N)


PRIMARY: Final[dict[int, VifInfo]] = {}
_fill(PRIMARY, 0x00, 8, Q.ENERGY, "Wh", -3)
_fill(PRIMARY, 0x08, 8, Q.ENERGY, "J", 0)
_fill(PRIMARY, 0x10, 8, Q.VOLUME, "m³", -6)
_fill(PRIMARY, 0x18, 8, Q.MASS, "kg", -3)
_fill_units(PRIMARY, 0x20, Q.ON_TIME, _TIME_UNITS)
_fill_units(PRIMARY, 0x24, Q.OPERATING_TIME, _TIME_UNITS)
_fill(PRIMARY, 0x28, 8, Q.POWER, "W", -3)
_fill(PRIMARY, 0x30, 8, Q.POWER, "J/h", 0)
_fill(PRIMARY, 0x38, 8, Q.VOLUME_FLOW, "m³/h", -6)
_fill(PRIMARY, 0x40, 8, Q.VOLUME_FLOW, "m³/min", -7)
_fill(PRIMARY, 0x48, 8, Q.VOLUME_FLOW, "m³/s", -9)
_fill(PRIMARY, 0x50, 8, Q.MASS_FLOW, "kg/h", -3)
_fill(PRIMARY, 0x58, 4, Q.FLOW_TEMPERATURE, "°C", -3)
_fill(PRIMARY, 0x5C, 4, Q.RETURN_TEMPERATURE, "°C", -3)
_fill(PRIMARY, 0x60, 4, Q.TEMPERATURE_DIFFERENCE, "K", -3)
_fill(PRIMARY, 0x64, 4, Q.EXTERNAL_TEMPERATURE, "°C", -3)
_fill(PRIMARY, 0x68, 4, Q.PRESSURE, "bar", -3)
PRIMARY[0x6C] = VifInfo(Q.DATE, "", 0, Kind.DATE)
PRIMARY[0x6D] = VifInfo(Q.DATE_TIME, "", 0, Kind.DATE_TIME)
PRIMARY[0x6E] = VifInfo(Q.HCA_UNITS, "", 0, _N)
# 0x6F is reserved
_fill_units(PRIMARY, 0x70, Q.AVERAGING_DURATION, _TIME_UNITS)
_fill_units(PRIMARY, 0x74, Q.ACTUALITY_DURATION, _TIME_UNITS)
PRIMARY[0x78] = VifInfo(Q.FABRICATION_NUMBER, "", 0, _U)
PRIMARY[0x79] = VifInfo(Q.ENHANCED_IDENTIFICATION, "", 0, _U)
PRIMARY[0x7A] = VifInfo(Q.BUS_ADDRESS, "", 0, _U)
PRIMARY[0x7E] = VifInfo(Q.ANY, "", 0, _N)
# 0x7B/0x7D select the FB/FD tables, 0x7C a plain-text unit, 0x7F manufacturer specific.

#: Main extension table (VIF 0xFD), the codes in common use.
TABLE_FD: Final[dict[int, VifInfo]] = {}
_fill(TABLE_FD, 0x00, 4, Q.CREDIT, "currency", -3)
_fill(TABLE_FD, 0x04, 4, Q.DEBIT, "currency", -3)
for _code, _quantity in enumerate(
    (
        Q.ACCESS_NUMBER,
        Q.MEDIUM,
        Q.MANUFACTURER,
        Q.PARAMETER_SET_ID,
        Q.MODEL_VERSION,
        Q.HARDWARE_VERSION,
        Q.FIRMWARE_VERSION,
        Q.SOFTWARE_VERSION,
        Q.CUSTOMER_LOCATION,
        Q.CUSTOMER,
        Q.ACCESS_CODE_USER,
        Q.ACCESS_CODE_OPERATOR,
        Q.ACCESS_CODE_SYSTEM_OPERATOR,
        Q.ACCESS_CODE_DEVELOPER,
        Q.PASSWORD,
        Q.ERROR_FLAGS,
        Q.ERROR_MASK,
    ),
    start=0x08,
):
    TABLE_FD[_code] = VifInfo(_quantity, "", 0, _U)
TABLE_FD[0x1A] = VifInfo(Q.DIGITAL_OUTPUT, "", 0, _U)
TABLE_FD[0x1B] = VifInfo(Q.DIGITAL_INPUT, "", 0, _U)
TABLE_FD[0x1C] = VifInfo(Q.BAUD_RATE, "Bd", 0, _U)
TABLE_FD[0x1D] = VifInfo(Q.RESPONSE_DELAY_TIME, "bit times", 0, _U)
TABLE_FD[0x1E] = VifInfo(Q.RETRY, "", 0, _U)
TABLE_FD[0x1F] = VifInfo(Q.REMOTE_CONTROL, "", 0, _U)
TABLE_FD[0x20] = VifInfo(Q.FIRST_STORAGE_NUMBER, "", 0, _U)
TABLE_FD[0x21] = VifInfo(Q.LAST_STORAGE_NUMBER, "", 0, _U)
TABLE_FD[0x22] = VifInfo(Q.STORAGE_BLOCK_SIZE, "", 0, _U)
_fill_units(TABLE_FD, 0x24, Q.STORAGE_INTERVAL, (*_TIME_UNITS, "month", "year"))
_fill_units(TABLE_FD, 0x2C, Q.DURATION_SINCE_LAST_READOUT, _TIME_UNITS)
TABLE_FD[0x3A] = VifInfo(Q.DIMENSIONLESS, "", 0, _N)
_fill(TABLE_FD, 0x40, 16, Q.VOLTAGE, "V", -9)
_fill(TABLE_FD, 0x50, 16, Q.CURRENT, "A", -12)
for _code, _quantity in enumerate(
    (
        Q.RESET_COUNTER,
        Q.CUMULATION_COUNTER,
        Q.CONTROL_SIGNAL,
        Q.DAY_OF_WEEK,
        Q.WEEK_NUMBER,
        Q.TIME_POINT_OF_DAY_CHANGE,
        Q.STATE_OF_PARAMETER_ACTIVATION,
        Q.SPECIAL_SUPPLIER_INFORMATION,
    ),
    start=0x60,
):
    TABLE_FD[_code] = VifInfo(_quantity, "", 0, _U)
_fill_units(TABLE_FD, 0x68, Q.DURATION_SINCE_LAST_CUMULATION, ("h", "d", "month", "year"))
_fill_units(TABLE_FD, 0x6C, Q.BATTERY_OPERATING_TIME, ("h", "d", "month", "year"))
TABLE_FD[0x70] = VifInfo(Q.BATTERY_CHANGE_DATE, "", 0, Kind.DATE_ANY)
TABLE_FD[0x71] = VifInfo(Q.RF_LEVEL, "dBm", 0, _N)
TABLE_FD[0x74] = VifInfo(Q.REMAINING_BATTERY_LIFETIME, "d", 0, _N)
TABLE_FD[0x75] = VifInfo(Q.METER_STOPPED_COUNT, "", 0, _U)

#: Alternate extension table (VIF 0xFB): larger units of the primary quantities.
TABLE_FB: Final[dict[int, VifInfo]] = {}
_fill(TABLE_FB, 0x00, 2, Q.ENERGY, "Wh", 5)  # 0.1 MWh, 1 MWh
_fill(TABLE_FB, 0x08, 2, Q.ENERGY, "J", 8)  # 0.1 GJ, 1 GJ
_fill(TABLE_FB, 0x10, 2, Q.VOLUME, "m³", 2)
_fill(TABLE_FB, 0x18, 2, Q.MASS, "kg", 5)  # 0.1 t, 1 t
_fill(TABLE_FB, 0x1A, 2, Q.RELATIVE_HUMIDITY, "%", -1)
_fill(TABLE_FB, 0x28, 2, Q.POWER, "W", 5)  # 0.1 MW, 1 MW
_fill(TABLE_FB, 0x30, 2, Q.POWER, "J/h", 8)  # 0.1 GJ/h, 1 GJ/h
_fill(TABLE_FB, 0x74, 4, Q.TEMPERATURE_LIMIT, "°C", -3)
_fill(TABLE_FB, 0x78, 8, Q.MAX_POWER_CUMULATION_COUNT, "W", -3)

#: Names of the combinable (orthogonal) VIFEs in common use; any code except 0x7C (the
#: FC extension table, not implemented) is accepted, and 0x7F makes every further VIFE
#: manufacturer specific.
COMBINABLE_VIFE: Final[dict[int, str]] = {
    0x20: "per second",
    0x21: "per minute",
    0x22: "per hour",
    0x23: "per day",
    0x24: "per week",
    0x25: "per month",
    0x26: "per year",
    0x27: "per revolution / measurement",
    0x28: "increment per input pulse on input channel 0",
    0x29: "increment per input pulse on input channel 1",
    0x2A: "increment per output pulse on output channel 0",
    0x2B: "increment per output pulse on output channel 1",
    0x39: "start date(/time) of",
    0x3A: "VIF contains uncorrected unit or value",
    0x3B: "accumulation only if positive contributions (forward flow)",
    0x3C: "accumulation of abs value only if negative contributions (backward flow)",
    0x3E: "value at base conditions",
    0x40: "lower limit value",
    0x48: "upper limit value",
    0x7F: "manufacturer specific VIFEs follow",
}
_VIFE_FC: Final = 0x7C
_VIFE_MANUFACTURER: Final = 0x7F

_VIF_FB: Final = 0x7B
_VIF_PLAIN_TEXT: Final = 0x7C
_VIF_FD: Final = 0x7D
_VIF_MANUFACTURER: Final = 0x7F

#: (quantity, unit, exponent) → the VIF bytes (extension bits clear) that mean it.
_ENCODE: Final[dict[tuple[Quantity, str, int], tuple[int, ...]]] = {}
for _code, _info in PRIMARY.items():
    _ENCODE[(_info.quantity, _info.unit, _info.exponent)] = (_code,)
for _code, _info in TABLE_FD.items():
    _ENCODE[(_info.quantity, _info.unit, _info.exponent)] = (_VIF_FD, _code)
for _code, _info in TABLE_FB.items():
    _ENCODE[(_info.quantity, _info.unit, _info.exponent)] = (_VIF_FB, _code)
_KIND: Final = {
    (info.quantity, info.unit, info.exponent): info.kind
    for info in (*PRIMARY.values(), *TABLE_FD.values(), *TABLE_FB.values())
}

#: Bits of a type F date-time word that are not minute, hour, day, month or year:
#: bit 6 reserved, bit 7 invalid (IV), bits 13-14 hundred-year, bit 15 summer time (SU).
_F_EXTRA: Final = 0x0000_E0C0
#: Bits of a type I date-time that are not second, minute, hour, day, month or year
#: (day of week, week, leap year, daylight saving deviation, ...).
_I_EXTRA: Final = 0xFF00_00E0_C0C0

Value = int | float | date | datetime | str | bytes | None


@dataclass(frozen=True)
class Record:
    """One data record, typed.

    ``value`` is the raw number (scale it with ``exponent``: :attr:`scaled`), a ``date``
    (type G), a naive ``datetime`` (type F or I, meter time), a ``str`` or ``bytes``
    (variable-length data), a ``float`` (``REAL32``) or ``None`` (no data).

    ``time_flags`` carries the bits of a type F or I date-time beyond the date and time
    (invalid, summer time, hundred-year, day of week, ...) when they are not the canonical
    ones; ``None`` means canonical (type F: hundred-year set from the year, the rest clear;
    type I: all clear).

    ``vife`` are the combinable VIFE codes (extension bits clear), and for a
    manufacturer-specific VIF the codes that follow it.
    """

    quantity: Quantity
    value: Value
    unit: str = ""
    exponent: int = 0
    coding: Coding = Coding.INT32
    function: Function = Function.INSTANTANEOUS
    storage: int = 0
    tariff: int = 0
    subunit: int = 0
    vife: tuple[int, ...] = ()
    time_flags: int | None = None

    @property
    def scaled(self) -> Decimal | None:
        """``value × 10^exponent`` as an exact ``Decimal``; ``None`` for non-numbers."""
        value = self.value
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        number = Decimal(value)
        if not number.is_finite():
            return number
        sign, digits, exponent = number.as_tuple()
        assert isinstance(exponent, int)
        return Decimal((sign, digits, exponent + self.exponent))  # no rounding, unlike scaleb


# ------------------------------------------------------------------------------- encoding

_header_key: Final = operator.attrgetter(
    "quantity", "unit", "exponent", "coding", "function", "storage", "tariff", "subunit", "vife"
)
#: Encoded DIB+VIB per record header, so that a meter sending the same records every
#: interval builds each header once. Bounded: cleared when full.
_HEADER_CACHE: dict[tuple[object, ...], tuple[bytes, Kind]] = {}
_CACHE_LIMIT: Final = 4096


def encode_record(record: Record, out: bytearray) -> None:
    """Append the bytes of ``record`` to ``out``; ``ValueError`` if it cannot be encoded."""
    key = _header_key(record)
    cached = _HEADER_CACHE.get(key)
    if cached is None:
        header = bytearray()
        kind = _encode_header(record, header)
        cached = (bytes(header), kind)
        if len(_HEADER_CACHE) >= _CACHE_LIMIT:
            _HEADER_CACHE.clear()
        _HEADER_CACHE[key] = cached
    out += cached[0]
    kind = cached[1]
    value = record.value
    coding = record.coding
    if (
        kind <= Kind.UNSIGNED
        and coding in _INT
        and type(value) is int
        and record.time_flags is None
    ):
        try:
            out += value.to_bytes(DATA_LENGTH[coding], "little", signed=kind == _N)
        except OverflowError as exc:
            raise ValueError(f"{value} does not fit {record.coding.name}") from exc
        return
    _encode_data(record, kind, out)


def _encode_header(record: Record, out: bytearray) -> Kind:
    coding = int(record.coding)
    if coding not in DATA_LENGTH and coding != Coding.VARIABLE:
        raise ValueError(f"unknown coding {record.coding!r}")
    if not 0 <= int(record.function) <= 3:
        raise ValueError(f"unknown function {record.function!r}")
    storage, tariff, subunit = record.storage, record.tariff, record.subunit
    if storage < 0 or tariff < 0 or subunit < 0:
        raise ValueError("storage number, tariff and sub-unit are not negative")
    dif = coding | (int(record.function) << 4) | ((storage & 1) << 6)
    storage >>= 1
    if storage or tariff or subunit:
        out.append(dif | 0x80)
        count = 0
        while True:
            dife = (storage & 0x0F) | ((tariff & 0x03) << 4) | ((subunit & 0x01) << 6)
            storage >>= 4
            tariff >>= 2
            subunit >>= 1
            count += 1
            if count > 10:
                raise ValueError("storage number, tariff or sub-unit needs more than 10 DIFEs")
            if storage or tariff or subunit:
                out.append(dife | 0x80)
            else:
                out.append(dife)
                break
    else:
        out.append(dif)
    return _encode_vib(record, out)


def _encode_vib(record: Record, out: bytearray) -> Kind:
    quantity = record.quantity
    vife = record.vife
    text: bytes | None = None
    if quantity is Quantity.PLAIN_TEXT_UNIT:
        codes: tuple[int, ...] = (_VIF_PLAIN_TEXT,)
        kind = _N
        try:
            text = record.unit.encode("latin-1")[::-1]
        except UnicodeEncodeError as exc:
            raise ValueError(f"plain-text unit {record.unit!r} is not Latin-1") from exc
        if len(text) > 0xFF:
            raise ValueError("plain-text unit longer than 255 characters")
    elif quantity is Quantity.MANUFACTURER_SPECIFIC:
        codes = (_VIF_MANUFACTURER,)
        kind = _U
    else:
        key = (quantity, record.unit, record.exponent)
        found = _ENCODE.get(key)
        if found is None:
            raise ValueError(
                f"no VIF means {quantity.value} in {record.unit!r} × 10^{record.exponent}"
            )
        codes = found
        kind = _KIND[key]
    if len(vife) > 10:
        raise ValueError("more than 10 VIFEs")
    manufacturer = quantity is Quantity.MANUFACTURER_SPECIFIC
    for code in vife:
        if not 0 <= code <= 0x7F or (code == _VIFE_FC and not manufacturer):
            raise ValueError(f"VIFE 0x{code:02X} cannot be encoded")
        manufacturer = manufacturer or code == _VIFE_MANUFACTURER
    chain = (*codes, *vife)
    last = len(chain) - 1
    for i, code in enumerate(chain):
        out.append(code | 0x80 if i < last else code)
    if text is not None:
        out.append(len(text))
        out += text
    return kind


def _encode_data(record: Record, kind: Kind, out: bytearray) -> None:
    coding = record.coding
    value = record.value
    if kind >= Kind.DATE:
        _encode_time(record, kind, out)
        return
    if record.time_flags is not None:
        raise ValueError("time_flags belong to date-time records only")
    if coding in (Coding.NONE, Coding.SELECTION):
        if value is not None:
            raise ValueError(f"{coding.name} carries no value")
        return
    if coding == Coding.VARIABLE:
        _encode_variable(value, out)
        return
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{coding.name} needs a number, not {value!r}")
    if coding == Coding.REAL32:
        out += struct.pack("<f", float(value))
        return
    if not isinstance(value, int):
        raise ValueError(f"{coding.name} needs an int, not {value!r}")
    size = DATA_LENGTH[coding]
    if coding in _BCD:
        out += _bcd_bytes(value, size)
        return
    try:
        out += value.to_bytes(size, "little", signed=kind == _N)
    except OverflowError as exc:
        raise ValueError(f"{value} does not fit {coding.name}") from exc


def _bcd_bytes(value: int, size: int) -> bytes:
    digits = 2 * size
    if value < 0:
        text = f"{-value:0{digits - 1}d}"
        if len(text) > digits - 1:
            raise ValueError(f"{value} does not fit {digits} BCD digits")
        return bytes.fromhex("F" + text)[::-1]
    text = f"{value:0{digits}d}"
    if len(text) > digits:
        raise ValueError(f"{value} does not fit {digits} BCD digits")
    return bytes.fromhex(text)[::-1]


_BINARY_LVAR: Final = {16: 0xF0, 20: 0xF1, 24: 0xF2, 28: 0xF3, 32: 0xF4, 48: 0xF5, 64: 0xF6}


def _encode_variable(value: Value, out: bytearray) -> None:
    if isinstance(value, str):
        try:
            text = value.encode("latin-1")
        except UnicodeEncodeError as exc:
            raise ValueError(f"{value!r} is not Latin-1") from exc
        if len(text) > 0xBF:
            raise ValueError("variable-length text longer than 191 characters")
        out.append(len(text))
        out += text[::-1]
    elif isinstance(value, bytes):
        n = len(value)
        if n <= 15:
            out.append(0xE0 + n)
        elif n in _BINARY_LVAR:
            out.append(_BINARY_LVAR[n])
        else:
            raise ValueError(f"no variable-length binary of {n} bytes")
        out += value
    elif isinstance(value, int) and not isinstance(value, bool):
        digits = str(abs(value))
        if len(digits) & 1:
            digits = "0" + digits
        if len(digits) > 18:
            raise ValueError(f"{value} has more than 18 BCD digits")
        out.append((0xD0 if value < 0 else 0xC0) + len(digits) // 2)
        out += bytes.fromhex(digits)[::-1]
    else:
        raise ValueError(f"variable-length data is str, bytes or int, not {value!r}")


def _legacy_year(year: int) -> int:
    """Two-digit (7-bit) year of ``year`` under the 1981-2080 rule, extended to 2127."""
    if 2000 <= year <= 2080 or 2100 <= year <= 2127:
        return year - 2000
    if 1981 <= year <= 1999:
        return year - 1900
    raise ValueError(f"year {year} cannot be sent without hundred-year bits")


#: Encoded and decoded dates and times: the meters of one gateway send the same few
#: timestamps (the end of the same interval). Bounded: cleared when full.
_TIME_ENCODED: dict[tuple[object, ...], bytes] = {}
_TIME_DECODED: dict[tuple[bytes, int, int], tuple[Value, int | None]] = {}


def _encode_time(record: Record, kind: Kind, out: bytearray) -> None:
    key = (record.value, record.coding, kind, record.time_flags)
    data = _TIME_ENCODED.get(key)
    if data is None:
        encoded = bytearray()
        _encode_time_uncached(record, kind, encoded)
        data = bytes(encoded)
        if len(_TIME_ENCODED) >= _CACHE_LIMIT:
            _TIME_ENCODED.clear()
        _TIME_ENCODED[key] = data
    out += data


def _encode_time_uncached(record: Record, kind: Kind, out: bytearray) -> None:
    coding = record.coding
    value = record.value
    flags = record.time_flags
    if coding == Coding.INT16 and kind in (Kind.DATE, Kind.DATE_ANY):
        if not isinstance(value, date) or isinstance(value, datetime):
            raise ValueError(f"a type G record needs a date, not {value!r}")
        if flags is not None:
            raise ValueError("type G dates have no flag bits")
        y = _legacy_year(value.year)
        word = value.day | ((y & 7) << 5) | (value.month << 8) | ((y >> 3) << 12)
        out += word.to_bytes(2, "little")
        return
    if coding not in (Coding.INT32, Coding.INT48) or kind == Kind.DATE:
        raise ValueError(f"{record.quantity.value} cannot be coded as {coding.name}")
    if not isinstance(value, datetime) or value.tzinfo is not None or value.microsecond:
        raise ValueError(f"a date-time record needs a naive datetime, not {value!r}")
    if coding == Coding.INT32:
        if value.second:
            raise ValueError("type F date-times have no seconds")
        if flags is None:
            hundred = (value.year - 1900) // 100
            if not 1 <= hundred <= 3:
                raise ValueError(f"year {value.year} does not fit type F")
            y = value.year - 1900 - 100 * hundred
            extra = hundred << 13
        else:
            if flags & ~_F_EXTRA:
                raise ValueError(f"type F flags 0x{flags:08X} overlap the date fields")
            extra = flags
            hundred = (flags >> 13) & 3
            if hundred:
                y = value.year - 1900 - 100 * hundred
                if not 0 <= y <= 99:
                    raise ValueError(f"year {value.year} does not fit hundred-year {hundred}")
            else:
                y = _legacy_year(value.year)
        word = (
            value.minute
            | (value.hour << 8)
            | value.day << 16
            | (y & 7) << 21
            | value.month << 24
            | (y >> 3) << 28
            | extra
        )
        out += word.to_bytes(4, "little")
        return
    extra = 0 if flags is None else flags
    if extra & ~_I_EXTRA:
        raise ValueError(f"type I flags 0x{extra:012X} overlap the date fields")
    y = _legacy_year(value.year)
    word = (
        value.second
        | value.minute << 8
        | value.hour << 16
        | value.day << 24
        | (y & 7) << 29
        | value.month << 32
        | (y >> 3) << 36
        | extra
    )
    out += word.to_bytes(6, "little")


def encode_records(records: tuple[Record, ...] | list[Record]) -> bytes:
    """The bytes of ``records``, one after the other, no fillers."""
    out = bytearray()
    for record in records:
        encode_record(record, out)
    return bytes(out)


# ------------------------------------------------------------------------------- decoding


class Parsed(NamedTuple):
    """What :func:`decode_records` found in a span of application data."""

    records: list[Record]
    starts: list[int]  # offset of each record's DIF
    ends: list[int]  # offset just after each record
    special: int  # offset of the 0x0F/0x1F DIF, or -1
    more_follow: bool  # the special DIF was 0x1F


# How a record's data is read, decided once per header.
_READ_SIGNED: Final = 0
_READ_UNSIGNED: Final = 1
_READ_BCD: Final = 2
_READ_REAL: Final = 3
_READ_NONE: Final = 4
_READ_TIME: Final = 5
_READ_VARIABLE: Final = 6
_READ_VARIABLE_DATE: Final = 7  # rejected once its LVAR is there


class _Header(NamedTuple):
    """A decoded DIB+VIB: the record's fields but value and flags, and how to read data."""

    fields: dict[str, object]
    reader: int  # one of _READ_*
    code: int  # DIF data field
    kind: Kind
    size: int  # data bytes; -1 for variable length
    length: int  # bytes of DIB and VIB (and a plain-text unit)


#: Decoded headers by their bytes (plain-text units excluded): most meters send the same
#: few headers in every telegram. Only valid headers are stored; cleared when full.
_DECODE_CACHE: dict[bytes, _Header] = {}


def decode_records(buf: bytes, pos: int, end: int) -> Parsed:
    """Decode the data records in ``buf[pos:end]``; ``Rejected`` on anything malformed.

    Stops at a 0x0F/0x1F DIF (manufacturer data runs from there to ``end``) and skips
    0x2F fillers. Every loop advances ``pos``, so the work is linear in ``end - pos``.
    """
    records: list[Record] = []
    starts: list[int] = []
    ends: list[int] = []
    cache = _DECODE_CACHE
    new = object.__new__
    setattr_ = object.__setattr__
    from_bytes = int.from_bytes
    unpack_real = _REAL.unpack
    data = b""
    while pos < end:
        dif = buf[pos]
        if dif == 0x2F:
            pos += 1
            continue
        if dif & 0x0F == 0x0F:
            if dif == 0x0F or dif == 0x1F:
                return Parsed(records, starts, ends, pos, dif == 0x1F)
            errors.reject(errors.UNKNOWN_DIF, f"DIF 0x{dif:02X} at offset {pos} is reserved")
        start = pos
        # The header's length follows from the extension bits alone: DIF, DIFEs, VIF, VIFEs.
        p = pos + 1
        if dif & 0x80:
            limit = end if end < pos + 11 else pos + 11
            while p < limit and buf[p] & 0x80:
                p += 1
            p += 1
        if p < end and buf[p] & 0x80:
            limit = end if end < p + 11 else p + 11
            p += 1
            while p < limit and buf[p] & 0x80:
                p += 1
        p += 1
        header = cache.get(buf[pos:p]) if p <= end else None
        if header is None:
            header = _decode_header(buf, pos, end)
            if pos + header.length == p:  # not a plain-text unit
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[buf[pos:p]] = header
        fields, reader, code, kind, size, length = header
        pos += length
        if size >= 0:
            if pos + size > end:
                errors.reject(
                    errors.TRUNCATED, f"data of record at offset {start} runs past the end"
                )
            data = buf[pos : pos + size]
            pos += size
        fields = fields.copy()
        if reader == _READ_SIGNED:
            fields["value"] = from_bytes(data, "little", signed=True)
        elif reader == _READ_UNSIGNED:
            fields["value"] = from_bytes(data, "little")
        elif reader == _READ_TIME:
            fields["value"], fields["time_flags"] = _decode_time(data, code, kind, start)
        elif reader == _READ_BCD:
            fields["value"] = _decode_bcd(data, start)
        elif reader == _READ_REAL:
            fields["value"] = unpack_real(data)[0]
        elif reader != _READ_NONE:
            if pos >= end:
                errors.reject(errors.TRUNCATED, f"record at offset {start} lacks its LVAR")
            if reader == _READ_VARIABLE_DATE:
                errors.reject(errors.BAD_CODING, f"date record at offset {start} is variable")
            fields["value"], pos = _decode_variable(buf, pos, end, start)
        record: Record = new(Record)
        setattr_(record, "__dict__", fields)
        records.append(record)
        starts.append(start)
        ends.append(pos)
    return Parsed(records, starts, ends, -1, False)


def _decode_header(buf: bytes, pos: int, end: int) -> _Header:
    """Parse the DIB and VIB at ``pos`` (and a plain-text unit); ``Rejected`` if invalid."""
    start = pos
    dif = buf[pos]
    code = dif & 0x0F
    pos += 1
    storage = (dif >> 6) & 1
    tariff = subunit = 0
    if dif & 0x80:
        n = 0
        while True:
            if pos >= end:
                errors.reject(errors.TRUNCATED, f"record at offset {start} ends in its DIFEs")
            dife = buf[pos]
            pos += 1
            storage |= (dife & 0x0F) << (1 + 4 * n)
            tariff |= ((dife >> 4) & 0x03) << (2 * n)
            subunit |= ((dife >> 6) & 0x01) << n
            n += 1
            if not dife & 0x80:
                break
            if n == 10:
                errors.reject(errors.BAD_RECORD, f"record at offset {start} has > 10 DIFEs")
    if pos >= end:
        errors.reject(errors.TRUNCATED, f"record at offset {start} has no VIF")
    vif = buf[pos]
    pos += 1
    base = vif & 0x7F
    more = vif & 0x80
    unit: str | None = None
    if base in (_VIF_FD, _VIF_FB):
        if not more or pos >= end:
            errors.reject(errors.UNKNOWN_VIF, f"VIF 0x{vif:02X} at offset {start} lacks its code")
        ext = buf[pos]
        pos += 1
        more = ext & 0x80
        info = (TABLE_FD if base == _VIF_FD else TABLE_FB).get(ext & 0x7F)
        if info is None:
            errors.reject(
                errors.UNKNOWN_VIF,
                f"VIF 0x{vif:02X} 0x{ext:02X} at offset {start} is not supported",
            )
    elif base == _VIF_PLAIN_TEXT:
        info = VifInfo(Quantity.PLAIN_TEXT_UNIT, "", 0, _N)
        unit = ""
    elif base == _VIF_MANUFACTURER:
        info = VifInfo(Quantity.MANUFACTURER_SPECIFIC, "", 0, _U)
    else:
        found = PRIMARY.get(base)
        if found is None:
            errors.reject(errors.UNKNOWN_VIF, f"VIF 0x{vif:02X} at offset {start} is reserved")
        info = found
    vife: tuple[int, ...] = ()
    if more:
        codes: list[int] = []
        manufacturer = base == _VIF_MANUFACTURER
        while more:
            if pos >= end:
                errors.reject(errors.TRUNCATED, f"record at offset {start} ends in its VIFEs")
            if len(codes) == 10:
                errors.reject(errors.BAD_RECORD, f"record at offset {start} has > 10 VIFEs")
            byte = buf[pos]
            pos += 1
            more = byte & 0x80
            ext_code = byte & 0x7F
            if ext_code == _VIFE_FC and not manufacturer:
                errors.reject(
                    errors.UNKNOWN_VIF,
                    f"VIFE 0xFC (extension table FC) at offset {pos - 1} is not supported",
                )
            manufacturer = manufacturer or ext_code == _VIFE_MANUFACTURER
            codes.append(ext_code)
        vife = tuple(codes)
    if unit is not None:
        if pos >= end:
            errors.reject(errors.TRUNCATED, f"record at offset {start} lacks its unit text")
        length = buf[pos]
        pos += 1
        if pos + length > end:
            errors.reject(errors.TRUNCATED, f"unit text at offset {pos} runs past the end")
        unit = buf[pos : pos + length][::-1].decode("latin-1")
        pos += length
    fields: dict[str, object] = {
        "quantity": info.quantity,
        "value": None,
        "unit": info.unit if unit is None else unit,
        "exponent": info.exponent,
        "coding": _CODINGS[code],
        "function": _FUNCTIONS[(dif >> 4) & 0x03],
        "storage": storage,
        "tariff": tariff,
        "subunit": subunit,
        "vife": vife,
        "time_flags": None,
    }
    kind = info.kind
    if code == 0x0D:
        reader = _READ_VARIABLE_DATE if kind >= Kind.DATE else _READ_VARIABLE
    elif kind >= Kind.DATE:
        reader = _READ_TIME
    elif code in _INT:
        reader = _READ_SIGNED if kind == _N else _READ_UNSIGNED
    elif code in _BCD:
        reader = _READ_BCD
    elif code == 0x5:
        reader = _READ_REAL
    else:
        reader = _READ_NONE
    return _Header(fields, reader, code, kind, DATA_LENGTH.get(code, -1), pos - start)


def _decode_bcd(data: bytes, start: int) -> int:
    text = data[::-1].hex()
    if text.isdigit():
        return int(text)
    if text[0] == "f" and text[1:].isdigit():
        return -int(text[1:])
    errors.reject(errors.BAD_VALUE, f"record at offset {start} is not BCD: {text}")


def _decode_variable(buf: bytes, pos: int, end: int, start: int) -> tuple[Value, int]:
    lvar = buf[pos]
    pos += 1
    if lvar <= 0xBF:
        size = lvar
    elif 0xC0 <= lvar <= 0xC9 or 0xD0 <= lvar <= 0xD9:
        size = lvar & 0x0F
    elif 0xE0 <= lvar <= 0xEF:
        size = lvar - 0xE0
    elif 0xF0 <= lvar <= 0xF4:
        size = 4 * (lvar - 0xEC)
    elif lvar == 0xF5:
        size = 48
    elif lvar == 0xF6:
        size = 64
    else:
        errors.reject(errors.BAD_VALUE, f"LVAR 0x{lvar:02X} at offset {pos - 1} is reserved")
    if pos + size > end:
        errors.reject(
            errors.TRUNCATED, f"variable data of record at offset {start} runs past the end"
        )
    data = buf[pos : pos + size]
    pos += size
    if lvar <= 0xBF:
        return data[::-1].decode("latin-1"), pos
    if lvar < 0xE0:
        text = data[::-1].hex()
        if not text.isdigit():
            errors.reject(errors.BAD_VALUE, f"record at offset {start} is not BCD: {text}")
        number = int(text)
        return (-number if lvar >= 0xD0 else number), pos
    return bytes(data), pos


def _year(y: int) -> int:
    return 1900 + y if 81 <= y <= 99 else 2000 + y


def _decode_time(data: bytes, code: int, kind: Kind, start: int) -> tuple[Value, int | None]:
    key = (data, code, kind)
    decoded = _TIME_DECODED.get(key)
    if decoded is None:
        decoded = _decode_time_uncached(data, code, kind, start)
        if len(_TIME_DECODED) >= _CACHE_LIMIT:
            _TIME_DECODED.clear()
        _TIME_DECODED[key] = decoded
    return decoded


def _decode_time_uncached(
    data: bytes, code: int, kind: Kind, start: int
) -> tuple[Value, int | None]:
    word = int.from_bytes(data, "little")
    try:
        if code == 0x2 and kind != Kind.DATE_TIME:
            y = ((word >> 5) & 7) | ((word >> 9) & 0x78)
            return date(_year(y), (word >> 8) & 0x0F, word & 0x1F), None
        if code == 0x4 and kind != Kind.DATE:
            y = ((word >> 21) & 7) | ((word >> 25) & 0x78)
            hundred = (word >> 13) & 3
            if hundred:
                if y > 99:
                    errors.reject(errors.BAD_VALUE, f"type F year {y} > 99 at offset {start}")
                year = 1900 + 100 * hundred + y
            else:
                year = _year(y)
            value = datetime(
                year, (word >> 24) & 0x0F, (word >> 16) & 0x1F, (word >> 8) & 0x1F, word & 0x3F
            )
            extra = word & _F_EXTRA
            canonical = ((year - 1900) // 100) << 13 if 2000 <= year <= 2299 else -1
            return value, None if extra == canonical else extra
        if code == 0x6 and kind != Kind.DATE:
            y = ((word >> 29) & 7) | ((word >> 33) & 0x78)
            value = datetime(
                _year(y),
                (word >> 32) & 0x0F,
                (word >> 24) & 0x1F,
                (word >> 16) & 0x1F,
                (word >> 8) & 0x3F,
                word & 0x3F,
            )
            extra = word & _I_EXTRA
            return value, extra or None
    except ValueError as exc:
        errors.reject(errors.BAD_VALUE, f"record at offset {start} is no valid date: {exc}")
    errors.reject(
        errors.BAD_CODING, f"record at offset {start}: date/time VIF with data field 0x{code:X}"
    )
