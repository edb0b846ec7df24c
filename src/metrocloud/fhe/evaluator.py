"""Homomorphic building blocks over packed BFV ciphertexts used by the tariff programs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from metrocloud.fhe.context import Ciphertext


@dataclass(frozen=True)
class Placement:
    """Move the value at slot ``source`` to slot ``target``, multiplied by ``weight``."""

    source: int
    target: int
    weight: int = 1

    @property
    def step(self) -> int:
        """Left-rotation amount that brings ``source`` to ``target``."""
        return self.source - self.target


def placement_steps(placements: Iterable[Placement]) -> set[int]:
    return {p.step for p in placements if p.step != 0}


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

    def block_sum(self, ct: Ciphertext, steps: Sequence[int]) -> Ciphertext:
        """Slot j receives the sum of slots j .. j+B-1 (B = 2 * last step)."""
        for s in steps:
            ct = self.cc.EvalAdd(ct, self.cc.EvalRotate(ct, s))
        return ct

    def assemble(self, ct: Ciphertext, placements: Sequence[Placement]) -> Ciphertext:
        """A fresh vector holding only the placed (weighted) values, zeros elsewhere.

        Placements with the same rotation share one rotation and one mask.
        """
        by_step: dict[int, dict[int, int]] = defaultdict(dict)
        for p in placements:
            mask = by_step[p.step]
            mask[p.target] = mask.get(p.target, 0) + p.weight
        parts = []
        for step, mask in sorted(by_step.items()):
            rotated = ct if step == 0 else self.cc.EvalRotate(ct, step)
            vector = [0] * (max(mask) + 1)
            for slot, weight in mask.items():
                vector[slot] = weight
            parts.append(self.cc.EvalMult(rotated, self.cc.MakePackedPlaintext(vector)))
        return self.add_all(parts)
