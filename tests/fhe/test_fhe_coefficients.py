"""Coefficient encoding: the negacyclic NTT, its modular arithmetic, and encrypted products.

The register tariffs compute weighted sums as coefficients of ``m(x) * q(x)`` in
``Z_t[x] / (x^N + 1)``. Everything here is checked against plaintext models that do not use
:mod:`metrocloud.fhe.coefficients` (:mod:`poly_helpers`), ending with known-answer tests of
encrypted products on the default parameter set: wrong parameters give wrong numbers
silently, so every one of the N coefficients is compared.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from poly_helpers import negacyclic_naive, negacyclic_product

from metrocloud.fhe.coefficients import (
    MAX_MODULUS_BITS,
    CoefficientCodec,
    NegacyclicNtt,
    codec_for,
    mul_mod,
    primitive_root,
)
from metrocloud.fhe.context import CustomerKeyPair, Encryptor, deserialize_ciphertext
from metrocloud.fhe.evaluator import Evaluator
from metrocloud.fhe.params import DEFAULT_PARAMETERS, PLAINTEXT_MODULUS_40, FheParameters

P = DEFAULT_PARAMETERS
T = P.plaintext_modulus
N = P.ring_dimension

SMALL_PRIMES = (17, 97, 193, 257, 7681, 12289)
#: (n, t) with t prime and t = 1 mod 2n, so that the primitive 2n-th roots exist
CASES = [(n, t) for n in (2, 4, 8, 16, 32, 64) for t in SMALL_PRIMES if (t - 1) % (2 * n) == 0]
#: the largest 42-bit prime that is 1 mod 16384: the edge of what the int64 limbs allow
PRIME_42 = 4_398_046_150_657
#: the smallest 43-bit prime that is 1 mod 16384: one bit too many
PRIME_43 = 4_398_047_051_777


def test_the_test_moduli() -> None:
    assert all(pow(2, t - 1, t) == 1 for t in SMALL_PRIMES)  # (they are prime: see test_params)
    assert {n for n, _ in CASES} == {2, 4, 8, 16, 32, 64}
    assert PRIME_42.bit_length() == MAX_MODULUS_BITS == 42
    assert PRIME_43.bit_length() == 43
    assert (PRIME_42 - 1) % 16384 == 0 and (PRIME_43 - 1) % 16384 == 0
    assert pow(3, PRIME_42 - 1, PRIME_42) == 1 and pow(3, PRIME_43 - 1, PRIME_43) == 1


@st.composite
def polynomials(draw: st.DrawFn, count: int = 1) -> tuple[int, int, list[list[int]]]:
    """A ring (n, t) and ``count`` polynomials in it, edge coefficients 0, 1, t-1 favoured."""
    n, t = draw(st.sampled_from(CASES))
    coefficient = st.sampled_from([0, 1, t - 1]) | st.integers(0, t - 1)
    polys = [draw(st.lists(coefficient, min_size=n, max_size=n)) for _ in range(count)]
    return n, t, polys


@cache
def primitive_roots_brute_force(order: int, t: int) -> frozenset[int]:
    """Every element of exact multiplicative order ``order`` modulo the small prime t."""
    return frozenset(
        r
        for r in range(1, t)
        if pow(r, order, t) == 1 and all(pow(r, d, t) != 1 for d in range(1, order))
    )


# -- the plaintext models themselves -----------------------------------------------------------


def test_naive_model_known_answers() -> None:
    t = 97
    # (1 + x) * x^3 = x^3 + x^4 = x^3 - 1 in Z[x] / (x^4 + 1)
    assert negacyclic_naive([1, 1, 0, 0], [0, 0, 0, 1], t) == [t - 1, 0, 0, 1]
    # x^2 * x^2 = x^4 = -1
    assert negacyclic_naive([0, 0, 1, 0], [0, 0, 1, 0], t) == [t - 1, 0, 0, 0]
    # (2 + 3x)(5 + 7x) = 10 + 29x + 21x^2 in x^2 + 1: 10 - 21 + 29x
    assert negacyclic_naive([2, 3], [5, 7], t) == [(10 - 21) % t, 29]


@settings(max_examples=60, deadline=None)
@given(polynomials(count=2))
def test_fast_model_equals_the_naive_one(case: tuple[int, int, list[list[int]]]) -> None:
    _, t, (a, b) = case
    assert negacyclic_product(a, b, t) == negacyclic_naive(a, b, t)


def test_fast_model_at_42_bits_equals_the_naive_one() -> None:
    rng = random.Random(42)
    t, n = PRIME_42, 64
    a = [t - 1] * 8 + [rng.randrange(t) for _ in range(n - 8)]
    b = [rng.randrange(t) for _ in range(n - 8)] + [t - 1] * 8
    assert negacyclic_product(a, b, t) == negacyclic_naive(a, b, t)


# -- mul_mod ---------------------------------------------------------------------------------------

EDGES_40 = sorted(
    {0, 1, 2, 3, 2**14 - 1, 2**14, 2**28 - 1, 2**28, 2**40, T // 2, T // 2 + 1, T - 2, T - 1}
)


def test_mul_mod_on_every_pair_of_edge_values() -> None:
    for t in (T, PRIME_42):
        edges = sorted({*EDGES_40, t - 2, t - 1} - {v for v in EDGES_40 if v >= t})
        a = np.array([x for x in edges for _ in edges], dtype=np.int64)
        b = np.array([y for _ in edges for y in edges], dtype=np.int64)
        got = mul_mod(a, b, t)
        assert got.dtype == np.int64
        assert [int(v) for v in got] == [int(x) * int(y) % t for x, y in zip(a, b, strict=True)]
    top = np.array([T - 1], dtype=np.int64)
    assert int(mul_mod(top, top, T)[0]) == 1  # (-1)^2


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([T, PRIME_42, 12289, 17]).flatmap(
        lambda t: st.tuples(
            st.just(t),
            st.lists(
                st.tuples(
                    st.sampled_from([0, 1, t - 1, t - 2]) | st.integers(0, t - 1),
                    st.sampled_from([0, 1, t - 1, t - 2]) | st.integers(0, t - 1),
                ),
                min_size=1,
                max_size=64,
            ),
        )
    )
)
def test_mul_mod_equals_big_integer_arithmetic(case: tuple[int, list[tuple[int, int]]]) -> None:
    t, pairs = case
    a = np.array([x for x, _ in pairs], dtype=np.int64)
    b = np.array([y for _, y in pairs], dtype=np.int64)
    assert [int(v) for v in mul_mod(a, b, t)] == [x * y % t for x, y in pairs]


def test_mul_mod_broadcasts() -> None:
    a = np.array([[1, 2], [T - 1, T - 2]], dtype=np.int64)
    b = np.array([T - 1, 3], dtype=np.int64)
    assert mul_mod(a, b[None, :], T).tolist() == [[T - 1, 6], [1, (3 * (T - 2)) % T]]


# -- primitive roots -------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "t"), CASES)
def test_primitive_root_has_exact_order(n: int, t: int) -> None:
    order = 2 * n
    w = primitive_root(order, t)
    assert 1 < w < t
    assert pow(w, order, t) == 1
    assert all(pow(w, k, t) != 1 for k in range(1, order))
    assert w in primitive_roots_brute_force(order, t)


@pytest.mark.parametrize(("order", "t"), [(2 * N, T), (16384, PRIME_42), (32768, T), (2, 17)])
def test_primitive_root_of_large_order(order: int, t: int) -> None:
    w = primitive_root(order, t)
    assert pow(w, order, t) == 1
    assert pow(w, order // 2, t) == t - 1  # for a power-of-two order: exactly that order


@pytest.mark.parametrize(
    ("order", "t"),
    [
        (32, 17),
        (4, 7),
        (64, 97),
        (128, 193),
        (2 * 16384, 12289),
        (65536, T),
        (2 * 16384, 65537 + 2),
    ],
)
def test_primitive_root_refuses_a_modulus_without_such_roots(order: int, t: int) -> None:
    assert (t - 1) % order != 0
    with pytest.raises(ValueError, match="roots of unity"):
        primitive_root(order, t)


# -- NegacyclicNtt at small n ----------------------------------------------------------------------


@pytest.mark.parametrize(("n", "t"), CASES)
def test_forward_evaluates_at_all_primitive_2n_th_roots(n: int, t: int) -> None:
    ntt = NegacyclicNtt(n, t)
    x = [0, 1] + [0] * (n - 2)
    roots = [int(r) for r in ntt.forward(x)]  # the polynomial x evaluates to the roots themselves
    assert set(roots) == primitive_roots_brute_force(2 * n, t)
    assert len(roots) == n
    rng = random.Random(n * t)
    for _ in range(5):
        m = [rng.randrange(t) for _ in range(n)]
        values = [int(v) for v in ntt.forward(m)]
        assert values == [sum(c * pow(r, i, t) for i, c in enumerate(m)) % t for r in roots]


@settings(max_examples=100, deadline=None)
@given(polynomials())
def test_inverse_undoes_forward(case: tuple[int, int, list[list[int]]]) -> None:
    n, t, (m,) = case
    ntt = NegacyclicNtt(n, t)
    values = ntt.forward(m)
    assert values.shape == (n,)
    assert all(0 <= int(v) < t for v in values)
    assert ntt.inverse(values).tolist() == m
    assert ntt.forward(ntt.inverse(m)).tolist() == m  # and the other way round


@settings(max_examples=100, deadline=None)
@given(polynomials(count=2))
def test_element_wise_product_of_transforms_is_the_negacyclic_product(
    case: tuple[int, int, list[list[int]]],
) -> None:
    n, t, (a, b) = case
    ntt = NegacyclicNtt(n, t)
    values = [int(x) * int(y) % t for x, y in zip(ntt.forward(a), ntt.forward(b), strict=True)]
    assert ntt.inverse(values).tolist() == negacyclic_naive(a, b, t)


@settings(max_examples=60, deadline=None)
@given(polynomials(count=2))
def test_transform_is_linear(case: tuple[int, int, list[list[int]]]) -> None:
    n, t, (a, b) = case
    ntt = NegacyclicNtt(n, t)
    total = [(x + y) % t for x, y in zip(a, b, strict=True)]
    expected = [(int(x) + int(y)) % t for x, y in zip(ntt.forward(a), ntt.forward(b), strict=True)]
    assert ntt.forward(total).tolist() == expected


@settings(max_examples=60, deadline=None)
@given(polynomials(), st.integers(0, 200))
def test_multiplying_by_x_is_a_negacyclic_shift(
    case: tuple[int, int, list[list[int]]], k: int
) -> None:
    """x^k * m: coefficients move k places up, those passing x^n come back negated."""
    n, t, (m,) = case
    ntt = NegacyclicNtt(n, t)
    x_to_k = [0] * n
    x_to_k[k % n] = 1 if (k // n) % 2 == 0 else t - 1  # x^n = -1
    product = ntt.inverse(mul_mod(ntt.forward(x_to_k), ntt.forward(m), t)).tolist()
    shifted = list(m)
    for _ in range(k):
        shifted = [(-shifted[-1]) % t, *shifted[:-1]]
    assert product == shifted


@pytest.mark.parametrize(("n", "t"), CASES[:6])
def test_x_to_the_n_is_minus_one(n: int, t: int) -> None:
    ntt = NegacyclicNtt(n, t)
    x_to_the_n_minus_1 = [0] * (n - 1) + [1]
    x = [0, 1] + [0] * (n - 2)
    product = mul_mod(ntt.forward(x_to_the_n_minus_1), ntt.forward(x), t)
    assert ntt.inverse(product).tolist() == [t - 1] + [0] * (n - 1)
    assert ntt.forward([t - 1] + [0] * (n - 1)).tolist() == [t - 1] * n  # the constant -1


def test_inputs_are_reduced_mod_t_and_zero_padded() -> None:
    n, t = 8, 97
    ntt = NegacyclicNtt(n, t)
    m = [5, 96, 0, 1, 50, 2, 3, 4]
    same = [5 + t, -1, 2 * t, 1 - 3 * t, 50, 2, 3 + 10 * t, 4 - t]
    assert ntt.forward(same).tolist() == ntt.forward(m).tolist()
    assert ntt.inverse(same).tolist() == ntt.inverse(m).tolist()
    assert ntt.forward([7, 8]).tolist() == ntt.forward([7, 8, 0, 0, 0, 0, 0, 0]).tolist()
    assert ntt.forward(np.array(m, dtype=np.int64)).tolist() == ntt.forward(m).tolist()
    assert ntt.forward([]).tolist() == [0] * n
    with pytest.raises(ValueError, match="length 8"):
        ntt.forward([0] * 9)
    with pytest.raises(ValueError, match="length 8"):
        ntt.inverse([0] * 9)


def test_input_is_not_modified() -> None:
    ntt = NegacyclicNtt(8, 17)
    m = np.array([1, 2, 3, 4, 5, 6, 7, 8], dtype=np.int64)
    ntt.forward(m)
    ntt.inverse(m)
    assert m.tolist() == [1, 2, 3, 4, 5, 6, 7, 8]


@pytest.mark.parametrize("n", [0, 1, -4, 3, 6, 12, 96, 8191])
def test_ntt_refuses_a_length_that_is_no_power_of_two(n: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        NegacyclicNtt(n, 12289)


@pytest.mark.parametrize("t", [PRIME_43, 2**43 + 1, 2**64 + 1])
def test_ntt_refuses_a_modulus_over_42_bits(t: int) -> None:
    with pytest.raises(ValueError, match="42"):
        NegacyclicNtt(16, t)


@pytest.mark.parametrize(("n", "t"), [(16, 17), (8192, 12289), (4 * N, T)])
def test_ntt_refuses_a_modulus_without_2n_th_roots(n: int, t: int) -> None:
    with pytest.raises(ValueError, match="roots of unity"):
        NegacyclicNtt(n, t)


# -- full size -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ntt_8192() -> NegacyclicNtt:
    return NegacyclicNtt(N, T)


def full_size_vector(seed: int, t: int) -> list[int]:
    rng = random.Random(seed)
    v = [rng.randrange(t) for _ in range(N)]
    v[:4] = [0, 1, t - 1, t - 2]
    v[N // 2 - 1 : N // 2 + 1] = [t - 1, t - 1]
    v[-3:] = [t - 1, 1, t - 1]
    return v


def test_full_size_round_trip(ntt_8192: NegacyclicNtt) -> None:
    for seed in range(3):
        m = full_size_vector(seed, T)
        values = ntt_8192.forward(m)
        assert ntt_8192.inverse(values).tolist() == m
        assert ntt_8192.forward(ntt_8192.inverse(m)).tolist() == m
    assert ntt_8192.forward([0] * N).tolist() == [0] * N
    assert ntt_8192.forward([1]).tolist() == [1] * N


def test_full_size_roots_are_distinct_primitive_2n_th_roots(ntt_8192: NegacyclicNtt) -> None:
    roots = [int(r) for r in ntt_8192.forward([0, 1])]
    assert len(set(roots)) == N  # x^N + 1 has exactly N roots mod t: these are all of them
    assert all(pow(r, N, T) == T - 1 for r in roots)


@pytest.mark.parametrize("t", [T, PRIME_42])
def test_full_size_product_equals_the_model(t: int) -> None:
    ntt = NegacyclicNtt(N, t)
    a, b = full_size_vector(1, t), full_size_vector(2, t)
    product = ntt.inverse(mul_mod(ntt.forward(a), ntt.forward(b), t)).tolist()
    assert product == negacyclic_product(a, b, t)
    assert ntt.inverse(ntt.forward(a)).tolist() == a


# -- CoefficientCodec ------------------------------------------------------------------------------


def test_codec_slots_are_centred_and_round_trip() -> None:
    codec = CoefficientCodec(P)
    for seed in range(2):
        m = full_size_vector(seed, T)
        slots = codec.to_slots(m)
        assert len(slots) == N
        assert all(isinstance(v, int) for v in slots)
        assert all(-(T // 2) <= v <= T // 2 for v in slots)
        assert min(slots) < -(T // 4) and max(slots) > T // 4  # really uses both halves
        assert [v % T for v in slots] == codec.ntt.forward(m).tolist()
        assert codec.from_slots(slots) == m
        assert codec.from_slots([v % T for v in slots]) == m  # decrypted slots lie in [0, t)
    assert codec.to_slots([T - 1]) == [-1] * N
    assert codec.to_slots([]) == [0] * N
    assert codec.from_slots([0] * N) == [0] * N


@pytest.mark.parametrize("length", [0, 1, N - 1, N + 1, 2 * N])
def test_codec_refuses_a_wrong_number_of_slots(length: int) -> None:
    with pytest.raises(ValueError, match="slots"):
        codec_for(P).from_slots([0] * length)


def test_codec_is_cached_per_parameter_set() -> None:
    assert codec_for(P) is codec_for(FheParameters())
    other = FheParameters(ring_dimension=16384)
    big = codec_for(other)
    assert big is not codec_for(P)
    assert big.ntt.n == 16384
    m = [1, 2, 3, T - 1]
    assert big.from_slots(big.to_slots(m)) == m + [0] * (16384 - 4)


# -- encrypted known answers on the default parameter set ------------------------------------------


@dataclass
class Fhe:
    keys: CustomerKeyPair
    enc: Encryptor
    ev: Evaluator
    codec: CoefficientCodec

    def encrypt(self, coefficients: list[int]) -> Any:
        data = self.enc.encrypt(self.codec.to_slots(coefficients))
        return deserialize_ciphertext(data, P, self.keys.key_tag)

    def plaintext(self, coefficients: list[int]) -> Any:
        return self.keys.context.MakePackedPlaintext(self.codec.to_slots(coefficients))

    def coefficients(self, ct: Any) -> list[int]:
        return self.codec.from_slots(self.keys.decrypt(ct, P.slots))


@pytest.fixture(scope="module")
def fhe() -> Iterator[Fhe]:
    keys = CustomerKeyPair.generate(P, [])
    enc = Encryptor(P, keys.context, keys.public_key)
    yield Fhe(keys, enc, Evaluator(keys.context, P.slots), codec_for(P))


def test_the_known_answers_run_on_the_default_parameters(fhe: Fhe) -> None:
    cc = fhe.keys.context
    assert (cc.GetRingDimension(), cc.GetPlaintextModulus()) == (8192, PLAINTEXT_MODULUS_40)
    assert cc.GetMultiplicativeDepth() == P.multiplicative_depth == 1


def test_encrypted_coefficients_round_trip(fhe: Fhe) -> None:
    m = full_size_vector(7, T)
    assert fhe.coefficients(fhe.encrypt(m)) == m


def test_encrypted_product_by_x_to_the_n_minus_1(fhe: Fhe) -> None:
    """(1 + x) * x^(N-1) = x^(N-1) + x^N = x^(N-1) - 1: the wrap-around, spelled out."""
    one_plus_x = [1, 1] + [0] * (N - 2)
    x_top = [0] * (N - 1) + [1]
    got = fhe.coefficients(fhe.keys.context.EvalMult(fhe.encrypt(one_plus_x), fhe.plaintext(x_top)))
    assert got == [T - 1] + [0] * (N - 2) + [1]


def test_encrypted_dense_product_equals_the_model_in_every_coefficient(fhe: Fhe) -> None:
    """Full-range coefficients on both sides: every one of the N products wraps mod t."""
    m, q = full_size_vector(11, T), full_size_vector(12, T)
    got = fhe.coefficients(fhe.keys.context.EvalMult(fhe.encrypt(m), fhe.plaintext(q)))
    assert got == negacyclic_product(m, q, T)


def test_encrypted_sum_then_product_equals_the_model(fhe: Fhe) -> None:
    """The register programs' circuit: a sum of ciphertexts, then one plaintext product."""
    parts = [full_size_vector(20 + k, T) for k in range(4)]
    total = [sum(column) % T for column in zip(*parts, strict=True)]
    q = full_size_vector(30, T)
    period = fhe.ev.add_all([fhe.encrypt(p) for p in parts])
    assert fhe.coefficients(period) == total
    got = fhe.coefficients(fhe.keys.context.EvalMult(period, fhe.plaintext(q)))
    assert got == negacyclic_product(total, q, T)
