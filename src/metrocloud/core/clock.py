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


def reading_index(at: datetime) -> int:
    """Index of the quarter hour that ends at ``at`` (which must lie on a quarter hour)."""
    if at.tzinfo is None:
        raise ValueError("reading times must be timezone-aware (UTC)")
    seconds = int((at - EPOCH).total_seconds())
    if seconds % INTERVAL_S:
        raise ValueError(f"{at.isoformat()} is not on a quarter-hour boundary")
    return seconds // INTERVAL_S


def index_time(index: int) -> datetime:
    """End time of the quarter hour with this index."""
    return EPOCH + index * INTERVAL
