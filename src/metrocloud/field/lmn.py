"""The LMN telegram of a simulated meter, and what a gateway reads back from one.

A meter's telegram (wireless M-Bus frame format A, or a wired M-Bus long frame) carries,
as OMS meters do:

- the register at the reading's quarter hour: energy in Wh (VIF 0x03) for electricity and
  heat, volume in litres (m³ × 10⁻³, VIF 0x13) for gas and water, as a 48-bit integer;
- the time of the reading (type F date-time, minutes, in UTC: the testbed keeps every clock
  in UTC);
- for a heat meter, its flow and return temperatures in 0.1 °C;
- the status byte (0x00, or 0x08 "application error" when the meter flags its reading);
- secured by the meter's setting: AES-128 security mode 5, metrocloud's ECDSA signature
  block, or nothing.

:func:`read_frame` is the gateway's side: it decodes, decrypts or verifies with the
credentials the gateway holds for the meter, and returns the reading, or ``Rejected``.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from metrocloud.core.clock import EPOCH, INTERVAL
from metrocloud.core.errors import Rejected
from metrocloud.field.meter import MeterStatus
from metrocloud.field.sensors import Interface, Medium, Security, Sensor
from metrocloud.field.telegrams import (
    MODE_AES_CBC,
    MODE_NONE,
    ApplicationHeader,
    Coding,
    DeviceType,
    MeterAddress,
    Quantity,
    Record,
    Telegram,
    WiredTelegram,
    decode_mbus,
    decode_wmbus,
    encode_mbus,
    encode_wmbus,
)
from metrocloud.field.telegrams.application import CI_SHORT, ApplicationData
from metrocloud.field.telegrams.link import SND_NR, frame_wmbus
from metrocloud.field.telegrams.records import DATA_LENGTH, encode_record
from metrocloud.field.telegrams.security import encrypt_cbc, mode5_iv

_ERROR, _OK = int(MeterStatus.ERROR), int(MeterStatus.OK)
_NAIVE_EPOCH = EPOCH.replace(tzinfo=None)
STATUS_APPLICATION_ERROR = 0x08
"""Status byte bit of EN 13757-3 that the testbed sets when a meter flags its reading."""

DEVICE_TYPES = {
    Medium.ELECTRICITY: DeviceType.ELECTRICITY,
    Medium.GAS: DeviceType.GAS,
    Medium.WATER: DeviceType.WATER,
    Medium.HEAT: DeviceType.HEAT,
}
_MEDIA = {int(t): m for m, t in DEVICE_TYPES.items()}
_REGISTER = {  # medium -> (quantity, unit, exponent) of the register record
    Medium.ELECTRICITY: (Quantity.ENERGY, "Wh", 0),
    Medium.GAS: (Quantity.VOLUME, "m³", -3),
    Medium.WATER: (Quantity.VOLUME, "m³", -3),
    Medium.HEAT: (Quantity.ENERGY, "Wh", 0),
}
_CYCLIC = {
    "flow-temperature-c": Quantity.FLOW_TEMPERATURE,
    "return-temperature-c": Quantity.RETURN_TEMPERATURE,
}
_CYCLIC_NAMES = {q: name for name, q in _CYCLIC.items()}

Credentials = Callable[[str], "tuple[Security, bytes | None] | None"]
"""Meter id -> how the gateway was told the meter secures its telegrams, and the key (AES
key, or the meter's public key in DER for ECDSA); None for a meter it does not know."""


class FrameRefused(Rejected):
    """A refused frame, with the meter it named when the decoder got as far as that."""

    def __init__(self, reason: str, detail: str, meter_id: str | None) -> None:
        super().__init__(reason, detail)
        self.meter_id = meter_id


@dataclass(frozen=True)
class LmnReading:
    """A reading as a gateway read it from a telegram."""

    meter_id: str
    medium: Medium
    access_number: int
    time: datetime
    register: int
    status: int
    cyclic: tuple[tuple[str, float], ...] = ()


_ADDRESSES: dict[tuple[str, str, int, Medium], MeterAddress] = {}


def address_of(sensor: Sensor) -> MeterAddress:
    c = sensor.config
    key = (c.manufacturer, c.number, c.version, c.medium)
    found = _ADDRESSES.get(key)
    if found is None:
        if len(_ADDRESSES) > 100_000:
            _ADDRESSES.clear()
        found = _ADDRESSES[key] = MeterAddress(*key[:3], DEVICE_TYPES[c.medium])
    return found


def sensor_records(sensor: Sensor, index: int) -> tuple[tuple[Record, ...], int]:
    """The data records of the reading at ``index`` and the status byte."""
    reported = sensor.reading(index)
    quantity, unit, exponent = _REGISTER[sensor.config.medium]
    records = [
        Record(quantity, reported.register, unit, exponent, Coding.INT48),
        Record(
            Quantity.DATE_TIME,
            _NAIVE_EPOCH + index * INTERVAL,  # the meter's clock: UTC, without a zone
            coding=Coding.INT32,
        ),
    ]
    for name, value in reported.cyclic:
        records.append(Record(_CYCLIC[name], round(value * 10), "°C", -1, Coding.INT16))
    error = reported.reading.status & MeterStatus.ERROR
    return tuple(records), STATUS_APPLICATION_ERROR if error else 0


def sensor_telegram(
    sensor: Sensor,
    index: int,
    access_number: int,
    *,
    signer: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    """The frame ``sensor`` sends for its reading at ``index`` (secured as configured:
    an ECDSA meter signs with ``signer``, its private key).

    A wireless meter in security mode 5 or 0 takes a fast path: its records always have the
    same DIF/VIF headers, so only their values are written between them
    (:class:`_Template`); the bytes are those of the general encoder (tested)."""
    config = sensor.config
    if config.interface is Interface.WIRELESS and config.security is not Security.ECDSA:
        template = _TEMPLATES.get(sensor)
        if template is None:
            template = _TEMPLATES[sensor] = _Template(sensor)
        return template.telegram(sensor, index, access_number)
    return general_telegram(sensor, index, access_number, signer=signer)


def general_telegram(
    sensor: Sensor,
    index: int,
    access_number: int,
    *,
    signer: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    """:func:`sensor_telegram` through the general encoder (records as objects)."""
    records, status = sensor_records(sensor, index)
    security = sensor.config.security
    mode = MODE_AES_CBC if security is Security.AES else MODE_NONE
    key = sensor.key if security is Security.AES else None
    if security is Security.ECDSA and signer is None:
        raise ValueError(f"{sensor.meter_id} signs its readings: give its private key")
    address = address_of(sensor)
    if sensor.config.interface is Interface.WIRED:
        header = ApplicationHeader(
            access_number=access_number % 256, status=status, security_mode=mode, address=address
        )
        wired = WiredTelegram(header=header, records=records)
        return encode_mbus(wired, key, signer=signer)
    header = ApplicationHeader(access_number=access_number % 256, status=status, security_mode=mode)
    telegram = Telegram(header=header, records=records, address=address)
    return encode_wmbus(telegram, key, signer=signer)


class _Template:
    """One wireless meter's telegram with the values left out: the record headers (DIF,
    VIF) as the general encoder writes them, and the data widths between them."""

    def __init__(self, sensor: Sensor) -> None:
        records, _ = sensor_records(sensor, sensor.config.origin_index)
        self.heads: list[bytes] = []
        self.widths: list[int] = []
        for record in records:
            encoded = bytearray()
            encode_record(record, encoded)
            width = DATA_LENGTH[record.coding]
            self.heads.append(bytes(encoded[:-width]))
            self.widths.append(width)
        self.address = address_of(sensor)
        self.wire = self.address.wire()
        self.aes = sensor.config.security is Security.AES

    def telegram(self, sensor: Sensor, index: int, access_number: int) -> bytes:
        reported = sensor.reading(index)
        heads, widths = self.heads, self.widths
        body = bytearray(heads[0])
        body += reported.register.to_bytes(widths[0], "little", signed=True)
        body += heads[1]
        body += _time_bytes(index)
        for n, (_, value) in enumerate(reported.cyclic, start=2):
            body += heads[n]
            body += round(value * 10).to_bytes(widths[n], "little", signed=True)
        error = reported.reading.status & MeterStatus.ERROR
        status = STATUS_APPLICATION_ERROR if error else 0
        access = access_number % 256
        head = bytes((CI_SHORT, access, status))
        key = sensor.key
        if not self.aes or key is None:
            app = head + b"\x00\x00" + bytes(body)
        else:
            plain = b"\x2f\x2f" + bytes(body)
            plain += b"\x2f" * (-len(plain) % 16)
            config = (MODE_AES_CBC << 8) | ((len(plain) // 16) << 4)
            ciphertext = encrypt_cbc(key, mode5_iv(self.wire, access), plain)
            app = head + config.to_bytes(2, "little") + ciphertext
        return frame_wmbus(SND_NR, self.address, app)


_TEMPLATES: weakref.WeakKeyDictionary[Sensor, _Template] = weakref.WeakKeyDictionary()


@functools.lru_cache(maxsize=4096)
def _time_bytes(index: int) -> bytes:
    """The type F date-time of reading ``index`` as the general encoder writes it."""
    encoded = bytearray()
    record = Record(Quantity.DATE_TIME, _NAIVE_EPOCH + index * INTERVAL, coding=Coding.INT32)
    encode_record(record, encoded)
    return bytes(encoded[-4:])


def read_frame(frame: bytes, credentials: Credentials, *, wired: bool = False) -> LmnReading:
    """Decode one frame with the gateway's ``credentials``; ``Rejected`` with the reason:
    the codec's (``bad-crc``, ``truncated``, ``decryption-check-failed``, ``bad-signature``,
    ...), or ``unknown-meter``, ``unsigned-reading``, ``not-encrypted``, ``no-reading``."""
    seen: dict[str, tuple[Security, bytes | None]] = {}
    named: list[str] = []

    def known(address: MeterAddress) -> tuple[Security, bytes | None]:
        meter_id = str(address)
        named.append(meter_id)
        found = credentials(meter_id)
        if found is None:
            raise Rejected("unknown-meter", f"the gateway knows no meter {meter_id}")
        seen[meter_id] = found
        return found

    def aes_key(address: MeterAddress) -> bytes | None:
        security, key = known(address)
        return key if security is Security.AES else None

    def public_key(address: MeterAddress) -> ec.EllipticCurvePublicKey | None:
        security, key = known(address)
        if security is not Security.ECDSA or key is None:
            return None
        loaded = load_der_public_key(key)
        if not isinstance(loaded, ec.EllipticCurvePublicKey):
            raise Rejected("bad-signature", "the meter's configured key is no EC key")
        return loaded

    decoded: ApplicationData
    try:
        if wired:
            decoded = decode_mbus(frame, aes_key, verify_key_for=public_key)
            address = decoded.header.address
        else:
            decoded = decode_wmbus(frame, aes_key, verify_key_for=public_key)
            assert isinstance(decoded, Telegram)
            address = decoded.address
    except Rejected as exc:
        meter = named[0] if named else None  # the meter the frame named, if it got that far
        if exc.reason == "missing-signature":  # a signing meter's reading without one
            raise FrameRefused("unsigned-reading", exc.detail, meter) from None
        raise FrameRefused(exc.reason, exc.detail, meter) from None
    if address is None:
        raise Rejected("unknown-meter", "the frame names no meter (no long header)")
    meter_id = str(address)
    security, _ = seen.get(meter_id) or known(address)
    header = decoded.header
    if security is Security.AES and header.security_mode != MODE_AES_CBC:
        why = f"{meter_id} must encrypt, the telegram is in clear"
        raise FrameRefused("not-encrypted", why, meter_id)
    if security is Security.ECDSA and decoded.signature is None:
        why = f"{meter_id} must sign, the telegram is unsigned"
        raise FrameRefused("unsigned-reading", why, meter_id)
    medium = _MEDIA.get(address.device_type)
    if medium is None:
        why = f"{meter_id} announces device type {address.device_type}"
        raise FrameRefused("no-reading", why, meter_id)
    try:
        return _reading(meter_id, medium, header.access_number, header.status, decoded.records)
    except Rejected as exc:
        raise FrameRefused(exc.reason, exc.detail, meter_id) from None


def _reading(
    meter_id: str, medium: Medium, access: int, status: int, records: tuple[Record, ...]
) -> LmnReading:
    quantity, unit, exponent = _REGISTER[medium]
    register: int | None = None
    time: datetime | None = None
    cyclic: list[tuple[str, float]] = []
    for record in records:
        if record.storage or record.tariff or record.subunit:
            continue  # historic values, other tariffs: not the current reading
        if (record.quantity, record.unit, record.exponent) == (quantity, unit, exponent):
            if isinstance(record.value, int) and not isinstance(record.value, bool):
                register = record.value
        elif record.quantity is Quantity.DATE_TIME and isinstance(record.value, datetime):
            time = record.value.replace(tzinfo=timezone.utc)
        elif record.quantity in _CYCLIC_NAMES and isinstance(record.value, int):
            cyclic.append((_CYCLIC_NAMES[record.quantity], _scaled(record.value, record.exponent)))
    if register is None or register < 0 or time is None:
        raise Rejected("no-reading", f"{meter_id}'s telegram holds no register with its time")
    flags = _ERROR if status & STATUS_APPLICATION_ERROR else _OK
    return LmnReading(meter_id, medium, access, time, register, flags, tuple(cyclic))


def _scaled(value: int, exponent: int) -> float:
    """``value × 10^exponent`` as the float nearest the decimal (671, -1: 67.1, not the
    67.10000000000001 of ``671 * 0.1``): integer division rounds correctly."""
    return value / 10**-exponent if exponent < 0 else float(value * 10**exponent)
