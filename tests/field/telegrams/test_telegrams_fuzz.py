"""Bad input: the decoders answer every byte string with a telegram or ``Rejected`` (with a
known reason), never another exception, never a hang."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from telegram_strategies import ELS_LINK, keys, mbus_frame, telegrams, wmbus_frame

from metrocloud.core.errors import Rejected
from metrocloud.field.telegrams import (
    REASONS,
    decode_mbus,
    decode_mbus_frame,
    decode_wmbus,
    encode_mbus,
    encode_wmbus,
)

from test_telegrams_vectors import (  # isort: skip
    OMS_KEY,
    OMS_N21,
    OMS_N22,
    OMS_N54,
    OMS_N54_KEY,
    SENSOSTAR,
    SONTEX,
)

WIRELESS = [(OMS_N21, OMS_KEY), (SONTEX, None)]
WIRED = [(OMS_N22, None), (OMS_N54, OMS_N54_KEY), (SENSOSTAR, None)]


def outcome(decode: Callable[[], object]) -> str | None:
    """``None`` if ``decode`` returned, else the rejection reason; anything else fails."""
    try:
        decode()
    except Rejected as exc:
        assert exc.reason in REASONS, exc.reason
        assert exc.detail
        return exc.reason
    return None


def all_decoders(data: bytes, key: bytes | None = None) -> None:
    outcome(lambda: decode_wmbus(data, lambda meter: key))
    outcome(lambda: decode_wmbus(data, lambda meter: key, crc=False))
    outcome(lambda: decode_mbus_frame(data, lambda meter: key))


@settings(max_examples=1000)
@given(st.binary(max_size=300), st.none() | keys)
def test_arbitrary_bytes(data: bytes, key: bytes | None) -> None:
    all_decoders(data, key)


@settings(max_examples=500)
@given(st.binary(max_size=250), st.none() | keys, st.sampled_from(["7A", "72"]))
def test_arbitrary_application_data_in_valid_frames(
    payload: bytes, key: bytes | None, ci: str
) -> None:
    """Valid CRCs and checksums around random data: the record parser's own fuzzing."""
    header = "7A2A000000" if ci == "7A" else "72785634129315330300000000"
    wireless = wmbus_frame(ELS_LINK + bytes.fromhex(header) + payload[:230])
    outcome(lambda: decode_wmbus(wireless, lambda meter: key))
    wired = mbus_frame(bytes.fromhex("08FD") + bytes.fromhex(header) + payload[:240])
    outcome(lambda: decode_mbus(wired, lambda meter: key))


@settings(max_examples=300)
@given(
    st.lists(
        st.sampled_from(
            [
                "04",
                "0C",
                "0D",
                "84",
                "C4",
                "8480",
                "03",
                "FD",
                "FB",
                "7C",
                "FF",
                "6D",
                "6C",
                "E1",
                "2F",
                "0F",
                "1F",
                "00",
                "FFFFFFFF",
                "05",
                "C9",
                "F7",
                "80",
            ]
        ),
        max_size=40,
    )
)
def test_record_shaped_noise(parts: list[str]) -> None:
    """Random sequences of DIF/VIF-like bytes reach deeper into the record parser."""
    payload = bytes.fromhex("".join(parts))[:200]
    frame = wmbus_frame(ELS_LINK + bytes.fromhex("7A2A000000") + payload)
    outcome(lambda: decode_wmbus(frame))


@pytest.mark.parametrize(("frame", "key"), WIRELESS + WIRED)
def test_every_truncation_is_rejected(frame: bytes, key: bytes | None) -> None:
    decode = decode_wmbus if (frame, key) in WIRELESS else decode_mbus
    for cut in range(len(frame)):
        reason = outcome(lambda cut=cut: decode(frame[:cut], lambda meter: key))  # type: ignore[misc]
        assert reason in {"truncated", "bad-length", "bad-crc", "bad-checksum"}, (cut, reason)


