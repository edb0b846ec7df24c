"""Homomorphic building blocks over packed BFV ciphertexts used by the tariff programs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from metrocloud.fhe.context import Ciphertext


class Evaluator:
    """Operations a cloud service may run: it holds the context, never a secret key."""

    def __init__(self, context: Any, slots: int) -> None:
        self.cc = context
        self.slots = slots

    def for_decryption(self, cts: Sequence[Ciphertext]) -> list[Ciphertext]:
        """The ciphertexts switched down to the first modulus of the chain (one RNS
        tower): what a result needs from here on is decryption only, and a result shrinks
        by the number of towers (TAF 3: 3.7 MB to 0.5 MB per copy).

        Modulus switching keeps BFV's noise relative to the scale; it adds a rounding term
        of about ``sqrt(N)`` against a scale of ``q_0 / t`` (2^20 for 60-bit ``q_0`` and
        ``t = 2^40``), so whatever decrypted correctly before still does. No further
        homomorphic operation may follow. A ciphertext already on one tower comes back as
        it was."""
        out = []
        for ct in cts:
            try:
                out.append(self.cc.Compress(ct, 1))
            except RuntimeError:  # OpenFHE: dropping a tower would leave none
                out.append(ct)
        return out

    def add_all(self, cts: Sequence[Ciphertext]) -> Ciphertext:
        if not cts:
            raise ValueError("nothing to add")
        acc = cts[0]
        for ct in cts[1:]:
            acc = self.cc.EvalAdd(acc, ct)
        return acc
