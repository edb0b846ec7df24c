"""Exact integer arithmetic on BFV ciphertexts (``metrocloud.fhe.arith``).

Every operation is decrypted and compared lane by lane with its plaintext reference, on
128-lane vectors whose first lanes are the edges (0, 1, the threshold and its neighbours,
the largest value). Circuits of depth <= 2 run on N=8192 at depth 2 (the register
tariffs' default set has depth 1); the 13-bit comparisons, which need depth 6 with the
multiplication and the mask that follow them, run on N=16384, depth 6 over every 13-bit
value. The circuit simulator
checks the depth each operation documents, exhaustively over small bit widths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrocloud.fhe.arith import (
    COMPARISON_PARAMETERS,
    MAX_DIV_FLOOR_THRESHOLDS,
    Arith,
    Reference,
    SimulatedCiphertext,
    SimulatedContext,
    depth_of,
    log_depth,
    to_bits,
)
from metrocloud.fhe.params import PLAINTEXT_MODULUS_40, FheParameters

if TYPE_CHECKING:
    from metrocloud.fhe.context import CustomerKeyPair

T = PLAINTEXT_MODULUS_40
LANES = 128
FEW = settings(max_examples=12, deadline=None)
KAT_THRESHOLDS = (0, 1, 2500, 4095, 4096, 5000, 8191)
DEEP = COMPARISON_PARAMETERS


@dataclass
class Fhe:
    """A customer key pair with its relinearization key, and helpers on ``lanes`` slots."""

    keys: CustomerKeyPair
    ar: Arith
    lanes: int

    @classmethod
    def create(cls, params: FheParameters, lanes: int) -> Fhe:
        # imported here: the plain and simulated tests run where openfhe does not import
        from metrocloud.fhe.context import CustomerKeyPair

        keys = CustomerKeyPair.generate(params, [], relinearization=True)
        return cls(keys, Arith(keys.context, params.plaintext_modulus), lanes)

    @property
    def ref(self) -> Reference:
        return self.ar.reference

    def enc(self, values: Sequence[int]) -> Any:
        return self.keys.context.Encrypt(self.keys.public_key, self.ar.vector(values))

    def enc_bits(self, values: Sequence[int], n_bits: int) -> tuple[list[Any], list[list[int]]]:
        bits = to_bits(values, n_bits)
        return [self.enc(b) for b in bits], bits

    def dec(self, ct: Any) -> list[int]:
        return self.keys.decrypt(ct, self.lanes)


DEPTH_2 = FheParameters(multiplicative_depth=2)


@pytest.fixture(scope="module")
def fhe() -> Fhe:
    """N = 8192 at depth 2: key generation once for the module."""
    return Fhe.create(DEPTH_2, LANES)


@pytest.fixture(scope="module")
def deep() -> Fhe:
    """N=16384, depth 6: 13-bit comparison, then x value, then a mask (every 13-bit value)."""
    return Fhe.create(DEEP, DEEP.slots)


# -- strategies -----------------------------------------------------------------------------------

EDGE_VALUES = (0, 1, 2, T // 2 - 1, T // 2, T // 2 + 1, T - 2, T - 1)


@st.composite
def lanes_mod_t(draw: st.DrawFn) -> list[int]:
    """128 lanes in [0, t): the edges first, then anything."""
    rest = draw(st.lists(st.integers(0, T - 1), min_size=LANES, max_size=LANES))
    return (list(EDGE_VALUES) + rest)[:LANES]


@st.composite
def small_ints(draw: st.DrawFn, bound: int = 1 << 20) -> list[int]:
    """128 lanes whose products stay exact (< t); the edges 0, 1 and the bound first."""
    rest = draw(st.lists(st.integers(0, bound), min_size=LANES, max_size=LANES))
    return [0, 1, bound, bound - 1, *rest][:LANES]


@st.composite
def bit_lanes(draw: st.DrawFn) -> list[int]:
    return draw(st.lists(st.integers(0, 1), min_size=LANES, max_size=LANES))


def with_edges(values: list[int], n_bits: int, threshold: int) -> list[int]:
    """Put 0, 1, T-1, T, T+1 and 2^n - 1 (those in range) in the first lanes."""
    top = (1 << n_bits) - 1
    edges = [v for v in (0, 1, threshold - 1, threshold, threshold + 1, top) if 0 <= v <= top]
    return (edges + values)[:LANES]


@st.composite
def bits_and_threshold(draw: st.DrawFn, max_bits: int) -> tuple[int, int, list[int]]:
    n = draw(st.integers(1, max_bits))
    threshold = draw(st.integers(-1, (1 << n) + 1))
    values = draw(st.lists(st.integers(0, (1 << n) - 1), min_size=LANES, max_size=LANES))
    return n, threshold, with_edges(values, n, threshold)


# -- to_bits / from_bits (plain) ------------------------------------------------------------------


@given(
    st.integers(1, 40).flatmap(
        lambda n: st.tuples(st.just(n), st.lists(st.integers(0, (1 << n) - 1), max_size=50))
    )
)
def test_to_bits_round_trip(case: tuple[int, list[int]]) -> None:
    n, values = case
    bits = to_bits(values, n)
    assert len(bits) == n
    assert all(b in (0, 1) for col in bits for b in col)
    assert Reference(1 << 64).from_bits(bits) == values


def test_to_bits_is_lsb_first_and_bit_sliced() -> None:
    assert to_bits([6, 1, 8191], 13)[:3] == [[0, 1, 1], [1, 0, 1], [1, 0, 1]]
    assert to_bits([4096], 13)[12] == [1]


@pytest.mark.parametrize(("values", "n"), [([8192], 13), ([-1], 13), ([2], 1), ([0], 0)])
def test_to_bits_refuses_values_that_do_not_fit(values: list[int], n: int) -> None:
    with pytest.raises(ValueError):
        to_bits(values, n)


def test_from_bits_round_trip_encrypted(fhe: Fhe) -> None:
    values = [0, 1, 4095, 4096, 8191, *range(2, 2 + LANES - 5)]
    cts, _ = fhe.enc_bits(values, 13)
    assert fhe.dec(fhe.ar.from_bits(cts)) == values


@given(st.lists(st.integers(0, (1 << 32) - 1), min_size=LANES, max_size=LANES))
@FEW
def test_from_bits_32_bit(fhe: Fhe, values: list[int]) -> None:
    values[:3] = [0, 1, (1 << 32) - 1]
    cts, bits = fhe.enc_bits(values, 32)
    assert fhe.dec(fhe.ar.from_bits(cts)) == fhe.ref.from_bits(bits) == values


# -- ring operations ------------------------------------------------------------------------------


@given(lanes_mod_t(), lanes_mod_t())
@FEW
def test_add_sub_neg(fhe: Fhe, a: list[int], b: list[int]) -> None:
    ca, cb = fhe.enc(a), fhe.enc(b)
    assert fhe.dec(fhe.ar.add(ca, cb)) == fhe.ref.add(a, b)
    assert fhe.dec(fhe.ar.sub(ca, cb)) == fhe.ref.sub(a, b)
    assert fhe.dec(fhe.ar.neg(ca)) == fhe.ref.neg(a)


@given(lanes_mod_t(), st.integers(-T, 2 * T), lanes_mod_t())
@FEW
def test_add_plain_constant_and_vector(fhe: Fhe, a: list[int], k: int, v: list[int]) -> None:
    ca = fhe.enc(a)
    assert fhe.dec(fhe.ar.add_plain(ca, k)) == fhe.ref.add_plain(a, k)
    assert fhe.dec(fhe.ar.add_plain(ca, v)) == fhe.ref.add_plain(a, v)
    assert fhe.dec(fhe.ar.add_plain(ca, v[:5])) == fhe.ref.add_plain(a, v[:5])


@given(
    lanes_mod_t(),
    st.sampled_from([0, 1, -1, 2, 1000, T - 1, T // 2]) | st.integers(-T, T),
    lanes_mod_t(),
)
@FEW
def test_mul_plain_constant_and_vector(fhe: Fhe, a: list[int], k: int, v: list[int]) -> None:
    ca = fhe.enc(a)
    assert fhe.dec(fhe.ar.mul_plain(ca, k)) == fhe.ref.mul_plain(a, k)
    assert fhe.dec(fhe.ar.mul_plain(ca, v)) == fhe.ref.mul_plain(a, v)


@given(lanes_mod_t(), lanes_mod_t())
@FEW
def test_mul_and_square_wrap_mod_t(fhe: Fhe, a: list[int], b: list[int]) -> None:
    ca, cb = fhe.enc(a), fhe.enc(b)
    assert fhe.dec(fhe.ar.mul(ca, cb)) == fhe.ref.mul(a, b)
    assert fhe.dec(fhe.ar.square(ca)) == fhe.ref.square(a)


@given(st.lists(small_ints(bound=1 << 10), min_size=1, max_size=4))
@FEW
def test_product_of_up_to_four_is_depth_two(fhe: Fhe, factors: list[list[int]]) -> None:
    got = fhe.dec(fhe.ar.product([fhe.enc(f) for f in factors]))
    assert got == fhe.ref.product(factors)


@given(small_ints(bound=10**6), small_ints(bound=10**6), st.integers(1, 10**6))
@FEW
def test_div_exact_plain(fhe: Fhe, q: list[int], a: list[int], d: int) -> None:
    multiples = [x * d for x in q]
    got = fhe.dec(fhe.ar.div_exact_plain(fhe.enc(multiples), d))
    assert got == fhe.ref.div_exact_plain(multiples, d) == q
    # after a product: (a * d*q) / d
    prod = fhe.ar.mul(fhe.enc(a), fhe.enc(multiples))
    want = fhe.ref.mul(a, q)
    assert fhe.dec(fhe.ar.div_exact_plain(prod, d)) == want


def test_div_exact_plain_refuses_t() -> None:
    ar = Arith(SimulatedContext(T, 4))
    with pytest.raises(ValueError):
        ar.div_exact_plain(ar.cc.encrypt([0]), T)


# -- bit operations --------------------------------------------------------------------------------


@given(bit_lanes(), bit_lanes())
@FEW
def test_bit_operations(fhe: Fhe, a: list[int], b: list[int]) -> None:
    a[:4], b[:4] = [0, 0, 1, 1], [0, 1, 0, 1]  # the whole truth table
    ca, cb = fhe.enc(a), fhe.enc(b)
    ar, ref = fhe.ar, fhe.ref
    assert fhe.dec(ar.not_(ca)) == ref.not_(a) == [1 - x for x in a]
    assert fhe.dec(ar.and_(ca, cb)) == ref.and_(a, b) == [x & y for x, y in zip(a, b, strict=True)]
    assert fhe.dec(ar.or_(ca, cb)) == ref.or_(a, b) == [x | y for x, y in zip(a, b, strict=True)]
    assert fhe.dec(ar.xor(ca, cb)) == ref.xor(a, b) == [x ^ y for x, y in zip(a, b, strict=True)]


# -- comparisons with a plaintext threshold (depth <= 2: up to 4 bits) ----------------------------


@given(bits_and_threshold(max_bits=4))
@FEW
def test_compare_plain_small(fhe: Fhe, case: tuple[int, int, list[int]]) -> None:
    n, threshold, values = case
    cts, bits = fhe.enc_bits(values, n)
    ar, ref = fhe.ar, fhe.ref
    assert fhe.dec(ar.ge_plain(cts, threshold)) == ref.ge_plain(bits, threshold)
    assert fhe.dec(ar.lt_plain(cts, threshold)) == ref.lt_plain(bits, threshold)
    assert fhe.dec(ar.eq_plain(cts, threshold)) == ref.eq_plain(bits, threshold)
    assert fhe.dec(ar.is_zero(cts)) == ref.is_zero(bits)


@given(
    st.lists(st.integers(0, 15), min_size=LANES, max_size=LANES),
    st.lists(st.integers(-1, 17), min_size=1, max_size=6),
)
@FEW
def test_ge_plain_many_small(fhe: Fhe, values: list[int], thresholds: list[int]) -> None:
    values[:4] = [0, 1, 14, 15]
    cts, bits = fhe.enc_bits(values, 4)
    got = [fhe.dec(c) for c in fhe.ar.ge_plain_many(cts, thresholds)]
    assert got == fhe.ref.ge_plain_many(bits, thresholds)


@given(
    st.lists(st.integers(0, 15), min_size=LANES, max_size=LANES),
    st.integers(1, 16),
    st.integers(0, 20),
)
@FEW
def test_div_floor_plain_small(fhe: Fhe, values: list[int], d: int, max_value: int) -> None:
    values = [min(v, max_value) for v in values]
    values[:2] = [0, min(15, max_value)]
    cts, bits = fhe.enc_bits(values, 4)
    got = fhe.dec(fhe.ar.div_floor_plain(cts, d, max_value))
    assert got == fhe.ref.div_floor_plain(bits, d, max_value) == [v // d for v in values]


@pytest.mark.parametrize(("d", "max_value"), [(1, 65), (10, 1000), (0, 5), (-3, 5), (1, -1)])
def test_div_floor_plain_refuses(d: int, max_value: int) -> None:
    ar = Arith(SimulatedContext(T, 4))
    bits = [ar.cc.encrypt([0])] * 13
    with pytest.raises(ValueError):
        ar.div_floor_plain(bits, d, max_value)
    with pytest.raises(ValueError):
        ar.reference.div_floor_plain(to_bits([0], 13), d, max_value)


def test_div_floor_plain_accepts_the_limit() -> None:
    sim = SimulatedContext(T, 1 << 7)
    ar = Arith(sim)
    values = list(range(1 << 7))
    bits = [sim.encrypt(b) for b in to_bits(values, 7)]
    got = ar.div_floor_plain(bits, 2, 2 * MAX_DIV_FLOOR_THRESHOLDS)
    assert list(got.values) == [v // 2 for v in values]
    assert got.depth <= depth_of("div_floor_plain", 7)
    with pytest.raises(ValueError):
        ar.div_floor_plain(bits, 2, 2 * MAX_DIV_FLOOR_THRESHOLDS + 2)


# -- two encrypted values (depth 1 + ceil(log2 n): up to 2 bits at depth 2) ----------------------


@given(
    st.integers(1, 2).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(
                st.tuples(st.integers(0, (1 << n) - 1), st.integers(0, (1 << n) - 1)),
                min_size=LANES,
                max_size=LANES,
            ),
        )
    )
)
@FEW
def test_compare_encrypted_small(fhe: Fhe, case: tuple[int, list[tuple[int, int]]]) -> None:
    n, pairs = case
    top = (1 << n) - 1
    pairs[:4] = [(0, 0), (top, top), (0, top), (top, 0)]
    ca, a = fhe.enc_bits([p[0] for p in pairs], n)
    cb, b = fhe.enc_bits([p[1] for p in pairs], n)
    for op in ("ge", "gt", "eq"):
        assert fhe.dec(getattr(fhe.ar, op)(ca, cb)) == getattr(fhe.ref, op)(a, b), op


def test_compare_encrypted_needs_equal_widths(fhe: Fhe) -> None:
    ca, _ = fhe.enc_bits([1], 2)
    cb, _ = fhe.enc_bits([1], 3)
    with pytest.raises(ValueError):
        fhe.ar.ge(ca, cb)


# -- selection ------------------------------------------------------------------------------------


@given(bit_lanes(), small_ints(), small_ints(), st.integers(0, 10**9), st.integers(0, 10**9))
@FEW
def test_mux(fhe: Fhe, c: list[int], a: list[int], b: list[int], ka: int, kb: int) -> None:
    cc, ca, cb = fhe.enc(c), fhe.enc(a), fhe.enc(b)
    ar, ref = fhe.ar, fhe.ref
    want = [x if s else y for s, x, y in zip(c, a, b, strict=True)]
    assert fhe.dec(ar.mux(cc, ca, cb)) == ref.mux(c, a, b) == want
    assert fhe.dec(ar.mux(cc, ka, cb)) == ref.mux(c, ka, b)
    assert fhe.dec(ar.mux(cc, ca, kb)) == ref.mux(c, a, kb)
    assert fhe.dec(ar.mux(cc, ka, kb)) == ref.mux(c, ka, kb)


@given(st.integers(1, 5), st.lists(st.integers(0, 4), min_size=LANES, max_size=LANES), small_ints())
@FEW
def test_demux_touches_every_register(fhe: Fhe, k: int, dest: list[int], value: list[int]) -> None:
    dest = [d % k for d in dest]
    selectors = [[int(d == r) for d in dest] for r in range(k)]
    got = [fhe.dec(c) for c in fhe.ar.demux([fhe.enc(s) for s in selectors], fhe.enc(value))]
    assert len(got) == k
    assert got == fhe.ref.demux(selectors, value)
    assert [sum(col) for col in zip(*got, strict=True)] == value  # each value went exactly once
    as_int = [fhe.dec(c) for c in fhe.ar.demux([fhe.enc(s) for s in selectors], 7)]
    assert as_int == fhe.ref.demux(selectors, 7)


# -- the 13-bit known-answer tests on N=16384, depth 6 -------------------------------------------


def test_ge_plain_13_bits_known_answers_then_value_and_mask(deep: Fhe) -> None:
    """Every 13-bit value against the TAF 3 thresholds, then x value (ct x ct), then a mask:
    the circuit the parameter set was chosen for (depth 4 + 1 + 1)."""
    n = deep.lanes
    values = [i % 8192 for i in range(n)]  # every 13-bit value, twice
    cts, _ = deep.enc_bits(values, 13)
    indicators = deep.ar.ge_plain_many(cts, KAT_THRESHOLDS)
    energy = [(7919 * i) % 5001 for i in range(n)]
    mask = [(i * 104729) % T for i in range(n)]
    value_ct = deep.enc(energy)
    for threshold, ind in zip(KAT_THRESHOLDS, indicators, strict=True):
        want = [int(v >= threshold) for v in values]
        assert deep.dec(ind) == want, threshold
        out = deep.ar.mul_plain(deep.ar.mul(ind, value_ct), mask)
        assert deep.dec(out) == [w * e * m % T for w, e, m in zip(want, energy, mask, strict=True)]


def test_lt_eq_plain_and_div_floor_13_bits(deep: Fhe) -> None:
    n = deep.lanes
    values = [i % 8192 for i in range(n)]
    cts, bits = deep.enc_bits(values, 13)
    assert deep.dec(deep.ar.lt_plain(cts, 5000)) == deep.ref.lt_plain(bits, 5000)
    assert deep.dec(deep.ar.eq_plain(cts, 4095)) == deep.ref.eq_plain(bits, 4095)
    assert deep.dec(deep.ar.is_zero(cts)) == deep.ref.is_zero(bits)
    got = deep.dec(deep.ar.div_floor_plain(cts, 1000, 5000))
    assert got == [min(v, 5000) // 1000 for v in values]


def test_ge_of_two_encrypted_13_bit_values(deep: Fhe) -> None:
    n = deep.lanes
    a = [i % 8192 for i in range(n)]
    b = [(i * 4099 + 17) % 8192 for i in range(n)]
    b[:8] = [0, 1, 2, 3, 4, 8191, 8190, 5]  # a equal to b and around it
    b[8190:8192] = [8190, 8190]
    ca, abits = deep.enc_bits(a, 13)
    cb, bbits = deep.enc_bits(b, 13)
    ge = deep.ar.ge(ca, cb)
    assert deep.dec(ge) == deep.ref.ge(abits, bbits)
    # depth 5 + one more ct x ct: select the larger value
    larger = deep.ar.mux(ge, deep.ar.from_bits(ca), deep.ar.from_bits(cb))
    assert deep.dec(larger) == [max(x, y) for x, y in zip(a, b, strict=True)]


# -- the circuit simulator: exhaustive values and the documented depths ---------------------------


def sim_bits(n: int) -> tuple[SimulatedContext, Arith, list[SimulatedCiphertext], list[list[int]]]:
    sim = SimulatedContext(T, 1 << n)
    bits = to_bits(list(range(1 << n)), n)
    return sim, Arith(sim), [sim.encrypt(b) for b in bits], bits


@pytest.mark.parametrize("n", range(1, 8))
def test_simulated_compare_plain_every_threshold_every_value(n: int) -> None:
    _, ar, cts, bits = sim_bits(n)
    ref = ar.reference
    thresholds = list(range(-1, (1 << n) + 2))
    many = ar.ge_plain_many(cts, thresholds)
    for threshold, ge in zip(thresholds, many, strict=True):
        assert list(ge.values) == ref.ge_plain(bits, threshold), threshold
        assert ge.depth == depth_of("ge_plain", n, threshold) <= log_depth(n)
        lt, eq = ar.lt_plain(cts, threshold), ar.eq_plain(cts, threshold)
        assert list(lt.values) == ref.lt_plain(bits, threshold)
        assert list(eq.values) == ref.eq_plain(bits, threshold)
        assert eq.depth <= depth_of("eq_plain", n)
    assert ar.is_zero(cts).depth == depth_of("is_zero", n)


def test_simulated_13_bit_kat_and_sharing() -> None:
    sim, ar, cts, _ = sim_bits(13)
    before = sim.ct_mults
    many = ar.ge_plain_many(cts, KAT_THRESHOLDS)
    shared = sim.ct_mults - before
    single = 0
    for threshold, ge in zip(KAT_THRESHOLDS, many, strict=True):
        assert list(ge.values) == [int(v >= threshold) for v in range(8192)]
        before = sim.ct_mults
        assert ar.ge_plain(cts, threshold).values == ge.values
        single += sim.ct_mults - before
    assert shared < single
    assert [depth_of("ge_plain", 13, th) for th in KAT_THRESHOLDS] == [0, 4, 4, 4, 0, 4, 4]


@pytest.mark.parametrize("n", range(1, 5))
def test_simulated_compare_encrypted_every_pair(n: int) -> None:
    sim = SimulatedContext(T, 1 << (2 * n))
    ar = Arith(sim)
    a = [i >> n for i in range(1 << (2 * n))]
    b = [i & ((1 << n) - 1) for i in range(1 << (2 * n))]
    abits, bbits = to_bits(a, n), to_bits(b, n)
    ca, cb = [sim.encrypt(x) for x in abits], [sim.encrypt(x) for x in bbits]
    for op in ("ge", "gt", "eq"):
        got = getattr(ar, op)(ca, cb)
        assert list(got.values) == getattr(ar.reference, op)(abits, bbits), op
        assert got.depth == depth_of(op, n), op


@pytest.mark.parametrize("k", range(1, 10))
def test_simulated_product_depth(k: int) -> None:
    sim = SimulatedContext(T, 2)
    ar = Arith(sim)
    got = ar.product([sim.encrypt([2, 3])] * k)
    assert got.values == (2**k, 3**k)
    assert got.depth == depth_of("product", k) == log_depth(k)
    assert sim.ct_mults == k - 1


def test_simulated_depths_of_simple_operations() -> None:
    sim = SimulatedContext(T, 4)
    ar = Arith(sim)
    a, b = sim.encrypt([1, 0, 1, 0]), sim.encrypt([1, 1, 0, 0])
    cases = {
        "add": ar.add(a, b),
        "sub": ar.sub(a, b),
        "neg": ar.neg(a),
        "add_plain": ar.add_plain(a, [1, 2]),
        "mul_plain": ar.mul_plain(a, 12345),
        "mul_plain_vector": ar.mul_plain(a, [1, 2, 3, 4]),
        "div_exact_plain": ar.div_exact_plain(a, 7),
        "not_": ar.not_(a),
        "mul": ar.mul(a, b),
        "square": ar.square(a),
        "and_": ar.and_(a, b),
        "or_": ar.or_(a, b),
        "xor": ar.xor(a, b),
        "mux": ar.mux(a, b, a),
        "demux": ar.demux([a, b], b)[1],
        "from_bits": ar.from_bits([a, b]),
    }
    for op, ct in cases.items():
        assert ct.depth == depth_of(op), op
    assert ar.mux(a, 5, 9).depth == 0
    assert ar.demux([a], 5)[0].depth == 0
    assert sim.masks == 1
    with pytest.raises(ValueError):
        depth_of("divide")


def test_depth_adds_to_input_depth() -> None:
    sim = SimulatedContext(T, 2)
    ar = Arith(sim)
    x = ar.square(ar.square(sim.encrypt([1, 2])))  # depth 2
    y = ar.mul(x, ar.square(sim.encrypt([1, 1])))  # depth max(2, 1) + 1
    assert (x.depth, y.depth) == (2, 3)


# -- results switched down for decryption (legal's read-out) --------------------------------


def _for_decryption(f: Fhe, ct: Any) -> Any:
    from metrocloud.fhe.evaluator import Evaluator

    return Evaluator(f.keys.context, f.lanes).for_decryption([ct])[0]


@FEW
@given(a=lanes_mod_t(), b=lanes_mod_t())
def test_a_result_for_decryption_is_smaller_and_decrypts_the_same(
    fhe: Fhe, a: list[int], b: list[int]
) -> None:
    from metrocloud.fhe.context import serialize

    product = fhe.ar.mul(fhe.ar.mul(fhe.enc(a), fhe.enc(b)), fhe.enc(b))  # the whole depth
    small = _for_decryption(fhe, product)
    assert len(serialize(small)) < len(serialize(product)) * 0.6
    assert fhe.dec(small) == fhe.dec(product) == [x * y * y % T for x, y in zip(a, b, strict=True)]
    again = _for_decryption(fhe, small)  # one tower left: nothing more to drop
    assert serialize(again) == serialize(small)


def test_the_deepest_taf3_circuit_decrypts_after_the_switch(deep: Fhe) -> None:
    """The most noise the comparison parameters carry (depth 4 + 1 + 1, as above), then the
    switch to one tower: every lane still exact, at a seventh of the size or less."""
    from metrocloud.fhe.context import serialize

    n = deep.lanes
    values = [i % 8192 for i in range(n)]
    cts, _ = deep.enc_bits(values, 13)
    (ind,) = deep.ar.ge_plain_many(cts, (2500,))
    energy = [(7919 * i) % 5001 for i in range(n)]
    mask = [(i * 104729) % T for i in range(n)]
    out = deep.ar.mul_plain(deep.ar.mul(ind, deep.enc(energy)), mask)
    small = _for_decryption(deep, out)
    assert len(serialize(small)) * 6 < len(serialize(out))
    want = [int(v >= 2500) * e * m % T for v, e, m in zip(values, energy, mask, strict=True)]
    assert deep.dec(small) == want
