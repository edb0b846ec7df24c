"""The default BFV parameter set: its arithmetic facts and a known-answer test at its edges.

Every parameter set can fail silently (wrong numbers, no error), so the default set is checked
against a plaintext model of exactly the operations the register tariff programs use: packed
encryption, additions of a month of transmissions, and one product with a plaintext weight
polynomial (coefficient encoding, :mod:`metrocloud.fhe.coefficients`), at the largest values
the programs accept, with every coefficient compared.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from poly_helpers import negacyclic_product

from metrocloud.fhe.coefficients import codec_for
from metrocloud.fhe.context import (
    CustomerKeyPair,
    Encryptor,
    create_context,
    deserialize_ciphertext,
)
from metrocloud.fhe.evaluator import Evaluator
from metrocloud.fhe.packing import Interval, index_fingerprint
from metrocloud.fhe.params import DEFAULT_PARAMETERS, PLAINTEXT_MODULUS_40, FheParameters
from metrocloud.tariffs.base import TariffConfigError
from metrocloud.tariffs.register import CoefficientLayout
from metrocloud.tariffs.taf1 import MAX_INTERVALS_PER_PERIOD, Taf1

P = DEFAULT_PARAMETERS
T = P.plaintext_modulus
N = P.ring_dimension
H = P.row
TOP = T // 2  # the largest value the Encryptor accepts (and -TOP the smallest)

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
    assert P.multiplicative_depth == 1  # what the known-answer test below covers


def test_parameters_id_is_stable_and_distinguishes_sets() -> None:
    assert P.parameters_id == FheParameters().parameters_id
    assert P.parameters_id.startswith("bfv-")
    assert len(P.parameters_id) == len("bfv-") + 16
    assert FheParameters.from_dict(P.to_dict()) == P
    assert FheParameters.from_dict(P.to_dict()).parameters_id == P.parameters_id
    others = [
        FheParameters(multiplicative_depth=2),
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
            "multiplicative_depth": 1,
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


# -- known-answer test: slots -------------------------------------------------------------------


def kat_vector() -> list[int]:
    """Slot values at the edges of what the Encryptor takes: [-t/2, t/2], t odd."""
    v = [0] * P.slots
    v[0:6] = [0, 1, 5000, TOP, -TOP, -1]
    v[H - 2 : H + 2] = [TOP, TOP, -TOP, 2**32 - 1]  # the two rows' edge
    v[P.slots - 1] = -TOP
    return v


@dataclass
class Kat:
    keys: CustomerKeyPair
    enc: Encryptor
    ev: Evaluator
    ct: Any

    def encrypt(self, slots: list[int]) -> Any:
        return deserialize_ciphertext(self.enc.encrypt(slots), P, self.keys.key_tag)


@pytest.fixture(scope="module")
def kat() -> Iterator[Kat]:
    keys = CustomerKeyPair.generate(P, [])
    enc = Encryptor(P, keys.context, keys.public_key)
    ct = deserialize_ciphertext(enc.encrypt(kat_vector()), P, keys.key_tag)
    yield Kat(keys, enc, Evaluator(keys.context, P.slots), ct)


def test_kat_encrypt_decrypt_round_trip(kat: Kat) -> None:
    """Decrypted slots come back in [0, t): negative values as t - |v|."""
    got = kat.keys.decrypt(kat.ct, P.slots)
    assert got == [v % T for v in kat_vector()]
    assert got[3:6] == [TOP, TOP + 1, T - 1]  # t/2 rounded down and up: t = 2 * TOP + 1


def test_kat_add_all_wraps_mod_t(kat: Kat) -> None:
    total = kat.ev.add_all([kat.ct, kat.ct, kat.ct])
    expected = [(3 * v) % T for v in kat_vector()]
    assert kat.keys.decrypt(total, P.slots) == expected
    assert expected[3] == (3 * TOP) % T == 3 * TOP - T  # really wrapped
    assert expected[4] == (-3 * TOP) % T == 2 * T - 3 * TOP  # and below zero


def test_kat_add_all_refuses_nothing(kat: Kat) -> None:
    with pytest.raises(ValueError, match="nothing"):
        kat.ev.add_all([])


# -- known-answer test: the register programs' worst case ------------------------------------------
#
# A 31-day month, one transmission a day, every quarter hour at the largest energy a meter may
# report, priced at the largest price TAF 1 accepts: the bill is the largest value the circuit
# (31 additions, one plaintext product) ever produces, just below t. Both weight windows carry
# the price, so both outputs of the product are at that edge.

MAX_WH = 5000
MAX_PRICE = (T - 1) // (MAX_WH * MAX_INTERVALS_PER_PERIOD)
DAYS, PER_DAY = 31, 96
PERIOD_START = 1_000_003  # an odd quarter hour
METER = "m-worst-case"
LAYOUT = CoefficientLayout(P)


def test_the_worst_case_is_taf1s_limit() -> None:
    assert DAYS * PER_DAY == MAX_INTERVALS_PER_PERIOD <= LAYOUT.capacity
    assert MAX_WH * MAX_INTERVALS_PER_PERIOD * MAX_PRICE < T
    assert MAX_WH * MAX_INTERVALS_PER_PERIOD * (MAX_PRICE + 1) >= T
    Taf1(P, {"price_mct_per_kwh": MAX_PRICE, "max_interval_wh": MAX_WH})
    with pytest.raises(TariffConfigError, match="exact range"):
        Taf1(P, {"price_mct_per_kwh": MAX_PRICE + 1, "max_interval_wh": MAX_WH})


def worst_case_days() -> list[list[Interval]]:
    return [
        [Interval(PERIOD_START + d * PER_DAY + j, MAX_WH) for j in range(PER_DAY)]
        for d in range(DAYS)
    ]


@dataclass
class WorstCase:
    days: list[list[int]]  # the coefficients of each transmission, as CoefficientLayout packs them
    weights: list[int]  # the product polynomial
    period: list[int]  # the decrypted coefficients of the sum of all transmissions
    product: list[int]  # ... and of its product with the weights


@pytest.fixture(scope="module")
def worst_case() -> Iterator[WorstCase]:
    keys = CustomerKeyPair.generate(P, [])
    enc = Encryptor(P, keys.context, keys.public_key)
    codec = codec_for(P)
    days = [LAYOUT.pack(METER, day, PERIOD_START) for day in worst_case_days()]
    cts = [
        deserialize_ciphertext(enc.encrypt(codec.to_slots([c % T for c in d])), P, keys.key_tag)
        for d in days
    ]
    (weights,) = LAYOUT.weights([[MAX_PRICE] * LAYOUT.capacity] * 2)
    period = Evaluator(keys.context, P.slots).add_all(cts)
    product = keys.context.EvalMult(
        period, keys.context.MakePackedPlaintext(codec.to_slots(weights))
    )
    yield WorstCase(
        days,
        weights,
        codec.from_slots(keys.decrypt(period, P.slots)),
        codec.from_slots(keys.decrypt(product, P.slots)),
    )


def test_worst_case_transmissions_are_packed_as_expected(worst_case: WorstCase) -> None:
    for d, coefficients in enumerate(worst_case.days):
        first = d * PER_DAY
        assert len(coefficients) == H
        assert coefficients[first : first + PER_DAY] == [MAX_WH] * PER_DAY
        assert all(
            c == 0
            for j, c in enumerate(coefficients[: LAYOUT.capacity])
            if not first <= j < first + PER_DAY
        )
        indices = range(PERIOD_START + first, PERIOD_START + first + PER_DAY)
        assert coefficients[LAYOUT.error_at :] == [
            0,
            PER_DAY * MAX_WH,
            sum(indices),
            sum(index_fingerprint(METER, i) for i in indices),
        ]
    assert LAYOUT.outputs_at == (H - 1, N - 1)
    w = worst_case.weights
    assert len(w) == N
    assert w[4:H] == [MAX_PRICE] * LAYOUT.capacity == w[H + 4 :]
    assert w[:4] == [0] * 4 == w[H : H + 4]


def test_worst_case_period_sum_is_exact(worst_case: WorstCase) -> None:
    period = worst_case.period
    indices = range(PERIOD_START, PERIOD_START + MAX_INTERVALS_PER_PERIOD)
    fingerprints = sum(index_fingerprint(METER, i) for i in indices)
    assert fingerprints > T  # the fingerprint sum wraps
    expected = [MAX_WH] * MAX_INTERVALS_PER_PERIOD + [0] * (
        LAYOUT.capacity - MAX_INTERVALS_PER_PERIOD
    )
    expected += [0, MAX_WH * MAX_INTERVALS_PER_PERIOD, sum(indices) % T, fingerprints % T]
    expected += [0] * (N - H)
    assert period == expected
    # The spare coefficients, spelled out.
    assert period[LAYOUT.error_at] == 0
    assert period[LAYOUT.total_at] == 14_880_000
    assert period[LAYOUT.index_at] == sum(indices)
    assert period[LAYOUT.fingerprint_at] == fingerprints - (fingerprints // T) * T


def test_worst_case_product_is_exact_just_below_t(worst_case: WorstCase) -> None:
    bill = MAX_WH * MAX_INTERVALS_PER_PERIOD * MAX_PRICE
    assert T - T // 1000 < bill < T  # the edge of the exact range
    for at in LAYOUT.outputs_at:
        assert worst_case.product[at] == bill


def test_worst_case_product_equals_the_model_in_every_coefficient(worst_case: WorstCase) -> None:
    """Not only the outputs: the whole product, wrapped coefficients included."""
    assert worst_case.product == negacyclic_product(worst_case.period, worst_case.weights, T)
