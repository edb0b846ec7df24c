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

from metrocloud.core.software import SoftwareId
from metrocloud.fhe.context import Ciphertext
from metrocloud.fhe.evaluator import Evaluator
from metrocloud.fhe.packing import Interval, SlotLayout, index_fingerprint
from metrocloud.fhe.params import FheParameters

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
    """Slots of a result vector: registers in row 0, integrity sums at the start of row 1."""

    tariff_registers: int
    half: int

    @property
    def error_at(self) -> int:
        return self.tariff_registers

    @property
    def total_at(self) -> int:
        return self.tariff_registers + 1

    @property
    def bill_at(self) -> int:
        return self.tariff_registers + 2

    @property
    def index_sum_at(self) -> int:
        return self.half

    @property
    def fingerprint_sum_at(self) -> int:
        return self.half + 1

    @property
    def length(self) -> int:
        return self.half + 2

    def decode(self, slots: Sequence[int]) -> RegisterSet:
        if len(slots) < self.length:
            raise ValueError(f"result has {len(slots)} slots, needs {self.length}")
        return RegisterSet(
            tariff_registers_wh=tuple(slots[: self.tariff_registers]),
            error_register_wh=slots[self.error_at],
            total_register_wh=slots[self.total_at],
            bill_microcent=slots[self.bill_at],
            index_sum=slots[self.index_sum_at],
            fingerprint_sum=slots[self.fingerprint_sum_at],
        )


class TariffConfigError(ValueError):
    """A tariff configuration that cannot be billed exactly or makes no sense."""


class TariffProgram(ABC):
    """A certified tariff program. Subclasses are legally relevant software."""

    name: ClassVar[str]
    version: ClassVar[str]
    tariff_registers: ClassVar[int]

    def __init__(self, params: FheParameters, config: dict[str, Any]) -> None:
        self.params = params
        self.config = dict(config)
        self.validate_config()

    # -- identification -------------------------------------------------------------
    @property
    @abstractmethod
    def software_id(self) -> SoftwareId: ...

    @property
    def config_digest(self) -> str:
        raw = json.dumps(self.config, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(raw).hexdigest()

    def result_layout(self) -> ResultLayout:
        return ResultLayout(self.tariff_registers, self.params.row)

    # -- what subclasses provide -----------------------------------------------------
    @abstractmethod
    def validate_config(self) -> None:
        """Raise :class:`TariffConfigError` with a clear message for bad configuration."""

    @abstractmethod
    def bill(self, tariff_registers_wh: Sequence[int]) -> int:
        """The bill in micro-cent for these tariff registers (prices of the configuration)."""

    @abstractmethod
    def rotation_steps(self, layout: SlotLayout) -> set[int]:
        """The rotation keys the receiver must hand out for this program."""

    @abstractmethod
    def evaluate(self, ev: Evaluator, batch: Ciphertext, layout: SlotLayout) -> Ciphertext:
        """Per-transmission step on one encrypted batch."""

    @abstractmethod
    def read_out(
        self, ev: Evaluator, partials: Sequence[Ciphertext], layout: SlotLayout
    ) -> Ciphertext:
        """Combine the partials of a billing period into the encrypted result."""

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
