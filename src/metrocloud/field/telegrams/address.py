"""Meter addresses: the M-field (manufacturer) and A-field (identification, version, type).

EN 13757-3 packs the manufacturer's three-letter FLAG association code into 15 bits,
five bits per letter (``A`` = 1 … ``Z`` = 26), first letter highest; the 16-bit value is
sent little endian. The identification number is eight BCD digits, sent as four bytes
little endian. Version and device type (medium) are one byte each.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from metrocloud.field.telegrams import errors


class DeviceType(IntEnum):
    """Common device types (medium) of EN 13757-3 / OMS; any byte is allowed on the wire."""

    OTHER = 0x00
    OIL = 0x01
    ELECTRICITY = 0x02
    GAS = 0x03
    HEAT = 0x04
    STEAM = 0x05
    WARM_WATER = 0x06
    WATER = 0x07
    HEAT_COST_ALLOCATOR = 0x08
    COMPRESSED_AIR = 0x09
    COOLING_OUTLET = 0x0A
    COOLING_INLET = 0x0B
    HEAT_INLET = 0x0C
    HEAT_COOLING = 0x0D
    BUS_SYSTEM = 0x0E
    UNKNOWN = 0x0F
    HOT_WATER = 0x15
    COLD_WATER = 0x16
    SMOKE_DETECTOR = 0x1A
    ROOM_SENSOR = 0x1B
    GAS_DETECTOR = 0x1C
    BREAKER = 0x20
    VALVE = 0x21
    RADIO_CONVERTER = 0x37


_A: Final = ord("A") - 1


def manufacturer_code(letters: str) -> int:
    """The 15-bit M-field value of a three-letter manufacturer code (``"ELS"`` → 0x1593)."""
    if len(letters) != 3 or not all("A" <= ch <= "Z" for ch in letters):
        raise ValueError(f"manufacturer must be three letters A-Z, not {letters!r}")
    return ((ord(letters[0]) - _A) << 10) | ((ord(letters[1]) - _A) << 5) | (ord(letters[2]) - _A)


def decode_manufacturer(code: int) -> str:
    """The three letters of an M-field value; ``ValueError`` unless each is A-Z."""
    if not 0 <= code <= 0x7FFF:
        raise ValueError(f"M-field 0x{code:04X} has its top bit set")
    a, b, c = (code >> 10) & 0x1F, (code >> 5) & 0x1F, code & 0x1F
    if not (1 <= a <= 26 and 1 <= b <= 26 and 1 <= c <= 26):
        raise ValueError(f"M-field 0x{code:04X} is not three letters A-Z")
    return chr(a + _A) + chr(b + _A) + chr(c + _A)


@dataclass(frozen=True, eq=False)
class MeterAddress:
    """Who sent a telegram: manufacturer, identification number, version, device type.

    ``identification`` is the eight-digit number as printed on the meter (``"12345678"``).
    EN 13757 makes it BCD; hexadecimal digits are accepted, as some meters in the field use
    them.
    """

    manufacturer: str
    identification: str
    version: int = 0
    device_type: int = DeviceType.ELECTRICITY

    def __post_init__(self) -> None:
        manufacturer_code(self.manufacturer)
        if len(self.identification) != 8 or any(
            ch not in "0123456789ABCDEF" for ch in self.identification
        ):
            raise ValueError(f"identification must be 8 digits (BCD), not {self.identification!r}")
        if not 0 <= self.version <= 0xFF or not 0 <= self.device_type <= 0xFF:
            raise ValueError("version and device type are one byte each")

        wire = manufacturer_code(self.manufacturer).to_bytes(2, "little")
        wire += bytes.fromhex(self.identification)[::-1] + bytes((self.version, self.device_type))
        object.__setattr__(self, "_wire", wire)

    # Equality and hash by the eight wire bytes, which the fields determine one to one:
    # gateways look keys up by address for every telegram.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MeterAddress):
            return NotImplemented
        return bool(self.__dict__["_wire"] == other.__dict__["_wire"])

    def __hash__(self) -> int:
        return hash(self.__dict__["_wire"])

    def wire(self) -> bytes:
        """M-field and A-field as sent (8 bytes): the input of the mode 5 IV."""
        wire: bytes = self.__dict__["_wire"]
        return wire

    def m_field(self) -> bytes:
        """The two M-field bytes as sent (little endian)."""
        return self.wire()[:2]

    def a_field(self) -> bytes:
        """The six A-field bytes as sent: identification (4, LE BCD), version, type."""
        return self.wire()[2:]

    def __str__(self) -> str:
        return f"{self.manufacturer}-{self.identification}"


_CACHE: dict[bytes, MeterAddress] = {}
_CACHE_LIMIT: Final = 4096


def address_from_fields(m_field: bytes, a_field: bytes) -> MeterAddress:
    """Parse 2 M-field bytes and 6 A-field bytes; ``Rejected`` if the M-field is no name."""
    wire = bytes(m_field) + bytes(a_field)
    address = _CACHE.get(wire)
    if address is not None:
        return address
    code = m_field[0] | (m_field[1] << 8)
    try:
        manufacturer = decode_manufacturer(code)
    except ValueError as exc:
        errors.reject(errors.BAD_MANUFACTURER, str(exc))
    address = object.__new__(MeterAddress)
    object.__setattr__(address, "manufacturer", manufacturer)
    object.__setattr__(address, "identification", a_field[3::-1].hex().upper())
    object.__setattr__(address, "version", a_field[4])
    object.__setattr__(address, "device_type", a_field[5])
    object.__setattr__(address, "_wire", wire)
    if len(_CACHE) >= _CACHE_LIMIT:
        _CACHE.clear()
    _CACHE[wire] = address
    return address
