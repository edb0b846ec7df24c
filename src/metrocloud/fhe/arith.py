"""Exact integer arithmetic on packed BFV ciphertexts, slot by slot.

Every slot of a ciphertext is an independent lane holding an integer modulo the plaintext
modulus ``t``. :class:`Arith` computes on ciphertexts; :class:`Reference` states what each
operation means on plain lists of ints, lane by lane, under the same method names, so that
tests compare the two. :class:`SimulatedContext` stands in for an OpenFHE crypto context: it
runs the very circuit :class:`Arith` builds on plain lanes and records its multiplicative
depth, which is how a tariff program finds the depth (and so the parameter set) it needs.

Comparisons work on *bit-sliced* values: ``bits[j]`` is a ciphertext whose lane ``i`` holds
bit ``j`` (least significant first) of value ``i``; :func:`to_bits` prepares them on the
gateway. Every bit lane must hold 0 or 1, otherwise the results are meaningless.

Depth
-----
Depth counts ciphertext x ciphertext multiplications on the longest path, plus one for a
multiplication by a non-constant plaintext vector (a mask: its polynomial has coefficients
as large as ``t``, so it costs about as much noise as a ciphertext multiplication). Adding,
subtracting, negating and multiplying by a constant (``[k] * slots``, a constant polynomial)
cost none; a constant multiplies the noise by ``|k|`` only (``k`` taken in ``(-t/2, t/2]``).
Writing ``L(n) = ceil(log2 n)`` (``L(1) = 0``), on inputs of depth 0:

===============================================  =====================================
operation                                         depth
===============================================  =====================================
add, sub, neg, add_plain, from_bits, not_         0
mul_plain (constant), div_exact_plain             0 (noise x ``|k|``, ``|k|`` up to t/2)
mul_plain (vector: a mask)                        1
mul, square, and_, or_, xor                       1
product of n                                      L(n)
ge_plain / lt_plain (n bits, threshold T)         L(n - s), s = trailing zero bits of T;
                                                  0 when T = 0 or T >= 2^n (constants)
eq_plain, is_zero (n bits)                        L(n)
ge_plain_many, div_floor_plain                    the largest of its thresholds' depths
ge, gt, eq of two encrypted n-bit values          1 + L(n)
mux(c, a, b)                                      1 (0 when a and b are plain ints)
demux(selectors, value)                           1 (0 when value is a plain int)
===============================================  =====================================

On inputs that already have a depth, an operation adds its depth to the largest input
depth (``mul`` of depths 2 and 3 has depth 4). :func:`depth_of` returns these numbers and
``tests/fhe/test_fhe_arith.py`` checks them against :class:`SimulatedContext`.

Parameter findings
------------------
Measured on this project's machine kind (2 cores, AMD EPYC, Python 3.10.13, openfhe
1.6.1.0.22.4; BFV, HPSPOVERQ, HEStd_128_classic) with ``python bench/arith.py --params``:
``ge_plain`` over 13 bits (depth 4), then indicator x value (ct x ct, depth 5), then a
non-constant plaintext mask (depth 6), every slot checked, every 13-bit value, thresholds
1, 2500, 4095, 5000, 8191. "Slack": further products with a fresh encryption of 1 that still
decrypt right. Times for 1 thread.

=====  =====  ========  ======  ==========  ======================  =====  ==========  ========
N      depth  t         log2 Q  ciphertext  decrypts right after    slack  ct x ct     ge_plain
=====  =====  ========  ======  ==========  ======================  =====  ==========  ========
8192   2      2^40      180     0.39 MB     nothing (fails at ge)   -      9.7 ms      0.15 s
8192   3      2^40      refused: the security level needs N = 16384
8192   3      65537     180     0.39 MB     ge only                 -      9.5 ms      0.15 s
16384  4      2^40      300     1.31 MB     ge only                 -      36 ms       0.55 s
16384  5      2^40      360     1.57 MB     ge, x value             -      46 ms       0.72 s
16384  6      2^40      420     1.84 MB     all three               1      57-75 ms    0.89 s
16384  7      2^40      refused: the security level needs N = 32768
16384  4      65537     240     1.05 MB     all three               0      29 ms       0.44 s
16384  5      2^30      300     1.31 MB     ge, x value             -      37 ms       0.55 s
16384  6      2^30      360     1.57 MB     all three               1      56 ms       0.71 s
=====  =====  ========  ======  ==========  ======================  =====  ==========  ========

(2^40 is the default t = 1,099,511,922,689; 2^30 is 1,073,872,897; both prime, 1 mod 32768.)

* The smallest set for the circuit with the default t is **N = 16384, depth 6**
  (:data:`COMPARISON_PARAMETERS`): OpenFHE's depth is spent exactly, one level per stage as
  counted here (a mask is a level), with one spare ct x ct level; N = 32768 is not needed,
  but depth 6 is the most N = 16384 allows at t = 2^40, so nothing deeper fits there. A
  32-bit ``ge`` of two encrypted values (depth 6) decrypts right on it with no level to spare.
* No t makes N = 8192 work: at 128-bit security it allows Q = 180 bits (depth 2-3), and even
  t = 65537 only gets through the comparator. A smaller t shortens the chain at N = 16384:
  2^30 needs the same depth 6 (15 % smaller ciphertexts, about 20 % faster), 65537 only depth 4
  (half the time and 57 % of the size), but neither holds a bill (~1e12); 2^30 still holds
  a month's energy (14.4e6).
* ``bench/arith.py`` (N = 16384, depth 6, t = 2^40), 1 / 2 threads (OMP_NUM_THREADS):
  ct x ct 58 / 32 ms, plaintext mask 7.1 / 6.2 ms, add 0.23 / 0.16 ms, ``ge_plain`` 13 bits
  (14 products) 0.94 / 0.48 s, ``ge`` of two 32-bit values (89 products) 5.5 / 3.1 s,
  key generation with the relinearization key 0.1 s, encryption 25 ms per ciphertext.
  Two threads are run-to-run noisy on this 2-core machine when other work shares it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from metrocloud.fhe.params import FheParameters

Ciphertext = Any  # an openfhe.Ciphertext, or a SimulatedCiphertext
Operand = Any  # a Ciphertext or a plain int (mux, demux)

FUSED_TOP_BITS = 14  # mul_ge_plain: top part small enough to take `value` without depth
MAX_DIV_FLOOR_THRESHOLDS = 64
"""``div_floor_plain`` compares with ``max_value // d`` thresholds; it refuses more."""

