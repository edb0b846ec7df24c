"""Coefficient encoding over OpenFHE's packed (batched) plaintexts.

BFV encrypts a polynomial ``m(x)`` of ``Z_t[x]/(x^N + 1)``. Written by its coefficients, a
product ``m(x) * q(x)`` is a negacyclic convolution: one plaintext multiplication puts a
weighted sum of all of ``m``'s coefficients into a single coefficient of the product, with
the weights taken from ``q``. That is the tariff register programs' whole circuit.

OpenFHE's own coefficient encoding only takes plaintext moduli up to 32 bits, too small
for a month's bill. Its packed encoding takes any batching prime, and a packed plaintext
is the polynomial whose values at the N primitive 2N-th roots of unity modulo t are the
slots. So this module evaluates a coefficient vector at those roots (a negacyclic number
theoretic transform, NTT) and hands the values to ``MakePackedPlaintext``; after
decryption it interpolates the slots back into coefficients.

The roots are assigned to slots in this module's own order, not in OpenFHE's. That is
sound because both maps are ring isomorphisms ``Z_t[x]/(x^N+1) -> Z_t^N``: sums and
products of plaintexts and ciphertexts commute with them, so a receiver that inverts this
module's map after decryption reads exactly the coefficients of the product the cloud
computed. No rotation (and so no rotation key) is ever needed.

Arithmetic is vectorized with numpy in int64: t < 2^42 and every product is split into
14-bit limbs so no intermediate value exceeds 2^63.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from metrocloud.fhe.params import FheParameters

Vector = npt.NDArray[np.int64]

_LIMB = 14
_LIMB_MASK = (1 << _LIMB) - 1
MAX_MODULUS_BITS = 42


def mul_mod(a: Vector, b: Vector, t: int) -> Vector:
    """``a * b mod t`` element-wise for values in ``[0, t)``, t < 2^42, in int64."""
    r = (a * (b >> (2 * _LIMB))) % t
    r = ((r << _LIMB) + a * ((b >> _LIMB) & _LIMB_MASK)) % t
    return ((r << _LIMB) + a * (b & _LIMB_MASK)) % t


def primitive_root(order: int, t: int) -> int:
    """The smallest-generator primitive ``order``-th root of unity modulo the prime t."""
    if (t - 1) % order:
        raise ValueError(f"t = {t} has no {order}-th roots of unity (t != 1 mod {order})")
    for g in range(2, 10_000):
        w = pow(g, (t - 1) // order, t)
        if pow(w, order // 2, t) == t - 1:  # order is a power of two: w has exactly this order
            return w
    raise ValueError(f"no primitive {order}-th root of unity found modulo {t}")


class NegacyclicNtt:
    """Evaluation of polynomials mod ``x^n + 1`` at the primitive 2n-th roots of unity mod t.

    ``forward(m)[j] = m(psi^(2j+1))`` and ``inverse`` interpolates; ``psi`` is a fixed
    primitive 2n-th root of unity. Products of polynomials are element-wise products of
    their transforms.
    """

    def __init__(self, n: int, t: int) -> None:
        if n < 2 or n & (n - 1):
            raise ValueError("n must be a power of two >= 2")
        if t.bit_length() > MAX_MODULUS_BITS:
            raise ValueError(f"modulus of {t.bit_length()} bits; at most {MAX_MODULUS_BITS}")
        self.n, self.t = n, t
        psi = primitive_root(2 * n, t)
        omega = psi * psi % t
        bits = n.bit_length() - 1
        self._reverse = np.array([int(f"{i:0{bits}b}"[::-1], 2) for i in range(n)])
        self._twist = self._powers(psi, n)
        n_inverse = pow(n, -1, t)
        self._untwist = np.array(
            [pow(psi, -i, t) * n_inverse % t for i in range(n)], dtype=np.int64
        )
        self._stages: list[Vector] = []
        self._stages_inverse: list[Vector] = []
        m = 2
        while m <= n:
            w = pow(omega, n // m, t)
            self._stages.append(self._powers(w, m // 2))
            self._stages_inverse.append(self._powers(pow(w, -1, t), m // 2))
            m *= 2

    def _powers(self, base: int, count: int) -> Vector:
        out, acc = [], 1
        for _ in range(count):
            out.append(acc)
            acc = acc * base % self.t
        return np.array(out, dtype=np.int64)

    def _dft(self, a: Vector, stages: list[Vector]) -> Vector:
        """Iterative radix-2 Cooley-Tukey transform of length n with the given twiddles."""
        t, n = self.t, self.n
        a = a[self._reverse]
        m = 2
        for twiddles in stages:
            blocks = a.reshape(n // m, m)
            u = blocks[:, : m // 2]
            v = mul_mod(blocks[:, m // 2 :], twiddles[None, :], t)
            a = np.concatenate(((u + v) % t, (u - v) % t), axis=1).reshape(n)
            m *= 2
        return a

    def forward(self, coefficients: Sequence[int] | Vector) -> Vector:
        a = self._reduce(coefficients)
        return self._dft(mul_mod(a, self._twist, self.t), self._stages)

    def inverse(self, values: Sequence[int] | Vector) -> Vector:
        a = self._reduce(values)
        return mul_mod(self._dft(a, self._stages_inverse), self._untwist, self.t)

    def _reduce(self, values: Sequence[int] | Vector) -> Vector:
        if len(values) > self.n:
            raise ValueError(f"{len(values)} values for a transform of length {self.n}")
        out = np.zeros(self.n, dtype=np.int64)
        out[: len(values)] = np.asarray(values, dtype=np.int64) % self.t
        return out


class CoefficientCodec:
    """Coefficient vectors <-> the slot values that OpenFHE packs and unpacks."""

    def __init__(self, params: FheParameters) -> None:
        self.params = params
        self.ntt = NegacyclicNtt(params.ring_dimension, params.plaintext_modulus)

    def to_slots(self, coefficients: Sequence[int] | Vector) -> list[int]:
        """Slot values (centred in ``(-t/2, t/2]``) of the polynomial with these coefficients."""
        t = self.params.plaintext_modulus
        values = self.ntt.forward(coefficients)
        centred = np.where(values > t // 2, values - t, values)
        return [int(v) for v in centred]

    def from_slots(self, slots: Sequence[int]) -> list[int]:
        """The coefficients, in ``[0, t)``, of the polynomial whose slots were decrypted."""
        if len(slots) != self.params.ring_dimension:
            raise ValueError(f"{len(slots)} slots; the ring has {self.params.ring_dimension}")
        return [int(v) for v in self.ntt.inverse(slots)]


@lru_cache(maxsize=8)
def codec_for(params: FheParameters) -> CoefficientCodec:
    """One codec per parameter set (its twiddle tables take a few milliseconds to build)."""
    return CoefficientCodec(params)
