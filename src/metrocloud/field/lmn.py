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
import struct
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from metrocloud.core.clock import EPOCH, INTERVAL
from metrocloud.core.errors import Rejected
from metrocloud.field.meter import DEFAULT_ORIGIN_INDEX, MeterStatus
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
from metrocloud.field.telegrams.address import address_from_fields
from metrocloud.field.telegrams.application import CI_SHORT, ApplicationData
from metrocloud.field.telegrams.crc import block_plan, block_sizes, crc16_en13757
from metrocloud.field.telegrams.link import BLOCK, FIRST_BLOCK, MAX_L, SND_NR, frame_wmbus
from metrocloud.field.telegrams.records import DATA_LENGTH, decode_records, encode_record
from metrocloud.field.telegrams.security import CHECK, decrypt_cbc, encrypt_cbc, mode5_iv

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
    records = _records(sensor.config.medium, reported.register, index, reported.cyclic)
    error = reported.reading.status & MeterStatus.ERROR
    return records, STATUS_APPLICATION_ERROR if error else 0


def _records(
    medium: Medium, register: int, index: int, cyclic: tuple[tuple[str, float], ...]
) -> tuple[Record, ...]:
    quantity, unit, exponent = _REGISTER[medium]
    records = [
        Record(quantity, register, unit, exponent, Coding.INT48),
        Record(
            Quantity.DATE_TIME,
            _NAIVE_EPOCH + index * INTERVAL,  # the meter's clock: UTC, without a zone
            coding=Coding.INT32,
        ),
    ]
    for name, value in cyclic:
        records.append(Record(_CYCLIC[name], round(value * 10), "°C", -1, Coding.INT16))
    return tuple(records)


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
        kept = _TEMPLATES.get(id(sensor))
        if kept is None or kept[0]() is not sensor:
            kept = (weakref.ref(sensor, functools.partial(_forget, id(sensor))), _Template(sensor))
            _TEMPLATES[id(sensor)] = kept
        return kept[1].telegram(sensor, index, access_number)
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


