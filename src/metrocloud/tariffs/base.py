"""The tariff-program interface: an encrypted evaluation plus its plaintext reference.

A tariff program turns the encrypted transmissions of one billing period into one
encrypted result vector laid out by :class:`ResultLayout`: the tariff registers, the error
register, the total register and the bill, plus the two integrity sums of the reading
indices. Evaluation happens in two steps so that work is spread over the period and any
number of ``legal`` workers can share it:

* :meth:`TariffProgram.evaluate` runs per transmission and returns a partial ciphertext;
* :meth:`TariffProgram.read_out` combines all partials of the period into the result.

:meth:`TariffProgram.reference` computes the same registers from plaintext intervals; the
encrypted and the plaintext results must agree exactly.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from metrocloud.core.clock import READINGS_PER_DAY
from metrocloud.core.software import SoftwareId, module_checksum
from metrocloud.fhe.context import Ciphertext
from metrocloud.fhe.evaluator import Evaluator
from metrocloud.fhe.packing import Interval, SlotLayout, index_fingerprint
from metrocloud.fhe.params import DEFAULT_PARAMETERS, FheParameters

MICROCENT_PER_EURO = 100_000_000


@dataclass(frozen=True)
class RegisterSet:
    """Registers as TR-03109 keeps them; energies in Wh, the bill in micro-cent.

    A price in milli-cent per kWh times an energy in Wh gives micro-cent (1e-6 ct).
    """

    tariff_registers_wh: tuple[int, ...]
    error_register_wh: int
    total_register_wh: int
    bill_microcent: int
    index_sum: int
    fingerprint_sum: int

    @property
    def consistent(self) -> bool:
        """Tariff registers plus error register equal the total register."""
        return sum(self.tariff_registers_wh) + self.error_register_wh == self.total_register_wh

    @property
    def bill_euro(self) -> float:
        return self.bill_microcent / MICROCENT_PER_EURO


def expected_integrity_sums(meter_id: str, indices: Sequence[int], modulus: int) -> tuple[int, int]:
    """What the index blocks of a correct result must hold for these reading indices."""
    return (
        sum(indices) % modulus,
        sum(index_fingerprint(meter_id, i) for i in indices) % modulus,
    )


@dataclass(frozen=True)
class ResultLayout:
    """Where a result vector keeps its values.

    Every value is the sum of one block of the partials, left where the block sums put it:
    tariff register 0 in slot 0, the error register in slot B, register k >= 1 in slot
    (k + 1) * B, the total register and the bill in the two blocks after the registers, the
    index sums at the start of row 1 (H) and at H + B. No value needs moving at read-out.
    """

    tariff_registers: int
    block: int
    half: int

    @property
    def register_slots(self) -> tuple[int, ...]:
        return (0, *((k + 1) * self.block for k in range(1, self.tariff_registers)))

    @property
    def error_at(self) -> int:
        return self.block

    @property
    def total_at(self) -> int:
        return (self.tariff_registers + 1) * self.block

    @property
    def bill_at(self) -> int:
        return (self.tariff_registers + 2) * self.block

    @property
    def index_sum_at(self) -> int:
        return self.half

    @property
    def fingerprint_sum_at(self) -> int:
        return self.half + self.block

    @property
    def length(self) -> int:
        return self.half + 2 * self.block

    def value_slots(self) -> list[int]:
        return [
            *self.register_slots,
            self.error_at,
            self.total_at,
            self.bill_at,
            self.index_sum_at,
            self.fingerprint_sum_at,
        ]

    def decode(self, slots: Sequence[int]) -> RegisterSet:
        if len(slots) < self.length:
            raise ValueError(f"result has {len(slots)} slots, needs {self.length}")
        return RegisterSet(
            tariff_registers_wh=tuple(slots[i] for i in self.register_slots),
            error_register_wh=slots[self.error_at],
            total_register_wh=slots[self.total_at],
            bill_microcent=slots[self.bill_at],
            index_sum=slots[self.index_sum_at],
            fingerprint_sum=slots[self.fingerprint_sum_at],
        )


class TariffConfigError(ValueError):
    """A tariff configuration that cannot be billed exactly or makes no sense."""


class TariffProgram(ABC):
    """A certified tariff program. Subclasses are legally relevant software.

    The gateway side (:meth:`encode`) turns the intervals of one transmission into slot
    vectors, each encrypted twice; the cloud side evaluates them per transmission
    (:meth:`evaluate`) and combines the partials at the end of the period (:meth:`read_out`);
    the receiver decodes the decrypted result (:meth:`decode`). ``block`` is the slot block
    of a transmission (a power of two >= its intervals), carried in the messages.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    #: the parameter set the circuit is known (tested) to be exact on
    parameters: ClassVar[FheParameters] = DEFAULT_PARAMETERS
    #: whether the circuit multiplies ciphertexts (the receiver then hands out that key)
    relinearization: ClassVar[bool] = False
    #: whether a transmission must carry the whole billing period (else a day by default)
    whole_period: ClassVar[bool] = False
    tariff_registers: int  # fixed by the class or by its configuration

    def __init__(self, params: FheParameters, config: dict[str, Any]) -> None:
        self.params = params
        self.config = dict(config)
        self.validate_config()

    #: the modules whose code the program's software identification covers
    code_modules: ClassVar[tuple[str, ...]]

    # -- identification -------------------------------------------------------------
    @property
    def software_id(self) -> SoftwareId:
        """Name, version and the SHA-256 over the source of the program's loaded modules."""
        return SoftwareId(self.name, self.version, module_checksum(*self.code_modules))

    @property
    def config_digest(self) -> str:
        raw = json.dumps(self.config, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(raw).hexdigest()

    # -- what subclasses provide -----------------------------------------------------
    @abstractmethod
    def validate_config(self) -> None:
        """Raise :class:`TariffConfigError` with a clear message for bad configuration."""

    @abstractmethod
    def bill(self, tariff_registers_wh: Sequence[int]) -> int:
        """The bill in micro-cent for these tariff registers (prices of the configuration)."""

    @abstractmethod
    def transmission_intervals(self, period_intervals: int) -> int:
        """How many intervals one transmission carries for a period of this length."""

    @abstractmethod
    def rotation_steps(self, block: int) -> set[int]:
        """The rotation keys the receiver must hand out for this program."""

    def automorphisms(self) -> list[int]:
        """Automorphism indices beyond rotations (e.g. the row swap) the program needs."""
        return []

    @abstractmethod
    def encode(self, meter_id: str, intervals: Sequence[Interval], block: int) -> list[list[int]]:
        """Slot vectors of one transmission, as the gateway encrypts them (twice)."""

    @abstractmethod
    def evaluate(
        self, ev: Evaluator, cts: Sequence[Ciphertext], block: int, first_index: int
    ) -> list[Ciphertext]:
        """Per-transmission step on one transmission's ciphertexts; ``first_index`` is the
        reading index of its first interval (the time of every slot follows from it)."""

    @abstractmethod
    def read_out(
        self, ev: Evaluator, partials: Sequence[Sequence[Ciphertext]], block: int
    ) -> list[Ciphertext]:
        """Combine the partials of a billing period into the encrypted result."""

    @abstractmethod
    def decode(self, decrypted: Sequence[Sequence[int]], block: int) -> RegisterSet:
        """The registers of a decrypted result (one slot list per result ciphertext)."""

    @abstractmethod
    def reference(self, meter_id: str, intervals: Sequence[Interval]) -> RegisterSet:
        """The plaintext reference for the same period."""

    # -- shared checks ----------------------------------------------------------------
    def check_range(self, max_interval_wh: int, intervals_per_period: int, price: int) -> None:
        """The largest possible bill must stay below the plaintext modulus."""
        worst = max_interval_wh * intervals_per_period * price
        if worst >= self.params.plaintext_modulus:
            raise TariffConfigError(
                f"{self.name}: a period of {intervals_per_period} intervals at up to "
                f"{max_interval_wh} Wh and {price} m¢/kWh can reach {worst}, beyond the "
                f"exact range {self.params.plaintext_modulus} of {self.params.parameters_id}"
            )


#: a register program's choice of register repeats every week (weekday and time of day)
SCHEDULE_PERIOD = 7 * READINGS_PER_DAY


class RegisterProgram(TariffProgram):
    """A program whose register choice for each quarter hour is public (its time), so a
    plaintext mask per register selects the energies: TAF 1 and TAF 2.

    Per transmission one mask level builds the partial in the result's layout
    (:class:`ResultLayout`): register k's energies in its block, the valid and error energies
    once more in the total block, the price-weighted energies in the bill block. Read-out
    adds the partials, sums each block with log2(B) rotations and keeps the sums with a
    second mask level. Rotation keys: log2(B) + R + 2, whatever the number R of registers.
    """

    def __init__(self, params: FheParameters, config: dict[str, Any]) -> None:
        self._selections: dict[tuple[int, int, int], list[tuple[Any, int]]] = {}
        super().__init__(params, config)

    @abstractmethod
    def prices(self) -> list[int]:
        """Price of each tariff register in milli-cent per kWh."""

    @abstractmethod
    def register_of(self, index: int) -> int:
        """The tariff register of the quarter hour ending at reading ``index``."""

    def bill(self, tariff_registers_wh: Sequence[int]) -> int:
        prices = self.prices()
        if len(tariff_registers_wh) != len(prices):
            raise ValueError(f"{self.name} has {len(prices)} tariff registers")
        return sum(e * p for e, p in zip(tariff_registers_wh, prices, strict=True))

    def check_prices(self, max_interval_wh: int, intervals_per_period: int) -> None:
        self.check_range(max_interval_wh, intervals_per_period, max(self.prices()))

    def layout(self, block: int) -> SlotLayout:
        return SlotLayout(self.params, block)

    def transmission_intervals(self, period_intervals: int) -> int:
        return min(period_intervals, READINGS_PER_DAY)

    def result_layout(self, layout: SlotLayout) -> ResultLayout:
        out = ResultLayout(self.tariff_registers, layout.block, layout.half)
        if out.bill_at + layout.block > layout.half:
            raise TariffConfigError(
                f"{self.name}: {self.tariff_registers} registers of {layout.block} slots do "
                f"not fit one row of {layout.half} slots"
            )
        return out

    def rotation_steps(self, block: int) -> set[int]:
        layout = self.layout(block)
        out = self.result_layout(layout)
        moves = {-slot for slot in (*out.register_slots[1:], out.total_at, out.bill_at)}
        moves.add(layout.error_at - out.total_at)
        return set(layout.blocksum_steps()) | moves

    def masks(self, first_index: int, block: int) -> tuple[list[list[int]], list[int]]:
        """Per register a 0/1 mask over the block, and the price of every slot."""
        owners = [self.register_of(first_index + s) for s in range(block)]
        prices = self.prices()
        per_register = [[int(o == k) for o in owners] for k in range(self.tariff_registers)]
        return per_register, [prices[o] for o in owners]

    def encode(self, meter_id: str, intervals: Sequence[Interval], block: int) -> list[list[int]]:
        return [self.layout(block).pack(meter_id, intervals)]

    def decode(self, decrypted: Sequence[Sequence[int]], block: int) -> RegisterSet:
        return self.result_layout(self.layout(block)).decode(decrypted[0])

    def selection(self, cc: Any, first_index: int, block: int) -> list[tuple[Any, int]]:
        """(mask plaintext, rotation) pairs that turn a transmission into its partial.

        Register 0, the error block and the integrity row stay where the gateway put them;
        register k's energies move to its block, valid and error energy to the total block,
        price-weighted energy to the bill block. The masks depend only on the slots' place
        in the week, so c and c' and every week share the encoded plaintexts.
        """
        key = (id(cc), first_index % SCHEDULE_PERIOD, block)
        if key not in self._selections:
            layout = self.layout(block)
            out = self.result_layout(layout)
            b, half = layout.block, layout.half
            per_register, slot_prices = self.masks(first_index, b)
            ones = [1] * b
            keep = per_register[0] + ones + [0] * (half - 2 * b) + ones + ones
            moves = [(keep, 0)]
            registers = zip(per_register[1:], out.register_slots[1:], strict=True)
            moves += [(mask, -slot) for mask, slot in registers]
            moves.append((ones, -out.total_at))
            moves.append(([0] * layout.error_at + ones, layout.error_at - out.total_at))
            moves.append((slot_prices, -out.bill_at))
            self._selections[key] = [(cc.MakePackedPlaintext(m), step) for m, step in moves]
        return self._selections[key]

    def evaluate(
        self, ev: Evaluator, cts: Sequence[Ciphertext], block: int, first_index: int
    ) -> list[Ciphertext]:
        (batch,) = cts
        cc = ev.cc
        parts = []
        for plaintext, step in self.selection(cc, first_index, block):
            part = cc.EvalMult(batch, plaintext)
            parts.append(cc.EvalRotate(part, step) if step else part)
        return [ev.add_all(parts)]

    def read_out(
        self, ev: Evaluator, partials: Sequence[Sequence[Ciphertext]], block: int
    ) -> list[Ciphertext]:
        cc = ev.cc
        layout = self.layout(block)
        sums = ev.block_sum(ev.add_all([p for (p,) in partials]), layout.blocksum_steps())
        slots = self.result_layout(layout).value_slots()
        keep = [0] * (max(slots) + 1)
        for slot in slots:
            keep[slot] = 1
        return [cc.EvalMult(sums, cc.MakePackedPlaintext(keep))]

    def reference(self, meter_id: str, intervals: Sequence[Interval]) -> RegisterSet:
        valid = [0] * self.tariff_registers
        for iv in intervals:
            if not iv.error:
                valid[self.register_of(iv.index)] += iv.energy_wh
        error = sum(iv.energy_wh for iv in intervals if iv.error)
        index_sum, fp_sum = expected_integrity_sums(
            meter_id, [iv.index for iv in intervals], self.params.plaintext_modulus
        )
        return RegisterSet(
            tariff_registers_wh=tuple(valid),
            error_register_wh=error,
            total_register_wh=sum(valid) + error,
            bill_microcent=self.bill(valid),
            index_sum=index_sum,
            fingerprint_sum=fp_sum,
        )