COMPARISON_PARAMETERS = FheParameters(multiplicative_depth=6, ring_dimension=16384)
"""The smallest BFV set found for a 13-bit comparison, x value, x mask (default t)."""


def log_depth(n: int) -> int:
    """``ceil(log2 n)``: the depth of a balanced product of ``n`` factors (0 for n <= 1)."""
    return max(0, (n - 1).bit_length())


def _trailing_zeros(v: int) -> int:
    return (v & -v).bit_length() - 1


def depth_of(op: str, n_bits: int = 1, threshold: int | None = None) -> int:
    """The multiplicative depth an operation adds (see the table in the module docstring).

    ``n_bits`` is the number of factors for ``product``, the number of bits for comparisons;
    ``threshold`` refines ``ge_plain`` / ``lt_plain`` (trailing zero bits of the threshold
    cost nothing, constant answers cost no depth). ``mul_plain`` is a constant factor,
    ``mul_plain_vector`` a mask. For ``ge_plain_many`` and ``div_floor_plain`` the value is
    the bound ``ceil(log2 n)``; their thresholds may need less.
    """
    if op in {
        "add",
        "sub",
        "neg",
        "add_plain",
        "mul_plain",
        "from_bits",
        "not_",
        "div_exact_plain",
    }:
        return 0
    if op in {"mul", "square", "and_", "or_", "xor", "mux", "demux", "mul_plain_vector"}:
        return 1
    if op == "product":
        return log_depth(n_bits)
    if op in {"ge_plain", "lt_plain"}:
        if threshold is None:
            return log_depth(n_bits)
        if threshold <= 0 or threshold >= 1 << n_bits:
            return 0
        return log_depth(n_bits - _trailing_zeros(threshold))
    if op in {"eq_plain", "is_zero", "ge_plain_many", "div_floor_plain"}:
        return log_depth(n_bits)
    if op in {"ge", "gt", "eq"}:
        return 1 + log_depth(n_bits)
    raise ValueError(f"unknown operation {op!r}")


# --------------------------------------------------------------------------------------------
# Gateway side: bit slicing (plain ints, no FHE)
# --------------------------------------------------------------------------------------------


def to_bits(values: Sequence[int], n_bits: int) -> list[list[int]]:
    """Bit-slice ``values``: ``result[j][i]`` is bit ``j`` (LSB first) of ``values[i]``.

    Each ``result[j]`` is what the gateway packs into the ``j``-th bit ciphertext. Raises
    ``ValueError`` when a value is negative or needs more than ``n_bits`` bits.
    """
    if n_bits < 1:
        raise ValueError("n_bits must be at least 1")
    for v in values:
        if not 0 <= v < 1 << n_bits:
            raise ValueError(f"value {v} does not fit {n_bits} bits")
    return [[(v >> j) & 1 for v in values] for j in range(n_bits)]


# --------------------------------------------------------------------------------------------
# The reference: what each operation means, lane by lane, on Python ints
# --------------------------------------------------------------------------------------------

Lanes = list[int]
PlainOperand = int | Sequence[int]


