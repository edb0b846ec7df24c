"""TAF 1: one price for all energy of the billing period.

Registers: one tariff register (all valid energy), the error register (energy the gateway
could not attribute to a defined interval), the total register, the bill
(tariff register x price). Needs only additions, rotations and one plaintext mask level.
"""

from __future__ import annotations

from collections.abc import Sequence

from metrocloud.core.software import SoftwareId, module_checksum
from metrocloud.fhe.context import Ciphertext
from metrocloud.fhe.evaluator import Evaluator, Placement, placement_steps
from metrocloud.fhe.packing import Interval, SlotLayout
from metrocloud.tariffs.base import (
    RegisterSet,
    TariffConfigError,
    TariffProgram,
    expected_integrity_sums,
)

MAX_INTERVALS_PER_PERIOD = 31 * 96


class Taf1(TariffProgram):
    """Config: ``price_mct_per_kwh`` (int, milli-cent per kWh), ``max_interval_wh`` (int)."""

    name = "taf1"
    version = "1.0.0"
    tariff_registers = 1

    @property
    def software_id(self) -> SoftwareId:
        return SoftwareId(
            self.name,
            self.version,
            module_checksum("metrocloud.tariffs.base", __name__, "metrocloud.fhe.evaluator"),
        )

    @property
    def price(self) -> int:
        return int(self.config["price_mct_per_kwh"])

    def validate_config(self) -> None:
        unknown = set(self.config) - {"price_mct_per_kwh", "max_interval_wh"}
        if unknown:
            raise TariffConfigError(f"taf1: unknown settings {sorted(unknown)}")
        price = self.config.get("price_mct_per_kwh")
        if not isinstance(price, int) or isinstance(price, bool) or price <= 0:
            raise TariffConfigError("taf1: price_mct_per_kwh must be a positive integer")
        self.config.setdefault("max_interval_wh", 5000)
        max_wh = self.config["max_interval_wh"]
        if not isinstance(max_wh, int) or isinstance(max_wh, bool) or max_wh <= 0:
            raise TariffConfigError("taf1: max_interval_wh must be a positive integer")
        self.check_range(max_wh, MAX_INTERVALS_PER_PERIOD, price)

    def bill(self, tariff_registers_wh: Sequence[int]) -> int:
        (energy,) = tariff_registers_wh
        return energy * self.price

    def _placements(self, layout: SlotLayout) -> list[Placement]:
        out = self.result_layout()
        return [
            Placement(layout.valid_at, 0),
            Placement(layout.error_at, out.error_at),
            Placement(layout.valid_at, out.total_at),
            Placement(layout.error_at, out.total_at),
            Placement(layout.valid_at, out.bill_at, self.price),
            Placement(layout.index_at, out.index_sum_at),
            Placement(layout.fingerprint_at, out.fingerprint_sum_at),
        ]

    def rotation_steps(self, layout: SlotLayout) -> set[int]:
        return set(layout.blocksum_steps()) | placement_steps(self._placements(layout))

    def evaluate(self, ev: Evaluator, batch: Ciphertext, layout: SlotLayout) -> Ciphertext:
        return batch

    def read_out(
        self, ev: Evaluator, partials: Sequence[Ciphertext], layout: SlotLayout
    ) -> Ciphertext:
        sums = ev.block_sum(ev.add_all(partials), layout.blocksum_steps())
        return ev.assemble(sums, self._placements(layout))

    def reference(self, meter_id: str, intervals: Sequence[Interval]) -> RegisterSet:
        valid = sum(iv.energy_wh for iv in intervals if not iv.error)
        error = sum(iv.energy_wh for iv in intervals if iv.error)
        t = self.params.plaintext_modulus
        index_sum, fp_sum = expected_integrity_sums(meter_id, [iv.index for iv in intervals], t)
        return RegisterSet(
            tariff_registers_wh=(valid,),
            error_register_wh=error,
            total_register_wh=valid + error,
            bill_microcent=self.bill((valid,)),
            index_sum=index_sum,
            fingerprint_sum=fp_sum,
        )
