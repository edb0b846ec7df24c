"""The smart meter gateway: derives interval energies, encrypts them twice, signs, sends.

For every transmission period (a day by default) and meter the gateway builds the slot
vector of :mod:`metrocloud.fhe.packing` from the meter's cumulative register readings,
encrypts it twice under the customer's public key (``c`` and ``c'``: the integrity
protocol), and signs the message with its certified key. At the end of a billing period it
sends a signed period closing that tells ``legal`` how many transmissions to expect.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from metrocloud.core.clock import READINGS_PER_DAY, BillingPeriod
from metrocloud.core.messages import Envelope, Message, PeriodClose, Transmission
from metrocloud.fhe.context import Encryptor
from metrocloud.fhe.packing import Interval, SlotLayout
from metrocloud.field.meter import Meter, MeterStatus, Reading
from metrocloud.pki import Identity


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


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def seal(identity: Identity, body: Message) -> bytes:
    """Encode ``body`` once, sign those bytes, and wrap them in an envelope."""
    raw = body.encode()
    return Envelope(raw, identity.certificate_der, identity.sign(raw)).encode()


@dataclass
class MeterBinding:
    """A meter as its gateway knows it: the customer it belongs to and their public key."""

    meter: Meter
    customer_id: str
    encryptor: Encryptor


class Gateway:
    def __init__(
        self,
        gateway_id: str,
        identity: Identity,
        *,
        readings_per_transmission: int = READINGS_PER_DAY,
    ) -> None:
        self.gateway_id = gateway_id
        self.identity = identity
        self.per_transmission = readings_per_transmission
        self.meters: dict[str, MeterBinding] = {}

    def attach(self, meter: Meter, customer_id: str, encryptor: Encryptor) -> None:
        self.meters[meter.meter_id] = MeterBinding(meter, customer_id, encryptor)

    def intervals(self, meter_id: str, first_index: int, count: int) -> list[Interval]:
        meter = self.meters[meter_id].meter
        readings = meter.readings(first_index - 1, count + 1)
        return derive_intervals(readings[0], readings[1:], meter.config.max_interval_wh)

    def transmission(self, meter_id: str, period: BillingPeriod, seq: int) -> Transmission:
        binding = self.meters[meter_id]
        first, count = period.chunks(self.per_transmission)[seq]
        enc = binding.encryptor
        layout = SlotLayout.for_intervals(enc.params, self.per_transmission)
        slots = layout.pack(meter_id, self.intervals(meter_id, first, count))
        return Transmission(
            gateway=self.gateway_id,
            meter=meter_id,
            customer=binding.customer_id,
            period_start=period.start,
            period_end=period.end,
            seq=seq,
            first_index=first,
            count=count,
            block=layout.block,
            parameters_id=enc.params.parameters_id,
            key_tag=enc.key_tag,
            sent_at=now_iso(),
            c=enc.encrypt(slots),
            c_dup=enc.encrypt(slots),
        )

    def period_close(self, meter_id: str, period: BillingPeriod) -> PeriodClose:
        return PeriodClose(
            gateway=self.gateway_id,
            meter=meter_id,
            customer=self.meters[meter_id].customer_id,
            period_start=period.start,
            period_end=period.end,
            transmissions=len(period.chunks(self.per_transmission)),
            block=SlotLayout.for_intervals(
                self.meters[meter_id].encryptor.params, self.per_transmission
            ).block,
            sent_at=now_iso(),
        )

    def uploads(self, meter_id: str, period: BillingPeriod) -> Iterator[bytes]:
        """Every signed message of one meter's billing period, in order."""
        for seq in range(len(period.chunks(self.per_transmission))):
            yield seal(self.identity, self.transmission(meter_id, period, seq))
        yield seal(self.identity, self.period_close(meter_id, period))

    @property
    def subject(self) -> str:
        return f"ingress.upload.{self.gateway_id}"
