"""Simulated meters: determinism, register arithmetic, load shape and configuration checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrocloud.core.clock import READINGS_PER_DAY, index_time, reading_index
from metrocloud.field.loadprofile import PROFILES, LoadProfile, daily_shape, seasonal_factor
from metrocloud.field.meter import (
    DEFAULT_ORIGIN_INDEX,
    Meter,
    MeterConfig,
    MeterStatus,
    Reading,
)

ORIGIN = DEFAULT_ORIGIN_INDEX
YEAR = 365 * READINGS_PER_DAY  # 35,040 quarter hours in 2026
MONTH = 30 * READINGS_PER_DAY  # 2,880


def meter(**overrides: Any) -> Meter:
    fields: dict[str, Any] = {"meter_id": "MC-0001", "seed": 7}
    fields.update(overrides)
    return Meter(MeterConfig(**fields))


def interval_start(index: int) -> datetime:
    """Start of the quarter hour whose reading has this index."""
    return index_time(index - 1)


def mean_energy(m: Meter, indices: range, keep: Callable[[datetime], bool]) -> float:
    values = [m.interval_energy(i) for i in indices if keep(interval_start(i))]
    assert values
    return sum(values) / len(values)


# -- determinism --------------------------------------------------------------------------------


def test_default_origin_is_start_of_2026() -> None:
    assert index_time(ORIGIN) == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert MeterConfig("m", 1).origin_index == ORIGIN


def test_two_instances_give_the_same_readings() -> None:
    assert meter().readings(ORIGIN, 500) == meter().readings(ORIGIN, 500)
    assert meter().readings(ORIGIN + 10_000, 300) == meter().readings(ORIGIN + 10_000, 300)


def test_split_ranges_give_the_same_readings_in_any_order() -> None:
    whole = meter().readings(ORIGIN + 50, 1000)
    m = meter()
    late = m.readings(ORIGIN + 50 + 700, 300)  # ask for the later part first
    early = m.readings(ORIGIN + 50, 333)
    middle = m.readings(ORIGIN + 50 + 333, 367)
    assert early + middle + late == whole
    assert [m.reading(r.index) for r in whole[::97]] == whole[::97]
    assert [m.register_at(r.index) for r in whole[::89]] == [r.register_wh for r in whole[::89]]


def test_seed_and_meter_id_both_matter() -> None:
    base = [r.register_wh for r in meter().readings(ORIGIN, 200)]
    assert [r.register_wh for r in meter(seed=8).readings(ORIGIN, 200)] != base
    assert [r.register_wh for r in meter(meter_id="MC-0002").readings(ORIGIN, 200)] != base


_CHILD = """
import json, sys
from metrocloud.field.meter import Meter, MeterConfig, DEFAULT_ORIGIN_INDEX as O
m = Meter(MeterConfig("MC-0001", 7, error_probability=0.3))
print(json.dumps([[r.index, r.register_wh, int(r.status)] for r in m.readings(O + 1234, 300)]))
"""


def test_readings_do_not_depend_on_the_process_hash_seed() -> None:
    m = meter(error_probability=0.3)
    here = [[r.index, r.register_wh, int(r.status)] for r in m.readings(ORIGIN + 1234, 300)]
    for hash_seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True
        )
        assert json.loads(out.stdout) == here


# -- register arithmetic ------------------------------------------------------------------------


def test_origin_reading_is_the_start_register() -> None:
    m = meter(start_register_wh=123_456)
    first = m.readings(ORIGIN, 1)[0]
    assert first == Reading("MC-0001", ORIGIN, 123_456, MeterStatus.OK)
    assert first.time == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert m.register_at(ORIGIN + 1) == 123_456 + m.interval_energy(ORIGIN + 1)


def test_registers_rise_by_exactly_the_interval_energy() -> None:
    m = meter(start_register_wh=10_000)
    readings = m.readings(ORIGIN + 3000, MONTH)
    maximum = m.config.max_interval_wh
    for prev, cur in pairwise(readings):
        assert cur.index == prev.index + 1
        assert cur.time == index_time(cur.index)
        assert cur.meter_id == "MC-0001"
        delta = cur.register_wh - prev.register_wh
        assert delta == m.interval_energy(cur.index)
        assert 0 <= delta <= maximum


def test_interval_energy_is_clipped() -> None:
    m = meter(max_interval_wh=60, noise=1.5)
    energies = [m.interval_energy(i) for i in range(ORIGIN, ORIGIN + 2000)]
    assert max(energies) == 60
    assert min(energies) >= 0


def test_no_readings_before_the_origin() -> None:
    m = meter()
    with pytest.raises(ValueError, match="origin"):
        m.readings(ORIGIN - 1, 5)
    with pytest.raises(ValueError, match="origin"):
        m.register_at(ORIGIN - 96)
    with pytest.raises(ValueError, match="count"):
        m.readings(ORIGIN, -1)
    assert m.readings(ORIGIN, 0) == []
    late = meter(origin_index=ORIGIN + 500, start_register_wh=7)
    assert late.readings(ORIGIN + 500, 1)[0].register_wh == 7


def test_zero_noise_gives_the_bare_profile() -> None:
    m = meter(noise=0.0)
    for i in range(ORIGIN, ORIGIN + 400, 7):
        assert m.interval_energy(i) == round(m.profile.expected_wh(i))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(min_value=-(2**63), max_value=2**63),
    offset=st.integers(min_value=0, max_value=3 * YEAR),
    count=st.integers(min_value=1, max_value=300),
    split=st.integers(min_value=0, max_value=300),
    profile=st.sampled_from(PROFILES),
    start_register=st.integers(min_value=0, max_value=10**12),
)
def test_property_split_invariance_and_register_arithmetic(
    seed: int, offset: int, count: int, split: int, profile: str, start_register: int
) -> None:
    # Short origins keep the property fast: the cost is the walk from origin to start.
    origin = ORIGIN + offset
    config = MeterConfig(
        "prop", seed, profile=profile, start_register_wh=start_register, origin_index=origin
    )
    start = origin + (offset % 500)
    whole = Meter(config).readings(start, count)
    split = min(split, count)
    other = Meter(config)
    later = other.readings(start + split, count - split)  # the later part first
    assert other.readings(start, split) + later == whole
    assert len(whole) == count
    assert [r.index for r in whole] == list(range(start, start + count))
    assert whole[0].register_wh >= start_register
    for prev, cur in pairwise(whole):
        assert cur.register_wh - prev.register_wh == other.interval_energy(cur.index)
        assert 0 <= cur.register_wh - prev.register_wh <= config.max_interval_wh


# -- load shape ---------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_a_year_sums_to_the_annual_consumption(profile: str) -> None:
    started = time.process_time()
    m = meter(profile=profile, annual_kwh=3500)
    readings = m.readings(ORIGIN, YEAR + 1)
    elapsed = time.process_time() - started
    total_kwh = (readings[-1].register_wh - readings[0].register_wh) / 1000
    assert total_kwh == pytest.approx(3500, rel=0.05)
    assert elapsed < 2.0


def test_annual_kwh_scales_linearly() -> None:
    small = LoadProfile("household", 1750)
    big = LoadProfile("household", 7000)
    for i in range(ORIGIN, ORIGIN + 96 * 7, 5):
        assert big.expected_wh(i) == pytest.approx(4 * small.expected_wh(i))
    assert LoadProfile("household").mean_wh == pytest.approx(3_500_000 / (365.2425 * 96), rel=1e-9)


def test_a_month_of_readings_is_fast() -> None:
    m = meter()
    started = time.process_time()
    readings = m.readings(ORIGIN, MONTH)
    elapsed = time.process_time() - started
    assert len(readings) == MONTH
    assert elapsed < 0.25  # typically ~12 ms of CPU; the bound only catches gross regressions


def test_household_evening_peak_and_night_trough() -> None:
    m = meter()
    days = range(ORIGIN + 1, ORIGIN + 1 + 28 * READINGS_PER_DAY)
    night = mean_energy(m, days, lambda t: 0 <= t.hour < 5)
    evening = mean_energy(m, days, lambda t: 18 <= t.hour < 21)
    overall = mean_energy(m, days, lambda t: True)
    assert evening > 2.5 * night
    assert 0.3 < night / overall < 0.6
    assert 1.4 < evening / overall < 2.2


def test_household_profile_shape_by_the_hour() -> None:
    wd = [daily_shape("household", h + 0.5, weekend=False) for h in range(24)]
    mean = sum(wd) / 24
    assert max(range(24), key=lambda h: wd[h]) in (18, 19, 20)
    assert wd[7] > 2 * wd[3]  # morning rise
    assert wd[12] > wd[3]  # midday plateau above night
    assert all(0.35 * mean < wd[h] < 0.55 * mean for h in range(5))


def test_weekend_differs_from_weekday() -> None:
    m = meter()
    eight_weeks = range(ORIGIN + 1, ORIGIN + 1 + 56 * READINGS_PER_DAY)

    def weekday(hours: range) -> Callable[[datetime], bool]:
        return lambda t: t.weekday() < 5 and t.hour in hours

    def weekend(hours: range) -> Callable[[datetime], bool]:
        return lambda t: t.weekday() >= 5 and t.hour in hours

    early = range(6, 8)
    midday = range(10, 15)
    assert mean_energy(m, eight_weeks, weekday(early)) > 1.4 * mean_energy(
        m, eight_weeks, weekend(early)
    )
    assert mean_energy(m, eight_weeks, weekend(midday)) > 1.2 * mean_energy(
        m, eight_weeks, weekday(midday)
    )


def test_commercial_is_busy_on_weekday_business_hours_only() -> None:
    m = meter(profile="commercial")
    weeks = range(ORIGIN + 1, ORIGIN + 1 + 28 * READINGS_PER_DAY)
    business = mean_energy(m, weeks, lambda t: t.weekday() < 5 and 9 <= t.hour < 16)
    night = mean_energy(m, weeks, lambda t: t.hour < 5)
    weekend = mean_energy(m, weeks, lambda t: t.weekday() >= 5)
    assert business > 4 * night
    assert business > 4 * weekend


def test_winter_is_higher_than_summer() -> None:
    p = LoadProfile("household")
    january = reading_index(datetime(2026, 1, 15, tzinfo=timezone.utc))
    july = reading_index(datetime(2026, 7, 15, tzinfo=timezone.utc))
    week = 7 * READINGS_PER_DAY
    jan = sum(p.expected_wh(i) for i in range(january, january + week))
    jul = sum(p.expected_wh(i) for i in range(july, july + week))
    assert jan / jul == pytest.approx(1.2 / 0.8, rel=0.03)
    jan_day = (january - reading_index(datetime(2020, 1, 1, tzinfo=timezone.utc))) / 96
    assert seasonal_factor("household", jan_day) == pytest.approx(1.2, abs=0.01)
    assert seasonal_factor("household", jan_day + 365.2425 / 2) == pytest.approx(0.8, abs=0.01)


# -- status flags -------------------------------------------------------------------------------


def test_no_errors_at_probability_zero() -> None:
    assert all(r.status is MeterStatus.OK for r in meter().readings(ORIGIN, MONTH))


def test_about_half_errors_at_probability_one_half() -> None:
    readings = meter(error_probability=0.5).readings(ORIGIN, 4000)
    errors = sum(1 for r in readings if r.status & MeterStatus.ERROR)
    assert 0.45 < errors / len(readings) < 0.55


def test_error_flags_do_not_change_the_energy() -> None:
    clean = meter().readings(ORIGIN, 500)
    flaky = meter(error_probability=0.2).readings(ORIGIN, 500)
    assert [r.register_wh for r in clean] == [r.register_wh for r in flaky]
    # Raising the probability only adds errors.
    flakier = meter(error_probability=0.6).readings(ORIGIN, 500)
    for a, b in zip(flaky, flakier, strict=True):
        assert b.status >= a.status
    assert meter(error_probability=1.0).status_at(ORIGIN + 3) is MeterStatus.ERROR


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("meter_id", ""),
        ("meter_id", "   "),
        ("meter_id", 12),
        ("seed", 1.5),
        ("seed", True),
        ("annual_kwh", -1.0),
        ("annual_kwh", float("nan")),
        ("annual_kwh", float("inf")),
        ("annual_kwh", "3500"),
        ("profile", "industrial"),
        ("start_register_wh", -1),
        ("start_register_wh", 1.0),
        ("noise", -0.1),
        ("noise", 2.5),
        ("noise", float("nan")),
        ("error_probability", -0.01),
        ("error_probability", 1.01),
        ("error_probability", float("nan")),
        ("max_interval_wh", 0),
        ("max_interval_wh", 100.0),
        ("origin_index", -1),
    ],
)
def test_bad_config_values_name_the_field(field: str, value: object) -> None:
    fields: dict[str, Any] = {"meter_id": "MC-0001", "seed": 1, field: value}
    with pytest.raises(ValueError, match=rf"MeterConfig\.{field}\b"):
        MeterConfig(**fields)


def test_good_edge_config_values_are_accepted() -> None:
    MeterConfig("m", 0, annual_kwh=0, noise=0, error_probability=1, max_interval_wh=1)
    m = meter(annual_kwh=0)
    assert m.readings(ORIGIN, 100)[-1].register_wh == 0


def test_load_profile_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="profile"):
        LoadProfile("industrial")
    with pytest.raises(ValueError, match="annual_kwh"):
        LoadProfile("household", -5)
