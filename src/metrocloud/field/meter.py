"""Simulated electricity meters: a cumulative energy register read every quarter hour.

A :class:`Meter` is a pure function of its :class:`MeterConfig`: the energy of every quarter
hour is drawn from randomness derived only from ``(seed, meter_id, index)`` with BLAKE2b, so
the same config yields the same readings in any process, on any Python version, and however a
range is split across calls. The register is

    register(i) = start_register_wh + Σ interval_energy(j)  for origin_index < j ≤ i,

so ``register(origin_index) == start_register_wh`` (the installation reading) and consecutive
readings differ by exactly ``interval_energy`` of the later index. Readings before the origin
do not exist (the meter was not installed yet).

Interval energy (integer Wh, clipped to ``[0, max_interval_wh]``) is the load profile's
expected value (:mod:`metrocloud.field.loadprofile`) split into

* a base part, ``(1 − SPIKE_SHARE)`` of the expectation times a mean-one lognormal factor
  ``exp(σ·Z − σ²/2)`` with ``σ = noise``, and
* short appliance spikes (kettle, oven: ``SPIKE_MIN_WH``-``SPIKE_MAX_WH``) whose probability is
  chosen so they carry the remaining ``SPIKE_SHARE`` of the expectation on average, making
  them more frequent when the household is active.

``noise = 0`` switches both off and gives the bare profile (rounded to Wh).
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import IntFlag
from typing import Final

from metrocloud.core.clock import READINGS_PER_DAY, index_time, reading_index
from metrocloud.field.loadprofile import DEFAULT_ANNUAL_KWH, HOUSEHOLD, PROFILES, LoadProfile

#: Index of 2026-01-01 00:00 UTC: the default installation reading of every meter.
DEFAULT_ORIGIN_INDEX: Final = reading_index(datetime(2026, 1, 1, tzinfo=timezone.utc))

#: Share of the expected energy that comes as short appliance spikes (when ``noise > 0``).
SPIKE_SHARE: Final = 0.15
SPIKE_MIN_WH: Final = 150.0
SPIKE_MAX_WH: Final = 650.0
_SPIKE_MEAN_WH: Final = (SPIKE_MIN_WH + SPIKE_MAX_WH) / 2.0

#: Register checkpoints are kept every this many intervals (one day).
_CHECKPOINT_EVERY: Final = READINGS_PER_DAY
_MAX_NOISE: Final = 2.0
_WORDS: Final = struct.Struct(">5Q")
_TWO_PI: Final = 2.0 * math.pi
_INV_2_53: Final = 2.0**-53


class MeterStatus(IntFlag):
    """Status flags of one reading."""

    OK = 0
    #: The meter flagged an error (e.g. a failed self-test); the TR books such consumption
    #: in the error register.
    ERROR = 1


_OK: Final = MeterStatus.OK
_ERROR: Final = MeterStatus.ERROR


@dataclass(frozen=True, slots=True)
class Reading:
    """One quarter-hourly reading: the cumulative register at the end of interval ``index``.

    With slots: a gateway keeps every reading it accepts, and an object without a
    ``__dict__`` is one fewer for the garbage collector to walk."""

    meter_id: str
    index: int
    register_wh: int
    status: MeterStatus = MeterStatus.OK

    @property
    def time(self) -> datetime:
        """When the reading was taken (end of its quarter hour, UTC)."""
        return index_time(self.index)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class MeterConfig:
    """Everything that determines a simulated meter's readings."""

    meter_id: str
    seed: int
    annual_kwh: float = DEFAULT_ANNUAL_KWH
    profile: str = HOUSEHOLD
    start_register_wh: int = 0
    #: Relative spread of the interval energy (σ of the lognormal factor); 0 = bare profile.
    noise: float = 0.35
    #: Probability that a reading carries :attr:`MeterStatus.ERROR`.
    error_probability: float = 0.0
    #: Upper clip of one quarter hour's energy, in Wh (5,000 Wh per 15 min = 20 kW).
    max_interval_wh: int = 5000
    #: Index of the installation reading, whose register is ``start_register_wh``.
    origin_index: int = DEFAULT_ORIGIN_INDEX

    def __post_init__(self) -> None:
        def bad(name: str, requirement: str) -> ValueError:
            return ValueError(
                f"MeterConfig.{name} must be {requirement}, got {getattr(self, name)!r}"
            )

        if not isinstance(self.meter_id, str) or not self.meter_id.strip():
            raise bad("meter_id", "a non-empty string")
        if not _is_int(self.seed):
            raise bad("seed", "an int")
        if not _is_real(self.annual_kwh) or not math.isfinite(self.annual_kwh):
            raise bad("annual_kwh", "a finite number")
        if self.annual_kwh < 0:
            raise bad("annual_kwh", ">= 0")
        if self.profile not in PROFILES:
            raise bad("profile", f"one of {', '.join(map(repr, PROFILES))}")
        if not _is_int(self.start_register_wh) or self.start_register_wh < 0:
            raise bad("start_register_wh", "an int >= 0")
        if not _is_real(self.noise) or not 0.0 <= self.noise <= _MAX_NOISE:
            raise bad("noise", f"a number in [0, {_MAX_NOISE:g}]")
        if not _is_real(self.error_probability) or not 0.0 <= self.error_probability <= 1.0:
            raise bad("error_probability", "a number in [0, 1]")
        if not _is_int(self.max_interval_wh) or self.max_interval_wh < 1:
            raise bad("max_interval_wh", "an int >= 1")
        if not _is_int(self.origin_index) or self.origin_index < 0:
            raise bad("origin_index", "an int >= 0")


