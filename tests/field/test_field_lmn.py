"""A simulated meter's LMN telegram and the gateway's reading of it: every medium, security
and interface; wrong, missing and unexpected credentials; the telegram read by the generic
codec and, for the standard parts, by hand (frame format A CRCs, AES-128-CBC mode 5)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st
from lmn_keys import OTHER_SIGNER, PUBLIC_DER, SIGNER, aes_key

from metrocloud.core.clock import index_time
from metrocloud.core.errors import Rejected
from metrocloud.field.lmn import (
    STATUS_APPLICATION_ERROR,
    Credentials,
    LmnReading,
    address_of,
    general_telegram,
    read_frame,
    sensor_telegram,
)
from metrocloud.field.meter import DEFAULT_ORIGIN_INDEX, Meter, MeterStatus
from metrocloud.field.sensors import Interface, Medium, Security, Sensor, SensorConfig
from metrocloud.field.telegrams import (
    CI_LONG,
    CI_SHORT,
    MODE_AES_CBC,
    MODE_NONE,
    RSP_UD,
    SND_NR,
    DeviceType,
    Quantity,
    Telegram,
    WiredTelegram,
    crc16_en13757,
    decode_mbus,
    decode_wmbus,
)

KEY = aes_key("lmn")
OTHER_KEY = aes_key("lmn-other")
INDEX = DEFAULT_ORIGIN_INDEX + 1000  # 2026-01-11 10:00 UTC

COMBOS = [(m, s, i) for m in Medium for s in Security for i in Interface]


def make(
    medium: Medium,
    security: Security = Security.AES,
    interface: Interface = Interface.WIRELESS,
    *,
    number: str = "31415926",
    seed: int = 3,
    errors: bool = False,
    start_register: int = 0,
) -> Sensor:
    s = Sensor(
        SensorConfig(
            number,
            medium,
            seed=seed,
            security=security,
            key=KEY if security is Security.AES else None,
            interface=interface,
            start_register=start_register,
        )
    )
    if errors:  # SensorConfig has no error rate: a meter that flags every reading
        s.meter = Meter(dataclasses.replace(s.config.meter_config(), error_probability=1.0))
    return s


def signer_of(s: Sensor) -> ec.EllipticCurvePrivateKey | None:
    return SIGNER if s.config.security is Security.ECDSA else None


def telegram(s: Sensor, index: int = INDEX, access: int = 17) -> bytes:
    return sensor_telegram(s, index, access, signer=signer_of(s))


def credentials_for(*sensors: Sensor, key: bytes = KEY, public: bytes = PUBLIC_DER) -> Credentials:
    table: dict[str, tuple[Security, bytes | None]] = {}
    for s in sensors:
        sec = s.config.security
        table[s.meter_id] = (
            sec,
            key if sec is Security.AES else public if sec is Security.ECDSA else None,
        )
    return table.get


def wired(s: Sensor) -> bool:
    return s.config.interface is Interface.WIRED


def reason(call: object) -> str:
    assert callable(call)
    with pytest.raises(Rejected) as caught:
        call()
    return caught.value.reason


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize(("medium", "security", "interface"), COMBOS)
@pytest.mark.parametrize("errors", [False, True], ids=["ok", "flagged"])
def test_round_trip(medium: Medium, security: Security, interface: Interface, errors: bool) -> None:
    s = make(medium, security, interface, errors=errors, start_register=7_654_321)
    creds = credentials_for(s)
    for k, index in enumerate((INDEX, INDEX + 1, INDEX + 37)):
        frame = telegram(s, index, access=250 + k)  # 250, 251, 252: the byte wraps
        got = read_frame(frame, creds, wired=wired(s))
        want = s.reading(index)
        assert isinstance(got, LmnReading)
        assert got.meter_id == s.meter_id == "MCL-31415926"
        assert got.medium is medium
        assert got.access_number == (250 + k) % 256
        assert got.register == want.register
        assert got.time == index_time(index)
        assert got.time.tzinfo == timezone.utc
        assert got.time.minute % 15 == 0 and got.time.second == 0
        assert got.status == int(MeterStatus.ERROR if errors else MeterStatus.OK)
        assert got.status == int(want.reading.status)
        assert got.cyclic == want.cyclic
        if medium is Medium.HEAT:
            assert len(got.cyclic) == 2
        else:
            assert got.cyclic == ()


def test_error_flag_is_status_bit_0x08() -> None:
    s = make(Medium.WATER, Security.NONE, errors=True)
    frame = telegram(s)
    decoded = decode_wmbus(frame)
    assert decoded.header.status == STATUS_APPLICATION_ERROR == 0x08
    fine = decode_wmbus(telegram(make(Medium.WATER, Security.NONE)))
    assert fine.header.status == 0


def test_large_registers_survive() -> None:
    s = make(Medium.HEAT, Security.AES, start_register=2**46)
    got = read_frame(telegram(s), credentials_for(s))
    assert got.register == s.reading(INDEX).register > 2**46


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize("interface", list(Interface))
def test_aes_telegram_unreadable_without_or_with_a_wrong_key(interface: Interface) -> None:
    s = make(Medium.ELECTRICITY, Security.AES, interface)
    frame = telegram(s)
    w = wired(s)
    assert reason(lambda: read_frame(frame, credentials_for(s, key=OTHER_KEY), wired=w)) == (
        "decryption-check-failed"
    )
    # a gateway that holds no key for it (configured as unencrypted) cannot read it either
    no_key = {s.meter_id: (Security.NONE, None)}.get
    assert reason(lambda: read_frame(frame, no_key, wired=w)) == "no-key"
    assert read_frame(frame, credentials_for(s), wired=w).register == s.reading(INDEX).register


@pytest.mark.parametrize("interface", list(Interface))
def test_clear_telegram_from_an_aes_meter_is_refused(interface: Interface) -> None:
    configured = make(Medium.GAS, Security.AES, interface)
    clear = make(Medium.GAS, Security.NONE, interface)  # same address, no encryption
    frame = telegram(clear)
    creds = credentials_for(configured)
    assert reason(lambda: read_frame(frame, creds, wired=wired(clear))) == "not-encrypted"


@pytest.mark.parametrize("interface", list(Interface))
def test_unsigned_telegram_from_an_ecdsa_meter_is_refused(interface: Interface) -> None:
    configured = make(Medium.WATER, Security.ECDSA, interface)
    unsigned = make(Medium.WATER, Security.NONE, interface)
    creds = credentials_for(configured)
    with pytest.raises(Rejected):
        read_frame(telegram(unsigned), creds, wired=wired(unsigned))


def test_unsigned_telegram_reason_is_unsigned_reading() -> None:
    configured = make(Medium.WATER, Security.ECDSA)
    unsigned = make(Medium.WATER, Security.NONE)
    assert reason(lambda: read_frame(telegram(unsigned), credentials_for(configured))) == (
        "unsigned-reading"
    )


@pytest.mark.parametrize("interface", list(Interface))
def test_signature_by_another_key_is_refused(interface: Interface) -> None:
    s = make(Medium.HEAT, Security.ECDSA, interface)
    forged = sensor_telegram(s, INDEX, 3, signer=OTHER_SIGNER)
    assert reason(lambda: read_frame(forged, credentials_for(s), wired=wired(s))) == (
        "bad-signature"
    )
    # the meter's own signature, with the gateway holding some other meter's public key
    other_public = OTHER_SIGNER.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    genuine = telegram(s)
    creds = credentials_for(s, public=other_public)
    assert reason(lambda: read_frame(genuine, creds, wired=wired(s))) == "bad-signature"
    assert read_frame(genuine, credentials_for(s), wired=wired(s)).register == (
        s.reading(INDEX).register
    )


def test_a_configured_key_that_is_no_ec_key_is_refused() -> None:
    s = make(Medium.ELECTRICITY, Security.ECDSA)
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    der = ed.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert reason(lambda: read_frame(telegram(s), credentials_for(s, public=der))) == (
        "bad-signature"
    )


@pytest.mark.parametrize(("medium", "security", "interface"), COMBOS)
def test_unknown_meter_is_refused(medium: Medium, security: Security, interface: Interface) -> None:
    s = make(medium, security, interface)
    known = make(medium, security, interface, number="27182818")
    creds = credentials_for(known)
    assert reason(lambda: read_frame(telegram(s), creds, wired=wired(s))) == "unknown-meter"


def test_corrupted_frames_are_refused() -> None:
    s = make(Medium.ELECTRICITY, Security.NONE)
    frame = bytearray(telegram(s))
    frame[15] ^= 0x01
    assert reason(lambda: read_frame(bytes(frame), credentials_for(s))) == "bad-crc"
    w = make(Medium.ELECTRICITY, Security.NONE, Interface.WIRED)
    long = bytearray(telegram(w))
    long[10] ^= 0x01
    assert reason(lambda: read_frame(bytes(long), credentials_for(w), wired=True)) == (
        "bad-checksum"
    )
    # a wireless frame on the M-Bus and a wired one on the radio
    assert reason(lambda: read_frame(telegram(s), credentials_for(s), wired=True)) != ""
    assert reason(lambda: read_frame(telegram(w), credentials_for(w))) != ""


# --- standard telegrams -------------------------------------------------------------------


def strip_block_crcs(frame: bytes) -> bytes:
    """Frame format A without its block CRCs, each checked on the way (EN 13757-4)."""
    assert crc16_en13757(frame[:10]) == int.from_bytes(frame[10:12], "big")
    body, pos = bytearray(frame[:10]), 12
    while pos < len(frame):
        block = frame[pos : pos + min(16, len(frame) - pos - 2)]
        crc = frame[pos + len(block) : pos + len(block) + 2]
        assert crc16_en13757(block) == int.from_bytes(crc, "big")
        body += block
        pos += len(block) + 2
    assert len(body) == frame[0] + 1  # the L-field counts what follows it, without CRCs
    return bytes(body)


REGISTER_VIF = {
    Medium.ELECTRICITY: 0x03,
    Medium.HEAT: 0x03,
    Medium.GAS: 0x13,
    Medium.WATER: 0x13,
}


@pytest.mark.parametrize("medium", list(Medium))
def test_wireless_telegram_is_standard_frame_format_a_mode_5(medium: Medium) -> None:
    s = make(medium, Security.AES)
    frame = telegram(s, access=0x5A)
    body = strip_block_crcs(frame)
    address = address_of(s)
    assert body[1] == SND_NR
    assert body[2:10] == address.wire()
    m_field = ((ord("M") - 64) << 10) | ((ord("C") - 64) << 5) | (ord("L") - 64)
    assert body[2:4] == m_field.to_bytes(2, "little")
    assert body[4:8] == bytes.fromhex("26594131")  # "31415926" as BCD, least significant first
    assert body[9] == int(
        {
            Medium.ELECTRICITY: DeviceType.ELECTRICITY,
            Medium.GAS: DeviceType.GAS,
            Medium.WATER: DeviceType.WATER,
            Medium.HEAT: DeviceType.HEAT,
        }[medium]
    )
    ci, access, status = body[10], body[11], body[12]
    config = int.from_bytes(body[13:15], "little")
    assert (ci, access, status) == (CI_SHORT, 0x5A, 0)
    assert (config >> 8) & 0x1F == MODE_AES_CBC
    blocks = (config >> 4) & 0x0F
    ciphertext = body[15 : 15 + 16 * blocks]
    assert len(ciphertext) == 16 * blocks > 0
    iv = body[2:10] + bytes([access]) * 8
    dec = Cipher(algorithms.AES(KEY), modes.CBC(iv)).decryptor()
    plain = dec.update(ciphertext) + dec.finalize()
    assert plain[:2] == b"\x2f\x2f"
    # first record: 48-bit integer (DIF 0x06), energy in Wh or volume in litres
    assert plain[2] == 0x06
    assert plain[3] == REGISTER_VIF[medium]
    assert int.from_bytes(plain[4:10], "little") == s.reading(INDEX).register
    # second record: date and time, type F (DIF 0x04, VIF 0x6D)
    assert plain[10:12] == b"\x04\x6d"
    f = int.from_bytes(plain[12:16], "little")
    when = index_time(INDEX)
    assert f & 0x3F == when.minute
    assert (f >> 8) & 0x1F == when.hour
    assert (f >> 16) & 0x1F == when.day
    assert (f >> 24) & 0x0F == when.month


@pytest.mark.parametrize("medium", list(Medium))
@pytest.mark.parametrize("security", list(Security))
def test_wireless_telegram_decodes_with_the_generic_codec(
    medium: Medium, security: Security
) -> None:
    s = make(medium, security)
    want = s.reading(INDEX)
    public = SIGNER.public_key()
    decoded = decode_wmbus(
        telegram(s),
        lambda address: KEY,
        verify_key_for=lambda address: public if security is Security.ECDSA else None,
    )
    assert isinstance(decoded, Telegram)
    assert decoded.address == address_of(s)
    assert decoded.c_field == SND_NR
    mode = MODE_AES_CBC if security is Security.AES else MODE_NONE
    assert decoded.header.security_mode == mode
    assert (decoded.signature is not None) == (security is Security.ECDSA)
    values = {r.quantity: r for r in decoded.records}
    register = values[Quantity.ENERGY if medium.unit == "Wh" else Quantity.VOLUME]
    assert register.scaled is not None
    unit_scale = 1 if medium.unit == "Wh" else 1000  # m³ on the wire, litres in the meter
    assert register.scaled * unit_scale == want.register
    assert values[Quantity.DATE_TIME].value == datetime(2026, 1, 11, 10, 0)
    assert index_time(INDEX) == datetime(2026, 1, 11, 10, 0, tzinfo=timezone.utc)
    if medium is Medium.HEAT:
        flow = values[Quantity.FLOW_TEMPERATURE].scaled
        ret = values[Quantity.RETURN_TEMPERATURE].scaled
        assert flow is not None and ret is not None
        assert (float(flow), float(ret)) == tuple(v for _, v in want.cyclic)


@pytest.mark.parametrize("medium", list(Medium))
@pytest.mark.parametrize("security", list(Security))
def test_wired_telegram_is_a_standard_long_frame(medium: Medium, security: Security) -> None:
    s = make(medium, security, Interface.WIRED)
    frame = telegram(s)
    length = frame[1]
    assert (frame[0], frame[2], frame[3], frame[-1]) == (0x68, length, 0x68, 0x16)
    assert len(frame) == length + 6
    assert frame[-2] == sum(frame[4:-2]) & 0xFF
    assert frame[4] == RSP_UD
    assert frame[6] == CI_LONG  # the long header names the meter
    public = SIGNER.public_key()
    decoded = decode_mbus(
        frame,
        lambda address: KEY,
        verify_key_for=lambda address: public if security is Security.ECDSA else None,
    )
    assert isinstance(decoded, WiredTelegram)
    assert decoded.header.address == address_of(s)
    values = {r.quantity: r for r in decoded.records}
    register = values[Quantity.ENERGY if medium.unit == "Wh" else Quantity.VOLUME]
    assert register.scaled is not None
    assert register.scaled * (1 if medium.unit == "Wh" else 1000) == s.reading(INDEX).register


def test_telegram_changes_with_key_access_number_and_reading() -> None:
    s = make(Medium.ELECTRICITY, Security.AES)
    a = telegram(s, INDEX, 1)
    assert telegram(s, INDEX, 1) == a  # deterministic
    assert telegram(s, INDEX, 2) != a
    assert telegram(s, INDEX + 1, 1) != a
    s.change_key(OTHER_KEY)
    changed = telegram(s, INDEX, 1)
    assert changed != a
    assert reason(lambda: read_frame(changed, credentials_for(s))) == "decryption-check-failed"
    assert read_frame(changed, credentials_for(s, key=OTHER_KEY)).register == (
        s.reading(INDEX).register
    )


def test_ecdsa_meter_needs_its_private_key() -> None:
    s = make(Medium.ELECTRICITY, Security.ECDSA)
    with pytest.raises(ValueError):
        sensor_telegram(s, INDEX, 0)


@settings(max_examples=150, deadline=None)
@given(
    medium=st.sampled_from(list(Medium)),
    aes=st.booleans(),
    seed=st.integers(0, 10_000),
    steps=st.lists(st.integers(0, 3000), min_size=1, max_size=6),
    access=st.integers(0, 1000),
    jump=st.one_of(st.none(), st.integers(0, 10**9)),
    new_key=st.one_of(st.none(), st.binary(min_size=16, max_size=16)),
)
def test_the_fast_path_writes_the_general_encoders_bytes(
    medium: Medium,
    aes: bool,
    seed: int,
    steps: list[int],
    access: int,
    jump: int | None,
    new_key: bytes | None,
) -> None:
    security = Security.AES if aes else Security.NONE
    config = SensorConfig(
        f"{seed:08d}", medium, seed=seed, security=security, key=aes_key(str(seed)) if aes else None
    )
    fast, general = Sensor(config), Sensor(config)
    for sensor in (fast, general):
        if jump is not None:
            sensor.set_register(INDEX, jump)
        if new_key is not None and aes:
            sensor.change_key(new_key)
    for n, step in enumerate(sorted(steps)):
        index = DEFAULT_ORIGIN_INDEX + step
        assert sensor_telegram(fast, index, access + n) == general_telegram(
            general, index, access + n
        )
