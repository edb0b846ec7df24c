"""Meters of the local metrological network (LMN) as the testbed simulates them.

A :class:`Sensor` is an electricity, gas, water or heat meter: a cumulative register that
grows at the rate of its medium's load profile (:mod:`metrocloud.field.loadprofile`, drawn
deterministically from the seed as in :mod:`metrocloud.field.meter`), cyclic values where
the medium has them (a heat meter's flow and return temperatures), an identity on the
M-Bus (manufacturer, identification number, version, medium), a key and a way of securing
its telegrams, and an interface (wireless or wired M-Bus).

Registers are integers in the medium's base unit: Wh for electricity and heat, litres for
gas and water. ``annual`` is in thousands of it (kWh, m³).

During a run a scenario may manipulate a sensor (:meth:`Sensor.set_register`,
:meth:`Sensor.change_key`, :meth:`Sensor.interrupt`): the readings it reports change, the
simulated physics underneath does not.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from metrocloud.field.loadprofile import DISTRICT_HEAT, GAS_HEATING, HOUSEHOLD, WATER
from metrocloud.field.meter import DEFAULT_ORIGIN_INDEX, Meter, MeterConfig, MeterStatus, Reading


class Medium(str, Enum):
    """What a meter measures (the M-Bus device type it announces follows from it)."""

    ELECTRICITY = "electricity"
    GAS = "gas"
    WATER = "water"
    HEAT = "heat"

    @property
    def profile(self) -> str:
        return _PROFILE[self]

    @property
    def unit(self) -> str:
        """The register's unit: ``Wh`` or ``L``."""
        return "L" if self in (Medium.GAS, Medium.WATER) else "Wh"

    @property
    def default_annual(self) -> float:
        """A typical household's year, in thousands of :attr:`unit`."""
        return _ANNUAL[self]

    @property
    def max_interval(self) -> int:
        """The most a quarter hour may plausibly add to the register (larger: an error)."""
        return _MAX_INTERVAL[self]


_PROFILE: Final = {
    Medium.ELECTRICITY: HOUSEHOLD,
    Medium.GAS: GAS_HEATING,
    Medium.WATER: WATER,
    Medium.HEAT: DISTRICT_HEAT,
}
_ANNUAL: Final = {
    Medium.ELECTRICITY: 3500.0,
    Medium.GAS: 1500.0,
    Medium.WATER: 90.0,
    Medium.HEAT: 12000.0,
}
_MAX_INTERVAL: Final = {
    Medium.ELECTRICITY: 5000,  # 20 kW
    Medium.GAS: 2000,  # 8 m³/h
    Medium.WATER: 1000,  # 4 m³/h
    Medium.HEAT: 10000,  # 40 kW
}


class Security(str, Enum):
    """How a meter secures its telegrams."""

    NONE = "none"
    AES = "aes-128"
    """OMS security mode 5: AES-128-CBC, as wireless M-Bus meters do."""
    ECDSA = "ecdsa"
    """Readings signed with an ECDSA key (metrocloud's own extension, not OMS)."""


class Interface(str, Enum):
    WIRELESS = "wireless-mbus"
    WIRED = "wired-mbus"


_METER_NUMBER = re.compile(r"[0-9]{8}")
_MANUFACTURER = re.compile(r"[A-Z]{3}")
_TEMPS: Final = struct.Struct(">2Q")


@dataclass(frozen=True)
class SensorConfig:
    """Everything that determines a simulated LMN meter."""

    number: str
    """The M-Bus identification number: eight decimal digits."""
    medium: Medium
    seed: int = 0
    manufacturer: str = "MCL"
    version: int = 1
    annual: float | None = None
    """Consumption of an average year in thousands of the unit; None: the medium's typical."""
    start_register: int = 0
    noise: float = 0.35
    send_every: int = 1
    """Quarter hours between two telegrams (1: every quarter hour)."""
    security: Security = Security.AES
    key: bytes | None = None
    """The AES-128 key (16 bytes) for :attr:`Security.AES`."""
    interface: Interface = Interface.WIRELESS
    origin_index: int = DEFAULT_ORIGIN_INDEX

    def __post_init__(self) -> None:
        if not isinstance(self.number, str) or not _METER_NUMBER.fullmatch(self.number):
            raise ValueError(f"number must be eight decimal digits, not {self.number!r}")
        if not isinstance(self.manufacturer, str) or not _MANUFACTURER.fullmatch(self.manufacturer):
            raise ValueError(f"manufacturer must be three capital letters: {self.manufacturer!r}")
        if not isinstance(self.version, int) or not 0 <= self.version <= 255:
            raise ValueError(f"version must be a byte, not {self.version!r}")
        if not isinstance(self.send_every, int) or self.send_every < 1:
            raise ValueError(f"send_every must be a positive int, not {self.send_every!r}")
        if self.security is Security.AES and (self.key is None or len(self.key) != 16):
            raise ValueError("an AES-secured meter needs a 16-byte key")

    @property
    def meter_id(self) -> str:
        """The name the cloud knows the meter by: manufacturer and number."""
        return f"{self.manufacturer}-{self.number}"

    def meter_config(self) -> MeterConfig:
        annual = self.medium.default_annual if self.annual is None else self.annual
        return MeterConfig(
            meter_id=self.meter_id,
            seed=self.seed,
            annual_kwh=annual,
            profile=self.medium.profile,
            start_register_wh=self.start_register,
            noise=self.noise,
            max_interval_wh=self.medium.max_interval,
            origin_index=self.origin_index,
        )


