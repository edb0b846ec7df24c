"""A statement: what the display shows for one meter and billing period, and its exports.

It joins the result check (:func:`~metrocloud.receiver.verify.check_result`) and the
recomputation (:mod:`.recompute`): the registers and the bill, the tariff program that
produced them with its software identification, the decrypted quarter hours, and whether
the result verified (with the reason when not).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from metrocloud.core.clock import INTERVAL, BillingPeriod, index_time
from metrocloud.receiver.recompute import Recomputation
from metrocloud.receiver.verify import Verdict
from metrocloud.tariffs import RegisterSet, TariffProgram
from metrocloud.tariffs.base import MICROCENT_PER_EURO


def euro(microcent: int) -> str:
    """A bill in euro with four decimals (a tenth of a cent is still legible)."""
    return f"{microcent / MICROCENT_PER_EURO:,.4f}"


def iso(index: int, *, end: bool = True) -> str:
    """When the quarter hour ending at reading ``index`` ends (or, ``end=False``, begins)."""
    moment = index_time(index) if end else index_time(index) - INTERVAL
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Statement:
    meter_id: str
    period: BillingPeriod
    contract: TariffProgram
    verdict: Verdict | None
    """None while the cloud has no result for the period."""
    recomputation: Recomputation

    @property
    def status(self) -> str:
        """``verified``, ``not-verified`` or ``pending``."""
        if self.verdict is None:
            return "pending"
        return "verified" if self.verified else "not-verified"

    @property
    def verified(self) -> bool:
        """The result is authentic and intact, and its registers are the ones recomputed
        from the gateway's readings (readings that cannot be recomputed leave it unverified)."""
        return self.verdict is not None and self.verdict.verified and self.recomputation.matches

    @property
    def reason(self) -> str:
        if self.verdict is None:
            return "no result from the cloud yet"
        if not self.verdict.verified:
            return self.verdict.reason
        if self.recomputation.status == "failed":
            return f"not recomputed: {self.recomputation.reason}"
        if not self.recomputation.matches:
            return self.recomputation.reason
        return "verified: dec(r) = dec(r'), every reading in once, equal to the recomputation"

    @property
    def registers(self) -> RegisterSet | None:
        return self.verdict.registers if self.verdict is not None else None

    @property
    def tariff_id(self) -> dict[str, Any]:
        """The software identification of the program that computed the result, as the
        result names it (name, version, checksum); the contract's name before a result."""
        if self.verdict is not None and self.verdict.result is not None:
            return dict(self.verdict.result.tariff)
        return {"name": self.contract.name}

    def register_rows(self) -> list[tuple[str, int, int | None]]:
        """(name, Wh, price in m¢/kWh) of every tariff register."""
        regs = self.registers
        if regs is None:
            return []
        prices = self.contract.register_prices()
        names = self.contract.register_names()
        return [
            (
                names[k] if k < len(names) else f"T{k + 1}",
                wh,
                prices[k] if k < len(prices) else None,
            )
            for k, wh in enumerate(regs.tariff_registers_wh)
        ]

    def to_dict(self) -> dict[str, Any]:
        regs = self.registers
        recomputed = self.recomputation.registers
        return {
            "meter": self.meter_id,
            "period": {
                "id": self.period.period_id,
                "start": iso(self.period.start, end=False),
                "end": iso(self.period.end - 1),
                "label": self.period.label(),
            },
            "status": self.status,
            "verified": self.verified,
            "reason": self.reason,
            "tariff": {
                **self.tariff_id,
                "config": self.contract.config,
                "config_digest": self.contract.config_digest,
            },
            "registers": [
                {"name": name, "wh": wh, "price_mct_per_kwh": price}
                for name, wh, price in self.register_rows()
            ],
            "error_wh": regs.error_register_wh if regs else None,
            "total_wh": regs.total_register_wh if regs else None,
            "bill_microcent": regs.bill_microcent if regs else None,
            "bill_euro": euro(regs.bill_microcent) if regs else None,
            "recomputation": {
                "status": self.recomputation.status,
                "reason": self.recomputation.reason,
                "bill_microcent": recomputed.bill_microcent if recomputed else None,
                "gateway": self.recomputation.gateway,
            },
            "readings": {
                "first_index": self.period.start,
                "interval_minutes": 15,
                "wh": [iv.energy_wh for iv in self.recomputation.intervals],
                "error": [iv.error for iv in self.recomputation.intervals],
                "error_wh": self.recomputation.error_wh,
            },
        }


def readings_csv(statements: Sequence[Statement]) -> str:
    """Every decrypted quarter hour: meter, period, reading index, start, end, Wh, error."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["meter", "period", "index", "start_utc", "end_utc", "energy_wh", "error"])
    for s in statements:
        for iv in s.recomputation.intervals:
            writer.writerow(
                [
                    s.meter_id,
                    s.period.period_id,
                    iv.index,
                    iso(iv.index, end=False),
                    iso(iv.index),
                    iv.energy_wh,
                    int(iv.error),
                ]
            )
    return out.getvalue()


def readings_json(statements: Sequence[Statement]) -> list[dict[str, Any]]:
    return [
        {
            "meter": s.meter_id,
            "period": s.period.period_id,
            "index": iv.index,
            "start_utc": iso(iv.index, end=False),
            "end_utc": iso(iv.index),
            "energy_wh": iv.energy_wh,
            "error": iv.error,
        }
        for s in statements
        for iv in s.recomputation.intervals
    ]


BILL_COLUMNS = (
    "meter",
    "period",
    "start_utc",
    "end_utc",
    "tariff",
    "version",
    "checksum",
    "registers_wh",
    "error_wh",
    "total_wh",
    "bill_eur",
    "status",
    "reason",
    "recomputation",
)


def bill_row(s: Statement) -> dict[str, Any]:
    regs = s.registers
    tariff = s.tariff_id
    return {
        "meter": s.meter_id,
        "period": s.period.period_id,
        "start_utc": iso(s.period.start, end=False),
        "end_utc": iso(s.period.end - 1),
        "tariff": tariff.get("name", ""),
        "version": tariff.get("version", ""),
        "checksum": tariff.get("checksum", ""),
        "registers_wh": " ".join(f"{name}={wh}" for name, wh, _ in s.register_rows()),
        "error_wh": regs.error_register_wh if regs else "",
        "total_wh": regs.total_register_wh if regs else "",
        "bill_eur": f"{regs.bill_microcent / MICROCENT_PER_EURO:.4f}" if regs else "",
        "status": s.status,
        "reason": s.reason,
        "recomputation": s.recomputation.status,
    }


def bills_csv(statements: Sequence[Statement]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, BILL_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for s in statements:
        writer.writerow(bill_row(s))
    return out.getvalue()
