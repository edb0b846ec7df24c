"""Where values sit in the slots of one transmission's ciphertext.

A BFV ciphertext at ring dimension N holds N slots in two rows of N/2; a rotation turns
both rows at once. One transmission (a day of quarter hours by default) is packed as::

    row 0:  [0, B)        energy of each interval (Wh), valid readings
            [B, 2B)       energy of intervals the tariff cannot attribute (error register)
    row 1:  [H, H+B)      the reading index of each interval          (integrity protocol)
            [H+B, H+2B)   a fingerprint of (meter, index) per interval (integrity protocol)

with B the block (a power of two >= readings per transmission) and H = N/2. Every
interval of a transmission has one slot in each block; an interval's energy is either in
the valid block or in the error block, the other holds 0.

The gateway encrypts this vector twice (``c`` and ``c'``), so the index and its fingerprint
travel twice too (``v`` and ``v'`` of the protocol). Read-out sums each block with
``log2(B)`` rotations; the sums of the index blocks let the receiver check that exactly the
expected readings went into a result, each once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from metrocloud.fhe.params import FheParameters


def index_fingerprint(meter_id: str, index: int) -> int:
    """A 32-bit pseudo-random tag of (meter, index): sums of tags do not cancel out."""
    digest = hashlib.sha256(b"metrocloud/index/" + meter_id.encode() + b"/" + str(index).encode())
    return int.from_bytes(digest.digest()[:4], "big")


@dataclass(frozen=True)
class Interval:
    """The energy of one quarter hour as the gateway derived it from the meter register."""

    index: int
    energy_wh: int
    error: bool = False


@dataclass(frozen=True)
class SlotLayout:
    params: FheParameters
    block: int

    def __post_init__(self) -> None:
        if self.block < 1 or self.block & (self.block - 1):
            raise ValueError("block must be a power of two")
        if 2 * self.block > self.params.row:
            raise ValueError(
                f"a transmission of {self.block} intervals does not fit ring dimension "
                f"{self.params.ring_dimension}"
            )

    @classmethod
    def for_intervals(cls, params: FheParameters, count: int) -> SlotLayout:
        block = 1
        while block < count:
            block *= 2
        return cls(params, block)

    @property
    def half(self) -> int:
        return self.params.row

    @property
    def valid_at(self) -> int:
        return 0

    @property
    def error_at(self) -> int:
        return self.block

    @property
    def index_at(self) -> int:
        return self.half

    @property
    def fingerprint_at(self) -> int:
        return self.half + self.block

    @property
    def used_slots(self) -> int:
        return self.half + 2 * self.block

    def blocksum_steps(self) -> list[int]:
        steps, s = [], 1
        while s < self.block:
            steps.append(s)
            s *= 2
        return steps

    def pack(self, meter_id: str, intervals: Sequence[Interval]) -> list[int]:
        if len(intervals) > self.block:
            raise ValueError(f"{len(intervals)} intervals do not fit a block of {self.block}")
        slots = [0] * self.used_slots
        for k, iv in enumerate(intervals):
            if iv.energy_wh < 0:
                raise ValueError(f"negative energy at index {iv.index}")
            slots[(self.error_at if iv.error else self.valid_at) + k] = iv.energy_wh
            slots[self.index_at + k] = iv.index
            slots[self.fingerprint_at + k] = index_fingerprint(meter_id, iv.index)
        return slots
