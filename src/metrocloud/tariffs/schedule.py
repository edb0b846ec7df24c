"""Static switching times of a time-dependent tariff (TAF 2).

A switching table is a list of windows, each a set of weekdays and a time of day
``[from, to)`` on quarter-hour boundaries, naming the tariff register that consumption inside
it goes to; everything outside every window goes to the default register. A quarter hour
belongs to the window that contains its start. Times are local times at a fixed offset
from UTC (``utc_offset_minutes``): daylight saving time is not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from metrocloud.core.clock import INTERVAL, index_time
from metrocloud.tariffs.base import TariffConfigError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
QUARTERS_PER_DAY = 96


def _days(spec: object) -> frozenset[int]:
    """``"mon-fri"``, ``"sat,sun"``, ``"daily"`` -> weekday numbers (Monday = 0)."""
    if not isinstance(spec, str) or not spec:
        raise TariffConfigError(f"taf2: days must be text like 'mon-fri', got {spec!r}")
    if spec == "daily":
        return frozenset(range(7))
    out: set[int] = set()
    for part in spec.lower().split(","):
        first, _, last = part.strip().partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise TariffConfigError(f"taf2: unknown day in {spec!r} (use {', '.join(DAYS)})")
        a, b = DAYS.index(first), DAYS.index(last or first)
        if b < a:
            raise TariffConfigError(f"taf2: day range {part!r} runs backwards")
        out.update(range(a, b + 1))
    return frozenset(out)


def _quarter(spec: object, what: str) -> int:
    """``"06:00"`` -> 24; ``"24:00"`` -> 96."""
    if not isinstance(spec, str) or len(spec) != 5 or spec[2] != ":":
        raise TariffConfigError(f"taf2: {what} must be HH:MM, got {spec!r}")
    try:
        hours, minutes = int(spec[:2]), int(spec[3:])
    except ValueError:
        raise TariffConfigError(f"taf2: {what} must be HH:MM, got {spec!r}") from None
    if minutes % 15 or not 0 <= minutes < 60 or not 0 <= hours <= 24 or (hours == 24 and minutes):
        raise TariffConfigError(
            f"taf2: {what} {spec} is not a quarter-hour between 00:00 and 24:00"
        )
    return hours * 4 + minutes // 15


@dataclass(frozen=True)
class SwitchingTable:
    """Register per (weekday, quarter of the day), built from the windows."""

    table: tuple[tuple[int, ...], ...]  # [weekday][quarter] -> register
    offset: timedelta

    @classmethod
    def parse(
        cls, windows: object, default: int, registers: int, offset_min: int
    ) -> SwitchingTable:
        if not isinstance(windows, list):
            raise TariffConfigError("taf2: windows must be a list")
        if not -720 <= offset_min <= 840 or offset_min % 15:
            raise TariffConfigError(
                "taf2: utc_offset_minutes must be a multiple of 15 in [-720, 840]"
            )
        grid: list[list[int | None]] = [[None] * QUARTERS_PER_DAY for _ in range(7)]
        for n, w in enumerate(windows):
            if not isinstance(w, dict) or set(w) != {"days", "from", "to", "register"}:
                raise TariffConfigError(
                    f"taf2: window {n} needs exactly days, from, to, register; got {w!r}"
                )
            start, end = (
                _quarter(w["from"], f"window {n} from"),
                _quarter(w["to"], f"window {n} to"),
            )
            if end <= start:
                raise TariffConfigError(f"taf2: window {n} ends before it starts")
            register = w["register"]
            if (
                not isinstance(register, int)
                or isinstance(register, bool)
                or not 0 <= register < registers
            ):
                raise TariffConfigError(f"taf2: window {n} names register {register!r}")
            for day in _days(w["days"]):
                for q in range(start, end):
                    if grid[day][q] not in (None, register):
                        raise TariffConfigError(
                            f"taf2: window {n} overlaps another window with another register "
                            f"on {DAYS[day]} at {q // 4:02d}:{q % 4 * 15:02d}"
                        )
                    grid[day][q] = register
        table = tuple(tuple(default if r is None else r for r in day) for day in grid)
        return cls(table, timedelta(minutes=offset_min))

    def register_of(self, index: int) -> int:
        """Register of the quarter hour that ends at reading ``index``."""
        start = index_time(index) - INTERVAL + self.offset
        return self.table[start.weekday()][start.hour * 4 + start.minute // 15]


def parse_registers(spec: Any) -> list[int]:
    """Prices of the tariff registers: ``[{"name": "HT", "price_mct_per_kwh": 36000}, ...]``."""
    if not isinstance(spec, list) or not 1 <= len(spec) <= 8:
        raise TariffConfigError("taf2: registers must be a list of 1 to 8 registers")
    prices = []
    for n, r in enumerate(spec):
        if not isinstance(r, dict) or set(r) != {"name", "price_mct_per_kwh"}:
            raise TariffConfigError(f"taf2: register {n} needs exactly name and price_mct_per_kwh")
        price = r["price_mct_per_kwh"]
        if not isinstance(price, int) or isinstance(price, bool) or price <= 0:
            raise TariffConfigError(f"taf2: register {n} price must be a positive integer")
        prices.append(price)
    return prices
