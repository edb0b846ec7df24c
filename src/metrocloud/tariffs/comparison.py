"""Tariffs whose register depends on an encrypted value: TAF 3 and TAF 4.

The register of a quarter hour follows from comparing an encrypted number with plaintext
thresholds: its own energy (TAF 3, load-dependent) or the energy consumed since the period
began (TAF 4, consumption-dependent). The gateway sends that number bit-sliced; the
comparisons run on bit planes with :class:`~metrocloud.fhe.arith.Arith` in log depth.

Layout (BFV, N = 16384, rows of H = 8192 slots). A transmission covers a whole billing
period (up to 4096 quarter hours). Interval ``i`` is a *lane*: row ``i // 2048``, position
``i % 2048``. Each row has four blocks of 2048 slots; a block holds one quantity for every
lane, so a ciphertext carries four quantities::

    blocks, in order:  bit planes (LSB first) [, valid energy], error energy, index, fingerprint

Evaluation (one transmission = the period; c and c' alike):

1. a block is brought to block 0 by rotating by multiples of 2048; bit planes stay unmasked
   (the comparisons work lane by lane, garbage lanes only meet garbage lanes), every other
   quantity is masked to block 0 (one level);
2. ``ge_k = [x >= T_k]`` for every threshold (depth ceil(log2 bits)); the energy ``e`` is
   the valid energy (TAF 4) or the planes recombined and masked (TAF 3);
3. ``e_k = e * [x >= T_k]`` (for TAF 4 folded into the comparison to save a level); register
   k gets ``e_k - e_{k+1}``, the bill ``p_0 e + sum (p_k - p_{k-1}) e_k``: ``e`` is zero
   outside the lanes, so every product is clean without another mask;
4. each value goes to its own block of a result ciphertext (four per ciphertext); read-out
   sums every block over its lanes (rotations by 1, 8, 64, 512, then a row swap).

Depth: TAF 3 (13 bits) 5, TAF 4 (24 bits) 6. Rotation keys: 1, 8, 64, 512, 2048 and the row
swap, plus the relinearization key.
"""

from __future__ import annotations

import itertools
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from metrocloud.fhe.arith import COMPARISON_PARAMETERS, FUSED_TOP_BITS, Arith, to_bits
from metrocloud.fhe.context import Ciphertext
from metrocloud.fhe.evaluator import Evaluator
from metrocloud.fhe.packing import Interval, index_fingerprint
from metrocloud.fhe.params import FheParameters
from metrocloud.tariffs.base import (
    RegisterSet,
    TariffConfigError,
    TariffProgram,
    TransmissionContent,
)
from metrocloud.tariffs.taf1 import MAX_INTERVALS_PER_PERIOD, positive_int

LANES_PER_ROW = 2048
BLOCKS_PER_ROW = 4
MAX_LANES = 2 * LANES_PER_ROW
SUM_STEPS = (1, 8, 64, 512)  # each applied 7 times (3 times for 512): 2048 lanes
BLOCK_STEP = LANES_PER_ROW


class LaneLayout:
    """Where lane ``i`` of block ``m`` sits in the ciphertexts of a transmission."""

    def __init__(self, params: FheParameters) -> None:
        if params.row != BLOCKS_PER_ROW * LANES_PER_ROW:
            raise ValueError("comparison tariffs need rows of 8192 slots (N = 16384)")
        self.params = params
        self.half = params.row

    def slot(self, lane: int, block: int) -> int:
        row, pos = divmod(lane, LANES_PER_ROW)
        return row * self.half + (block % BLOCKS_PER_ROW) * LANES_PER_ROW + pos

    def pack(self, blocks: Sequence[Sequence[int]]) -> list[list[int]]:
        """Slot vectors, four blocks each, for per-lane values of every block."""
        out: list[list[int]] = []
        for b, values in enumerate(blocks):
            if len(values) > MAX_LANES:
                raise ValueError(f"{len(values)} lanes do not fit {MAX_LANES}")
            if b % BLOCKS_PER_ROW == 0:
                out.append([0] * self.params.slots)
            vector = out[-1]
            for lane, value in enumerate(values):
                vector[self.slot(lane, b)] = value
        return out

    def lane_mask(self) -> list[int]:
        """1 in the lanes of block 0 (both rows)."""
        mask = [0] * (self.half + LANES_PER_ROW)
        for lane in range(MAX_LANES):
            mask[self.slot(lane, 0)] = 1
        return mask