@dataclass(frozen=True)
class SensorReading:
    """What a meter reports for one quarter hour: its register and its cyclic values."""

    reading: Reading
    unit: str
    cyclic: tuple[tuple[str, float], ...] = ()
    """Instantaneous values, e.g. ``(("flow-temperature-c", 68.4), ...)``."""

    @property
    def index(self) -> int:
        return self.reading.index

    @property
    def register(self) -> int:
        return self.reading.register_wh


@dataclass
class Manipulation:
    """What a scenario changed on a running sensor."""

    register_offsets: list[tuple[int, int]] = field(default_factory=list)
    """``(from_index, offset)`` of each register set, oldest first."""
    sending: bool = True
    key: bytes | None = None
    history: list[str] = field(default_factory=list)


class Sensor:
    """A simulated LMN meter: deterministic readings, plus what a scenario manipulates."""

    def __init__(self, config: SensorConfig) -> None:
        self.config = config
        self.meter = Meter(config.meter_config())
        self.state = Manipulation(key=config.key)
        self._hasher = hashlib.blake2b(
            f"metrocloud.field.sensors|{config.seed}|{config.meter_id}|".encode(),
            digest_size=_TEMPS.size,
        )
        self._heat = config.medium is Medium.HEAT
        self._unit = config.medium.unit

    @property
    def meter_id(self) -> str:
        return self.config.meter_id

    @property
    def key(self) -> bytes | None:
        """The key the meter encrypts with now (a scenario may have changed it)."""
        return self.state.key

    def sends_at(self, index: int) -> bool:
        """Whether the meter sends a telegram for the reading at ``index``."""
        return (
            self.state.sending and (index - self.config.origin_index) % self.config.send_every == 0
        )

    def _cyclic(self, index: int) -> tuple[tuple[str, float], ...]:
        if not self._heat:
            return ()
        h = self._hasher.copy()
        h.update(index.to_bytes(16, "big", signed=True))
        a, b = _TEMPS.unpack(h.digest())
        hour = (index % 96) / 4.0
        daily = math.cos(2.0 * math.pi * (hour - 6.5) / 24.0)  # warmest flow in the morning
        flow = 65.0 + 5.0 * daily + (a >> 11) * 2.0**-53 * 2.0 - 1.0
        spread = 18.0 + (b >> 11) * 2.0**-53 * 6.0
        return (
            ("flow-temperature-c", round(flow, 1)),
            ("return-temperature-c", round(flow - spread, 1)),
        )

    def reading(self, index: int) -> SensorReading:
        """The reading at ``index`` as the meter reports it (manipulations included)."""
        register, status, cyclic = self.report(index)
        return SensorReading(Reading(self.meter_id, index, register, status), self._unit, cyclic)

    def report(self, index: int) -> tuple[int, MeterStatus, tuple[tuple[str, float], ...]]:
        """Register, status and cyclic values of :meth:`reading`, without the objects (what
        a meter's telegram needs)."""
        register, status = self.meter.register_and_status(index)
        offsets = self.state.register_offsets
        if offsets:
            offset = 0
            for since, shift in offsets:
                if since <= index:
                    offset = shift
            register += offset
        if register < 0:
            register = 0
        return register, status, self._cyclic(index) if self._heat else ()

    # -- manipulations during a run ------------------------------------------------------------
    def set_register(self, index: int, value: int) -> None:
        """From ``index`` on, the register reads ``value`` plus what is consumed after."""
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"a register is an int >= 0, not {value!r}")
        self.state.register_offsets.append((index, value - self.meter.register_at(index)))
        self.state.register_offsets.sort(key=lambda item: item[0])
        self.state.history.append(f"set-register {value} at {index}")

    def change_key(self, key: bytes) -> None:
        """The meter encrypts with ``key`` from now on (the gateway does not know it yet)."""
        if len(key) != 16:
            raise ValueError("an AES-128 key has 16 bytes")
        self.state.key = key
        self.state.history.append("change-key")

    def interrupt(self) -> None:
        """The meter stops sending (a cut cable, a dead battery, a jammer at the meter)."""
        self.state.sending = False
        self.state.history.append("interrupt")

    def resume(self) -> None:
        self.state.sending = True
        self.state.history.append("resume")
