"""EN 13757-3 / OMS application layer: CI field, transport headers, security, records.

Two transport headers are implemented::

    short (CI 0x7A):  CI  ACC  STS  CW(2, LE)
    long  (CI 0x72):  CI  ID(4, BCD LE)  M(2, LE)  VER  TYPE  ACC  STS  CW(2, LE)

The configuration word (CW) of security modes 0 and 5::

    bit 15 B (bidirectional)  14 A (accessibility)  13 S (synchronous)
    bits 12-8 M (security mode)  7-4 N (encrypted 16-byte blocks)  3-2 content  1-0 hops

In mode 5 the first ``16·N`` bytes after the header are AES-128-CBC encrypted and begin with
0x2F 0x2F once decrypted; any bytes after them are sent in the clear (partial encryption,
:attr:`ApplicationData.plaintext_records`). The long header carries the meter's own address,
which then (and not the link layer's) feeds the IV and selects the key: the case of a radio
adapter or of wired M-Bus.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from cryptography.hazmat.primitives.asymmetric import ec

from metrocloud.field.telegrams import errors, security
from metrocloud.field.telegrams.address import MeterAddress, address_from_fields
from metrocloud.field.telegrams.records import (
    Record,
    decode_records,
    encode_record,
    encode_records,
)

CI_LONG: Final = 0x72
CI_SHORT: Final = 0x7A
_MODE_BITS: Final = 0x1F00
_BLOCK_BITS: Final = 0x00F0

KeyLookup = Callable[[MeterAddress], bytes | None]
VerifyKeyLookup = Callable[[MeterAddress], ec.EllipticCurvePublicKey | None]


@dataclass(frozen=True, kw_only=True)
class ApplicationHeader:
    """The transport-layer header: short (CI 0x7A) or, with ``address``, long (CI 0x72).

    ``config_flags`` are the configuration word's bits other than the security mode and
    the number of encrypted blocks, which the encoder fills in.
    """

    access_number: int = 0
    status: int = 0
    security_mode: int = security.MODE_NONE
    config_flags: int = 0
    address: MeterAddress | None = None

    @property
    def ci(self) -> int:
        """The CI field this header is sent with."""
        return CI_SHORT if self.address is None else CI_LONG


@dataclass(frozen=True, kw_only=True)
class ApplicationData:
    """What wireless and wired telegrams share: the header, the records and what follows.

    ``manufacturer_data`` follows a 0x0F DIF (0x1F with ``more_records_follow``);
    ``signature`` is the ``r ‖ s`` of metrocloud's ECDSA block, which takes the place of the
    manufacturer data. ``plaintext_records`` counts the trailing records sent in the clear
    after the encrypted blocks of mode 5 (OMS partial encryption).
    """

    header: ApplicationHeader
    records: tuple[Record, ...] = ()
    manufacturer_data: bytes | None = None
    more_records_follow: bool = False
    signature: bytes | None = None
    plaintext_records: int = 0


T = TypeVar("T")


def frozen_instance(cls: type[T], fields: dict[str, object]) -> T:
    """An instance of the frozen dataclass ``cls`` with ``fields`` (all of them, already
    valid), without the cost of its ``__init__``: decoders build many of them."""
    instance: T = object.__new__(cls)
    object.__setattr__(instance, "__dict__", fields)
    return instance


def encode_application(
    data: ApplicationData,
    link_address: MeterAddress | None,
    key: bytes | None,
    signer: ec.EllipticCurvePrivateKey | None,
) -> bytes:
    """CI, header and payload of ``data``; ``ValueError`` for anything not encodable."""
    header = data.header
    address = header.address
    meter = address or link_address
    mode = header.security_mode
    access, status, flags = header.access_number, header.status, header.config_flags
    if not (0 <= access <= 0xFF and 0 <= status <= 0xFF):
        raise ValueError(f"access number and status are one byte each, not {access}, {status}")
    if flags & ~0xFFFF or flags & (_MODE_BITS | _BLOCK_BITS):
        raise ValueError("config_flags exclude the mode and block bits (0x1FF0)")
    records = data.records
    plaintext = data.plaintext_records
    split = len(records) - plaintext
    if plaintext and (split < 0 or plaintext < 0 or mode != security.MODE_AES_CBC):
        raise ValueError("plaintext_records needs security mode 5 and as many records")
    special_dif = 0x1F if data.more_records_follow else 0x0F
    manufacturer_data = data.manufacturer_data
    has_special = manufacturer_data is not None or data.signature is not None or signer is not None
    if has_special or data.more_records_follow:
        if data.more_records_follow and not has_special:
            raise ValueError("more_records_follow needs manufacturer data (possibly b'')")
        if manufacturer_data is not None and (data.signature is not None or signer is not None):
            raise ValueError("a telegram carries manufacturer data or a signature, not both")
        if manufacturer_data is not None and security.unpack_signature(manufacturer_data):
            raise ValueError("manufacturer data must not look like a metrocloud signature block")
    if address is None:
        head = bytes((CI_SHORT, access, status))
    else:
        wire = address.wire()  # M(2) ID(4) VER TYPE; the long header puts ID first
        head = bytes((CI_LONG,)) + wire[2:6] + wire[:2] + wire[6:] + bytes((access, status))
    if mode == security.MODE_NONE:
        if key is not None:
            raise ValueError("a key was given for an unencrypted telegram (security mode 0)")
        span = encode_records(records)
        payload = span
        if has_special:
            payload = span + bytes((special_dif,)) + _special(data, signer, meter, span)
        return head + flags.to_bytes(2, "little") + payload
    if mode != security.MODE_AES_CBC:
        raise ValueError(f"security mode {mode} is not implemented (0 and 5 are)")
    if key is None or len(key) != security.BLOCK:
        raise ValueError("security mode 5 needs a 16-byte key")
    if meter is None:
        raise ValueError("security mode 5 needs the meter's address for the IV")
    plain = bytearray(security.CHECK)
    for record in records[:split] if plaintext else records:
        encode_record(record, plain)
    tail = encode_records(records[split:]) if plaintext else b""
    if has_special and not tail:
        block = _special(data, signer, meter, bytes(plain[2:]))
        plain.append(special_dif)
        if block.endswith(b"\x2f"):
            raise ValueError("encrypted manufacturer data must not end in the 0x2F filler")
        plain += block
    plain += b"\x2f" * (-len(plain) % security.BLOCK)
    blocks = len(plain) // security.BLOCK
    if blocks > 15:
        raise ValueError(f"{len(plain)} bytes to encrypt exceed the 15 blocks mode 5 can name")
    if has_special and tail:
        span = bytes(plain[2:]) + tail
        tail += bytes((special_dif,)) + _special(data, signer, meter, span)
    config = flags | (mode << 8) | (blocks << 4)
    iv = security.mode5_iv(meter.wire(), access)
    ciphertext = security.encrypt_cbc(key, iv, bytes(plain))
    return head + config.to_bytes(2, "little") + ciphertext + tail


def _special(
    data: ApplicationData,
    signer: ec.EllipticCurvePrivateKey | None,
    meter: MeterAddress | None,
    span: bytes,
) -> bytes:
    """The bytes after the 0x0F/0x1F DIF: a signature block or the manufacturer data."""
    if signer is not None:
        if meter is None:
            raise ValueError("a signed telegram needs the meter's address")
        header = data.header
        message = security.signed_message(meter.wire(), header.access_number, header.status, span)
        return security.signature_block(signer, message)
    if data.signature is not None:
        return security.pack_signature(data.signature)
    return data.manufacturer_data or b""


def decode_application(
    buf: bytes,
    pos: int,
    end: int,
    link_address: MeterAddress | None,
    link_address_bytes: bytes | None,
    key_for: KeyLookup | None,
    verify_key_for: VerifyKeyLookup | None,
) -> dict[str, object]:
    """Decode ``buf[pos:end]`` (from the CI field on); ``Rejected`` on anything wrong.

    Returns the fields of :class:`ApplicationData`, for the link layer to complete.
    """
    if pos >= end:
        errors.reject(errors.TRUNCATED, "no CI field")
    ci = buf[pos]
    if ci == CI_SHORT:
        if end - pos < 5:
            errors.reject(errors.TRUNCATED, "short transport header needs 5 bytes")
        address = None
        meter = link_address
        meter_bytes = link_address_bytes
        access, status = buf[pos + 1], buf[pos + 2]
        config = buf[pos + 3] | (buf[pos + 4] << 8)
        pos += 5
    elif ci == CI_LONG:
        if end - pos < 13:
            errors.reject(errors.TRUNCATED, "long transport header needs 13 bytes")
        m_field = buf[pos + 5 : pos + 7]
        a_field = buf[pos + 1 : pos + 5] + buf[pos + 7 : pos + 9]
        address = meter = address_from_fields(m_field, a_field)
        meter_bytes = m_field + a_field
        access, status = buf[pos + 9], buf[pos + 10]
        config = buf[pos + 11] | (buf[pos + 12] << 8)
        pos += 13
    else:
        errors.reject(errors.UNKNOWN_CI, f"CI field 0x{ci:02X} is not implemented (0x72, 0x7A are)")
    mode = (config & _MODE_BITS) >> 8
    blocks = (config & _BLOCK_BITS) >> 4
    header = frozen_instance(
        ApplicationHeader,
        {
            "access_number": access,
            "status": status,
            "security_mode": mode,
            "config_flags": config & ~(_MODE_BITS | _BLOCK_BITS),
            "address": address,
        },
    )
    if mode == security.MODE_NONE:
        if blocks:
            errors.reject(errors.MALFORMED, f"security mode 0 with {blocks} encrypted blocks")
        data = buf
        first = pos
        boundary = end
    elif mode == security.MODE_AES_CBC:
        if not blocks:
            errors.reject(errors.MALFORMED, "security mode 5 with no encrypted block")
        size = blocks * security.BLOCK
        if pos + size > end:
            errors.reject(errors.BAD_LENGTH, f"{blocks} encrypted blocks exceed the telegram")
        if meter is None or meter_bytes is None:
            errors.reject(errors.MALFORMED, "encrypted telegram without a meter address for the IV")
        key = key_for(meter) if key_for is not None else None
        if key is None:
            errors.reject(errors.NO_KEY, f"no key for meter {meter}")
        if len(key) != security.BLOCK:
            errors.reject(errors.BAD_KEY, f"the key for meter {meter} is not 16 bytes")
        iv = security.mode5_iv(meter_bytes, access)
        plain = security.decrypt_cbc(key, iv, buf[pos : pos + size])
        if plain[:2] != security.CHECK:
            errors.reject(
                errors.DECRYPTION_CHECK_FAILED,
                f"decrypted payload of meter {meter} does not begin with 0x2F 0x2F",
            )
        data = plain if pos + size == end else plain + buf[pos + size : end]
        first = 2
        boundary = size
        end = len(data)
    else:
        errors.reject(
            errors.UNSUPPORTED_SECURITY, f"security mode {mode} is not implemented (0, 5 are)"
        )
    parsed = decode_records(data, first, end)
    records = parsed.records
    plaintext_records = 0
    if boundary < end:
        for start, stop in zip(parsed.starts, parsed.ends, strict=True):
            if start >= boundary:
                plaintext_records += 1
            elif stop > boundary:
                errors.reject(errors.MALFORMED, "a record crosses the end of the encrypted blocks")
    manufacturer_data: bytes | None = None
    signature: bytes | None = None
    special = parsed.special
    if special >= 0:
        if special < boundary < end:
            errors.reject(
                errors.MALFORMED,
                "manufacturer data inside the encrypted blocks, followed by plaintext",
            )
        manufacturer_data = bytes(data[special + 1 : end])
        if special < boundary and mode == security.MODE_AES_CBC:
            manufacturer_data = manufacturer_data.rstrip(b"\x2f")
        signature = security.unpack_signature(manufacturer_data)
        if signature is not None:
            manufacturer_data = None
    if verify_key_for is not None and meter is not None and meter_bytes is not None:
        public_key = verify_key_for(meter)
        if public_key is not None:
            if signature is None:
                errors.reject(errors.MISSING_SIGNATURE, f"meter {meter} must sign its telegrams")
            message = security.signed_message(meter_bytes, access, status, data[first:special])
            security.verify_signature(public_key, signature, message)
    return {
        "header": header,
        "records": tuple(records),
        "manufacturer_data": manufacturer_data,
        "more_records_follow": parsed.more_follow,
        "signature": signature,
        "plaintext_records": plaintext_records,
    }