class Reference:
    """Plaintext meaning of every :class:`Arith` operation, lane-wise, results in ``[0, t)``.

    Methods take and return lists of ints (one per lane) and carry the same names and
    arguments as :class:`Arith`; a plain vector shorter than the lanes is padded with zeros
    (as OpenFHE pads a packed plaintext). Comparisons are stated on the values the bits
    encode, not on the circuit, so they check the circuit independently.
    """

    def __init__(self, plaintext_modulus: int) -> None:
        self.t = plaintext_modulus

    def _vec(self, k: PlainOperand, n: int) -> Lanes:
        if isinstance(k, int):
            return [k % self.t] * n
        if len(k) > n:
            raise ValueError(f"a vector of {len(k)} values does not fit {n} lanes")
        return [v % self.t for v in k] + [0] * (n - len(k))

    @staticmethod
    def _same_length(*vs: Sequence[int]) -> int:
        lengths = {len(v) for v in vs}
        if len(lengths) != 1:
            raise ValueError("lanes differ in length")
        return lengths.pop()

    def _bits_values(self, bits: Sequence[Sequence[int]]) -> Lanes:
        if not bits:
            raise ValueError("no bits")
        self._same_length(*bits)
        for b in bits:
            if any(v not in (0, 1) for v in b):
                raise ValueError("a bit lane holds neither 0 nor 1")
        return self.from_bits(bits)

    def add(self, a: Sequence[int], b: Sequence[int]) -> Lanes:
        self._same_length(a, b)
        return [(x + y) % self.t for x, y in zip(a, b, strict=True)]

    def sub(self, a: Sequence[int], b: Sequence[int]) -> Lanes:
        self._same_length(a, b)
        return [(x - y) % self.t for x, y in zip(a, b, strict=True)]

    def neg(self, a: Sequence[int]) -> Lanes:
        return [-x % self.t for x in a]

    def add_plain(self, a: Sequence[int], k: PlainOperand) -> Lanes:
        return self.add(a, self._vec(k, len(a)))

    def mul_plain(self, a: Sequence[int], k: PlainOperand) -> Lanes:
        return self.mul(a, self._vec(k, len(a)))

    def mul(self, a: Sequence[int], b: Sequence[int]) -> Lanes:
        self._same_length(a, b)
        return [x * y % self.t for x, y in zip(a, b, strict=True)]

    def square(self, a: Sequence[int]) -> Lanes:
        return self.mul(a, a)

    def product(self, vs: Sequence[Sequence[int]]) -> Lanes:
        if not vs:
            raise ValueError("nothing to multiply")
        acc = list(vs[0])
        for v in vs[1:]:
            acc = self.mul(acc, v)
        return [x % self.t for x in acc]

    def not_(self, a: Sequence[int]) -> Lanes:
        return [(1 - x) % self.t for x in a]

    def and_(self, a: Sequence[int], b: Sequence[int]) -> Lanes:
        return self.mul(a, b)

    def or_(self, a: Sequence[int], b: Sequence[int]) -> Lanes:
        self._same_length(a, b)
        return [(x + y - x * y) % self.t for x, y in zip(a, b, strict=True)]

    def xor(self, a: Sequence[int], b: Sequence[int]) -> Lanes:
        self._same_length(a, b)
        return [(x + y - 2 * x * y) % self.t for x, y in zip(a, b, strict=True)]

    def from_bits(self, bits: Sequence[Sequence[int]]) -> Lanes:
        if not bits:
            raise ValueError("no bits")
        n = self._same_length(*bits)
        return [sum(b[i] << j for j, b in enumerate(bits)) % self.t for i in range(n)]

    def ge_plain(self, bits: Sequence[Sequence[int]], threshold: int) -> Lanes:
        return [int(x >= threshold) for x in self._bits_values(bits)]

    def lt_plain(self, bits: Sequence[Sequence[int]], threshold: int) -> Lanes:
        return [int(x < threshold) for x in self._bits_values(bits)]

    def eq_plain(self, bits: Sequence[Sequence[int]], threshold: int) -> Lanes:
        return [int(x == threshold) for x in self._bits_values(bits)]

    def is_zero(self, bits: Sequence[Sequence[int]]) -> Lanes:
        return [int(x == 0) for x in self._bits_values(bits)]

    def ge_plain_many(
        self, bits: Sequence[Sequence[int]], thresholds: Sequence[int]
    ) -> list[Lanes]:
        return [self.ge_plain(bits, th) for th in thresholds]

    def ge(self, bits_a: Sequence[Sequence[int]], bits_b: Sequence[Sequence[int]]) -> Lanes:
        a, b = self._bits_values(bits_a), self._bits_values(bits_b)
        return [int(x >= y) for x, y in zip(a, b, strict=True)]

    def gt(self, bits_a: Sequence[Sequence[int]], bits_b: Sequence[Sequence[int]]) -> Lanes:
        a, b = self._bits_values(bits_a), self._bits_values(bits_b)
        return [int(x > y) for x, y in zip(a, b, strict=True)]

    def eq(self, bits_a: Sequence[Sequence[int]], bits_b: Sequence[Sequence[int]]) -> Lanes:
        a, b = self._bits_values(bits_a), self._bits_values(bits_b)
        return [int(x == y) for x, y in zip(a, b, strict=True)]

    def mux(self, cond: Sequence[int], a: Sequence[int] | int, b: Sequence[int] | int) -> Lanes:
        n = len(cond)
        av = self._vec(a, n) if isinstance(a, int) else list(a)
        bv = self._vec(b, n) if isinstance(b, int) else list(b)
        self._same_length(cond, av, bv)
        return [(y + c * (x - y)) % self.t for c, x, y in zip(cond, av, bv, strict=True)]

    def demux(self, selectors: Sequence[Sequence[int]], value: Sequence[int] | int) -> list[Lanes]:
        return [
            self.mul(s, self._vec(value, len(s)) if isinstance(value, int) else value)
            for s in selectors
        ]

    def div_exact_plain(self, a: Sequence[int], d: int) -> Lanes:
        return self.mul_plain(a, pow(d, -1, self.t))

    def div_floor_plain(self, bits: Sequence[Sequence[int]], d: int, max_value: int) -> Lanes:
        _check_div_floor(d, max_value)
        return [min(x, max_value) // d for x in self._bits_values(bits)]


def _check_div_floor(d: int, max_value: int) -> None:
    if d < 1:
        raise ValueError("the divisor must be positive")
    if max_value < 0:
        raise ValueError("max_value must not be negative")
    if max_value // d > MAX_DIV_FLOOR_THRESHOLDS:
        raise ValueError(
            f"max_value // d = {max_value // d} comparisons exceed the limit of "
            f"{MAX_DIV_FLOOR_THRESHOLDS}: divide a wider range another way"
        )


# --------------------------------------------------------------------------------------------
# The circuits
# --------------------------------------------------------------------------------------------


class Arith:
    """Exact integer operations on packed BFV ciphertexts (all lanes at once).

    ``cc`` is an OpenFHE crypto context (or a :class:`SimulatedContext`); ciphertext x
    ciphertext multiplications need the customer's relinearization (EvalMult) key in it.
    Results are modulo ``t``: the caller keeps every intermediate value below ``t`` (and,
    for values it will compare or decrypt as signed, below ``t/2``).
    """

    def __init__(self, cc: Any, plaintext_modulus: int | None = None) -> None:
        self.cc = cc
        self.t = int(plaintext_modulus or cc.GetPlaintextModulus())
        self.slots = int(cc.GetRingDimension())
        self._constants: dict[int, Any] = {}

    @property
    def reference(self) -> Reference:
        return Reference(self.t)

    # -- plaintexts -----------------------------------------------------------------------

    def _centre(self, k: int) -> int:
        k %= self.t
        return k - self.t if k > self.t // 2 else k

    def constant(self, k: int) -> Any:
        """The packed plaintext ``[k] * slots`` (a constant polynomial; cached)."""
        k = self._centre(k)
        pt = self._constants.get(k)
        if pt is None:
            pt = self.cc.MakePackedPlaintext([k] * self.slots)
            self._constants[k] = pt
        return pt

    def vector(self, values: Sequence[int]) -> Any:
        """A packed plaintext of ``values`` (zeros in the remaining slots)."""
        if len(values) > self.slots:
            raise ValueError(f"{len(values)} values do not fit {self.slots} slots")
        return self.cc.MakePackedPlaintext([self._centre(v) for v in values])

    def _plain(self, k: PlainOperand) -> Any:
        return self.constant(k) if isinstance(k, int) else self.vector(k)

    def encrypted_constant(self, k: int, like: Ciphertext) -> Ciphertext:
        """A ciphertext holding ``k`` in every lane, built from ``like`` (depth 0).

        ``like - like`` is a (trivial) encryption of zero under the same key; comparisons
        return this when the answer does not depend on the data (``T = 0``, ``T >= 2^n``).
        """
        zero = self.cc.EvalSub(like, like)
        return zero if k % self.t == 0 else self.cc.EvalAdd(zero, self.constant(k))

    # -- ring operations --------------------------------------------------------------------

    def add(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        """``a + b`` (depth 0)."""
        return self.cc.EvalAdd(a, b)

    def sub(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        """``a - b`` (depth 0)."""
        return self.cc.EvalSub(a, b)

    def neg(self, a: Ciphertext) -> Ciphertext:
        """``-a`` (depth 0)."""
        return self.cc.EvalNegate(a)

    def add_plain(self, a: Ciphertext, k: PlainOperand) -> Ciphertext:
        """``a + k`` for a constant or per-slot vector ``k`` (depth 0)."""
        return self.cc.EvalAdd(a, self._plain(k))

    def sub_plain(self, a: Ciphertext, k: int) -> Ciphertext:
        """``a - k`` for a constant ``k`` (depth 0)."""
        return self.cc.EvalAdd(a, self.constant(-k))

    def rsub_plain(self, k: int, a: Ciphertext) -> Ciphertext:
        """``k - a`` for a constant ``k`` (depth 0)."""
        return self.cc.EvalAdd(self.cc.EvalNegate(a), self.constant(k))

    def mul_plain(self, a: Ciphertext, k: PlainOperand) -> Ciphertext:
        """``a * k``: a constant costs no depth (noise x ``|k|``), a vector (mask) one level.

        OpenFHE's BFV has no scalar multiplication; a constant is the packed plaintext
        ``[k] * slots``, whose polynomial is the constant ``k``.
        """
        if isinstance(k, int):
            k = self._centre(k)
            if k == 1:
                return a
            if k < 0:
                # OpenFHE encodes a negative constant as t - |k|, which multiplies the noise by
                # about t instead of |k|: negate a product by |k| instead
                return self.cc.EvalNegate(self.mul_plain(a, -k))
        return self.cc.EvalMult(a, self._plain(k))

    def mul(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        """``a * b``, relinearized (depth +1)."""
        return self.cc.EvalMult(a, b)

    def square(self, a: Ciphertext) -> Ciphertext:
        """``a * a``, relinearized (depth +1)."""
        return self.cc.EvalSquare(a)

    def product(self, cts: Sequence[Ciphertext]) -> Ciphertext:
        """The product of ``cts`` as a balanced tree (depth ``ceil(log2 n)``, n - 1 mults)."""
        if not cts:
            raise ValueError("nothing to multiply")
        level = list(cts)
        while len(level) > 1:
            nxt = [self.mul(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])
            level = nxt
        return level[0]

    # -- bits (lanes holding 0 or 1) -----------------------------------------------------------

    def not_(self, b: Ciphertext) -> Ciphertext:
        """``1 - b`` (depth 0)."""
        return self.rsub_plain(1, b)

    def and_(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        """``a * b`` (depth +1)."""
        return self.mul(a, b)

    def or_(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        """``a + b - a*b`` (depth +1)."""
        return self.sub(self.add(a, b), self.mul(a, b))

    def xor(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        """``a + b - 2*a*b`` (depth +1)."""
        return self.sub(self.add(a, b), self.mul_plain(self.mul(a, b), 2))

    def from_bits(self, bits: Sequence[Ciphertext]) -> Ciphertext:
        """``sum 2^j * bits[j]`` (depth 0; the noise of bit j grows by ``2^j``).

        Horner's rule with additions only (``acc + acc + b``): 2(n-1) additions, no
        plaintext multiplications.
        """
        if not bits:
            raise ValueError("no bits")
        acc = bits[-1]
        for b in reversed(bits[:-1]):
            acc = self.add(self.add(acc, acc), b)
        return acc

    # -- comparisons with plaintext thresholds ------------------------------------------------

    def ge_plain(self, bits: Sequence[Ciphertext], threshold: int) -> Ciphertext:
        """``[x >= T]`` for the value ``x`` whose bits (LSB first) are ``bits``.

        Depth ``ceil(log2(n - s))`` with ``s`` the trailing zero bits of ``T`` (bits below
        them do not matter); 0 for ``T <= 0`` (always 1) and ``T >= 2^n`` (always 0).
        """
        return self.ge_plain_many(bits, [threshold])[0]

    def lt_plain(self, bits: Sequence[Ciphertext], threshold: int) -> Ciphertext:
        """``[x < T]`` (depth as :meth:`ge_plain`)."""
        return _Comparator(self, bits).lt_plain(threshold)

    def ge_plain_many(
        self, bits: Sequence[Ciphertext], thresholds: Sequence[int]
    ) -> list[Ciphertext]:
        """``[x >= T]`` for each ``T`` of ``thresholds``, sharing common sub-products.

        Sub-circuits that depend on the same bits of the thresholds are computed once: the
        negated bits, and the tree nodes over the same bit range where the thresholds agree.
        Depth: the largest of the single comparisons'.
        """
        comparator = _Comparator(self, bits)
        return [self.not_(lt) for lt in map(comparator.lt_plain, thresholds)]

    def mul_ge_plain(
        self, value: Ciphertext, bits: Sequence[Ciphertext], threshold: int
    ) -> Ciphertext:
        """``value * [x >= T]`` with the multiplication folded into the comparison.

        ``value * [x >= T] = value - value * lt`` and, with the compared bits split into a
        top part H of at most 14 bits and a bottom part B, ``value * lt = value * lt_H +
        (value * eq_H) * lt_B``; ``value`` enters ``eq_H``'s product tree as a leaf with
        room above it. Depth: ``max(L(|H|), L(|B|)) + 1`` for a ``value`` of depth <= 1 —
        5 for 24 bits, where multiplying ``ge_plain`` by ``value`` would need 6.
        """
        comparator = _Comparator(self, bits)
        n = comparator.n
        if threshold <= 0:
            return value
        if threshold >= 1 << n:
            return self.sub(value, value)
        lo = _trailing_zeros(threshold)
        mid = max(lo, n - FUSED_TOP_BITS) if n - lo > 1 else lo
        lt_top = comparator.lt_range(threshold, mid, n)
        lt_bottom = comparator.lt_range(threshold, lo, mid) if mid > lo else None
        terms = [] if lt_top is None else [self.mul(value, lt_top)]
        if lt_bottom is not None:
            leaves = [comparator.eq_range(threshold, j, j + 1) for j in range(mid, n)]
            terms.append(self.mul(self.product([*leaves, value]), lt_bottom))
        below = terms[0] if len(terms) == 1 else self.add(terms[0], terms[1])
        return self.sub(value, below)

    def eq_plain(self, bits: Sequence[Ciphertext], threshold: int) -> Ciphertext:
        """``[x == T]`` (depth ``ceil(log2 n)``; 0 when ``T`` is out of range)."""
        return _Comparator(self, bits).eq_plain(threshold)

    def is_zero(self, bits: Sequence[Ciphertext]) -> Ciphertext:
        """``[x == 0]``: the product of all negated bits (depth ``ceil(log2 n)``)."""
        return self.eq_plain(bits, 0)

    # -- comparisons of two encrypted values -------------------------------------------------

    def _pairwise(
        self, bits_a: Sequence[Ciphertext], bits_b: Sequence[Ciphertext]
    ) -> tuple[list[Ciphertext], list[Ciphertext], list[Ciphertext]]:
        """Per bit: ``a_j (1 - b_j)``, ``(1 - a_j) b_j`` and ``[a_j == b_j]`` (one mult each)."""
        if not bits_a or len(bits_a) != len(bits_b):
            raise ValueError("both values need the same (non-zero) number of bits")
        gt, lt, eq = [], [], []
        for a, b in zip(bits_a, bits_b, strict=True):
            p = self.mul(a, b)
            gt.append(self.sub(a, p))
            lt.append(self.sub(b, p))
            # 1 - a - b + 2ab
            eq.append(self.add(self.rsub_plain(1, self.add(a, b)), self.add(p, p)))
        return gt, lt, eq

    def gt(self, bits_a: Sequence[Ciphertext], bits_b: Sequence[Ciphertext]) -> Ciphertext:
        """``[a > b]`` for two encrypted n-bit values (depth ``1 + ceil(log2 n)``)."""
        gt, _, eq = self._pairwise(bits_a, bits_b)
        return _less_tree(self, gt, eq)

    def ge(self, bits_a: Sequence[Ciphertext], bits_b: Sequence[Ciphertext]) -> Ciphertext:
        """``[a >= b] = 1 - [a < b]`` (depth ``1 + ceil(log2 n)``)."""
        _, lt, eq = self._pairwise(bits_a, bits_b)
        return self.not_(_less_tree(self, lt, eq))

    def eq(self, bits_a: Sequence[Ciphertext], bits_b: Sequence[Ciphertext]) -> Ciphertext:
        """``[a == b]`` (depth ``1 + ceil(log2 n)``)."""
        _, _, eq = self._pairwise(bits_a, bits_b)
        return self.product(eq)

    # -- selection and division ------------------------------------------------------------

    def mux(self, cond: Ciphertext, a: Operand, b: Operand) -> Ciphertext:
        """``a`` where ``cond`` is 1, ``b`` where it is 0: ``b + cond * (a - b)``.

        ``a`` and ``b`` are ciphertexts or plain ints; depth +1, or 0 when both are ints.
        """
        if isinstance(a, int) and isinstance(b, int):
            return self.add_plain(self.mul_plain(cond, a - b), b)
        if isinstance(b, int):
            return self.add_plain(self.mul(cond, self.sub_plain(a, b)), b)
        diff = self.rsub_plain(a, b) if isinstance(a, int) else self.sub(a, b)
        return self.add(b, self.mul(cond, diff))

    def demux(self, selectors: Sequence[Ciphertext], value: Operand) -> list[Ciphertext]:
        """``value * selectors[k]`` for every ``k``: each register receives a ciphertext,
        so none shows which one the value went to (depth +1; 0 for an int ``value``)."""
        if isinstance(value, int):
            return [self.mul_plain(s, value) for s in selectors]
        return [self.mul(s, value) for s in selectors]

    def div_exact_plain(self, a: Ciphertext, d: int) -> Ciphertext:
        """``a / d`` for lanes that are multiples of ``d``: ``a * d^-1 mod t`` (depth 0,
        but the constant ``d^-1`` is as large as ``t/2``: noise x up to ``t/2``)."""
        if d % self.t == 0:
            raise ValueError("cannot divide by a multiple of t")
        return self.mul_plain(a, pow(d, -1, self.t))

    def div_floor_plain(self, bits: Sequence[Ciphertext], d: int, max_value: int) -> Ciphertext:
        """``floor(x / d)`` for ``0 <= x <= max_value``: ``sum_{k=1..max_value//d} [x >= k*d]``.

        Exact while ``x <= max_value`` (above it the result stays at ``max_value // d``).
        Raises ``ValueError`` when that needs more than 64 comparisons. Depth as
        :meth:`ge_plain_many` (``ceil(log2 n)`` at most).
        """
        _check_div_floor(d, max_value)
        count = min(max_value, (1 << len(bits)) - 1) // d
        if count == 0:
            return self.encrypted_constant(0, bits[0])
        comparator = _Comparator(self, bits)
        lts = [comparator.lt_plain(k * d) for k in range(1, count + 1)]
        # sum of (1 - lt_k) = count - sum lt_k
        return self.rsub_plain(count, _add_all(self, lts))


def _add_all(ar: Arith, cts: Sequence[Ciphertext]) -> Ciphertext:
    acc = cts[0]
    for ct in cts[1:]:
        acc = ar.add(acc, ct)
    return acc


def _split(lo: int, hi: int) -> int:
    """Split ``[lo, hi)`` below a top block whose size is the largest power of two < size.

    Both parts then have depth ``<= L(size) - 1``, and top-aligned blocks recur across
    thresholds with different trailing zeros, so :class:`_Comparator` shares them.
    """
    top = 1 << ((hi - lo - 1).bit_length() - 1)
    return hi - top


def _less_tree(ar: Arith, less: list[Ciphertext], eq: list[Ciphertext]) -> Ciphertext:
    """Combine per-bit ``less`` and ``eq`` indicators (LSB first) into ``[x < y]``:
    ``lt = lt_hi + eq_hi * lt_lo`` over a balanced tree (depth ``ceil(log2 n)`` more)."""

    def node(lo: int, hi: int, need_eq: bool) -> tuple[Ciphertext, Ciphertext | None]:
        if hi - lo == 1:
            return less[lo], eq[lo]
        mid = _split(lo, hi)
        lt_h, eq_h = node(mid, hi, True)
        lt_l, eq_l = node(lo, mid, need_eq)
        assert eq_h is not None
        lt = ar.add(lt_h, ar.mul(eq_h, lt_l))
        return lt, (ar.mul(eq_h, eq_l) if need_eq and eq_l is not None else None)

    return node(0, len(less), False)[0]


@dataclass
class _Comparator:
    """Comparisons of one bit-sliced value with plaintext thresholds, sharing work.

    For the bits ``[lo, hi)`` of ``x`` and the same bits of ``T``:
    ``eq = prod [x_j == T_j]`` and ``lt = [x restricted < T restricted]``; with the range
    split into a top part ``H`` and a bottom part ``B``: ``eq = eq_H * eq_B`` and
    ``lt = lt_H + eq_H * lt_B``. Leaves: ``[x_j == T_j]`` is ``b_j`` or ``1 - b_j``,
    ``[x_j < T_j]`` is ``1 - b_j`` when ``T_j = 1`` and zero (``None``) otherwise. Nodes
    are cached by (range, threshold bits in range), so thresholds share sub-trees.
    """

    ar: Arith
    bits: Sequence[Ciphertext]

    def __post_init__(self) -> None:
        if not self.bits:
            raise ValueError("no bits")
        self._not: dict[int, Ciphertext] = {}
        self._eq: dict[tuple[int, int, int], Ciphertext] = {}
        self._lt: dict[tuple[int, int, int], Ciphertext | None] = {}

    @property
    def n(self) -> int:
        return len(self.bits)

    def _negated(self, j: int) -> Ciphertext:
        if j not in self._not:
            self._not[j] = self.ar.not_(self.bits[j])
        return self._not[j]

    @staticmethod
    def _pattern(threshold: int, lo: int, hi: int) -> int:
        return (threshold >> lo) & ((1 << (hi - lo)) - 1)

    def eq_range(self, threshold: int, lo: int, hi: int) -> Ciphertext:
        key = (lo, hi, self._pattern(threshold, lo, hi))
        if key not in self._eq:
            if hi - lo == 1:
                self._eq[key] = self.bits[lo] if key[2] else self._negated(lo)
            else:
                mid = _split(lo, hi)
                self._eq[key] = self.ar.mul(
                    self.eq_range(threshold, mid, hi), self.eq_range(threshold, lo, mid)
                )
        return self._eq[key]

    def lt_range(self, threshold: int, lo: int, hi: int) -> Ciphertext | None:
        key = (lo, hi, self._pattern(threshold, lo, hi))
        if key not in self._lt:
            result: Ciphertext | None
            if key[2] == 0:
                result = None  # nothing is below zero
            elif hi - lo == 1:
                result = self._negated(lo)
            else:
                mid = _split(lo, hi)
                lt_h = self.lt_range(threshold, mid, hi)
                lt_b = self.lt_range(threshold, lo, mid)
                below = (
                    None if lt_b is None else self.ar.mul(self.eq_range(threshold, mid, hi), lt_b)
                )
                if lt_h is None:
                    result = below
                elif below is None:
                    result = lt_h
                else:
                    result = self.ar.add(lt_h, below)
            self._lt[key] = result
        return self._lt[key]

    def lt_plain(self, threshold: int) -> Ciphertext:
        if threshold <= 0:
            return self.ar.encrypted_constant(0, self.bits[0])
        if threshold >= 1 << self.n:
            return self.ar.encrypted_constant(1, self.bits[0])
        lt = self.lt_range(threshold, _trailing_zeros(threshold), self.n)
        assert lt is not None  # the threshold has a one bit in the range
        return lt

    def eq_plain(self, threshold: int) -> Ciphertext:
        if not 0 <= threshold < 1 << self.n:
            return self.ar.encrypted_constant(0, self.bits[0])
        return self.eq_range(threshold, 0, self.n)


# --------------------------------------------------------------------------------------------
# A stand-in crypto context: runs the circuit on plain lanes and measures its depth
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulatedPlaintext:
    values: tuple[int, ...]
    constant: bool


@dataclass(frozen=True)
class SimulatedCiphertext:
    """Lanes in ``[0, t)`` and the multiplicative depth of the circuit that made them."""

    values: tuple[int, ...]
    depth: int = 0


class SimulatedContext:
    """Enough of an OpenFHE crypto context for :class:`Arith`, computing on plain lanes.

    Its methods carry OpenFHE's names (``EvalMult``, ``MakePackedPlaintext``, ...) so that
    :class:`Arith` runs on it unchanged; ``encrypt`` and ``decrypt`` stand in for the keys.

    It follows the depth convention of this module: a ciphertext product and a mask (a
    non-constant plaintext vector) each add one level, constants none. ``ct_mults`` and
    ``masks`` count the operations, for cost estimates.
    """

    def __init__(self, plaintext_modulus: int, slots: int) -> None:
        self.t = plaintext_modulus
        self.slots = slots
        self.ct_mults = 0
        self.masks = 0

    def GetPlaintextModulus(self) -> int:
        return self.t

    def GetRingDimension(self) -> int:
        return self.slots

    def encrypt(self, values: Sequence[int]) -> SimulatedCiphertext:
        pt = self.MakePackedPlaintext(list(values))
        return SimulatedCiphertext(pt.values, 0)

    def decrypt(self, ct: SimulatedCiphertext, length: int) -> list[int]:
        return list(ct.values[:length])

    def MakePackedPlaintext(self, values: list[int]) -> SimulatedPlaintext:
        if len(values) > self.slots:
            raise ValueError("too many values")
        padded = tuple(v % self.t for v in values) + (0,) * (self.slots - len(values))
        return SimulatedPlaintext(padded, len(set(padded)) == 1)

    def _binary(
        self,
        a: SimulatedCiphertext,
        b: SimulatedCiphertext | SimulatedPlaintext,
        f: Callable[[int, int], int],
        level: int,
    ) -> SimulatedCiphertext:
        depth = a.depth + level
        if isinstance(b, SimulatedCiphertext):
            depth = max(a.depth, b.depth) + level
        values = tuple(f(x, y) % self.t for x, y in zip(a.values, b.values, strict=True))
        return SimulatedCiphertext(values, depth)

    def EvalAdd(self, a: Any, b: Any) -> SimulatedCiphertext:
        return self._binary(a, b, lambda x, y: x + y, 0)

    def EvalSub(self, a: Any, b: Any) -> SimulatedCiphertext:
        return self._binary(a, b, lambda x, y: x - y, 0)

    def EvalNegate(self, a: SimulatedCiphertext) -> SimulatedCiphertext:
        return SimulatedCiphertext(tuple(-x % self.t for x in a.values), a.depth)

    def EvalMult(self, a: Any, b: Any) -> SimulatedCiphertext:
        if isinstance(b, SimulatedCiphertext):
            self.ct_mults += 1
            return self._binary(a, b, lambda x, y: x * y, 1)
        if b.constant:
            return self._binary(a, b, lambda x, y: x * y, 0)
        self.masks += 1
        return self._binary(a, b, lambda x, y: x * y, 1)

    def EvalSquare(self, a: SimulatedCiphertext) -> SimulatedCiphertext:
        return self.EvalMult(a, a)