class _Shape:
    """The decrypted payload (mode 5) that the testbed's wireless meters of one medium send:
    0x2F 0x2F, the records' headers (DIF, VIF) as the general encoder writes them with
    their values between them, 0x2F fillers to the block. Both ends use it: the meter packs
    its values into it (:class:`_Template`), the gateway checks a decrypted payload against
    it and unpacks the values (:class:`_Layout`)."""

    def __init__(self, medium: Medium) -> None:
        sample = _records(
            medium, 0, _SAMPLE_INDEX, tuple((name, 0.0) for name in _CYCLIC_OF[medium])
        )
        fmt = "<2s"
        values = "<2x"
        constants: list[bytes] = [CHECK]
        mask = bytearray(b"\xff\xff")
        expected = bytearray(CHECK)
        self.heads: list[bytes] = []
        self.widths: list[int] = []
        for record in sample:
            encoded = bytearray()
            encode_record(record, encoded)
            width = DATA_LENGTH[record.coding]
            head = bytes(encoded[:-width])
            self.heads.append(head)
            self.widths.append(width)
            fmt += f"{len(head)}s" + _VALUE_FORMATS[record.coding]
            values += f"{len(head)}x" + _VALUE_FORMATS[record.coding]
            constants.append(head)
            mask += b"\xff" * len(head) + bytes(width)
            expected += head + bytes(width)
        fill = -len(expected) % BLOCK
        fmt += f"{fill}s"
        constants.append(b"\x2f" * fill)
        mask += b"\xff" * fill
        expected += b"\x2f" * fill
        #: The payload's bytes: constants and values in turn (see :meth:`pack`).
        self.payload = struct.Struct(fmt)
        self.constants = tuple(constants)
        self.size = len(expected)
        #: The configuration word (little endian): mode 5, the number of blocks, no flags.
        self.config = ((MODE_AES_CBC << 8) | ((self.size // BLOCK) << 4)).to_bytes(2, "little")
        #: Which bits of the payload are not values, and what they must be.
        self.mask = int.from_bytes(mask, "big")
        self.expected = int.from_bytes(expected, "big")
        #: The values of a payload: register (low 32 bits, high 16 bits signed), the type F
        #: time's four bytes, the cyclic values.
        self.values = struct.Struct(values + f"{fill}x")
        self.time_head = self.heads[1]
        self.cyclic = tuple(
            (_CYCLIC_NAMES[record.quantity], record.exponent) for record in sample[2:]
        )

    def pack(self, register: int, time: bytes, cyclic: tuple[int, ...]) -> bytes | None:
        """The payload of these values (``None``: one does not fit its field)."""
        c = self.constants
        hi = register >> 32
        if not -0x8000 <= hi < 0x8000 or len(cyclic) != len(self.cyclic):
            return None
        args: list[object] = [c[0], c[1], register & 0xFFFFFFFF, hi, c[2], time]
        for n, value in enumerate(cyclic, start=3):
            if not -0x8000 <= value < 0x8000:
                return None
            args += (c[n], value)
        args.append(c[-1])
        return self.payload.pack(*args)


_VALUE_FORMATS: Final = {Coding.INT48: "Ih", Coding.INT32: "4s", Coding.INT16: "h"}
"""How :class:`_Shape` packs the data of a record of this coding (INT32: the time's bytes)."""
_SAMPLE_INDEX: Final = DEFAULT_ORIGIN_INDEX
_CYCLIC_OF: Final = {medium: tuple(_CYCLIC) if medium is Medium.HEAT else () for medium in Medium}
"""The cyclic values a meter of the medium reports (:meth:`Sensor.reading`), in order."""


@functools.cache
def _shape(medium: Medium) -> _Shape:
    return _Shape(medium)


class _Template:
    """One wireless meter's telegram with the values left out: the record headers (DIF,
    VIF) as the general encoder writes them, and the data widths between them; in mode 5
    also the first block with its CRC (the same in every telegram) and the layout of the
    blocks after it."""

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
        self.shape = _shape(sensor.config.medium)
        if self.shape.heads != self.heads:  # never: both come from the same records
            raise AssertionError(f"{sensor.meter_id}: the telegram differs from its medium's")
        app = 5 + self.shape.size  # CI, access number, status, configuration word; payload
        length = FIRST_BLOCK - 1 + app
        self.block1 = frame_wmbus(SND_NR, self.address, bytes(app))[: FIRST_BLOCK + 2]
        sizes = block_sizes(app, BLOCK, BLOCK)
        self.crcs = block_plan(sizes)
        self.split = struct.Struct("".join(f"{size}s" for size in sizes))
        self.framed = struct.Struct(">" + "".join(f"{size}sH" for size in sizes))
        self.items = 2 * len(sizes)
        if length > MAX_L:  # never: a few records
            raise AssertionError(f"{sensor.meter_id}: telegram too long")

    def telegram(self, sensor: Sensor, index: int, access_number: int) -> bytes:
        register, flags, cyclic = sensor.report(index)
        error = flags is MeterStatus.ERROR or (
            flags is not MeterStatus.OK and flags & MeterStatus.ERROR
        )
        status = STATUS_APPLICATION_ERROR if error else 0
        access = access_number & 0xFF
        key = sensor.key
        values = tuple(round(value * 10) for _, value in cyclic) if cyclic else ()
        if self.aes and key is not None and len(key) == BLOCK:
            plain = self.shape.pack(register, _time_bytes(index), values)
            if plain is not None:
                ciphertext = encrypt_cbc(key, self.wire + bytes((access,)) * 8, plain)
                app = bytes((CI_SHORT, access, status)) + self.shape.config + ciphertext
                items: list[bytes | int] = [0] * self.items
                items[0::2] = self.split.unpack(app)
                items[1::2] = self.crcs.crcs(app)
                return self.block1 + self.framed.pack(*items)
        return self._general(register, values, index, access, status, key)

    def _general(
        self,
        register: int,
        values: tuple[int, ...],
        index: int,
        access: int,
        status: int,
        key: bytes | None,
    ) -> bytes:
        """The telegram record by record (mode 0, or a value the fast layout cannot hold)."""
        heads, widths = self.heads, self.widths
        body = bytearray(heads[0])
        body += register.to_bytes(widths[0], "little", signed=True)
        body += heads[1]
        body += _time_bytes(index)
        for n, value in enumerate(values, start=2):
            body += heads[n]
            body += value.to_bytes(widths[n], "little", signed=True)
        head = bytes((CI_SHORT, access, status))
        if not self.aes or key is None:
            app = head + b"\x00\x00" + bytes(body)
        else:
            plain = CHECK + bytes(body)
            plain += b"\x2f" * (-len(plain) % BLOCK)
            config = (MODE_AES_CBC << 8) | ((len(plain) // BLOCK) << 4)
            ciphertext = encrypt_cbc(key, mode5_iv(self.wire, access), plain)
            app = head + config.to_bytes(2, "little") + ciphertext
        return frame_wmbus(SND_NR, self.address, app)


_TEMPLATES: dict[int, tuple[weakref.ref[Sensor], _Template]] = {}
"""Templates by ``id(sensor)``, with a weak reference that tells whether the sensor is
still the one (a plain dict: cheaper per telegram than a ``WeakKeyDictionary``)."""


def _forget(key: int, ref: weakref.ref[Sensor]) -> None:
    """A sensor is gone: its template too (unless another sensor has its id by now)."""
    kept = _TEMPLATES.get(key)
    if kept is not None and kept[0] is ref:
        del _TEMPLATES[key]


@functools.lru_cache(maxsize=4096)
def _time_bytes(index: int) -> bytes:
    """The type F date-time of reading ``index`` as the general encoder writes it."""
    encoded = bytearray()
    record = Record(Quantity.DATE_TIME, _NAIVE_EPOCH + index * INTERVAL, coding=Coding.INT32)
    encode_record(record, encoded)
    return bytes(encoded[-4:])


# -- the gateway's side ------------------------------------------------------------------


class _Layout:
    """What a gateway expects of the frames whose first block (with its CRC) is ``head``:
    a testbed meter's mode 5 telegram of its medium (:class:`_Shape`), frame format A with
    the short header. Known from the head alone: the meter, its medium, the frame's
    length, where its blocks and CRCs lie."""

    __slots__ = ("checks", "config", "iv", "medium", "meter_id", "shape", "size", "split")

    def __init__(self, head: bytes, meter_id: str, medium: Medium, shape: _Shape) -> None:
        self.meter_id = meter_id
        self.medium = medium
        self.shape = shape
        self.iv = head[2:10]  # M-field and A-field: the IV's first half
        self.config = shape.config
        app = 5 + shape.size
        sizes = block_sizes(app, BLOCK, BLOCK)
        self.size = FIRST_BLOCK + 2 + app + 2 * len(sizes)
        self.checks = block_plan(tuple(size + 2 for size in sizes))
        # after block 1: CI, access number, status, configuration word, then the
        # ciphertext in pieces between the CRCs
        fmt = f"<{FIRST_BLOCK + 2}xBBB2s{sizes[0] - 5}s2x"
        fmt += "".join(f"{size}s2x" for size in sizes[1:])
        self.split = struct.Struct(fmt)


_LAYOUTS: dict[bytes, _Layout | None] = {}
"""Layouts by the first block (with CRC) of the frames they fit; ``None``: a valid first
block of frames that take the general decoder (other media, lengths, securities)."""
_TIMES: dict[bytes, datetime | None] = {}
"""The general decoder's type F time (in UTC) of four data bytes; ``None``: not a time it
accepts."""
_FAST_CACHE_LIMIT: Final = 1 << 16


def _layout(head: bytes) -> _Layout | None:
    """The layout of frames beginning with ``head`` (12 bytes), learned on first sight."""
    if len(head) < FIRST_BLOCK + 2:
        return None
    if crc16_en13757(head[:FIRST_BLOCK]) != (head[10] << 8) | head[11]:
        return None  # a garbled first block: nothing worth keeping
    layout: _Layout | None = None
    medium = _MEDIA.get(head[9])
    if medium is not None:
        try:
            address = address_from_fields(head[2:4], head[4:10])
        except Rejected:
            pass
        else:
            shape = _shape(medium)
            if head[0] == FIRST_BLOCK - 1 + 5 + shape.size:
                layout = _Layout(head, str(address), medium, shape)
    if len(_LAYOUTS) >= _FAST_CACHE_LIMIT:
        _LAYOUTS.clear()
    _LAYOUTS[head] = layout
    return layout


def _time(data: bytes, shape: _Shape) -> datetime | None:
    """The time of a type F record's four data bytes, as the general decoder reads it."""
    if data in _TIMES:
        return _TIMES[data]
    time: datetime | None = None
    record = shape.time_head + data
    try:
        value = decode_records(record, 0, len(record)).records[0].value
    except Rejected:
        pass
    else:
        if isinstance(value, datetime):
            time = value.replace(tzinfo=timezone.utc)
    if len(_TIMES) >= _FAST_CACHE_LIMIT:
        _TIMES.clear()
    _TIMES[data] = time
    return time


def _read_fast(frame: bytes, credentials: Credentials) -> LmnReading | None:
    """The reading of a frame that fits its meter's expected layout, with every check of
    the general path done (block CRCs, the meter known with an AES key, the 0x2F 0x2F
    check and every header and filler byte of the payload, the values valid), or ``None``:
    then the general decoder reads the frame and finds the same or the reason to refuse it.
    The result equals :func:`read_frame_general`'s (property-tested)."""
    head = frame[: FIRST_BLOCK + 2]
    layout = _LAYOUTS.get(head)
    if layout is None:
        if head in _LAYOUTS:
            return None
        layout = _layout(head)
        if layout is None:
            return None
    if len(frame) != layout.size or not layout.checks.intact(frame, FIRST_BLOCK + 2):
        return None
    ci, access, status, config, *pieces = layout.split.unpack(frame)
    if ci != CI_SHORT or config != layout.config:
        return None
    found = credentials(layout.meter_id)
    if found is None or found[0] is not Security.AES:
        return None
    key = found[1]
    if key is None or len(key) != BLOCK:
        return None
    plain = decrypt_cbc(key, layout.iv + bytes((access,)) * 8, b"".join(pieces))
    shape = layout.shape
    if int.from_bytes(plain, "big") & shape.mask != shape.expected:
        return None
    low, high, time_bytes, *cyclic = shape.values.unpack(plain)
    if high < 0:
        return None  # a negative register: the general path refuses it
    time = _TIMES.get(time_bytes) or _time(time_bytes, shape)
    if time is None:
        return None
    return LmnReading(
        layout.meter_id,
        layout.medium,
        access,
        time,
        (high << 32) | low,
        _ERROR if status & STATUS_APPLICATION_ERROR else _OK,
        tuple(
            (name, _scaled(value, exponent))
            for (name, exponent), value in zip(shape.cyclic, cyclic, strict=True)
        )
        if cyclic
        else (),
    )


def read_frame(frame: bytes, credentials: Credentials, *, wired: bool = False) -> LmnReading:
    """Decode one frame with the gateway's ``credentials``; ``Rejected`` with the reason:
    the codec's (``bad-crc``, ``truncated``, ``decryption-check-failed``, ``bad-signature``,
    ...), or ``unknown-meter``, ``unsigned-reading``, ``not-encrypted``, ``no-reading``.

    A wireless frame that fits the layout its meter's telegrams have (:class:`_Layout`) is
    read by slicing; anything else, and every frame that is refused, by the general
    decoder (:func:`read_frame_general`). Both give the same result."""
    if not wired and type(frame) is bytes:
        found = _read_fast(frame, credentials)
        if found is not None:
            return found
    return read_frame_general(frame, credentials, wired=wired)


def read_frame_general(
    frame: bytes, credentials: Credentials, *, wired: bool = False
) -> LmnReading:
    """:func:`read_frame` through the general decoder (records as objects)."""
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
