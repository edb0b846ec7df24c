"""Security mode 5 (AES-128-CBC) and metrocloud's ECDSA-signed readings."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st
from telegram_strategies import ELS_LINK, mbus_frame, wmbus_frame

from metrocloud.core.errors import Rejected
from metrocloud.field.telegrams import (
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
from metrocloud.field.telegrams.security import (
    SIGNATURE_BLOCK_LENGTH,
    decrypt_cbc,
    encrypt_cbc,
    mode5_iv,
    unpack_signature,
)

METER = MeterAddress("MCL", "00001234", 1, DeviceType.ELECTRICITY)
KEY = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
SIGNING_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
READINGS = (
    Record(quantity=Quantity.ENERGY, value=123_456_789, unit="Wh", coding=Coding.INT48),
    Record(quantity=Quantity.POWER, value=2300, unit="W", coding=Coding.INT32),
    Record(quantity=Quantity.DATE_TIME, value=datetime(2026, 3, 1, 12, 15), coding=Coding.INT32),
)


def telegram(mode: int = 5, plaintext: int = 0, **fields: object) -> Telegram:
    return Telegram(
        address=METER,
        header=ApplicationHeader(access_number=9, status=0, security_mode=mode),
        records=READINGS,
        plaintext_records=plaintext,
        **fields,  # type: ignore[arg-type]
    )


def reason(call: object) -> str:
    assert callable(call)
    with pytest.raises(Rejected) as caught:
        call()
    return caught.value.reason


# --- AES-128-CBC --------------------------------------------------------------------------


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([KEY, bytes(16), b"k" * 16]) | st.binary(min_size=16, max_size=16),
            st.binary(min_size=16, max_size=16),
            st.integers(0, 6).flatmap(lambda n: st.binary(min_size=16 * n, max_size=16 * n)),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_cbc_equals_fresh_cryptography_cbc_contexts(
    calls: list[tuple[bytes, bytes, bytes]],
) -> None:
    # Interleaved keys and calls: the kept contexts must never leak state between calls.
    for key, iv, plaintext in calls:
        encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        expected = encryptor.update(plaintext) + encryptor.finalize()
        assert encrypt_cbc(key, iv, plaintext) == expected
        assert decrypt_cbc(key, iv, expected) == plaintext


def test_cbc_refuses_bad_sizes() -> None:
    calls: tuple[Callable[[], bytes], ...] = (
        lambda: encrypt_cbc(b"short", bytes(16), bytes(16)),
        lambda: encrypt_cbc(KEY, bytes(16), bytes(15)),
        lambda: encrypt_cbc(KEY, bytes(8), bytes(16)),
        lambda: decrypt_cbc(b"short", bytes(16), bytes(16)),
        lambda: decrypt_cbc(KEY, bytes(16), bytes(17)),
    )
    for call in calls:
        with pytest.raises(ValueError):
            call()


def test_mode5_iv_is_m_field_a_field_and_eight_access_numbers() -> None:
    assert mode5_iv(ELS_LINK[2:], 0x2A) == bytes.fromhex("93157856341233032A2A2A2A2A2A2A2A")


# --- mode 5 in telegrams ------------------------------------------------------------------


def test_mode5_round_trip_and_the_plaintext_is_not_visible() -> None:
    frame = encode_wmbus(telegram(), KEY)
    assert decode_wmbus(frame, lambda meter: KEY if meter == METER else None) == telegram()
    assert (123_456_789).to_bytes(6, "little") not in frame


def test_mode5_config_word_names_the_mode_and_the_encrypted_blocks() -> None:
    body = encode_wmbus(telegram(), KEY, crc=False)
    assert body[10] == 0x7A
    config = int.from_bytes(body[13:15], "little")
    assert (config >> 8) & 0x1F == 5
    assert (config >> 4) & 0x0F == (len(body) - 15) // 16 == 2


def test_partial_encryption_sends_the_trailing_records_in_the_clear() -> None:
    frame = encode_wmbus(telegram(plaintext=1), KEY, crc=False)
    assert frame.endswith(bytes.fromhex("046D0F2C4133"))  # 2026-03-01 12:15, canonical type F
    decoded = decode_wmbus(frame, lambda meter: KEY, crc=False)
    assert decoded == telegram(plaintext=1)


def test_the_same_telegram_encrypts_differently_under_other_access_numbers() -> None:
    first = encode_wmbus(telegram(), KEY, crc=False)
    other = dataclasses.replace(
        telegram(), header=ApplicationHeader(access_number=10, security_mode=5)
    )
    assert encode_wmbus(other, KEY, crc=False)[15:] != first[15:]


def test_no_key_bad_key_and_wrong_key_are_rejected_with_their_reasons() -> None:
    frame = encode_wmbus(telegram(), KEY)
    assert reason(lambda: decode_wmbus(frame)) == "no-key"
    assert reason(lambda: decode_wmbus(frame, lambda meter: None)) == "no-key"
    assert reason(lambda: decode_wmbus(frame, lambda meter: b"short")) == "bad-key"
    wrong = bytes(16)
    assert reason(lambda: decode_wmbus(frame, lambda meter: wrong)) == "decryption-check-failed"


@given(st.binary(min_size=16, max_size=16).filter(lambda key: key != KEY))
@settings(derandomize=True)
def test_any_other_key_fails_the_decryption_check(wrong: bytes) -> None:
    frame = encode_wmbus(telegram(), KEY)
    assert reason(lambda: decode_wmbus(frame, lambda meter: wrong)) == "decryption-check-failed"


def test_tampered_ciphertext_fails_the_decryption_check() -> None:
    body = bytearray(encode_wmbus(telegram(), KEY, crc=False))
    body[15] ^= 0x01  # first ciphertext byte: the first plaintext block is garbage
    assert reason(lambda: decode_wmbus(wmbus_frame(bytes(body)), lambda m: KEY)) == (
        "decryption-check-failed"
    )


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("0000", None),  # mode 0, fine
        ("1000", "malformed-telegram"),  # mode 0 with a block count
        ("0005", "malformed-telegram"),  # mode 5 without blocks
        ("2005", "bad-length"),  # two blocks announced, one present
        ("1007", "unsupported-security-mode"),
        ("100D", "unsupported-security-mode"),
    ],
)
def test_configuration_words(config: str, expected: str | None) -> None:
    body = ELS_LINK + bytes.fromhex("7A0100" + config) + bytes(16)
    if expected is None:
        decode_wmbus(wmbus_frame(body[:15]))
        return
    assert reason(lambda: decode_wmbus(wmbus_frame(body), lambda meter: KEY)) == expected


def test_encoder_refuses_inconsistent_security() -> None:
    with pytest.raises(ValueError):
        encode_wmbus(telegram(), None)
    with pytest.raises(ValueError):
        encode_wmbus(telegram(), b"short")
    with pytest.raises(ValueError):
        encode_wmbus(telegram(mode=0), KEY)
    with pytest.raises(ValueError):
        encode_wmbus(telegram(mode=0, plaintext=1))
    with pytest.raises(ValueError):
        encode_wmbus(telegram(mode=7), KEY)
    with pytest.raises(ValueError):
        encode_wmbus(telegram(plaintext=4), KEY)
    with pytest.raises(ValueError):
        encode_wmbus(telegram(manufacturer_data=b"\x01\x2f"), KEY)  # would look like filler
    too_many = dataclasses.replace(telegram(), records=READINGS * 20)
    with pytest.raises(ValueError):
        encode_wmbus(too_many, KEY)


def test_wired_mode5_needs_the_long_header_address() -> None:
    short = WiredTelegram(
        header=ApplicationHeader(access_number=1, security_mode=5), records=READINGS
    )
    with pytest.raises(ValueError):
        encode_mbus(short, KEY)
    frame = mbus_frame(bytes.fromhex("08FD7A010000051000") + bytes(16))
    assert reason(lambda: decode_mbus(frame, lambda meter: KEY)) == "malformed-telegram"


def test_a_record_crossing_the_encrypted_blocks_is_malformed() -> None:
    # The encrypted block ends with the DIF and VIF of a 32-bit record whose data follows
    # in the clear.
    plain = bytes.fromhex("2F2F040301000000") + b"\x2f" * 6 + bytes.fromhex("042B")
    iv = mode5_iv(ELS_LINK[2:], 1)
    body = ELS_LINK + bytes.fromhex("7A01001005") + encrypt_cbc(KEY, iv, plain) + bytes(4)
    assert reason(lambda: decode_wmbus(wmbus_frame(body), lambda m: KEY)) == "malformed-telegram"


# --- ECDSA-signed readings ----------------------------------------------------------------


def public(meter: MeterAddress) -> ec.EllipticCurvePublicKey | None:
    return SIGNING_KEY.public_key() if meter == METER else None


@pytest.mark.parametrize(("mode", "plaintext"), [(0, 0), (5, 0), (5, 1), (5, 3)])
def test_signed_readings_verify(mode: int, plaintext: int) -> None:
    key = KEY if mode == 5 else None
    frame = encode_wmbus(telegram(mode, plaintext), key, signer=SIGNING_KEY)
    decoded = decode_wmbus(frame, lambda meter: key, verify_key_for=public)
    assert decoded.signature is not None and len(decoded.signature) == 64
    assert decoded.manufacturer_data is None
    assert dataclasses.replace(decoded, signature=None) == telegram(mode, plaintext)
    # carrying the signature re-encodes the same bytes (ECDSA itself is randomised)
    assert encode_wmbus(decoded, key) == frame


def test_signed_wired_telegram_verifies() -> None:
    wired = WiredTelegram(
        header=ApplicationHeader(access_number=3, security_mode=5, address=METER), records=READINGS
    )
    frame = encode_mbus(wired, KEY, signer=SIGNING_KEY)
    decoded = decode_mbus(frame, lambda meter: KEY, verify_key_for=public)
    assert dataclasses.replace(decoded, signature=None) == wired


def test_signature_block_layout() -> None:
    body = encode_wmbus(telegram(mode=0), signer=SIGNING_KEY, crc=False)
    block = body[-SIGNATURE_BLOCK_LENGTH:]
    assert body[-SIGNATURE_BLOCK_LENGTH - 1] == 0x0F
    assert block[:3] == b"MC\x01" and block[-1] == 0x16
    assert unpack_signature(block) == block[3:-1]
    assert unpack_signature(block[:-1] + b"\x00") is None


def test_a_forged_or_altered_reading_is_rejected() -> None:
    decoded = decode_wmbus(encode_wmbus(telegram(mode=0), signer=SIGNING_KEY))
    assert decoded.signature is not None
    altered = dataclasses.replace(
        decoded, records=(dataclasses.replace(READINGS[0], value=1), *READINGS[1:])
    )
    frame = encode_wmbus(altered)  # valid CRCs, old signature
    assert reason(lambda: decode_wmbus(frame, verify_key_for=public)) == "bad-signature"
    replayed = dataclasses.replace(decoded, header=ApplicationHeader(access_number=10))
    assert reason(lambda: decode_wmbus(encode_wmbus(replayed), verify_key_for=public)) == (
        "bad-signature"
    )
    flipped = dataclasses.replace(decoded, signature=bytes(64))
    assert reason(lambda: decode_wmbus(encode_wmbus(flipped), verify_key_for=public)) == (
        "bad-signature"
    )
    by_other = encode_wmbus(telegram(mode=0), signer=OTHER_KEY)
    assert reason(lambda: decode_wmbus(by_other, verify_key_for=public)) == "bad-signature"


def test_unsigned_telegram_of_a_signing_meter_is_rejected() -> None:
    frame = encode_wmbus(telegram(mode=0))
    assert reason(lambda: decode_wmbus(frame, verify_key_for=public)) == "missing-signature"
    # meters without a verification key are not checked
    assert decode_wmbus(frame, verify_key_for=lambda meter: None) == telegram(mode=0)


def test_signatures_need_p256() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ValueError):
        encode_wmbus(telegram(mode=0), signer=p384)
    frame = encode_wmbus(telegram(mode=0), signer=SIGNING_KEY)
    assert reason(lambda: decode_wmbus(frame, verify_key_for=lambda m: p384.public_key())) == (
        "bad-signature"
    )


def test_manufacturer_data_and_signature_exclude_each_other() -> None:
    with pytest.raises(ValueError):
        encode_wmbus(telegram(mode=0, manufacturer_data=b"\x01"), signer=SIGNING_KEY)
    lookalike = b"MC\x01" + bytes(64) + b"\x16"
    with pytest.raises(ValueError):
        encode_wmbus(telegram(mode=0, manufacturer_data=lookalike))