class ComparisonProgram(TariffProgram):
    """Base of TAF 3 and TAF 4: one transmission per period, many ciphertexts each."""

    name: ClassVar[str]
    version: ClassVar[str]
    bits: ClassVar[int]
    parameters: ClassVar[FheParameters] = COMPARISON_PARAMETERS
    relinearization: ClassVar[bool] = True
    whole_period: ClassVar[bool] = True
    threshold_key: ClassVar[str]
    code_modules = (
        "metrocloud.tariffs.base",
        "metrocloud.tariffs.comparison",
        "metrocloud.fhe.arith",
        "metrocloud.fhe.evaluator",
    )
    #: whether the valid energy travels as its own block (else it is the compared value)
    sends_energy: ClassVar[bool]

    def __init__(self, params: FheParameters, config: dict[str, Any]) -> None:
        self.layout = LaneLayout(params)
        super().__init__(params, config)

    # -- configuration ----------------------------------------------------------------------
    def validate_config(self) -> None:
        known = {self.threshold_key, "prices_mct_per_kwh", "max_interval_wh"}
        unknown = set(self.config) - known
        if unknown:
            raise TariffConfigError(f"{self.name}: unknown settings {sorted(unknown)}")
        thresholds = self.config.get(self.threshold_key)
        if not isinstance(thresholds, list) or not 1 <= len(thresholds) <= 6:
            raise TariffConfigError(f"{self.name}: {self.threshold_key} must list 1 to 6 values")
        previous = 0
        for value in thresholds:
            if not isinstance(value, int) or isinstance(value, bool) or value <= previous:
                raise TariffConfigError(
                    f"{self.name}: {self.threshold_key} must be positive integers, increasing"
                )
            previous = value
        if previous >= 1 << self.bits:
            raise TariffConfigError(
                f"{self.name}: {previous} exceeds the {self.bits}-bit range of the comparison"
            )
        prices = self.config.get("prices_mct_per_kwh")
        if not isinstance(prices, list) or len(prices) != len(thresholds) + 1:
            raise TariffConfigError(
                f"{self.name}: prices_mct_per_kwh needs one price per band ({len(thresholds) + 1})"
            )
        for n in range(len(prices)):
            positive_int({"price": prices[n]}, "price", f"{self.name} band {n}")
        self.tariff_registers = len(prices)
        self.config.setdefault("max_interval_wh", 5000)
        max_wh = positive_int(self.config, "max_interval_wh", self.name)
        if max_wh >= 1 << 13:
            raise TariffConfigError(f"{self.name}: max_interval_wh must stay below 8192")
        worst = max_wh * MAX_INTERVALS_PER_PERIOD * max(prices)
        if worst >= self.params.plaintext_modulus:
            raise TariffConfigError(
                f"{self.name}: a period can reach a bill of {worst}, beyond the exact range "
                f"{self.params.plaintext_modulus} of {self.params.parameters_id}"
            )

    @property
    def thresholds(self) -> list[int]:
        return [int(v) for v in self.config[self.threshold_key]]

    @property
    def prices(self) -> list[int]:
        return [int(v) for v in self.config["prices_mct_per_kwh"]]

    def register_prices(self) -> list[int]:
        return self.prices

    def band(self, x: int) -> int:
        return sum(x >= t for t in self.thresholds)

    def bill(self, tariff_registers_wh: Sequence[int]) -> int:
        return sum(e * p for e, p in zip(tariff_registers_wh, self.prices, strict=True))

    # -- what TAF 3 and TAF 4 differ in -------------------------------------------------------
    @abstractmethod
    def compared(self, intervals: Sequence[Interval]) -> list[int]:
        """Per interval, the number compared with the thresholds."""

    # -- gateway side -----------------------------------------------------------------------
    def input_blocks(self, meter_id: str, intervals: Sequence[Interval]) -> list[list[int]]:
        self.transmission_intervals(len(intervals))
        blocks = to_bits(self.compared(intervals), self.bits)
        if self.sends_energy:
            blocks.append([0 if iv.error else iv.energy_wh for iv in intervals])
        blocks.append([iv.energy_wh if iv.error else 0 for iv in intervals])
        blocks.append([iv.index for iv in intervals])
        blocks.append([index_fingerprint(meter_id, iv.index) for iv in intervals])
        return blocks

    # -- receiver side ----------------------------------------------------------------------
    def unpack(
        self,
        meter_id: str,
        decrypted: Sequence[Sequence[int]],
        first_index: int,
        count: int,
        period_start: int,
    ) -> TransmissionContent:
        blocks = self.bits + (1 if self.sends_energy else 0) + 3
        expected = -(-blocks // BLOCKS_PER_ROW)
        if len(decrypted) != expected:
            raise ValueError(
                f"{len(decrypted)} ciphertexts; a {self.name} transmission has {expected}"
            )
        if count > MAX_LANES:
            raise ValueError(f"{count} readings do not fit {MAX_LANES} lanes")
        values = [
            [decrypted[b // BLOCKS_PER_ROW][self.layout.slot(lane, b)] for lane in range(MAX_LANES)]
            for b in range(blocks)
        ]
        if any(v for block in values for v in block[count:]):
            raise ValueError("values outside the transmission's quarter hours")
        planes = values[: self.bits]
        if any(v not in (0, 1) for plane in planes for v in plane):
            raise ValueError("a bit plane holds a value other than 0 or 1")
        compared = [sum(plane[i] << j for j, plane in enumerate(planes)) for i in range(count)]
        valid = values[self.bits] if self.sends_energy else compared
        error, index, fingerprint = values[blocks - 3 :]
        intervals = tuple(
            Interval(first_index + i, error[i], True)
            if error[i]
            else Interval(first_index + i, valid[i])
            for i in range(count)
        )
        if any(error[i] and valid[i] for i in range(count)):
            raise ValueError("a quarter hour carries valid and erroneous energy at once")
        if self.compared(intervals) != compared:
            raise ValueError("the bit planes do not hold the compared energies")
        t = self.params.plaintext_modulus
        return TransmissionContent(
            intervals=intervals,
            error_wh=sum(error[:count]),
            total_wh=sum(iv.energy_wh for iv in intervals),
            index_sum=sum(index[:count]) % t,
            fingerprint_sum=sum(fingerprint[:count]) % t,
        )

    def register_names(self) -> list[str]:
        """Bands by their thresholds: ``< 250 Wh``, ``250-1000 Wh``, ``>= 1000 Wh``."""
        bounds = self.thresholds
        names = [f"< {bounds[0]} Wh"]
        names += [f"{lo}–{hi} Wh" for lo, hi in itertools.pairwise(bounds)]
        return [*names, f"≥ {bounds[-1]} Wh"]

    def transmission_intervals(self, period_intervals: int) -> int:
        if period_intervals > MAX_INTERVALS_PER_PERIOD:
            raise TariffConfigError(
                f"{self.name}: periods of at most {MAX_INTERVALS_PER_PERIOD} intervals "
                "(31 days): the exact range is checked for that length"
            )
        return period_intervals

    def encode(
        self, meter_id: str, intervals: Sequence[Interval], block: int, period_start: int
    ) -> list[list[int]]:
        """The slot vectors the gateway encrypts (twice) for one billing period."""
        return self.layout.pack(self.input_blocks(meter_id, intervals))

    # -- keys ----------------------------------------------------------------------------------
    def rotation_steps(self, block: int) -> set[int]:
        return {*SUM_STEPS, BLOCK_STEP}

    def row_swap_index(self) -> int:
        return 2 * self.params.ring_dimension - 1

    def automorphisms(self) -> list[int]:
        return [self.row_swap_index()]

    # -- cloud side ----------------------------------------------------------------------------
    def _block(self, arith: Arith, cts: Sequence[Ciphertext], b: int) -> Ciphertext:
        ct = cts[b // BLOCKS_PER_ROW]
        for _ in range(b % BLOCKS_PER_ROW):
            ct = arith.cc.EvalRotate(ct, BLOCK_STEP)
        return ct

    def _clean(self, arith: Arith, ct: Ciphertext) -> Ciphertext:
        return arith.mul_plain(ct, self.layout.lane_mask())

    def evaluate(
        self, ev: Evaluator, cts: Sequence[Ciphertext], block: int, first_index: int
    ) -> list[Ciphertext]:
        """Unsummed result ciphertexts of one transmission (see the module docstring)."""
        arith = Arith(ev.cc, self.params.plaintext_modulus)
        planes = [self._block(arith, cts, b) for b in range(self.bits)]
        nxt = self.bits
        if self.sends_energy:
            energy = self._clean(arith, self._block(arith, cts, nxt))
            nxt += 1
        else:
            energy = self._clean(arith, arith.from_bits(planes))
        error, index, fingerprint = (
            self._clean(arith, self._block(arith, cts, b)) for b in range(nxt, nxt + 3)
        )
        # e_ge[k] = e * [x >= T_k]; register k = e_ge[k] - e_ge[k+1] (e_ge before the first
        # threshold is e itself, after the last zero); the bill is linear in them
        e_ge = [energy, *self.energy_at_or_above(arith, energy, planes)]
        registers = [arith.sub(e_ge[k], e_ge[k + 1]) for k in range(len(e_ge) - 1)]
        registers.append(e_ge[-1])
        prices = self.prices
        bill = arith.mul_plain(energy, prices[0])
        for k in range(1, len(e_ge)):
            bill = arith.add(bill, arith.mul_plain(e_ge[k], prices[k] - prices[k - 1]))
        total = arith.add(energy, error)
        values = [*registers, bill, total, error, index, fingerprint]
        return self._place(arith, values)

    def energy_at_or_above(
        self, arith: Arith, energy: Ciphertext, planes: Sequence[Ciphertext]
    ) -> list[Ciphertext]:
        """``e * [x >= T_k]`` for every threshold. Few bits (TAF 3): one shared comparison
        tree, then a product; many bits (TAF 4): the product folded into each comparison,
        which saves the level that 24 bits would otherwise cost."""
        if self.bits <= FUSED_TOP_BITS:
            return [arith.mul(energy, ge) for ge in arith.ge_plain_many(planes, self.thresholds)]
        return [arith.mul_ge_plain(energy, planes, t) for t in self.thresholds]

    def _place(self, arith: Arith, values: Sequence[Ciphertext]) -> list[Ciphertext]:
        out: list[Ciphertext] = []
        for n, value in enumerate(values):
            block = n % BLOCKS_PER_ROW
            for _ in range((BLOCKS_PER_ROW - block) % BLOCKS_PER_ROW):
                value = arith.cc.EvalRotate(value, BLOCK_STEP)  # right by `block` blocks
            if block == 0:
                out.append(value)
            else:
                out[-1] = arith.add(out[-1], value)
        return out

    def read_out(
        self,
        ev: Evaluator,
        partials: Sequence[Sequence[Ciphertext]],
        block: int,
        period_start: int,
    ) -> list[Ciphertext]:
        """Add the partials of the period and sum every block over its lanes."""
        arith = Arith(ev.cc, self.params.plaintext_modulus)
        swap_keys = ev.cc.GetEvalAutomorphismKeyMap(partials[0][0].GetKeyTag())
        summed = []
        for group in zip(*partials, strict=True):
            acc = group[0]
            for ct in group[1:]:
                acc = arith.add(acc, ct)
            summed.append(acc)
        return [self._lane_sum(arith, ct, swap_keys) for ct in summed]

    def _lane_sum(self, arith: Arith, ct: Ciphertext, swap_keys: Any) -> Ciphertext:
        cc = arith.cc
        for step in SUM_STEPS:
            repeats = 3 if step == SUM_STEPS[-1] else 7
            acc, rotated = ct, ct
            for _ in range(repeats):
                rotated = cc.EvalRotate(rotated, step)
                acc = cc.EvalAdd(acc, rotated)
            ct = acc
        swapped = cc.EvalAutomorphism(ct, self.row_swap_index(), swap_keys)
        return cc.EvalAdd(ct, swapped)

    # -- results ----------------------------------------------------------------------------------
    def result_slots(self) -> list[tuple[int, int]]:
        """(result ciphertext, slot) of registers..., bill, total, error, index, fingerprint."""
        n = self.tariff_registers + 5
        return [(k // BLOCKS_PER_ROW, (k % BLOCKS_PER_ROW) * LANES_PER_ROW) for k in range(n)]

    def decode(self, decrypted: Sequence[Sequence[int]], block: int) -> RegisterSet:
        values = [decrypted[c][s] for c, s in self.result_slots()]
        k = self.tariff_registers
        return RegisterSet(
            tariff_registers_wh=tuple(values[:k]),
            error_register_wh=values[k + 2],
            total_register_wh=values[k + 1],
            bill_microcent=values[k],
            index_sum=values[k + 3],
            fingerprint_sum=values[k + 4],
        )

    def reference(self, meter_id: str, intervals: Sequence[Interval]) -> RegisterSet:
        registers = [0] * self.tariff_registers
        for iv, x in zip(intervals, self.compared(intervals), strict=True):
            if not iv.error:
                registers[self.band(x)] += iv.energy_wh
        return self.register_set(meter_id, intervals, registers)


class Taf3(ComparisonProgram):
    """Load-dependent: a quarter hour's own energy picks its price band.

    Config: ``thresholds_wh`` (increasing energies per quarter hour; band k holds
    ``T_k <= e < T_{k+1}``), ``prices_mct_per_kwh`` (one per band), ``max_interval_wh``.
    Erroneous intervals go to the error register only (their bits are sent as zero).
    """

    name = "taf3"
    version = "1.0.0"
    bits = 13
    threshold_key = "thresholds_wh"
    sends_energy = False

    def compared(self, intervals: Sequence[Interval]) -> list[int]:
        return [0 if iv.error else iv.energy_wh for iv in intervals]


class Taf4(ComparisonProgram):
    """Consumption-dependent: once the period's consumption passes a budget, the next price.

    Config: ``budgets_wh`` (increasing), ``prices_mct_per_kwh`` (one per band),
    ``max_interval_wh``. A quarter hour goes to the band of the energy consumed in the period
    *before* it (valid and erroneous alike), so a quarter hour that crosses a budget is still
    billed at the lower price.
    """

    name = "taf4"
    version = "1.0.0"
    bits = 24
    threshold_key = "budgets_wh"
    sends_energy = True

    def validate_config(self) -> None:
        super().validate_config()
        most = int(self.config["max_interval_wh"]) * MAX_INTERVALS_PER_PERIOD
        if most >= 1 << self.bits:
            raise TariffConfigError(
                f"taf4: a period's consumption can reach {most} Wh, beyond {self.bits} bits"
            )

    def compared(self, intervals: Sequence[Interval]) -> list[int]:
        before, out = 0, []
        for iv in intervals:
            out.append(before)
            before += iv.energy_wh
        return out
