"""The gateway's fast path for the telegrams of the testbed's wireless meters (the per-meter
template in reverse, ``metrocloud.field.lmn._read_fast``) against the general decoder:
valid frames of every medium, and frames changed on the air, in the ciphertext, in the
decrypted payload (re-encrypted with the meter's key, CRCs made right), cut or extended,
under right, wrong and missing credentials. Whatever the fast path reads, the general
decoder reads the same; whatever it does not, the general decoder refuses or reads, and
``read_frame`` gives the general decoder's result or reason in every case."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lmn_keys import PUBLIC_DER, aes_key

from metrocloud.core.clock import index_time
from metrocloud.core.errors import Rejected
from metrocloud.field import smgw
from metrocloud.field.channel import ChannelConfig
from metrocloud.field.lmn import (
    Credentials,
    FrameRefused,
    LmnReading,
    _read_fast,
    read_frame,
    read_frame_general,
    sensor_telegram,
)
from metrocloud.field.meter import DEFAULT_ORIGIN_INDEX
from metrocloud.field.network import FieldNetwork
from metrocloud.field.sensors import Medium, Security, Sensor, SensorConfig
from metrocloud.field.smgw import MeterRecord, SmartMeterGateway
from metrocloud.field.telegrams import crc16_en13757
from metrocloud.field.telegrams.security import decrypt_cbc, encrypt_cbc

INDEX = DEFAULT_ORIGIN_INDEX + 1000
Outcome = tuple[object, ...]


def outcome(read: object, frame: bytes, credentials: Credentials) -> Outcome:
    assert callable(read)
    try:
        found = read(frame, credentials)
    except FrameRefused as exc:
        return ("refused", exc.reason, exc.detail, exc.meter_id)
    except Rejected as exc:
        return ("rejected", exc.reason, exc.detail)
    assert isinstance(found, LmnReading)
    return ("read", found)


def check_same(frame: bytes, credentials: Credentials) -> Outcome:
    """``read_frame`` (fast path first) and the general decoder agree; so does the fast
    path whenever it reads the frame at all."""
    general = outcome(read_frame_general, frame, credentials)
    assert outcome(read_frame, frame, credentials) == general
    fast = _read_fast(frame, credentials)
    if fast is not None:
        assert general == ("read", fast)
    return general


def unframe(frame: bytes) -> bytes:
    """Frame format A without its block CRCs."""
    body, pos = bytearray(frame[:10]), 12
    while pos < len(frame):
        size = min(16, len(frame) - pos - 2)
        body += frame[pos : pos + size]
        pos += size + 2
    return bytes(body)


def reframe(body: bytes) -> bytes:
    """Frame format A with correct block CRCs around ``body`` (L-field as it is)."""
    out = bytearray()
    for start, stop in [(0, 10)] + [(p, min(p + 16, len(body))) for p in range(10, len(body), 16)]:
        out += body[start:stop] + crc16_en13757(body[start:stop]).to_bytes(2, "big")
    return bytes(out)


def iv_of(body: bytes) -> bytes:
    return body[2:10] + bytes((body[11],)) * 8


def with_payload(frame: bytes, key: bytes, change: dict[int, int]) -> bytes:
    """``frame`` with bytes of its decrypted payload replaced, encrypted again with ``key``
    and framed with correct CRCs: the gateway's key decrypts it, the CRCs hold."""
    body = unframe(frame)
    plain = bytearray(decrypt_cbc(key, iv_of(body), body[15:]))
    for pos, value in change.items():
        plain[pos % len(plain)] = value
    return reframe(body[:15] + encrypt_cbc(key, iv_of(body), bytes(plain)))


@st.composite
def sensors(draw: st.DrawFn) -> Sensor:
    seed = draw(st.integers(0, 10_000))
    medium = draw(st.sampled_from(list(Medium)))
    config = SensorConfig(
        f"{seed:08d}",
        medium,
        seed=seed,
        key=aes_key(f"fast {seed}"),
        start_register=draw(st.sampled_from([0, 1, 2**31, 2**40, 2**47 - 10**9])),
    )
    return Sensor(config)


def credentials(sensor: Sensor, kind: str) -> Credentials:
    table: dict[str, tuple[Security, bytes | None]] = {
        "right": (Security.AES, sensor.key),
        "wrong-key": (Security.AES, aes_key("not the meter's")),
        "no-key": (Security.AES, None),
        "short-key": (Security.AES, b"\x01" * 15),
        "clear": (Security.NONE, None),
        "signing": (Security.ECDSA, PUBLIC_DER),
    }
    if kind == "unknown":
        return {}.get
    return {sensor.meter_id: table[kind]}.get


