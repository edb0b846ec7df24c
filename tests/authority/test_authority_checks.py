"""The authority's check plan, its secret series and test vectors, and how a round's
checks become logbook events (no cloud: the rounds on a running cloud are in
tests/scenarios/test_functionality_checks.py)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrocloud.authority.checks import (
    CheckOutcome,
    CheckPlan,
    CheckRound,
    TestMeter,
    household_or_business,
    place_test_meters,
)
from metrocloud.core.clock import READINGS_PER_DAY, BillingPeriod
from metrocloud.core.events import EventKind, LogEvent
from metrocloud.field.meter import Meter, MeterConfig
from metrocloud.tariffs import RegisterSet
from metrocloud.testbed.pipeline import PipelineConfig

PERIOD = PipelineConfig(days=2).period
METERS = (TestMeter("m-0003", "c-0003"), TestMeter("m-0008", "c-0008", household_or_business(8)))


def plan(secret: bytes = b"s" * 32, probability: float = 1.0) -> CheckPlan:
    return CheckPlan(secret, METERS, check_probability=probability)


def test_the_series_is_the_ordinary_load_model_seeded_by_the_secret() -> None:
    one, other = plan(b"a" * 32), plan(b"b" * 32)
    series = one.series("m-0003", PERIOD)
    assert [iv.index for iv in series] == list(range(PERIOD.start, PERIOD.end))
    assert series == plan(b"a" * 32).series("m-0003", PERIOD)  # the authority can recompute
    assert series != other.series("m-0003", PERIOD)  # but only with the secret
    assert series != one.series("m-0008", PERIOD)
    # The same model as the ordinary meters (same profile, same kind of seed), only the
    # seed is secret: its energy lies in the range of ordinary meters of that profile.
    energies = [
        sum(iv.energy_wh for iv in plan(bytes([n]) * 32).series("m-0003", PERIOD))
        for n in range(12)
    ]
    ordinaries = []
    for seed in range(12):
        meter = Meter(MeterConfig("m-0003", seed=seed))
        first, *rest = meter.readings(PERIOD.start - 1, PERIOD.intervals + 1)
        ordinaries.append(rest[-1].register_wh - first.register_wh)
    assert min(ordinaries) / 3 < sum(energies) / len(energies) < max(ordinaries) * 3


def test_a_test_meter_follows_the_model_of_an_ordinary_meter_but_for_its_seed() -> None:
    model = MeterConfig("MCL-00000004", seed=5, annual_kwh=12.5, profile="water",
                        max_interval_wh=400, error_probability=0.01)  # fmt: skip
    meter = TestMeter.like(model, "c-0004")
    secret = CheckPlan(b"w" * 32, (meter,))
    config = secret.meter_config("MCL-00000004")
    assert config == MeterConfig("MCL-00000004", seed=secret.seed("MCL-00000004"),
                                 annual_kwh=12.5, profile="water", max_interval_wh=400,
                                 error_probability=0.01)  # fmt: skip
    assert config.seed != model.seed
    with pytest.raises(KeyError):
        secret.seed("MCL-00000005")


def test_the_business_profile_follows_the_position_as_for_ordinary_meters() -> None:
    assert [household_or_business(n) for n in range(1, 9)] == [
        "household", "household", "household", "commercial",
        "household", "household", "household", "commercial",
    ]  # fmt: skip
    assert plan().meter_config("m-0008").profile == "commercial"


def test_expected_registers_are_the_plaintext_reference_over_the_series() -> None:
    program = PipelineConfig(tariff="taf2", days=2).program()
    expected = plan().expected("m-0003", PERIOD, program)
    assert expected == program.reference("m-0003", plan().series("m-0003", PERIOD))
    assert expected.consistent and expected.total_register_wh > 0


def test_a_test_meter_series_carries_erroneous_readings_like_the_others() -> None:
    noisy = CheckPlan(b"e" * 32, (TestMeter("m-0003", "c-0003", error_probability=0.2),))
    long_period = BillingPeriod(PERIOD.start, PERIOD.start + 10 * READINGS_PER_DAY)
    assert any(iv.error for iv in noisy.series("m-0003", long_period))


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=16, max_size=32), st.sampled_from([0.1, 0.25, 0.5]))
def test_which_periods_are_checked_follows_the_secret_at_the_chosen_rate(
    secret: bytes, probability: float
) -> None:
    chosen = plan(secret, probability)
    periods = [BillingPeriod(n * 96, (n + 1) * 96) for n in range(1, 1201)]
    checked = [chosen.checks_period(p) for p in periods]
    assert checked == [plan(secret, probability).checks_period(p) for p in periods]
    rate = sum(checked) / len(checked)
    assert abs(rate - probability) < 0.06, rate  # > 4 sigma at these counts
    assert all(plan(secret, 1.0).checks_period(p) for p in periods[:50])


def test_periods_checked_differ_between_secrets() -> None:
    periods = [BillingPeriod(n * 96, (n + 1) * 96) for n in range(1, 200)]
    one = [plan(b"x" * 32, 0.5).checks_period(p) for p in periods]
    other = [plan(b"y" * 32, 0.5).checks_period(p) for p in periods]
    assert one != other


def test_the_plan_is_saved_for_the_authority_only_and_loads_back(tmp_path: Path) -> None:
    original = CheckPlan.generate(METERS, check_probability=0.3)
    path = original.save(tmp_path / "authority")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert CheckPlan.load(tmp_path / "authority") == original
    assert len(original.secret) == 32 and original.secret != CheckPlan.generate(METERS).secret


@pytest.mark.parametrize(
    ("secret", "meters", "probability", "why"),
    [
        (b"short", METERS, 1.0, "at least 16 bytes"),
        (b"s" * 32, METERS, 0.0, "check_probability"),
        (b"s" * 32, METERS, 1.5, "check_probability"),
        (b"s" * 32, (METERS[0], METERS[0]), 1.0, "listed twice"),
    ],
)
def test_a_bad_plan_is_refused(
    secret: bytes, meters: tuple[TestMeter, ...], probability: float, why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        CheckPlan(secret, meters, check_probability=probability)


def test_an_unknown_meter_is_no_test_meter() -> None:
    with pytest.raises(KeyError, match="m-0001 is not a test meter"):
        plan().meter_config("m-0001")


@given(st.integers(1, 60), st.data())
def test_test_meters_take_distinct_positions_among_all(total: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, total))
    positions = place_test_meters(total, k)
    assert len(positions) == len(set(positions)) == k
    assert all(1 <= p <= total for p in positions) and positions == sorted(positions)


def test_positions_are_not_predictable() -> None:
    draws = {tuple(place_test_meters(40, 5)) for _ in range(20)}
    assert len(draws) > 15


def test_more_test_meters_than_meters_is_refused() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        place_test_meters(3, 4)


REGISTERS = RegisterSet((100,), 0, 100, 3_200_000, 7, 9)


def outcome(meter: str, program: str, version: str, passed: bool) -> CheckOutcome:
    return CheckOutcome(meter, "1-97", program, version, passed, "why", REGISTERS)


def test_a_round_gives_one_verdict_per_program_version() -> None:
    check_round = CheckRound.of(
        [
            outcome("m-0003", "taf1", "2.0.0", True),
            outcome("m-0008", "taf1", "2.0.0", False),
            outcome("m-0011", "taf1", "2.0.1", True),
            outcome("m-0012", "taf2", "1.0.0", True),
        ],
        "r-1",
    )
    found = [(v.program, v.program_version, v.checks, v.failures, v.passed)
             for v in check_round.verdicts]  # fmt: skip
    assert found == [
        ("taf1", "2.0.0", 2, 1, False),
        ("taf1", "2.0.1", 1, 0, True),
        ("taf2", "1.0.0", 1, 0, True),
    ]
    assert not check_round.passed
    assert CheckRound.of([outcome("m-0003", "taf1", "2.0.0", True)]).passed
    assert not CheckRound.of([]).passed  # a round without a check proves nothing


def test_round_events_name_no_meter_and_no_customer() -> None:
    check_round = CheckRound.of(
        [outcome("m-0003", "taf1", "2.0.0", True), outcome("m-0008", "taf1", "2.0.0", False)]
    )
    (event,) = check_round.events()
    assert event.kind is EventKind.FUNCTIONALITY_CHECK and event.actor == "authority"
    assert event.subject == "taf1"
    assert event.detail == {
        "program": "taf1", "program_version": "2.0.0", "verdict": "fail", "checks": 2,
        "failures": 1, "round_id": check_round.round_id,
    }  # fmt: skip
    raw = event.to_json()
    assert LogEvent.from_json(raw) == event
    for secret in ("m-0003", "m-0008", "c-0003", "c-0008"):
        assert secret not in raw.decode()
    assert "m-0003" not in json.dumps([e.detail for e in check_round.events()])


def test_round_ids_are_fresh() -> None:
    rounds = {CheckRound.of([]).round_id for _ in range(50)}
    assert len(rounds) == 50


def test_a_check_without_a_result_counts_against_the_version_the_others_name() -> None:
    check_round = CheckRound.of(
        [
            outcome("m-0003", "taf1", "2.0.0", True),
            outcome("m-0008", "taf1", "unknown", False),  # withheld by legal
            outcome("m-0012", "taf2", "unknown", False),  # no taf2 version named at all
        ]
    )
    found = [(v.program, v.program_version, v.checks, v.failures)
             for v in check_round.verdicts]  # fmt: skip
    assert found == [("taf1", "2.0.0", 2, 1), ("taf2", "unknown", 1, 1)]
    two_versions = CheckRound.of(
        [
            outcome("m-0003", "taf1", "2.0.0", True),
            outcome("m-0008", "taf1", "2.0.1", True),
            outcome("m-0011", "taf1", "unknown", False),
        ]
    )
    assert [(v.program_version, v.failures) for v in two_versions.verdicts] == [
        ("2.0.0", 0), ("2.0.1", 0), ("unknown", 1),
    ]  # fmt: skip
