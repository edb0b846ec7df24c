"""The smart meter gateway: derives interval energies, encrypts them twice, signs, sends.

For every transmission period (by default the whole billing period, which costs the least
upload and cloud time; the register tariffs may be split into shorter ones) and meter the
gateway derives the interval energies from the meter's cumulative register readings, lets
the customer's tariff program lay them out (coefficients, or bit planes in slots where the
tariff compares), encrypts them twice under the customer's public key (``c`` and ``c'``: the
integrity protocol), and signs the message with its certified key. At the end of a billing
period it sends a signed period closing that tells ``legal`` how many transmissions to expect.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from metrocloud.core.clock import BillingPeriod, now_iso
from metrocloud.core.messages import PeriodClose, Transmission, seal
from metrocloud.fhe.context import Encryptor
from metrocloud.fhe.packing import Interval
from metrocloud.field.meter import MeterStatus, Reading
from metrocloud.pki import Identity
from metrocloud.tariffs.base import TariffProgram


def derive_intervals(
    previous: Reading, readings: Sequence[Reading], max_interval_wh: int = 5000
) -> list[Interval]:
    """Energy per quarter hour from consecutive register readings.

    Energy that cannot be attributed to a defined interval goes to the error register: a
    reading the meter flagged as erroneous, a register that ran backwards (booked as 0) or
    one that jumped beyond ``max_interval_wh`` (a gap in the readings).
    """
    out: list[Interval] = []
    prev = previous
    for r in readings:
        if r.index != prev.index + 1:
            raise ValueError(f"reading {r.index} does not follow {prev.index}")
        delta = r.register_wh - prev.register_wh
        error = bool(r.status & MeterStatus.ERROR) or delta < 0 or delta > max_interval_wh
        out.append(Interval(r.index, max(delta, 0), error))
        prev = r
    return out


class ReadingSource(Protocol):
    """Where a gateway gets a meter's register readings: a simulated :class:`Meter` read
    directly, or the readings a smart meter gateway received in the meter's telegrams
    (:class:`metrocloud.field.smgw.ReceivedReadings`)."""

    @property
    def meter_id(self) -> str: ...

    @property
    def max_interval_wh(self) -> int: ...

    def readings(self, start_index: int, count: int) -> list[Reading]: ...


@dataclass
class MeterBinding:
    """A meter as its gateway knows it: its customer, their public key and their tariff."""

    meter: ReadingSource
    customer_id: str
    encryptor: Encryptor
    program: TariffProgram


def block_for(intervals: int) -> int:
    """The slot block of a transmission: the smallest power of two >= its intervals."""
    block = 1
    while block < intervals:
        block *= 2
    return block


class Gateway:
    """The smart meter gateway. ``readings_per_transmission`` caps a transmission's length
    (None: what the tariff program sends, a whole period); a tariff program may insist on
    whole periods (the comparison tariffs)."""

    def __init__(
        self,
        gateway_id: str,
        identity: Identity,
        *,
        readings_per_transmission: int | None = None,
    ) -> None:
        self.gateway_id = gateway_id
        self.identity = identity
        self.per_transmission = readings_per_transmission
        self.meters: dict[str, MeterBinding] = {}

    def attach(
        self,
        meter: ReadingSource,
        customer_id: str,
        encryptor: Encryptor,
        program: TariffProgram,
    ) -> None:
        self.meters[meter.meter_id] = MeterBinding(meter, customer_id, encryptor, program)

    def intervals(self, meter_id: str, first_index: int, count: int) -> list[Interval]:
        meter = self.meters[meter_id].meter
        readings = meter.readings(first_index - 1, count + 1)
        return derive_intervals(readings[0], readings[1:], meter.max_interval_wh)

    def chunks(self, meter_id: str, period: BillingPeriod) -> list[tuple[int, int]]:
        program = self.meters[meter_id].program
        whole = program.transmission_intervals(period.intervals)
        if program.whole_period or self.per_transmission is None:
            return period.chunks(whole)
        return period.chunks(min(self.per_transmission, whole))

    def block(self, meter_id: str, period: BillingPeriod) -> int:
        return block_for(max(count for _, count in self.chunks(meter_id, period)))

    def transmission(self, meter_id: str, period: BillingPeriod, seq: int) -> Transmission:
        binding = self.meters[meter_id]
        first, count = self.chunks(meter_id, period)[seq]
        block = self.block(meter_id, period)
        enc = binding.encryptor
        intervals = self.intervals(meter_id, first, count)
        vectors = binding.program.encode(meter_id, intervals, block, period.start)
        return Transmission(
            gateway=self.gateway_id,
            meter=meter_id,
            customer=binding.customer_id,
            period_start=period.start,
            period_end=period.end,
            seq=seq,
            first_index=first,
            count=count,
            block=block,
            parameters_id=enc.params.parameters_id,
            key_tag=enc.key_tag,
            sent_at=now_iso(),
            c=[enc.encrypt(v) for v in vectors],
            c_dup=[enc.encrypt(v) for v in vectors],
        )

    def period_close(self, meter_id: str, period: BillingPeriod) -> PeriodClose:
        return PeriodClose(
            gateway=self.gateway_id,
            meter=meter_id,
            customer=self.meters[meter_id].customer_id,
            period_start=period.start,
            period_end=period.end,
            transmissions=len(self.chunks(meter_id, period)),
            block=self.block(meter_id, period),
            sent_at=now_iso(),
        )

    def uploads(self, meter_id: str, period: BillingPeriod) -> Iterator[bytes]:
        """Every signed message of one meter's billing period, in order."""
        for seq in range(len(self.chunks(meter_id, period))):
            yield seal(self.identity, self.transmission(meter_id, period, seq))
        yield seal(self.identity, self.period_close(meter_id, period))

    @property
    def subject(self) -> str:
        return f"ingress.upload.{self.gateway_id}"
