"""The tariff-program interface: an encrypted evaluation plus its plaintext reference.

A tariff program turns the encrypted transmissions of one billing period into encrypted
results: the tariff registers, the error register, the total register and the bill, plus
the two integrity sums of the reading indices (:class:`RegisterSet`). Evaluation happens in
two steps so that work is spread over the period and any number of ``legal`` workers can
share it:

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

from metrocloud.core.software import SoftwareId, module_checksum
from metrocloud.fhe.context import Ciphertext
from metrocloud.fhe.evaluator import Evaluator
from metrocloud.fhe.packing import Interval, index_fingerprint
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

    def differences(
        self, other: RegisterSet, names: Sequence[str], *, this: str, that: str
    ) -> list[str]:
        """What differs between these registers (called ``this``) and ``other`` (``that``),
        one phrase each: ``register T2: cloud 410 Wh, recomputed 400 Wh``. ``names``: the
        tariff registers' names (:meth:`TariffProgram.register_names`)."""
        out = [
            f"register {name}: {this} {a} Wh, {that} {b} Wh"
            for name, a, b in zip(
                names, self.tariff_registers_wh, other.tariff_registers_wh, strict=False
            )
            if a != b
        ]
        if len(self.tariff_registers_wh) != len(other.tariff_registers_wh):
            out.append("a different number of tariff registers")
        for label, a, b in (
            ("error register", self.error_register_wh, other.error_register_wh),
            ("total register", self.total_register_wh, other.total_register_wh),
        ):
            if a != b:
                out.append(f"{label}: {this} {a} Wh, {that} {b} Wh")
        if self.bill_microcent != other.bill_microcent:
            out.append(f"bill: {this} {self.bill_euro:.5f} €, {that} {other.bill_euro:.5f} €")
        if (self.index_sum, self.fingerprint_sum) != (other.index_sum, other.fingerprint_sum):
            out.append(f"index sums: {this} and {that} are of other quarter hours")
        return out


def expected_integrity_sums(meter_id: str, indices: Sequence[int], modulus: int) -> tuple[int, int]:
    """What the index blocks of a correct result must hold for these reading indices."""
    return (
        sum(indices) % modulus,
        sum(index_fingerprint(meter_id, i) for i in indices) % modulus,
    )


@dataclass(frozen=True)
class TransmissionContent:
    """What one decrypted transmission holds, as its tariff program laid it out.

    ``intervals`` are the quarter hours of the transmission with their energies. A layout
    that keeps the error energy per quarter hour (the comparison tariffs) marks those
    intervals erroneous; one that keeps only the transmission's sum of it (the register
    tariffs) shows them with no valid energy, and ``error_wh`` holds the sum either way.
    """

    intervals: tuple[Interval, ...]
    error_wh: int
    total_wh: int
    index_sum: int
    fingerprint_sum: int

    @property
    def consistent(self) -> bool:
        """The transmission's total is its valid plus its error energy."""
        valid = sum(iv.energy_wh for iv in self.intervals if not iv.error)
        return valid + self.error_wh == self.total_wh


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
    #: whether a transmission must carry the whole billing period (else a gateway may split it)
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
    def encode(
        self, meter_id: str, intervals: Sequence[Interval], block: int, period_start: int
    ) -> list[list[int]]:
        """Slot vectors of one transmission, as the gateway encrypts them (twice);
        ``period_start`` is the reading index at which its billing period begins."""

    @abstractmethod
    def evaluate(
        self, ev: Evaluator, cts: Sequence[Ciphertext], block: int, first_index: int
    ) -> list[Ciphertext]:
        """Per-transmission step on one transmission's ciphertexts; ``first_index`` is the
        reading index of its first interval (the time of every slot follows from it)."""

    @abstractmethod
    def read_out(
        self,
        ev: Evaluator,
        partials: Sequence[Sequence[Ciphertext]],
        block: int,
        period_start: int,
    ) -> list[Ciphertext]:
        """Combine the partials of a billing period into the encrypted result."""

    @abstractmethod
    def decode(self, decrypted: Sequence[Sequence[int]], block: int) -> RegisterSet:
        """The registers of a decrypted result (one slot list per result ciphertext)."""

    @abstractmethod
    def reference(self, meter_id: str, intervals: Sequence[Interval]) -> RegisterSet:
        """The plaintext reference for the same period."""

    @abstractmethod
    def unpack(
        self,
        meter_id: str,
        decrypted: Sequence[Sequence[int]],
        first_index: int,
        count: int,
        period_start: int,
    ) -> TransmissionContent:
        """The quarter hours of a decrypted transmission (one slot list per ciphertext of
        :meth:`encode`): the receiver's inverse of the gateway's layout."""

    @abstractmethod
    def register_prices(self) -> list[int]:
        """The price of each tariff register in milli-cent per kWh, in register order."""

    def register_names(self) -> list[str]:
        """A name for each tariff register, for people to read."""
        return [f"T{k + 1}" for k in range(self.tariff_registers)]

    # -- shared ----------------------------------------------------------------------------------
    def recompute(self, meter_id: str, contents: Sequence[TransmissionContent]) -> RegisterSet:
        """The registers of a billing period recomputed from its decrypted transmissions
        with the plaintext reference: what the cloud's result must equal."""
        intervals = [iv for content in contents for iv in content.intervals]
        registers = self.reference(meter_id, intervals).tariff_registers_wh
        error = sum(content.error_wh for content in contents)
        t = self.params.plaintext_modulus
        return RegisterSet(
            tariff_registers_wh=registers,
            error_register_wh=error,
            total_register_wh=sum(registers) + error,
            bill_microcent=self.bill(registers),
            index_sum=sum(content.index_sum for content in contents) % t,
            fingerprint_sum=sum(content.fingerprint_sum for content in contents) % t,
        )

    def register_set(
        self, meter_id: str, intervals: Sequence[Interval], registers: Sequence[int]
    ) -> RegisterSet:
        """The reference registers of ``intervals`` whose valid energy went to ``registers``:
        the error energy, the total, the bill at the configured prices, the integrity sums."""
        error = sum(iv.energy_wh for iv in intervals if iv.error)
        index_sum, fp_sum = expected_integrity_sums(
            meter_id, [iv.index for iv in intervals], self.params.plaintext_modulus
        )
        return RegisterSet(
            tariff_registers_wh=tuple(registers),
            error_register_wh=error,
            total_register_wh=sum(registers) + error,
            bill_microcent=self.bill(registers),
            index_sum=index_sum,
            fingerprint_sum=fp_sum,
        )

    def check_range(self, max_interval_wh: int, intervals_per_period: int, price: int) -> None:
        """The largest possible bill must stay below the plaintext modulus."""
        worst = max_interval_wh * intervals_per_period * price
        if worst >= self.params.plaintext_modulus:
            raise TariffConfigError(
                f"{self.name}: a period of {intervals_per_period} intervals at up to "
                f"{max_interval_wh} Wh and {price} m¢/kWh can reach {worst}, beyond the "
                f"exact range {self.params.plaintext_modulus} of {self.params.parameters_id}"
            )
