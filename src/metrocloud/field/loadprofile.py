"""Synthetic load profiles: the expected energy of one quarter hour for a simulated meter.

The shapes are small analytic functions in the spirit of the German standard load profiles
(H0 for households, a G-type profile for businesses), not tables copied from them:

* a **daily shape** of the local hour, built from a base load plus a few Gaussian bumps
  (household: morning rise around 7-8 h, midday plateau, evening peak around 18-21 h;
  commercial: a smooth business-hours plateau with a lunch dip), with separate weekday and
  weekend variants (Saturday and Sunday share the weekend shape);
* a **seasonal factor** ``1 + A·cos(2π·(t − 15 Jan)/year)``: about ``1 + A`` in mid January
  and ``1 − A`` in mid July (household ``A = 0.2``, commercial ``A = 0.1``).

"Local time" is UTC: the testbed keeps every clock in UTC, so the shapes are simply placed on
the UTC hour (a German household on CET would see them one hour later on the wall clock).

A profile is scaled so that an average year (365.2425 days, 5/7 weekdays) sums to
``annual_kwh``; a concrete calendar year comes out within a fraction of a percent of it
(a leap year has one day more).

Reading indices follow :mod:`metrocloud.core.clock`: index ``i`` is the quarter hour that
*ends* at ``index_time(i)``, so its energy is drawn over ``[index_time(i) − 15 min,
index_time(i))`` and the profile is evaluated at that interval's midpoint.
"""

from __future__ import annotations

import functools
import math
from typing import Final

from metrocloud.core.clock import EPOCH, READINGS_PER_DAY

HOUSEHOLD: Final = "household"
COMMERCIAL: Final = "commercial"
GAS_HEATING: Final = "gas-heating"
WATER: Final = "water"
DISTRICT_HEAT: Final = "district-heat"
PROFILES: Final[tuple[str, ...]] = (HOUSEHOLD, COMMERCIAL, GAS_HEATING, WATER, DISTRICT_HEAT)
"""Electricity (household, commercial) and the other media of the testbed: gas for space
heating and hot water, domestic water, and district heat. For the other media the unit
follows the register (litres of gas or water, Wh of heat), ``annual_kwh`` read as thousands
of it."""

DEFAULT_ANNUAL_KWH: Final = 3500.0

#: Mean length of a Gregorian year in days; keeps the season aligned with the calendar.
YEAR_DAYS: Final = 365.2425
#: Days from the clock's epoch (1 January, 00:00 UTC) to the seasonal maximum (15 January).
_SEASON_PEAK_DAY: Final = 14.0
#: Weekday of the clock's epoch (2020-01-01 was a Wednesday; Monday = 0).
_EPOCH_WEEKDAY: Final = EPOCH.weekday()
#: Seasonal amplitude per profile.
_SEASON_AMPLITUDE: Final[dict[str, float]] = {
    HOUSEHOLD: 0.2,
    COMMERCIAL: 0.1,
    GAS_HEATING: 0.8,  # heating dominates: little but hot water in summer
    WATER: 0.1,
    DISTRICT_HEAT: 0.75,
}


def _bump(hour: float, centre: float, width: float) -> float:
    """A Gaussian bump of height 1 at ``centre`` (hours), wrapping around midnight."""
    d = abs(hour - centre) % 24.0
    d = min(d, 24.0 - d)
    return math.exp(-0.5 * (d / width) ** 2)


def _step(x: float) -> float:
    """Smooth step from 0 to 1 around ``x = 0`` (logistic)."""
    return 1.0 / (1.0 + math.exp(-x))


def _household(hour: float, weekend: bool) -> float:
    if weekend:
        # People sleep in: a later, broader breakfast, a higher lunch, a slightly earlier evening.
        return (
            0.33
            + 0.55 * _bump(hour, 9.5, 1.4)
            + 0.75 * _bump(hour, 12.75, 1.6)
            + 0.40 * _bump(hour, 15.5, 1.5)
            + 0.95 * _bump(hour, 19.25, 1.7)
        )
    return (
        0.33
        + 0.70 * _bump(hour, 7.25, 0.9)
        + 0.50 * _bump(hour, 12.5, 1.8)
        + 0.25 * _bump(hour, 15.5, 1.5)
        + 1.00 * _bump(hour, 19.5, 1.6)
    )


def _commercial(hour: float, weekend: bool) -> float:
    if weekend:
        # Standby plus a little Saturday-morning-style activity.
        return 0.35 + 0.15 * _bump(hour, 11.0, 2.0)
    open_hours = _step((hour - 7.5) / 0.4) * _step((18.0 - hour) / 0.5)
    return 0.30 + 2.2 * open_hours - 0.25 * _bump(hour, 12.5, 0.6)


