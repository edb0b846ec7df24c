"""Slot layout of a transmission, index fingerprints, ciphertext parsing and encryption limits."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrocloud.core.errors import Rejected
from metrocloud.fhe.context import (
    CustomerKeyPair,
    Encryptor,
    deserialize_ciphertext,
    serialize,
)
from metrocloud.fhe.packing import Interval, SlotLayout, index_fingerprint
from metrocloud.fhe.params import DEFAULT_PARAMETERS, FheParameters

P = DEFAULT_PARAMETERS
T = P.plaintext_modulus
H = P.row

# -- SlotLayout ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "block"),
    [(1, 1), (2, 2), (3, 4), (4, 4), (5, 8), (95, 128), (96, 128), (128, 128), (129, 256)],
)
def test_for_intervals_picks_the_smallest_power_of_two(count: int, block: int) -> None:
    layout = SlotLayout.for_intervals(P, count)
    assert layout.block == block


@given(st.integers(1, P.row // 2))
def test_for_intervals_block_is_a_power_of_two_at_least_count(count: int) -> None:
    block = SlotLayout.for_intervals(P, count).block
    assert block >= count
    assert block & (block - 1) == 0
    assert block < 2 * count or block == 1


def test_largest_layout_fills_row_zero() -> None:
    layout = SlotLayout.for_intervals(P, H // 2)
    assert layout.block == H // 2
    assert layout.used_slots == P.slots


@pytest.mark.parametrize("count", [H // 2 + 1, H, P.slots])
def test_too_many_intervals_raise(count: int) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        SlotLayout.for_intervals(P, count)


@pytest.mark.parametrize("block", [0, -4, 3, 96])
def test_block_must_be_a_power_of_two(block: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        SlotLayout(P, block)


def test_layout_positions() -> None:
    layout = SlotLayout.for_intervals(P, 96)
    assert (layout.valid_at, layout.error_at) == (0, 128)
    assert (layout.index_at, layout.fingerprint_at) == (H, H + 128)
    assert layout.used_slots == H + 256
    assert layout.blocksum_steps() == [1, 2, 4, 8, 16, 32, 64]
    assert SlotLayout(P, 1).blocksum_steps() == []


def test_pack_puts_energies_in_the_valid_or_error_block() -> None:
    layout = SlotLayout.for_intervals(P, 96)
    intervals = [
        Interval(1000, 17),
        Interval(1001, 0),
        Interval(1002, 5000, error=True),
        Interval(1003, 4),
        Interval(1004, 0, error=True),
    ]
    slots = layout.pack("m-1", intervals)
    b = layout.block
    assert len(slots) == layout.used_slots
    assert slots[0:5] == [17, 0, 0, 4, 0]
    assert slots[b : b + 5] == [0, 0, 5000, 0, 0]
    assert slots[H : H + 5] == [1000, 1001, 1002, 1003, 1004]
    assert slots[H + b : H + b + 5] == [index_fingerprint("m-1", i) for i in range(1000, 1005)]
    # Everything else is zero: padding of the blocks and the rest of both rows.
    used = (
        set(range(5)) | set(range(b, b + 5)) | set(range(H, H + 5)) | set(range(H + b, H + b + 5))
    )
    assert all(v == 0 for i, v in enumerate(slots) if i not in used)


@given(
    st.lists(st.tuples(st.integers(0, 5000), st.booleans()), min_size=0, max_size=96),
    st.integers(0, 10**7),
)
def test_pack_property(energies: list[tuple[int, bool]], start: int) -> None:
    layout = SlotLayout.for_intervals(P, 96)
    intervals = [Interval(start + k, e, err) for k, (e, err) in enumerate(energies)]
    slots = layout.pack("meter", intervals)
    for k, iv in enumerate(intervals):
        assert slots[layout.valid_at + k] == (0 if iv.error else iv.energy_wh)
        assert slots[layout.error_at + k] == (iv.energy_wh if iv.error else 0)
        assert slots[layout.index_at + k] == iv.index
        assert slots[layout.fingerprint_at + k] == index_fingerprint("meter", iv.index)
    n = len(intervals)
    assert sum(slots[: 2 * layout.block]) == sum(iv.energy_wh for iv in intervals)
    assert all(v == 0 for v in slots[n : layout.block])
    assert all(v == 0 for v in slots[layout.block + n : H])


def test_pack_refuses_too_many_intervals_and_negative_energy() -> None:
    layout = SlotLayout(P, 4)
    with pytest.raises(ValueError, match="do not fit"):
        layout.pack("m", [Interval(i, 1) for i in range(5)])
    with pytest.raises(ValueError, match="negative"):
        layout.pack("m", [Interval(7, -1)])


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
    depth1: CustomerKeyPair  # other parameters (depth 1): same N and t


@pytest.fixture(scope="module")
def fhe() -> Iterator[Keys]:
    keys = CustomerKeyPair.generate(P, [])
    other = CustomerKeyPair.generate(P, [])
    depth1 = CustomerKeyPair.generate(FheParameters(multiplicative_depth=1), [])
    yield Keys(keys, Encryptor(P, keys.context, keys.public_key), other, depth1)


def test_encrypt_then_parse_round_trip(fhe: Keys) -> None:
    layout = SlotLayout.for_intervals(P, 96)
    slots = layout.pack("m", [Interval(10 + k, k * 50, k % 3 == 0) for k in range(96)])
    ct = deserialize_ciphertext(fhe.enc.encrypt(slots), P, fhe.keys.key_tag)
    assert fhe.keys.decrypt(ct, layout.used_slots) == slots
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
    p1 = fhe.depth1.params
    assert (p1.ring_dimension, p1.plaintext_modulus) == (P.ring_dimension, T)
    data = Encryptor(p1, fhe.depth1.context, fhe.depth1.public_key).encrypt([1, 2, 3])
    # Under the customer's key tag: wrong parameters and wrong key.
    with pytest.raises(Rejected) as exc:
        deserialize_ciphertext(data, P, fhe.keys.key_tag)
    assert exc.value.reason == "wrong-crypto-context"
    # Even with its own key's tag, a depth-1 ciphertext does not belong to the default set
    # (same N and t, so only the depth tells them apart).
    with pytest.raises(Rejected) as exc:
        deserialize_ciphertext(data, P, fhe.depth1.key_tag)
    assert exc.value.reason == "wrong-crypto-context"
    assert "depth" in exc.value.detail
    # The other way round too.
    with pytest.raises(Rejected) as exc:
        deserialize_ciphertext(fhe.enc.encrypt([1]), p1, fhe.keys.key_tag)
    assert exc.value.reason == "wrong-crypto-context"
    # Under its own parameters it parses.
    ct = deserialize_ciphertext(data, p1, fhe.depth1.key_tag)
    assert fhe.depth1.decrypt(ct, 3) == [1, 2, 3]


def test_serialize_then_parse_again(fhe: Keys) -> None:
    ct = deserialize_ciphertext(fhe.enc.encrypt([5, 6]), P, fhe.keys.key_tag)
    again = deserialize_ciphertext(serialize(ct), P, fhe.keys.key_tag)
    assert fhe.keys.decrypt(again, 2) == [5, 6]


# -- encryption limits ------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, -(T // 2), T // 2 + 1, T - 1, T, T + 5, 2**64])
def test_encrypt_refuses_values_outside_zero_to_half_t(fhe: Keys, bad: int) -> None:
    with pytest.raises(ValueError, match="t/2"):
        fhe.enc.encrypt([0, 1, bad])


def test_encrypt_accepts_the_edges_of_its_range(fhe: Keys) -> None:
    edges = [0, 1, 5000, 2**32 - 1, T // 2 - 1]
    ct = deserialize_ciphertext(fhe.enc.encrypt(edges), P, fhe.keys.key_tag)
    assert fhe.keys.decrypt(ct, len(edges)) == edges


def test_encrypt_refuses_too_many_values(fhe: Keys) -> None:
    with pytest.raises(ValueError, match="do not fit"):
        fhe.enc.encrypt([0] * (P.slots + 1))


def test_two_encryptions_differ_but_decrypt_alike(fhe: Keys) -> None:
    a, b = fhe.enc.encrypt([42, 43]), fhe.enc.encrypt([42, 43])
    assert a != b
    ka, kb = (deserialize_ciphertext(x, P, fhe.keys.key_tag) for x in (a, b))
    assert fhe.keys.decrypt(ka, 2) == fhe.keys.decrypt(kb, 2) == [42, 43]


@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(0, T // 2 - 1), min_size=1, max_size=32))
def test_encrypt_decrypt_property(fhe: Keys, values: list[int]) -> None:
    ct = deserialize_ciphertext(fhe.enc.encrypt(values), P, fhe.keys.key_tag)
    assert fhe.keys.decrypt(ct, len(values)) == values