CREDENTIALS = ["right", "wrong-key", "no-key", "short-key", "clear", "signing", "unknown"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sensor=sensors(),
    step=st.integers(0, 5000),
    access=st.integers(0, 255),
    kind=st.sampled_from(CREDENTIALS),
)
def test_valid_frames_read_alike(sensor: Sensor, step: int, access: int, kind: str) -> None:
    frame = sensor_telegram(sensor, INDEX + step, access)
    got = check_same(frame, credentials(sensor, kind))
    if kind == "right":
        assert got[0] == "read"
        assert _read_fast(frame, credentials(sensor, kind)) is not None  # the fast path did it


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sensor=sensors(),
    step=st.integers(0, 5000),
    access=st.integers(0, 255),
    kind=st.sampled_from(CREDENTIALS),
    data=st.data(),
)
def test_changed_frames_read_alike(
    sensor: Sensor, step: int, access: int, kind: str, data: st.DataObject
) -> None:
    frame = sensor_telegram(sensor, INDEX + step, access)
    key = sensor.key
    assert key is not None
    how = data.draw(st.sampled_from(["bit", "body", "payload", "cut", "extend", "bytes"]))
    if how == "bit":  # on the air: a CRC catches it (or the frame names another meter)
        bit = data.draw(st.integers(0, 8 * len(frame) - 1))
        changed = bytearray(frame)
        changed[bit >> 3] ^= 0x80 >> (bit & 7)
        mutated = bytes(changed)
    elif how == "body":  # any byte but the CRCs, the CRCs made right again
        body = bytearray(unframe(frame))
        pos = data.draw(st.integers(0, len(body) - 1))
        body[pos] = data.draw(st.integers(0, 255))
        mutated = reframe(bytes(body))
    elif how == "payload":  # the decrypted payload: headers, fillers, check, values
        change = data.draw(
            st.dictionaries(st.integers(0, 31), st.integers(0, 255), min_size=1, max_size=3)
        )
        mutated = with_payload(frame, key, change)
    elif how == "cut":
        mutated = frame[: data.draw(st.integers(0, len(frame) - 1))]
    elif how == "extend":
        mutated = frame + data.draw(st.binary(min_size=1, max_size=20))
    else:  # anything with a valid first block of a known meter
        mutated = frame[:12] + data.draw(st.binary(max_size=60))
    check_same(mutated, credentials(sensor, kind))


@pytest.mark.parametrize("medium", list(Medium))
@pytest.mark.parametrize(
    "change",
    [
        {0: 0x2E},  # the decryption check
        {1: 0x00},
        {2: 0x07},  # the register's DIF
        {3: 0x04},  # its VIF: another unit
        {9: 0x80},  # the register's top byte: negative
        {10: 0x0F},  # the time's DIF: manufacturer data follows
        {11: 0x6C},  # the time's VIF: a date (type G)
        {12: 0x3C},  # minute 60
        {14: 0x00, 15: 0x00},  # day 0, month 0
        {14: 0x1F, 15: 0x02},  # 31 February
        {15: 0xFF},
        {16: 0x2F},  # heat: the flow temperature's DIF a filler / electricity: wraps
        {17: 0x5B},  # heat: another temperature
        {24: 0x00},  # heat: a filler
        {31: 0x2E},
    ],
)
def test_payload_changes_read_alike(medium: Medium, change: dict[int, int]) -> None:
    sensor = Sensor(SensorConfig("27182818", medium, seed=5, key=aes_key("fast payload")))
    assert sensor.key is not None
    frame = sensor_telegram(sensor, INDEX, 9)
    for kind in CREDENTIALS:
        creds = credentials(sensor, kind)
        check_same(with_payload(frame, sensor.key, change), creds)
        check_same(with_payload(frame, sensor.key, {}), creds)


def test_the_fast_path_refuses_nothing_the_general_reads_and_reads_what_it_should() -> None:
    """A negative register and an invalid time take the general path, which refuses them."""
    sensor = Sensor(SensorConfig("27182818", Medium.GAS, seed=5, key=aes_key("fast payload")))
    assert sensor.key is not None
    creds = credentials(sensor, "right")
    frame = sensor_telegram(sensor, INDEX, 9)
    assert _read_fast(frame, creds) == read_frame_general(frame, creds)
    negative = with_payload(frame, sensor.key, {9: 0xFF})
    assert _read_fast(negative, creds) is None
    assert check_same(negative, creds)[1] == "no-reading"
    bad_time = with_payload(frame, sensor.key, {14: 0x1F, 15: 0x02})  # 31 February
    assert _read_fast(bad_time, creds) is None
    assert check_same(bad_time, creds)[1] == "bad-value"
    # a bytearray takes the general path
    read = outcome(read_frame, bytearray(frame), creds)  # type: ignore[arg-type]
    assert (
        read
        == outcome(read_frame_general, bytearray(frame), creds)
        == ("read", _read_fast(frame, creds))
    )


def run_network(general: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[object, ...]:
    with monkeypatch.context() as patch:
        if general:
            patch.setattr(smgw, "read_frame", read_frame_general)
        first = DEFAULT_ORIGIN_INDEX + 1
        gateway = SmartMeterGateway("gw-fast", clock=lambda: index_time(first - 1))
        sensors = []
        for n in range(24):
            medium = list(Medium)[n % 4]
            key = aes_key(f"net {n}")
            sensor = Sensor(SensorConfig(f"{n:08d}", medium, seed=n, key=key))
            sensors.append(sensor)
            # every fourth meter configured with another key: refused, and logged
            known = key if n % 8 else aes_key("other")
            gateway.configure_meter(
                MeterRecord(sensor.meter_id, medium, f"c-{n}", Security.AES, known)
            )
        channel = ChannelConfig.realistic()
        network = FieldNetwork(gateway, sensors, origin=first, channel=channel, seed=3)
        network.run(first, 12)
        logs = {a: list(log.entries) for a, log in gateway.logs.items()}
        views = {f"c-{n}": gateway.consumer_view(f"c-{n}") for n in range(24)}
        return (network.outcomes, dict(network.stats.outcomes), logs, views)


def test_a_gateway_with_the_fast_path_does_what_one_without_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fast = run_network(False, monkeypatch)
    general = run_network(True, monkeypatch)
    assert fast == general
    assert "bad-crc" in fast[1] and "decryption-check-failed" in fast[1]
