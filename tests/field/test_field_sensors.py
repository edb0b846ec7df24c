"""Simulated LMN meters: deterministic registers per medium, heat meters' cyclic
temperatures, the manipulations a scenario applies during a run, configuration checks."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from lmn_keys import aes_key

from metrocloud.core.clock import READINGS_PER_DAY
from metrocloud.field.meter import DEFAULT_ORIGIN_INDEX, MeterStatus
from metrocloud.field.sensors import Interface, Medium, Security, Sensor, SensorConfig

KEY = aes_key("sensors")
ORIGIN = DEFAULT_ORIGIN_INDEX
YEAR = 365 * READINGS_PER_DAY


def sensor(medium: Medium = Medium.ELECTRICITY, number: str = "12345678", **kw: object) -> Sensor:
    kw.setdefault("key", KEY)
    return Sensor(SensorConfig(number, medium, **kw))  # type: ignore[arg-type]


def registers(s: Sensor, first: int, count: int) -> list[int]:
    return [s.reading(i).register for i in range(first, first + count)]


# --- determinism --------------------------------------------------------------------------


@pytest.mark.parametrize("medium", list(Medium))
def test_same_config_same_readings_in_any_order(medium: Medium) -> None:
    a, b = sensor(medium, seed=7), sensor(medium, seed=7)
    forward = [a.reading(i) for i in range(ORIGIN, ORIGIN + 300)]
    backward = [b.reading(i) for i in reversed(range(ORIGIN, ORIGIN + 300))][::-1]
    assert forward == backward
    assert [r.register for r in forward] == sorted(r.register for r in forward)  # cumulative


@pytest.mark.parametrize("medium", list(Medium))
def test_seed_and_number_change_the_readings(medium: Medium) -> None:
    base = registers(sensor(medium, seed=1), ORIGIN + 1, 96)
    assert registers(sensor(medium, seed=2), ORIGIN + 1, 96) != base
    assert registers(sensor(medium, "87654321", seed=1), ORIGIN + 1, 96) != base


def test_the_installation_reading_is_the_start_register() -> None:
    s = sensor(start_register=123_456)
    assert s.reading(ORIGIN).register == 123_456
    assert s.reading(ORIGIN + 1).register >= 123_456
    with pytest.raises(ValueError):
        s.reading(ORIGIN - 1)  # no readings before the installation


# --- media ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("medium", "unit"),
    [
        (Medium.ELECTRICITY, "Wh"),
        (Medium.GAS, "L"),
        (Medium.WATER, "L"),
        (Medium.HEAT, "Wh"),
    ],
)
def test_unit_per_medium(medium: Medium, unit: str) -> None:
    s = sensor(medium)
    assert medium.unit == unit
    assert s.reading(ORIGIN + 5).unit == unit


@pytest.mark.parametrize("medium", list(Medium))
def test_a_year_adds_up_to_the_annual_consumption(medium: Medium) -> None:
    s = sensor(medium, seed=1)
    total = s.reading(ORIGIN + YEAR).register - s.reading(ORIGIN).register
    assert total == pytest.approx(medium.default_annual * 1000, rel=0.10)
    # and the configured annual consumption, not the medium's default, when one is given
    half = sensor(medium, seed=1, annual=medium.default_annual / 2)
    total_half = half.reading(ORIGIN + YEAR).register - half.reading(ORIGIN).register
    assert total_half == pytest.approx(medium.default_annual * 500, rel=0.10)


@pytest.mark.parametrize("medium", list(Medium))
def test_no_quarter_hour_exceeds_the_medium_maximum(medium: Medium) -> None:
    regs = registers(sensor(medium, seed=3), ORIGIN, 7 * READINGS_PER_DAY)
    steps = [b - a for a, b in itertools.pairwise(regs)]
    assert min(steps) >= 0
    assert max(steps) <= medium.max_interval
    assert max(steps) > 0


def test_gas_and_heat_follow_the_heating_season() -> None:
    """January needs far more gas and heat than July; water barely changes."""
    july = ORIGIN + 181 * READINGS_PER_DAY
    week = 7 * READINGS_PER_DAY
    for medium, ratio in ((Medium.GAS, 2.0), (Medium.HEAT, 2.0), (Medium.WATER, 1.0)):
        s = sensor(medium, seed=4)
        winter = s.reading(ORIGIN + week).register - s.reading(ORIGIN).register
        summer = s.reading(july + week).register - s.reading(july).register
        if ratio > 1.0:
            assert winter > ratio * summer, medium
        else:
            assert 0.7 < winter / summer < 1.5, medium


# --- cyclic values --------------------------------------------------------------------------


def test_heat_meters_report_flow_and_return_temperatures() -> None:
    s = sensor(Medium.HEAT, seed=5)
    flows = []
    for i in range(ORIGIN, ORIGIN + 2 * READINGS_PER_DAY):
        cyclic = dict(s.reading(i).cyclic)
        assert set(cyclic) == {"flow-temperature-c", "return-temperature-c"}
        flow, ret = cyclic["flow-temperature-c"], cyclic["return-temperature-c"]
        assert 55.0 <= flow <= 75.0
        assert ret < flow
        assert 10.0 <= flow - ret <= 25.0
        assert round(flow, 1) == flow and round(ret, 1) == ret  # 0.1 °C resolution
        flows.append(flow)
    assert len(set(flows)) > 20  # they vary
    # a daily cycle: the morning is warmer than the evening on average
    morning = [flows[d * 96 + q] for d in range(2) for q in range(20, 32)]
    evening = [flows[d * 96 + q] for d in range(2) for q in range(68, 80)]
    assert sum(morning) / len(morning) > sum(evening) / len(evening) + 3.0
    # deterministic, and per meter
    assert s.reading(ORIGIN + 17).cyclic == sensor(Medium.HEAT, seed=5).reading(ORIGIN + 17).cyclic
    assert s.reading(ORIGIN + 17).cyclic != sensor(Medium.HEAT, seed=6).reading(ORIGIN + 17).cyclic


@pytest.mark.parametrize("medium", [Medium.ELECTRICITY, Medium.GAS, Medium.WATER])
def test_other_meters_have_no_cyclic_values(medium: Medium) -> None:
    s = sensor(medium)
    assert all(s.reading(i).cyclic == () for i in range(ORIGIN, ORIGIN + 10))


# --- manipulations --------------------------------------------------------------------------


def test_set_register_shifts_the_register_from_that_index_on() -> None:
    s = sensor(seed=8)
    true = sensor(seed=8)
    at = ORIGIN + 50
    s.set_register(at, 9_000_000)
    assert s.reading(at).register == 9_000_000
    for i in range(at + 1, at + 100):
        # later readings keep growing from the new value by what is consumed after
        assert s.reading(i).register - 9_000_000 == (
            true.reading(i).register - true.reading(at).register
        )
    assert s.reading(at + 99).register > 9_000_000
    assert s.state.history == [f"set-register 9000000 at {at}"]
    # the physics underneath is untouched
    assert s.meter.register_at(at + 10) == true.meter.register_at(at + 10)


def test_set_register_backwards_and_invalid_values() -> None:
    s = sensor(seed=8)
    at = ORIGIN + 500
    s.set_register(at, 0)
    assert s.reading(at).register == 0
    assert s.reading(at + 1).register >= 0
    for bad in (-1, 1.5, "10"):
        with pytest.raises(ValueError):
            s.set_register(at, bad)  # type: ignore[arg-type]


def test_change_key() -> None:
    s = sensor()
    assert s.key == KEY
    new = aes_key("new")
    s.change_key(new)
    assert s.key == new
    assert s.config.key == KEY  # the configuration keeps what was installed
    with pytest.raises(ValueError):
        s.change_key(b"short")
    assert s.key == new
    assert s.state.history == ["change-key"]


def test_interrupt_resume_and_send_every() -> None:
    s = sensor(send_every=4)
    assert [s.sends_at(i) for i in range(ORIGIN, ORIGIN + 9)] == [
        True,
        False,
        False,
        False,
        True,
        False,
        False,
        False,
        True,
    ]
    s.interrupt()
    assert not any(s.sends_at(i) for i in range(ORIGIN, ORIGIN + 20))
    s.resume()
    assert s.sends_at(ORIGIN + 8) and not s.sends_at(ORIGIN + 9)
    assert s.state.history == ["interrupt", "resume"]
    every = sensor()
    assert all(every.sends_at(i) for i in range(ORIGIN, ORIGIN + 20))
    # relative to the installation reading
    late = sensor(send_every=3, origin_index=ORIGIN + 1)
    assert [late.sends_at(i) for i in range(ORIGIN + 1, ORIGIN + 5)] == [True, False, False, True]


def test_readings_carry_no_error_flag_without_errors() -> None:
    s = sensor(seed=2)
    assert all(s.reading(i).reading.status is MeterStatus.OK for i in range(ORIGIN, ORIGIN + 200))


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"number": "1234567"},
        {"number": "123456789"},
        {"number": "1234567a"},
        {"number": 12345678},
        {"manufacturer": "mcl"},
        {"manufacturer": "MC"},
        {"manufacturer": "MCL1"},
        {"version": 256},
        {"version": -1},
        {"send_every": 0},
        {"send_every": 1.5},
        {"key": None},
        {"key": b"0123456789abcde"},
        {"key": b"0123456789abcdef0"},
    ],
)
def test_bad_configurations_are_refused(changes: dict[str, object]) -> None:
    fields: dict[str, object] = {"number": "12345678", "medium": Medium.GAS, "key": KEY}
    fields.update(changes)
    with pytest.raises(ValueError):
        SensorConfig(**fields)  # type: ignore[arg-type]


def test_good_configurations() -> None:
    plain = SensorConfig("00000001", Medium.WATER, security=Security.NONE)
    assert plain.key is None and plain.meter_id == "MCL-00000001"
    signed = SensorConfig("00000002", Medium.HEAT, security=Security.ECDSA, manufacturer="ABC")
    assert signed.meter_id == "ABC-00000002"
    wired = SensorConfig("00000003", Medium.GAS, key=KEY, interface=Interface.WIRED)
    assert wired.interface is Interface.WIRED
    cfg = wired.meter_config()
    assert cfg.max_interval_wh == Medium.GAS.max_interval
    assert cfg.profile == Medium.GAS.profile
    assert cfg.annual_kwh == Medium.GAS.default_annual
    assert dataclasses.replace(wired, annual=2.5).meter_config().annual_kwh == 2.5
