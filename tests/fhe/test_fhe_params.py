"""The default BFV parameter set: its arithmetic facts and a known-answer test at its edges.

Every parameter set can fail silently (wrong numbers, no error), so the default set is checked
against a plaintext simulation of exactly the operations the tariff programs use: packing,
addition, per-row rotations (block sums) and plaintext masks, with results that wrap mod t.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from metrocloud.fhe.context import (
    CustomerKeyPair,
    Encryptor,
    create_context,
    deserialize_ciphertext,
)
from metrocloud.fhe.evaluator import Evaluator, Placement, placement_steps
from metrocloud.fhe.params import DEFAULT_PARAMETERS, PLAINTEXT_MODULUS_40, FheParameters

P = DEFAULT_PARAMETERS
T = P.plaintext_modulus
H = P.row
TOP = T // 2 - 1  # the largest value the Encryptor accepts

# First twelve primes: as Miller–Rabin bases they decide primality exactly below 3.18e23.
_MR_BASES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
_MR_LIMIT = 318_665_857_834_031_151_167_461


def is_prime(n: int) -> bool:
    """Deterministic Miller–Rabin for n < 3.18e23."""
    assert n < _MR_LIMIT, "the fixed bases are only proven below 3.18e23"
    if n < 2:
        return False
    for p in _MR_BASES:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for a in _MR_BASES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def test_miller_rabin_itself() -> None:
    small = [n for n in range(200) if is_prime(n)]
    sieve = [n for n in range(2, 200) if all(n % d for d in range(2, int(n**0.5) + 1))]
    assert small == sieve
    # Strong pseudoprimes to several small bases, and a Carmichael number.
    for composite in (561, 3_215_031_751, 2_152_302_898_747, 3_474_749_660_383):
        assert not is_prime(composite)
    assert is_prime(2**61 - 1)
    assert not is_prime((2**31 - 1) * (2**19 - 1))
    assert not is_prime(T * 3)


# -- the parameter set ------------------------------------------------------------------------


def test_default_plaintext_modulus_is_prime_and_batching_friendly() -> None:
    assert T == PLAINTEXT_MODULUS_40
    assert is_prime(T)
    assert T % (2 * P.ring_dimension) == 1
    assert T > 2**40


def test_default_plaintext_modulus_is_the_smallest_such_prime_above_2_40() -> None:
    """What the comment in params.py claims: smallest prime > 2**40 with t = 1 mod 32768."""
    assert T % 32768 == 1
    first = 2**40 + 1  # 2**40 = 0 mod 32768
    assert not any(is_prime(c) for c in range(first, T, 32768))


def test_default_parameter_values() -> None:
    assert P.scheme == "BFV"
    assert P.ring_dimension == 8192
    assert P.slots == 8192
    assert P.row == 4096
    assert P.multiplicative_depth >= 1


def test_parameters_id_is_stable_and_distinguishes_sets() -> None:
    assert P.parameters_id == FheParameters().parameters_id
    assert P.parameters_id.startswith("bfv-")
    assert len(P.parameters_id) == len("bfv-") + 16
    assert FheParameters.from_dict(P.to_dict()) == P
    assert FheParameters.from_dict(P.to_dict()).parameters_id == P.parameters_id
    others = [
        FheParameters(multiplicative_depth=1),
        FheParameters(multiplicative_depth=3),
        FheParameters(security_level="HEStd_192_classic"),
        FheParameters(ring_dimension=16384),
    ]
    ids = {P.parameters_id} | {o.parameters_id for o in others}
    assert len(ids) == 1 + len(others)


def test_parameters_id_is_pinned() -> None:
    """The id travels with every ciphertext and result: it must not change by accident."""
    import hashlib
    import json

    raw = json.dumps(
        {
            "multiplicative_depth": 2,
            "plaintext_modulus": 1_099_511_922_689,
            "ring_dimension": 8192,
            "scheme": "BFV",
            "security_level": "HEStd_128_classic",
        },
        sort_keys=True,
    ).encode()
    assert P.parameters_id == "bfv-" + hashlib.sha256(raw).hexdigest()[:16]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scheme": "BGV"},
        {"scheme": "CKKS"},
        {"plaintext_modulus": 65537 + 2},  # not 1 mod 2N
        {"plaintext_modulus": PLAINTEXT_MODULUS_40 + 1},
        {"plaintext_modulus": 65537 + 16384 // 2},  # = 8193 mod 2N
        {"ring_dimension": 2**15},  # the default t is 1 mod 32768 but not 1 mod 65536
        {"multiplicative_depth": 0},
        {"multiplicative_depth": -1},
        {"multiplicative_depth": 31},
    ],
)
def test_bad_parameters_raise_value_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FheParameters(**kwargs)


def test_create_context_has_ring_dimension_8192() -> None:
    cc = create_context(P)
    assert cc.GetRingDimension() == 8192
    assert cc.GetPlaintextModulus() == T
    assert cc.GetMultiplicativeDepth() == P.multiplicative_depth


def test_create_context_refuses_an_insecure_ring_dimension() -> None:
    """N = 4096 is below what 128-bit security needs for this t and depth: a loud failure.

    OpenFHE itself refuses it (RuntimeError) before create_context's own ring-dimension check
    (ValueError) gets a chance; either is acceptable, silently using another N is not.
    """
    with pytest.raises((RuntimeError, ValueError), match="8192"):
        create_context(FheParameters(ring_dimension=4096))


# -- known-answer test ------------------------------------------------------------------------


def rotate(v: Sequence[int], step: int) -> list[int]:
    """Plaintext model of EvalRotate: a left rotation of each row of H slots by ``step``."""
    out = []
    for base in (0, H):
        row = v[base : base + H]
        out.extend(row[(j + step) % H] for j in range(H))
    return out


def model_block_sum(v: Sequence[int], steps: Sequence[int]) -> list[int]:
    out = list(v)
    for s in steps:
        out = [(a + b) % T for a, b in zip(out, rotate(out, s), strict=True)]
    return out


def model_assemble(v: Sequence[int], placements: Sequence[Placement]) -> list[int]:
    out = [0] * len(v)
    for p in placements:
        out[p.target] = (out[p.target] + p.weight * rotate(v, p.step)[p.target]) % T
    return out


BLOCK = 8
STEPS = [1, 2, 4]
BIG_WEIGHT = 987_654_321  # times a block sum near t/2: far beyond t, wraps

PLACEMENTS = [
    Placement(0, 0),  # block 0 stays
    Placement(BLOCK, 1),  # block 1 (wraps) to slot 1
    Placement(0, 2),
    Placement(BLOCK, 2),  # two sources added in one slot
    Placement(0, 3, BIG_WEIGHT),  # weighted: wraps beyond t
    Placement(2 * BLOCK, 4, 3),  # weighted sum of block 2
    Placement(H, H),  # row 1, step 0
    Placement(H + BLOCK, H + 1),  # row 1, shares step 7 with block 1
    Placement(H - BLOCK, 5),  # the last block of row 0 (cyclic edge)
]


def kat_vector() -> list[int]:
    v = [0] * P.slots
    v[0:4] = [0, 1, 5000, TOP]  # block 0: (t - 1) / 2 + 5000, no wrap
    v[BLOCK : BLOCK + 4] = [TOP, TOP, 5000, 1]  # block 1: t - 3 + 5001 -> wraps to 4998
    v[2 * BLOCK : 3 * BLOCK] = [TOP] * BLOCK  # block 2: 8 * TOP, wraps several times
    v[H - BLOCK : H] = [5000] * BLOCK  # last block of row 0
    v[H - 1] = TOP  # last slot of row 0: rotations must not leak it into row 1
    v[H : H + 4] = [1, 5000, TOP, 0]  # row 1
    v[H + BLOCK : H + BLOCK + 2] = [TOP, TOP]
    v[P.slots - 1] = TOP  # last slot of row 1
    return v


@dataclass
class Kat:
    keys: CustomerKeyPair
    enc: Encryptor
    ev: Evaluator
    ct: Any


@pytest.fixture(scope="module")
def kat() -> Iterator[Kat]:
    steps = set(STEPS) | placement_steps(PLACEMENTS)
    keys = CustomerKeyPair.generate(P, steps)
    enc = Encryptor(P, keys.context, keys.public_key)
    ct = deserialize_ciphertext(enc.encrypt(kat_vector()), P, keys.key_tag)
    yield Kat(keys, enc, Evaluator(keys.context, P.slots), ct)


def test_kat_encrypt_decrypt_round_trip(kat: Kat) -> None:
    assert kat.keys.decrypt(kat.ct, P.slots) == kat_vector()


def test_kat_add_all_wraps_mod_t(kat: Kat) -> None:
    total = kat.ev.add_all([kat.ct, kat.ct, kat.ct])
    expected = [(3 * v) % T for v in kat_vector()]
    assert kat.keys.decrypt(total, P.slots) == expected
    assert expected[3] == (3 * TOP) % T == 3 * TOP - T  # really wrapped


def test_kat_block_sum(kat: Kat) -> None:
    got = kat.keys.decrypt(kat.ev.block_sum(kat.ct, STEPS), P.slots)
    expected = model_block_sum(kat_vector(), STEPS)
    assert got == expected
    # Spelled out at the interesting slots:
    assert got[0] == T // 2 + 5000  # 0 + 1 + 5000 + (t - 3) / 2
    assert got[BLOCK] == 4998  # 2 * TOP + 5001 = t + 4998
    assert got[2 * BLOCK] == (BLOCK * TOP) % T
    assert got[H - BLOCK] == (7 * 5000 + TOP) % T
    assert got[H] == 1 + 5000 + TOP
    assert got[H + BLOCK] == 2 * TOP


def test_kat_assemble_with_masks(kat: Kat) -> None:
    sums = kat.ev.block_sum(kat.ct, STEPS)
    got = kat.keys.decrypt(kat.ev.assemble(sums, PLACEMENTS), P.slots)
    block_sums = model_block_sum(kat_vector(), STEPS)
    expected = model_assemble(block_sums, PLACEMENTS)
    assert got == expected
    b0, b1, b2 = block_sums[0], block_sums[BLOCK], block_sums[2 * BLOCK]
    assert got[0] == b0
    assert got[1] == b1 == 4998
    assert got[2] == (b0 + b1) % T
    assert got[3] == (BIG_WEIGHT * b0) % T
    assert BIG_WEIGHT * b0 > T  # the product wrapped
    assert got[4] == (3 * b2) % T
    assert got[5] == (8 * 5000 - 5000 + TOP) % T
    assert got[H] == block_sums[H]
    assert got[H + 1] == block_sums[H + BLOCK]
    placed = {p.target for p in PLACEMENTS}
    assert all(v == 0 for i, v in enumerate(got) if i not in placed)