class Meter:
    """A simulated meter. Deterministic: see the module docstring."""

    def __init__(self, config: MeterConfig) -> None:
        self.config = config
        self.profile = LoadProfile(config.profile, config.annual_kwh)
        self._hasher = hashlib.blake2b(
            f"metrocloud.field.meter|{config.seed}|{config.meter_id}|".encode(),
            digest_size=_WORDS.size,
        )
        # _checkpoints[k] is the register at origin_index + k * _CHECKPOINT_EVERY.
        self._checkpoints: list[int] = [config.start_register_wh]
        # The last register asked for, so that stepping through the readings costs one
        # interval each.
        self._last: tuple[int, int] | None = None

    @property
    def meter_id(self) -> str:
        return self.config.meter_id

    @property
    def max_interval_wh(self) -> int:
        """The most one quarter hour may add to the register; a larger jump is an error."""
        return self.config.max_interval_wh

    # -- per-interval randomness ------------------------------------------------------------

    def _interval(self, index: int) -> tuple[int, MeterStatus]:
        cfg = self.config
        mean = self.profile.expected_wh(index)
        # five independent uniforms in (0, 1), a pure function of (seed, meter_id, index)
        h = self._hasher.copy()
        h.update(index.to_bytes(16, "big", signed=True))
        a, b, c, d, e = _WORDS.unpack(h.digest())
        u_z1 = ((a >> 11) + 0.5) * _INV_2_53
        u_z2 = ((b >> 11) + 0.5) * _INV_2_53
        u_spike = ((c >> 11) + 0.5) * _INV_2_53
        u_size = ((d >> 11) + 0.5) * _INV_2_53
        u_error = ((e >> 11) + 0.5) * _INV_2_53
        sigma = cfg.noise
        if sigma > 0.0:
            z = math.sqrt(-2.0 * math.log(u_z1)) * math.cos(_TWO_PI * u_z2)  # Box-Muller
            energy = (1.0 - SPIKE_SHARE) * mean * math.exp(sigma * z - 0.5 * sigma * sigma)
            if u_spike * _SPIKE_MEAN_WH < SPIKE_SHARE * mean:
                energy += SPIKE_MIN_WH + (SPIKE_MAX_WH - SPIKE_MIN_WH) * u_size
        else:
            energy = mean
        wh = min(max(round(energy), 0), cfg.max_interval_wh)
        return wh, (_ERROR if u_error < cfg.error_probability else _OK)

    def interval_energy(self, index: int) -> int:
        """Energy (Wh) consumed in the quarter hour that ends at ``index_time(index)``."""
        return self._interval(index)[0]

    def status_at(self, index: int) -> MeterStatus:
        """Status flag of the reading at ``index``."""
        return self._interval(index)[1]

    # -- register ---------------------------------------------------------------------------

    def _check_index(self, index: int) -> None:
        if not _is_int(index):
            raise TypeError(f"reading index must be an int, got {index!r}")
        if index < self.config.origin_index:
            raise ValueError(
                f"meter {self.meter_id!r} has no readings before its origin index "
                f"{self.config.origin_index} ({index_time(self.config.origin_index).isoformat()}),"
                f" asked for {index}"
            )

    def _checkpoint(self, k: int) -> int:
        """Register at ``origin_index + k * _CHECKPOINT_EVERY``, extending the cache lazily."""
        cps = self._checkpoints
        if k < len(cps):
            return cps[k]
        origin = self.config.origin_index
        register = cps[-1]
        for block in range(len(cps), k + 1):
            first = origin + (block - 1) * _CHECKPOINT_EVERY + 1
            for j in range(first, first + _CHECKPOINT_EVERY):
                register += self._interval(j)[0]
            cps.append(register)
        return register

    def register_at(self, index: int) -> int:
        """Cumulative register (Wh) at the reading with this index."""
        last = self._last
        if last is not None and type(index) is int and index == last[0] + 1:  # one step on
            register = last[1] + self._interval(index)[0]
            self._last = (index, register)
            return register
        self._check_index(index)
        register = self._register_at(index)
        self._last = (index, register)
        return register

    def _register_at(self, index: int) -> int:
        origin = self.config.origin_index
        k, rest = divmod(index - origin, _CHECKPOINT_EVERY)
        register = self._checkpoint(k)
        base = origin + k * _CHECKPOINT_EVERY
        for j in range(base + 1, base + rest + 1):
            register += self._interval(j)[0]
        return register

    def reading(self, index: int) -> Reading:
        """The reading at ``index``."""
        register, status = self.register_and_status(index)
        return Reading(self.meter_id, index, register, status)

    def register_and_status(self, index: int) -> tuple[int, MeterStatus]:
        """The register and status of the reading at ``index`` (:meth:`reading` without
        the object)."""
        last = self._last
        if last is not None and type(index) is int and index == last[0] + 1:
            wh, status = self._interval(index)  # one draw for register and status
            register = last[1] + wh
            self._last = (index, register)
            return register, status
        return self.register_at(index), self.status_at(index)

    def readings(self, start_index: int, count: int) -> list[Reading]:
        """``count`` consecutive readings starting with the one at ``start_index``."""
        self._check_index(start_index)
        if not _is_int(count) or count < 0:
            raise ValueError(f"count must be an int >= 0, got {count!r}")
        if count == 0:
            return []
        origin = self.config.origin_index
        cps = self._checkpoints
        meter_id = self.meter_id
        register = self.register_at(start_index)
        out = [Reading(meter_id, start_index, register, self.status_at(start_index))]
        for index in range(start_index + 1, start_index + count):
            wh, status = self._interval(index)
            register += wh
            out.append(Reading(meter_id, index, register, status))
            k, rest = divmod(index - origin, _CHECKPOINT_EVERY)
            if rest == 0 and k == len(cps):
                cps.append(register)  # walked past the cached checkpoints: remember this one
        return out

    def __repr__(self) -> str:
        return f"Meter({self.config!r})"
