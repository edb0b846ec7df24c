"""Plaintext models of products in ``Z_t[x] / (x^n + 1)`` for the coefficient-encoding tests.

Both are independent of :mod:`metrocloud.fhe.coefficients`: ``negacyclic_naive`` is the
textbook double sum in Python integers; ``negacyclic_product`` computes the same thing for
ring dimension 8192 in well under a second (exact schoolbook convolutions of 14-bit limbs in
int64, recombined in Python integers). The tests check the second against the first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LIMB = 14
LIMBS = 3  # 42 bits: every modulus NegacyclicNtt accepts


def negacyclic_naive(a: Sequence[int], b: Sequence[int], t: int) -> list[int]:
    """``a * b mod (x^n + 1, t)``: x^n = -1, so terms of degree n + k land at k with a minus."""
    n = len(a)
    assert len(b) == n
    out = [0] * n
    for i, ai in enumerate(a):
        if ai == 0:
            continue
        for j, bj in enumerate(b):
            k = i + j
            if k < n:
                out[k] += ai * bj
            else:
                out[k - n] -= ai * bj
    return [v % t for v in out]


def negacyclic_product(a: Sequence[int], b: Sequence[int], t: int) -> list[int]:
    """The same product for coefficients in ``[0, 2^42)``, fast enough for n = 8192."""
    n = len(a)
    assert len(b) == n
    assert all(0 <= v < 1 << (LIMB * LIMBS) for v in (*a, *b))

    def limbs(v: Sequence[int]) -> list[np.ndarray]:
        x = np.array(v, dtype=np.int64)
        return [(x >> (LIMB * i)) & ((1 << LIMB) - 1) for i in range(LIMBS)]

    # Each limb product is < 2^28 and a coefficient sums at most n = 2^13 of them: < 2^41.
    assert n <= 1 << 13
    full = np.zeros(2 * n, dtype=object)
    for i, ai in enumerate(limbs(a)):
        for j, bj in enumerate(limbs(b)):
            full[: 2 * n - 1] += np.convolve(ai, bj).astype(object) * (1 << (LIMB * (i + j)))
    return [int(v) % t for v in full[:n] - full[n:]]