def _heating(hour: float, weekend: bool) -> float:
    # Night set-back, a morning warm-up, an evening peak; later at weekends.
    morning = 8.0 if weekend else 6.5
    return 0.45 + 0.9 * _bump(hour, morning, 1.2) + 0.6 * _bump(hour, 18.5, 2.5)


def _water(hour: float, weekend: bool) -> float:
    # Showers in the morning, cooking and washing in the evening; almost none at night.
    morning = 9.0 if weekend else 7.0
    return (
        0.05
        + 1.2 * _bump(hour, morning, 1.0)
        + 0.4 * _bump(hour, 12.5, 1.2)
        + (0.8 * _bump(hour, 19.5, 1.5))
    )


def daily_shape(profile: str, hour: float, weekend: bool) -> float:
    """Unscaled relative demand of ``profile`` at local (= UTC) ``hour`` in ``[0, 24)``."""
    if profile == HOUSEHOLD:
        return _household(hour, weekend)
    if profile == COMMERCIAL:
        return _commercial(hour, weekend)
    if profile in (GAS_HEATING, DISTRICT_HEAT):
        return _heating(hour, weekend)
    if profile == WATER:
        return _water(hour, weekend)
    raise ValueError(f"profile must be one of {', '.join(PROFILES)}, not {profile!r}")


def seasonal_factor(profile: str, days_since_epoch: float) -> float:
    """Smooth seasonal multiplier: ``1 + A`` in mid January, ``1 − A`` in mid July."""
    if profile not in _SEASON_AMPLITUDE:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, not {profile!r}")
    phase = 2.0 * math.pi * (days_since_epoch - _SEASON_PEAK_DAY) / YEAR_DAYS
    return 1.0 + _SEASON_AMPLITUDE[profile] * math.cos(phase)


def is_weekend(day_since_epoch: int) -> bool:
    """Whether the UTC day with this number (0 = 2020-01-01) is a Saturday or Sunday."""
    return (_EPOCH_WEEKDAY + day_since_epoch) % 7 >= 5


@functools.cache
def _sampled(profile: str, *, weekend: bool) -> tuple[float, ...]:
    """A daily shape at each quarter hour's midpoint (the same for every meter)."""
    return tuple(
        daily_shape(profile, (q + 0.5) * 24.0 / READINGS_PER_DAY, weekend)
        for q in range(READINGS_PER_DAY)
    )


class LoadProfile:
    """Expected energy per quarter hour, in Wh, for one profile kind and annual consumption.

    >>> p = LoadProfile("household", annual_kwh=3500)
    >>> round(p.mean_wh, 1)
    99.8
    """

    def __init__(self, profile: str = HOUSEHOLD, annual_kwh: float = DEFAULT_ANNUAL_KWH) -> None:
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}, not {profile!r}")
        if not math.isfinite(annual_kwh) or annual_kwh < 0:
            raise ValueError(f"annual_kwh must be a finite number >= 0, not {annual_kwh!r}")
        self.profile = profile
        self.annual_kwh = float(annual_kwh)
        # The daily shapes, sampled at each quarter hour's midpoint.
        self._weekday = _sampled(profile, weekend=False)
        self._weekend = _sampled(profile, weekend=True)
        # The seasonal factor averages to 1 over a year, so an average quarter hour is worth
        # the 5:2 weekday/weekend mix of the daily shapes.
        mean_shape = (5.0 * sum(self._weekday) + 2.0 * sum(self._weekend)) / (
            7.0 * READINGS_PER_DAY
        )
        #: Mean energy of a quarter hour over an average year, in Wh.
        self.mean_wh = self.annual_kwh * 1000.0 / (YEAR_DAYS * READINGS_PER_DAY)
        self._scale = self.mean_wh / mean_shape
        self._amplitude = _SEASON_AMPLITUDE[profile]

    def expected_wh(self, index: int) -> float:
        """Expected energy (Wh) of the quarter hour that ends at ``index_time(index)``."""
        slot = index - 1  # the interval starts one quarter hour before its index's time
        day, quarter = divmod(slot, READINGS_PER_DAY)
        shape = self._weekend if is_weekend(day) else self._weekday
        days = (slot + 0.5) / READINGS_PER_DAY
        phase = 2.0 * math.pi * (days - _SEASON_PEAK_DAY) / YEAR_DAYS
        return self._scale * shape[quarter] * (1.0 + self._amplitude * math.cos(phase))

    def __repr__(self) -> str:
        return f"LoadProfile({self.profile!r}, annual_kwh={self.annual_kwh!r})"
