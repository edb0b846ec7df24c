"""Reading indices: a reading's index is its quarter-hour number since the epoch.

The index is what the integrity protocol encrypts twice beside every reading, so it must be
global (unique per meter over its whole life), not relative to a billing period.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

EPOCH = datetime(2020, 1, 1, tzinfo=timezone.utc)
INTERVAL = timedelta(minutes=15)
INTERVAL_S = 900
READINGS_PER_DAY = 96


def now_iso() -> str:
    """The current UTC time as ISO 8601, as messages carry it."""
    return datetime.now(timezone.utc).isoformat()


def reading_index(at: datetime) -> int:
    """Index of the quarter hour that ends at ``at`` (which must lie on a quarter hour)."""
    if at.tzinfo is None:
        raise ValueError("reading times must be timezone-aware (UTC)")
    delta = at - EPOCH  # exact timedelta arithmetic: sub-second offsets count as off-boundary
    if delta % INTERVAL:
        raise ValueError(f"{at.isoformat()} is not on a quarter-hour boundary")
    return delta // INTERVAL


def index_time(index: int) -> datetime:
    """End time of the quarter hour with this index."""
    return EPOCH + index * INTERVAL


class BillingPeriod:
    """Reading indices ``[start, end)``; transmitted in chunks of ``per_transmission``."""

    def __init__(self, start: int, end: int) -> None:
        if end <= start:
            raise ValueError("a billing period must contain at least one interval")
        self.start = start
        self.end = end

    @classmethod
    def days(cls, first_day: datetime, days: int) -> BillingPeriod:
        start = reading_index(first_day + INTERVAL)
        return cls(start, start + days * READINGS_PER_DAY)

    @property
    def period_id(self) -> str:
        return f"{self.start}-{self.end}"

    @classmethod
    def from_id(cls, period_id: str) -> BillingPeriod:
        start, _, end = period_id.partition("-")
        return cls(int(start), int(end))

    @property
    def intervals(self) -> int:
        return self.end - self.start

    def chunks(self, per_transmission: int) -> list[tuple[int, int]]:
        """(first index, count) of every transmission in the period."""
        return [
            (i, min(per_transmission, self.end - i))
            for i in range(self.start, self.end, per_transmission)
        ]

    def label(self) -> str:
        first = index_time(self.start) - INTERVAL
        last = index_time(self.end - 1)  # end is exclusive: the last interval is end - 1
        return f"{first:%Y-%m-%d %H:%M} – {last:%Y-%m-%d %H:%M} UTC"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BillingPeriod) and (self.start, self.end) == (
            other.start,
            other.end,
        )

    def __hash__(self) -> int:
        return hash((self.start, self.end))

    def __repr__(self) -> str:
        return f"BillingPeriod({self.start}, {self.end})"