@pytest.mark.parametrize(("frame", "key"), WIRELESS)
def test_every_single_bit_flip_in_a_wireless_frame_fails_a_crc(
    frame: bytes, key: bytes | None
) -> None:
    for bit in range(8 * len(frame)):
        flipped = bytearray(frame)
        flipped[bit // 8] ^= 1 << (bit % 8)
        reason = outcome(lambda f=bytes(flipped): decode_wmbus(f, lambda meter: key))  # type: ignore[misc]
        assert reason == "bad-crc", (bit, reason)


@pytest.mark.parametrize(("frame", "key"), WIRED)
def test_every_single_bit_flip_in_a_wired_frame_is_rejected(
    frame: bytes, key: bytes | None
) -> None:
    for bit in range(8 * len(frame)):
        index = bit // 8
        flipped = bytearray(frame)
        flipped[index] ^= 1 << (bit % 8)
        reason = outcome(lambda f=bytes(flipped): decode_mbus(f, lambda meter: key))  # type: ignore[misc]
        if 4 <= index < len(frame) - 1:  # C, A, CI, data and the checksum itself
            assert reason == "bad-checksum", (bit, reason)
        else:  # start characters, L-fields, stop character
            assert reason in {"malformed-telegram", "bad-length"}, (bit, reason)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(telegrams(), st.data())
def test_bit_flips_in_generated_telegrams_fail_the_crc(
    drawn: tuple[object, bytes | None], data: st.DataObject
) -> None:
    telegram, key = drawn
    try:
        frame = encode_wmbus(telegram, key)  # type: ignore[arg-type]
    except ValueError:
        return
    bit = data.draw(st.integers(0, 8 * len(frame) - 1))
    flipped = bytearray(frame)
    flipped[bit // 8] ^= 1 << (bit % 8)
    assert outcome(lambda: decode_wmbus(bytes(flipped), lambda meter: key)) == "bad-crc"


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(telegrams(wired=True), st.data())
def test_byte_errors_in_generated_wired_frames_fail_the_checksum(
    drawn: tuple[object, bytes | None], data: st.DataObject
) -> None:
    telegram, key = drawn
    try:
        frame = encode_mbus(telegram, key)  # type: ignore[arg-type]
    except ValueError:
        return
    index = data.draw(st.integers(4, len(frame) - 2))
    delta = data.draw(st.integers(1, 255))
    corrupted = bytearray(frame)
    corrupted[index] = (corrupted[index] + delta) & 0xFF
    assert outcome(lambda: decode_mbus(bytes(corrupted), lambda meter: key)) == "bad-checksum"


@settings(max_examples=100, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(telegrams(), keys)
def test_wrong_keys_are_rejected(drawn: tuple[object, bytes | None], wrong: bytes) -> None:
    telegram, key = drawn
    if key is None or key == wrong:
        return
    try:
        frame = encode_wmbus(telegram, key)  # type: ignore[arg-type]
    except ValueError:
        return
    reason = outcome(lambda: decode_wmbus(frame, lambda meter: wrong))
    assert reason == "decryption-check-failed"


@pytest.mark.parametrize(
    "payload",
    [
        "3F",  # reserved DIF
        "4F",
        "6F0000",
        "016F00",  # reserved VIF
        "01FD3B00",  # reserved FD code
        "01FB7000",  # FB code not implemented
        "0183FC0000",  # FC combinable table
    ],
)
def test_unknown_dif_and_vif_in_a_valid_frame(payload: str) -> None:
    frame = wmbus_frame(ELS_LINK + bytes.fromhex("7A2A000000") + bytes.fromhex(payload))
    reason = outcome(lambda: decode_wmbus(frame))
    assert reason in {"unknown-dif", "unknown-vif"}
    assert reason == ("unknown-dif" if payload[1] == "F" else "unknown-vif")


def test_ten_thousand_random_byte_strings_decode_quickly() -> None:
    rng = random.Random(7)
    samples = [rng.randbytes(rng.randrange(0, 300)) for _ in range(10_000)]
    # half of them with a plausible start, so they get past the first checks
    for i in range(0, len(samples), 2):
        samples[i] = bytes((len(samples[i]) - 1 & 0xFF, 0x44)) + samples[i][2:]
    start = time.perf_counter()
    for sample in samples:
        outcome(lambda s=sample: decode_wmbus(s))  # type: ignore[misc]
        outcome(lambda s=sample: decode_wmbus(s, crc=False))  # type: ignore[misc]
        outcome(lambda s=sample: decode_mbus_frame(s))  # type: ignore[misc]
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"30,000 decodes took {elapsed:.2f} s"


def test_ten_thousand_random_payloads_in_valid_frames_decode_quickly() -> None:
    rng = random.Random(8)
    start = time.perf_counter()
    for _ in range(10_000):
        payload = rng.randbytes(rng.randrange(0, 230))
        frame = wmbus_frame(ELS_LINK + bytes.fromhex("7A2A000000") + payload)
        outcome(lambda f=frame: decode_wmbus(f))  # type: ignore[misc]
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0, f"10,000 decodes took {elapsed:.2f} s"


@settings(max_examples=300)
@given(
    st.lists(
        st.sampled_from(
            [
                "04",
                "0C",
                "84",
                "C4",
                "8410",
                "03",
                "13",
                "2B",
                "FD17",
                "FB01",
                "6D",
                "6C",
                "83",
                "3C",
                "2F",
                "00",
                "12345678",
                "0D",
                "05",
                "0E",
                "7C03414243",
                "FF07",
            ]
        ),
        max_size=30,
    )
)
def test_whatever_is_accepted_is_re_encodable(parts: list[str]) -> None:
    """A decoded telegram always encodes again, to bytes that decode to the same telegram."""
    payload = bytes.fromhex("".join(parts))[:200]
    frame = wmbus_frame(ELS_LINK + bytes.fromhex("7A2A000000") + payload)
    try:
        telegram = decode_wmbus(frame)
    except Rejected:
        return
    assert decode_wmbus(encode_wmbus(telegram)) == telegram
