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

    def add_all(self, cts: Sequence[Ciphertext]) -> Ciphertext:
        if not cts:
            raise ValueError("nothing to add")
        acc = cts[0]
        for ct in cts[1:]:
            acc = self.cc.EvalAdd(acc, ct)
        return acc
