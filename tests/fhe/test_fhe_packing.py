"""Intervals, index fingerprints, ciphertext parsing and encryption limits."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import FrozenInstanceError, dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrocloud.core.errors import Rejected
from metrocloud.fhe.coefficients import codec_for
from metrocloud.fhe.context import (
    CustomerKeyPair,
    Encryptor,
    deserialize_ciphertext,
    serialize,
)
from metrocloud.fhe.packing import Interval, index_fingerprint
from metrocloud.fhe.params import DEFAULT_PARAMETERS, FheParameters

P = DEFAULT_PARAMETERS
T = P.plaintext_modulus
H = P.row

# -- Interval -----------------------------------------------------------------------------------


def test_interval_is_a_frozen_value() -> None:
    iv = Interval(7, 5000)
    assert (iv.index, iv.energy_wh, iv.error) == (7, 5000, False)
    assert iv == Interval(7, 5000, error=False)
    assert iv != Interval(7, 5000, error=True)
    assert len({iv, Interval(7, 5000), Interval(8, 5000)}) == 2  # hashable
    with pytest.raises(FrozenInstanceError):
        iv.energy_wh = 1  # type: ignore[misc]


# -- index_fingerprint --------------------------------------------------------------------------


def test_index_fingerprint_is_deterministic_and_32_bit() -> None:
    assert index_fingerprint("m-1", 5) == index_fingerprint("m-1", 5)
    # Pinned: SHA-256 of b"metrocloud/index/m-1/5", first four bytes big-endian.
    import hashlib

    digest = hashlib.sha256(b"metrocloud/index/m-1/5").digest()
    assert index_fingerprint("m-1", 5) == int.from_bytes(digest[:4], "big")
    values = {index_fingerprint("m-1", i) for i in range(2000)}
    assert len(values) == 2000
    assert all(0 <= v < 2**32 for v in values)
    assert max(values) > 2**31  # really uses the 32nd bit
    assert index_fingerprint("m-1", 5) != index_fingerprint("m-2", 5)


@given(st.text(max_size=20), st.integers(0, 10**9))
def test_index_fingerprint_range_property(meter: str, index: int) -> None:
    fp = index_fingerprint(meter, index)
    assert 0 <= fp < 2**32
    assert fp < T // 2  # so it can be encrypted
    assert fp == index_fingerprint(meter, index)


# -- ciphertexts ----------------------------------------------------------------------------------


@dataclass
class Keys:
    keys: CustomerKeyPair
    enc: Encryptor
    other: CustomerKeyPair  # same parameters, another key
    depth2: CustomerKeyPair  # other parameters (depth 2): same N and t


@pytest.fixture(scope="module")
def fhe() -> Iterator[Keys]:
    keys = CustomerKeyPair.generate(P, [])
    other = CustomerKeyPair.generate(P, [])
    depth2 = CustomerKeyPair.generate(FheParameters(multiplicative_depth=2), [])
    yield Keys(keys, Encryptor(P, keys.context, keys.public_key), other, depth2)


def test_encrypt_then_parse_round_trip(fhe: Keys) -> None:
    coefficients = [k * 50 for k in range(96)] + [T - 1, index_fingerprint("m", 10)]
    slots = codec_for(P).to_slots(coefficients)  # what the register programs encrypt
    assert len(slots) == P.slots
    ct = deserialize_ciphertext(fhe.enc.encrypt(slots), P, fhe.keys.key_tag)
    assert fhe.keys.decrypt(ct, P.slots) == [v % T for v in slots]
    assert fhe.enc.key_tag == fhe.keys.key_tag


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x00",
        b"garbage",
        b"\x00" * 8,
        b"\x00" * 64,
        b"\xff" * 64,
        random.Random(2026).randbytes(4096),
    ],
    ids=["empty", "zero-byte", "text", "zeros-8", "zeros-64", "ones-64", "random"],
)
def test_deserialize_rejects_garbage(fhe: Keys, garbage: bytes) -> None:
    with pytest.raises(Rejected) as exc:
        deserialize_ciphertext(garbage, P, fhe.keys.key_tag)
    assert exc.value.reason == "malformed-ciphertext"


def test_deserialize_rejects_every_blob_of_a_fixed_random_sweep(fhe: Keys) -> None:
    """OpenFHE answers garbage with RuntimeError, ValueError, MemoryError or None: all Rejected.

    (Fixed seeds: arbitrary bit flips inside a real ciphertext's header can abort the process
    inside OpenFHE, so this sweep deliberately uses only whole random blobs.)
    """
    for seed in range(300):
        rnd = random.Random(seed)
        blob = rnd.randbytes(rnd.randrange(1, 5000))
        with pytest.raises(Rejected) as exc:
            deserialize_ciphertext(blob, P, fhe.keys.key_tag)
        assert exc.value.reason == "malformed-ciphertext"


@pytest.mark.parametrize("cut", [100, 0.5, -10])
def test_deserialize_rejects_truncated_ciphertexts(fhe: Keys, cut: float) -> None:
    data = fhe.enc.encrypt([1, 2, 3])
    end = int(len(data) * cut) if isinstance(cut, float) else int(cut)
    with pytest.raises(Rejected) as exc:
        deserialize_ciphertext(data[:end], P, fhe.keys.key_tag)
    assert exc.value.reason == "malformed-ciphertext"


def test_deserialize_rejects_another_key(fhe: Keys) -> None:
    foreign = Encryptor(P, fhe.other.context, fhe.other.public_key).encrypt([1, 2, 3])
    with pytest.raises(Rejected) as exc:
        deserialize_ciphertext(foreign, P, fhe.keys.key_tag)
    assert exc.value.reason == "wrong-crypto-context"
    # ... and it is fine under its own key.
    deserialize_ciphertext(foreign, P, fhe.other.key_tag)


def test_deserialize_rejects_other_parameters(fhe: Keys) -> None:
    p2 = fhe.depth2.params
    assert p2 != P
    assert (p2.ring_dimension, p2.plaintext_modulus) == (P.ring_dimension, T)
    data = Encryptor(p2, fhe.depth2.context, fhe.depth2.public_key).encrypt([1, 2, 3])
    # Under the customer's key tag: wrong parameters and wrong key.
    with pytest.raises(Rejected) as exc:
        deserialize_ciphertext(data, P, fhe.keys.key_tag)
    assert exc.value.reason == "wrong-crypto-context"
    # Even with its own key's tag, a depth-2 ciphertext does not belong to the default set
    # (same N and t, so only the depth tells them apart).
    with pytest.raises(Rejected) as exc:
        deserialize_ciphertext(data, P, fhe.depth2.key_tag)
    assert exc.value.reason == "wrong-crypto-context"
    assert "depth" in exc.value.detail
    # The other way round too.
    with pytest.raises(Rejected) as exc:
        deserialize_ciphertext(fhe.enc.encrypt([1]), p2, fhe.keys.key_tag)
    assert exc.value.reason == "wrong-crypto-context"
    # Under its own parameters it parses.
    ct = deserialize_ciphertext(data, p2, fhe.depth2.key_tag)
    assert fhe.depth2.decrypt(ct, 3) == [1, 2, 3]


def test_serialize_then_parse_again(fhe: Keys) -> None:
    ct = deserialize_ciphertext(fhe.enc.encrypt([5, 6]), P, fhe.keys.key_tag)
    again = deserialize_ciphertext(serialize(ct), P, fhe.keys.key_tag)
    assert fhe.keys.decrypt(again, 2) == [5, 6]


# -- encryption limits ------------------------------------------------------------------------

HALF = T // 2  # t is odd: the centred range is [-HALF, HALF]


@pytest.mark.parametrize(
    "bad", [-HALF - 1, HALF + 1, T - 1, T, T + 5, -T, 2**64, -(2**64)], ids=repr
)
def test_encrypt_refuses_values_outside_the_centred_range(fhe: Keys, bad: int) -> None:
    with pytest.raises(ValueError, match=r"\[-t/2, t/2\]"):
        fhe.enc.encrypt([0, 1, bad])


def test_encrypt_accepts_the_edges_of_its_range(fhe: Keys) -> None:
    edges = [0, 1, 5000, 2**32 - 1, HALF, -HALF, -1, -5000]
    ct = deserialize_ciphertext(fhe.enc.encrypt(edges), P, fhe.keys.key_tag)
    assert fhe.keys.decrypt(ct, len(edges)) == [v % T for v in edges]
    assert fhe.keys.decrypt(ct, 7)[4:7] == [HALF, HALF + 1, T - 1]  # decrypted: in [0, t)


def test_encrypt_refuses_too_many_values(fhe: Keys) -> None:
    with pytest.raises(ValueError, match="do not fit"):
        fhe.enc.encrypt([0] * (P.slots + 1))
    fhe.enc.encrypt([0] * P.slots)  # exactly N is fine


def test_two_encryptions_differ_but_decrypt_alike(fhe: Keys) -> None:
    a, b = fhe.enc.encrypt([42, 43]), fhe.enc.encrypt([42, 43])
    assert a != b
    ka, kb = (deserialize_ciphertext(x, P, fhe.keys.key_tag) for x in (a, b))
    assert fhe.keys.decrypt(ka, 2) == fhe.keys.decrypt(kb, 2) == [42, 43]


@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(-HALF, HALF), min_size=1, max_size=32))
def test_encrypt_decrypt_property(fhe: Keys, values: list[int]) -> None:
    ct = deserialize_ciphertext(fhe.enc.encrypt(values), P, fhe.keys.key_tag)
    assert fhe.keys.decrypt(ct, len(values)) == [v % T for v in values]
