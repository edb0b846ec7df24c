"""Reading indices and billing periods."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metrocloud.core.clock import (
    EPOCH,
    INTERVAL,
    READINGS_PER_DAY,
    BillingPeriod,
    index_time,
    reading_index,
)

UTC = timezone.utc


def test_epoch_and_first_indices() -> None:
    assert reading_index(EPOCH) == 0
    assert reading_index(EPOCH + INTERVAL) == 1
    assert reading_index(EPOCH + timedelta(days=1)) == READINGS_PER_DAY
    assert reading_index(EPOCH - INTERVAL) == -1
    assert index_time(0) == EPOCH
    assert index_time(1) == datetime(2020, 1, 1, 0, 15, tzinfo=UTC)


def test_a_known_date() -> None:
    # 2026-01-01 is 2192 days after 2020-01-01 (2020 and 2024 are leap years).
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert reading_index(at) == 2192 * 96
    assert index_time(2192 * 96) == at


@given(st.integers(-(10**6), 10**8))
def test_index_time_and_reading_index_are_inverse(index: int) -> None:
    at = index_time(index)
    assert at.tzinfo is not None
    assert reading_index(at) == index


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1)))
def test_reading_index_of_quarter_hours(naive: datetime) -> None:
    at = naive.replace(minute=naive.minute // 15 * 15, second=0, microsecond=0, tzinfo=UTC)
    assert index_time(reading_index(at)) == at


def test_other_time_zones_name_the_same_instant() -> None:
    cet = timezone(timedelta(hours=1))
    at = datetime(2026, 1, 1, 1, 0, tzinfo=cet)  # = 2026-01-01 00:00 UTC
    assert reading_index(at) == reading_index(datetime(2026, 1, 1, tzinfo=UTC))
    odd = timezone(timedelta(hours=5, minutes=30))
    assert reading_index(datetime(2026, 1, 1, 5, 30, tzinfo=odd)) == 2192 * 96


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        reading_index(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    "offset",
    [
        timedelta(minutes=1),
        timedelta(minutes=14, seconds=59),
        timedelta(seconds=1),
        timedelta(seconds=-1),
        timedelta(minutes=7, seconds=30),
        timedelta(milliseconds=500),
        timedelta(microseconds=1),
        timedelta(microseconds=-1),
    ],
    ids=str,
)
def test_off_boundary_times_are_refused(offset: timedelta) -> None:
    with pytest.raises(ValueError, match="quarter-hour boundary"):
        reading_index(datetime(2026, 1, 1, tzinfo=UTC) + offset)


@given(
    st.integers(0, 10**7),
    st.timedeltas(
        min_value=timedelta(microseconds=1), max_value=INTERVAL - timedelta(microseconds=1)
    ),
)
def test_off_boundary_property(index: int, offset: timedelta) -> None:
    with pytest.raises(ValueError):
        reading_index(index_time(index) + offset)


# -- BillingPeriod ------------------------------------------------------------------------------


def test_days() -> None:
    first = datetime(2026, 1, 1, tzinfo=UTC)
    p = BillingPeriod.days(first, 31)
    assert p.start == reading_index(first) + 1  # the interval that ends at 00:15
    assert p.end == p.start + 31 * READINGS_PER_DAY
    assert p.intervals == 31 * 96
    assert index_time(p.start) - INTERVAL == first
    assert index_time(p.end - 1) == datetime(2026, 2, 1, tzinfo=UTC)
    assert p.label() == "2026-01-01 00:00 – 2026-02-01 00:00 UTC"
    assert BillingPeriod(1, 2).label() == "2020-01-01 00:00 – 2020-01-01 00:15 UTC"


def test_days_needs_an_aware_quarter_hour() -> None:
    with pytest.raises(ValueError):
        BillingPeriod.days(datetime(2026, 1, 1), 1)
    with pytest.raises(ValueError):
        BillingPeriod.days(datetime(2026, 1, 1, 0, 5, tzinfo=UTC), 1)


@pytest.mark.parametrize(("start", "end"), [(5, 5), (5, 4), (0, -1)])
def test_empty_period_is_refused(start: int, end: int) -> None:
    with pytest.raises(ValueError):
        BillingPeriod(start, end)


@given(st.integers(0, 10**7), st.integers(1, 5000), st.integers(1, 200))
def test_chunks_cover_the_period_exactly(start: int, length: int, per: int) -> None:
    p = BillingPeriod(start, start + length)
    chunks = p.chunks(per)
    covered = [i for first, count in chunks for i in range(first, first + count)]
    assert covered == list(range(p.start, p.end))
    assert all(1 <= count <= per for _, count in chunks)
    assert all(count == per for _, count in chunks[:-1])
    assert len(chunks) == -(-length // per)


def test_chunks_of_a_month() -> None:
    p = BillingPeriod.days(datetime(2026, 1, 1, tzinfo=UTC), 31)
    chunks = p.chunks(READINGS_PER_DAY)
    assert len(chunks) == 31
    assert chunks[0] == (p.start, 96)
    assert chunks[-1] == (p.end - 96, 96)
    odd = BillingPeriod(p.start, p.start + 100).chunks(96)
    assert odd == [(p.start, 96), (p.start + 96, 4)]


@given(st.integers(0, 10**9), st.integers(1, 10**6))
def test_period_id_round_trip(start: int, length: int) -> None:
    p = BillingPeriod(start, start + length)
    assert p.period_id == f"{start}-{start + length}"
    q = BillingPeriod.from_id(p.period_id)
    assert q == p
    assert hash(q) == hash(p)
    assert q.period_id == p.period_id


@pytest.mark.parametrize("bad", ["", "abc", "5", "5-", "-5", "7-3", "1-2-3", "x-y"])
def test_period_id_garbage_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        BillingPeriod.from_id(bad)


def test_equality_and_repr() -> None:
    assert BillingPeriod(1, 2) == BillingPeriod(1, 2)
    assert BillingPeriod(1, 2) != BillingPeriod(1, 3)
    assert BillingPeriod(1, 2) != (1, 2)
    assert len({BillingPeriod(1, 2), BillingPeriod(1, 2)}) == 1
    assert repr(BillingPeriod(1, 2)) == "BillingPeriod(1, 2)"
