"""A local metrological network in simulation: meters, the radio channel, one gateway.

:class:`FieldNetwork` runs quarter hour by quarter hour. In each, every meter that sends
puts its telegram on the air at its own offset into the quarter hour (fixed per meter by
the seed, as real meters keep their send slot), wireless meters through the
:class:`~metrocloud.field.channel.Channel`, wired ones straight onto the M-Bus; the gateway
receives what the channel delivers (echoes, garbled frames, injected ones included) and
checks it (:meth:`SmartMeterGateway.receive`). The gateway's clock is the simulated time.

Channel time 0 is the start of the quarter hour that ends at reading index ``origin``.
"""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import itemgetter

from cryptography.hazmat.primitives.asymmetric import ec

from metrocloud.core.clock import index_time
from metrocloud.field.channel import Channel, ChannelConfig, Transmission
from metrocloud.field.lmn import sensor_telegram
from metrocloud.field.sensors import Interface, Sensor
from metrocloud.field.smgw import LmnOutcome, SmartMeterGateway

_FIRST = itemgetter(0)
QUARTER_S = 900.0
SEND_WINDOW_S = 840.0
"""Meters send within the first 14 minutes of their quarter hour (after the reading)."""


@dataclass
class NetworkStats:
    """What happened on the LMN: telegrams sent, frames the gateway got, its verdicts."""

    sent: int = 0
    received: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def accepted(self) -> int:
        return self.outcomes["accepted"]


class FieldNetwork:
    """Meters, a channel and a gateway, stepped one quarter hour at a time."""

    def __init__(
        self,
        gateway: SmartMeterGateway,
        sensors: Iterable[Sensor],
        *,
        origin: int,
        channel: ChannelConfig | None = None,
        seed: int = 0,
        signers: dict[str, ec.EllipticCurvePrivateKey] | None = None,
    ) -> None:
        self.gateway = gateway
        self.sensors = {s.meter_id: s for s in sensors}
        self.origin = origin
        self.seed = seed
        self.channel = Channel(channel or ChannelConfig(), seed)
        self.signers = dict(signers or {})
        self.stats = NetworkStats()
        self.outcomes: list[LmnOutcome] = []
        self.keep_outcomes = True
        self.heard: deque[tuple[bytes, str]] = deque(maxlen=10_000)
        """The latest frames the gateway received and who really sent each (ground truth,
        for scenarios that replay a captured frame)."""
        self._access = {meter_id: self._draw(meter_id, "access") % 256 for meter_id in self.sensors}
        self._slot = {
            meter_id: (self._draw(meter_id, "slot") % 10_000) / 10_000 * SEND_WINDOW_S
            for meter_id in self.sensors
        }
        self.now = self._zero = index_time(origin - 1)
        gateway.clock = lambda: self.now

    def _draw(self, meter_id: str, what: str) -> int:
        digest = hashlib.blake2b(
            f"metrocloud.field.network|{self.seed}|{meter_id}|{what}".encode(), digest_size=8
        ).digest()
        return int.from_bytes(digest, "big")

    def seconds(self, index: int) -> float:
        """Channel time at which reading ``index`` is taken (the end of its quarter hour)."""
        return (index - self.origin + 1) * QUARTER_S

    def time_at(self, seconds: float) -> datetime:
        return self._zero + timedelta(seconds=seconds)

    def step(self, index: int) -> None:
        """Meters send their readings of ``index`` (taken at the end of its quarter hour)
        during the next quarter hour; the gateway receives what arrives by its end."""
        taken = self.seconds(index)
        until = taken + QUARTER_S
        wired: list[tuple[float, bool, bytes, str]] = []
        for meter_id, sensor in self.sensors.items():
            if not sensor.sends_at(index):
                continue
            access = self._access[meter_id]
            self._access[meter_id] = (access + 1) % 256
            frame = sensor_telegram(sensor, index, access, signer=self.signers.get(meter_id))
            at = taken + self._slot[meter_id]
            self.stats.sent += 1
            if sensor.config.interface is Interface.WIRED:
                wired.append((at, True, frame, meter_id))
            else:
                self.channel.send(Transmission(meter_id, frame, at))
        arrivals = [(r.at_s, False, r.frame, r.sender) for r in self.channel.deliver(until)]
        for at, is_wired, frame, sender in sorted(arrivals + wired, key=_FIRST):
            self._receive(at, frame, is_wired, sender)

    def _receive(self, at: float, frame: bytes, wired: bool, sender: str) -> None:
        self.now = self.time_at(at)
        self.heard.append((frame, sender))
        outcome = self.gateway.receive(frame, wired=wired)
        self.stats.received += 1
        self.stats.outcomes[outcome.reason] += 1
        if self.keep_outcomes:
            self.outcomes.append(outcome)

    def run(self, first: int, count: int, *, flush: bool = True) -> NetworkStats:
        """Readings ``first`` .. ``first + count - 1`` sent and received; with ``flush``
        (the last run) also the frames still on their way (delayed echoes)."""
        for index in range(first, first + count):
            self.step(index)
        if flush:
            for reception in self.channel.flush():
                self._receive(reception.at_s, reception.frame, False, reception.sender)
            for log in self.gateway.logs.values():  # the consumer log's last batch to its file
                log.flush()
        return self.stats

    def inject(self, frame: bytes, at_index: int, rssi_dbm: float = -60.0) -> None:
        """An attacker's crafted frame on the air in the quarter hour after reading
        ``at_index`` (or as soon as the channel allows)."""
        at = max(self.seconds(at_index) + 1.0, self.channel.horizon_s)
        self.channel.inject(frame, at, rssi_dbm)
