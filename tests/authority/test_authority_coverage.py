"""The coverage model of the confidential functionality checks (issue #10): exact values by
hand and by enumeration, the Monte Carlo estimate against the formulas, properties, and the
refusal of bad input."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrocloud.authority import coverage
from metrocloud.authority.coverage import (
    MAX_ROUNDS,
    Scenario,
    Table,
    catch_table,
    format_probability,
    meters_needed_table,
    p_round,
    p_touched,
    p_within,
    rounds_needed,
    simulate,
    touched_meters,
)

meters_needed = coverage.test_meters_needed  # its name starts with test_: keep it out of reach

# --- exact values by hand -----------------------------------------------------------------


def test_one_test_meter_one_touched_meter_in_ten() -> None:
    assert touched_meters(10, 0.1) == 1
    assert p_round(10, 1, 0.1) == pytest.approx(0.1, rel=1e-12)
    assert p_within(10, 1, 0.1, 3, fixed_targets=True) == pytest.approx(0.1, rel=1e-12)
    assert p_within(10, 1, 0.1, 3, fixed_targets=False) == pytest.approx(0.271, rel=1e-12)


def test_small_hypergeometric_cases() -> None:
    assert p_round(10, 2, 0.1) == pytest.approx(1 - 36 / 45, rel=1e-12)  # 1 - C(9,2)/C(10,2)
    assert p_round(10, 2, 0.2) == pytest.approx(1 - 28 / 45, rel=1e-12)  # 1 - C(8,2)/C(10,2)
    assert p_round(10, 9, 0.2) == 1.0  # only one meter is not a test meter
    assert p_touched(10, 2, 0.2) == pytest.approx(17 / 45, rel=1e-12)


def test_activity() -> None:
    assert p_round(10, 1, 0.1, a=0.5) == pytest.approx(0.05, rel=1e-12)
    # fixed: 0.1 · (1 - 0.5²); fresh: 1 - 0.95²
    assert p_within(10, 1, 0.1, 2, 0.5, fixed_targets=True) == pytest.approx(0.075, rel=1e-12)
    assert p_within(10, 1, 0.1, 2, 0.5, fixed_targets=False) == pytest.approx(0.0975, rel=1e-12)


def test_subset_by_hand() -> None:
    # N = 4, k = 2, m = 1, s = 1, two rounds. Fixed: P(T = 1) = 1/2, then each round checks
    # the touched test meter with 1/2: 1/2 · (1 - 1/4). Fresh: p_round = 1/4, 1 - (3/4)².
    assert p_within(4, 2, 0.25, 2, s=1, fixed_targets=True) == pytest.approx(0.375, rel=1e-12)
    assert p_within(4, 2, 0.25, 2, s=1, fixed_targets=False) == pytest.approx(0.4375, rel=1e-12)
    assert p_round(4, 2, 0.25, s=1) == pytest.approx(0.25, rel=1e-12)


def test_no_test_meters_never_catch() -> None:
    for fixed in (True, False):
        assert p_within(1000, 0, 0.5, 100, fixed_targets=fixed) == 0.0
        assert p_within(1000, 10, 0.5, 100, s=0, fixed_targets=fixed) == 0.0
        assert simulate(1000, 0, 0.5, 10, 1.0, None, fixed, 1000, 1) == 0.0
    assert p_round(1000, 0, 0.5) == 0.0
    assert rounds_needed(1000, 0, 0.5, 0.5, fixed_targets=False) is None


def test_everything_touched_is_caught_at_once() -> None:
    for fixed in (True, False):
        assert p_within(50, 1, 1.0, 1, fixed_targets=fixed) == 1.0
        assert p_within(50, 7, 1.0, 4, s=3, fixed_targets=fixed) == pytest.approx(1.0)
        assert simulate(50, 1, 1.0, 1, 1.0, None, fixed, 1000, 1) == 1.0
        assert rounds_needed(50, 1, 1.0, 0.99, fixed_targets=fixed) == 1
    assert p_round(50, 1, 1.0) == 1.0


def test_zero_rounds_catch_nothing() -> None:
    for fixed in (True, False):
        assert p_within(100, 10, 0.5, 0, fixed_targets=fixed) == 0.0
        assert p_within(100, 10, 0.5, 0, s=3, fixed_targets=fixed) == 0.0
        assert simulate(100, 10, 0.5, 0, 1.0, None, fixed, 100, 1) == 0.0


def test_touched_meters_rounds_half_up_and_touches_at_least_one() -> None:
    assert touched_meters(10, 0.25) == 3
    assert touched_meters(10, 0.24) == 2
    assert touched_meters(10_000, 0.001) == 10
    assert touched_meters(1000, 0.0001) == 1
    assert touched_meters(7, 1.0) == 7


def test_a_subset_of_all_test_meters_is_no_subset() -> None:
    for fixed in (True, False):
        whole = p_within(500, 20, 0.03, 5, 0.7, fixed_targets=fixed)
        assert p_within(500, 20, 0.03, 5, 0.7, s=20, fixed_targets=fixed) == whole


# --- exact values by enumeration ----------------------------------------------------------


def enumerated(n: int, k: int, m: int, rounds: int, a: Fraction, s: int, fixed: bool) -> Fraction:
    """P(caught within rounds) by listing every touched set (the test meters are 0 … k-1,
    which is no loss: the touched set is uniform) and every checked subset of size s."""
    tests = range(k)
    subsets = list(itertools.combinations(tests, s))
    touched_sets = [set(c) for c in itertools.combinations(range(n), m)]

    def catches(touched: set[int]) -> Fraction:  # one round, given the touched set
        hits = sum(1 for sub in subsets if touched.intersection(sub))
        return a * Fraction(hits, len(subsets))

    if fixed:
        total = sum((1 - (1 - catches(t)) ** rounds for t in touched_sets), Fraction(0))
        return total / len(touched_sets)
    per_round = sum((catches(t) for t in touched_sets), Fraction(0)) / len(touched_sets)
    return 1 - (1 - per_round) ** rounds


@pytest.mark.parametrize("fixed", [True, False])
@pytest.mark.parametrize(
    ("n", "k", "m", "s"),
    [(6, 2, 1, 2), (6, 3, 2, 1), (7, 4, 2, 2), (7, 4, 3, 3), (7, 5, 4, 2), (5, 5, 1, 2)],
)
@pytest.mark.parametrize(
    ("rounds", "a"), [(1, Fraction(1)), (3, Fraction(1)), (4, Fraction(3, 10))]
)
def test_formulas_match_enumeration(
    n: int, k: int, m: int, s: int, rounds: int, a: Fraction, fixed: bool
) -> None:
    f = m / n
    assert touched_meters(n, f) == m
    size = None if s == k else s
    exact = p_within(n, k, f, rounds, float(a), size, fixed_targets=fixed)
    assert exact == pytest.approx(float(enumerated(n, k, m, rounds, a, s, fixed)), abs=1e-12)


# --- Monte Carlo against the formulas -----------------------------------------------------

MC_CASES = [
    # N, k, f, rounds, a, s
    (10_000, 10, 0.01, 12, 1.0, None),
    (10_000, 50, 0.001, 12, 0.5, None),
    (1_000, 20, 0.05, 4, 0.3, None),
    (100_000, 100, 0.0005, 6, 1.0, None),
    (2_000, 30, 0.02, 8, 1.0, 5),
    (2_000, 30, 0.02, 8, 0.4, 5),
    (500, 12, 0.1, 3, 0.8, 1),
]


@pytest.mark.parametrize("fixed", [True, False])
@pytest.mark.parametrize(("n", "k", "f", "rounds", "a", "s"), MC_CASES)
def test_monte_carlo_agrees_within_four_standard_errors(
    n: int, k: int, f: float, rounds: int, a: float, s: int | None, fixed: bool
) -> None:
    trials = 40_000
    exact = p_within(n, k, f, rounds, a, s, fixed_targets=fixed)
    estimate = simulate(n, k, f, rounds, a, s, fixed, trials, seed=n + k + rounds)
    error = math.sqrt(exact * (1 - exact) / trials)
    assert 0.0 < exact < 1.0
    assert abs(estimate - exact) <= 4 * error, (estimate, exact, error)


def test_the_simulation_is_reproducible() -> None:
    assert simulate(1000, 10, 0.05, 6, 0.5, 3, True, 5000, 7) == simulate(
        1000, 10, 0.05, 6, 0.5, 3, True, 5000, 7
    )


# --- properties ---------------------------------------------------------------------------

sizes = st.integers(min_value=1, max_value=300)
fractions = st.floats(min_value=1e-4, max_value=1.0)
activities = st.floats(min_value=1e-3, max_value=1.0)
round_counts = st.integers(min_value=0, max_value=60)
confidences = st.floats(min_value=0.01, max_value=0.999)


@st.composite
def settings_(draw: st.DrawFn) -> tuple[int, int, float, int, float]:
    n = draw(sizes)
    return n, draw(st.integers(0, n)), draw(fractions), draw(round_counts), draw(activities)


@settings(deadline=None, max_examples=150)
@given(settings_(), st.booleans(), st.data())
def test_p_within_is_a_probability_and_monotone(
    case: tuple[int, int, float, int, float], fixed: bool, data: st.DataObject
) -> None:
    n, k, f, rounds, a = case
    p = p_within(n, k, f, rounds, a, fixed_targets=fixed)
    assert 0.0 <= p <= 1.0
    k2 = data.draw(st.integers(k, n), label="more test meters")
    f2 = data.draw(st.floats(f, 1.0), label="more touched")
    rounds2 = data.draw(st.integers(rounds, rounds + 100), label="more rounds")
    a2 = data.draw(st.floats(a, 1.0), label="more active")
    assert p_within(n, k2, f, rounds, a, fixed_targets=fixed) >= p
    assert p_within(n, k, f2, rounds, a, fixed_targets=fixed) >= p
    assert p_within(n, k, f, rounds2, a, fixed_targets=fixed) >= p
    assert p_within(n, k, f, rounds, a2, fixed_targets=fixed) >= p
    if rounds >= 1:
        assert p_within(n, k, f, 1, a, fixed_targets=fixed) == pytest.approx(
            p_round(n, k, f, a), abs=1e-12
        )


@settings(deadline=None, max_examples=100)
@given(settings_(), st.booleans(), st.data())
def test_subset_checks_are_monotone_up_to_rounding(
    case: tuple[int, int, float, int, float], fixed: bool, data: st.DataObject
) -> None:
    n, k, f, rounds, a = case
    s = data.draw(st.integers(0, k), label="s")
    p = p_within(n, k, f, rounds, a, s, fixed_targets=fixed)
    assert 0.0 <= p <= 1.0 + 1e-12
    tolerance = 1e-12
    k2 = data.draw(st.integers(k, n), label="more test meters")
    f2 = data.draw(st.floats(f, 1.0), label="more touched")
    s2 = data.draw(st.integers(s, k), label="more checked")
    rounds2 = data.draw(st.integers(rounds, rounds + 100), label="more rounds")
    a2 = data.draw(st.floats(a, 1.0), label="more active")
    assert p_within(n, k2, f, rounds, a, s, fixed_targets=fixed) >= p - tolerance
    assert p_within(n, k, f2, rounds, a, s, fixed_targets=fixed) >= p - tolerance
    assert p_within(n, k, f, rounds, a, s2, fixed_targets=fixed) >= p - tolerance
    assert p_within(n, k, f, rounds2, a, s, fixed_targets=fixed) >= p - tolerance
    assert p_within(n, k, f, rounds, a2, s, fixed_targets=fixed) >= p - tolerance
    # a subset never catches more than checking every test meter
    assert p_within(n, k, f, rounds, a, fixed_targets=fixed) >= p - tolerance
    if rounds >= 1:
        assert p_within(n, k, f, 1, a, s, fixed_targets=fixed) == pytest.approx(
            p_round(n, k, f, a, s), abs=1e-12
        )


@settings(deadline=None, max_examples=150)
@given(settings_(), st.integers(0, 300), st.booleans(), st.data())
def test_fixed_targets_saturate(
    case: tuple[int, int, float, int, float], extra: int, subset: bool, data: st.DataObject
) -> None:
    n, k, f, rounds, a = case
    s = data.draw(st.integers(0, k), label="s") if subset else None
    ceiling = p_touched(n, k, f)
    m = touched_meters(n, f)
    exact = 1 - Fraction(math.comb(n - m, k), math.comb(n, k))
    assert ceiling == pytest.approx(float(exact), abs=1e-12)
    for r in (rounds, rounds + extra, 10**6, MAX_ROUNDS):
        assert p_within(n, k, f, r, a, s, fixed_targets=True) <= ceiling + 1e-12
    if s is None and rounds >= 1:
        assert p_within(n, k, f, rounds, 1.0, fixed_targets=True) == ceiling
    # fresh targets are never caught less often than fixed ones
    fixed = p_within(n, k, f, rounds, a, s, fixed_targets=True)
    assert p_within(n, k, f, rounds, a, s, fixed_targets=False) >= fixed - 1e-12


def test_more_fixed_rounds_do_not_help_past_the_ceiling() -> None:
    ceiling = p_touched(10_000, 10, 0.01)
    assert ceiling == pytest.approx(0.0957, abs=1e-4)
    assert p_within(10_000, 10, 0.01, 1_000_000, 0.5, fixed_targets=True) == pytest.approx(ceiling)
    assert rounds_needed(10_000, 10, 0.01, 0.5, fixed_targets=True) is None
    assert rounds_needed(10_000, 10, 0.01, 0.5, fixed_targets=False) is not None


@settings(deadline=None, max_examples=150)
@given(settings_(), confidences, st.booleans(), st.booleans(), st.data())
def test_rounds_needed_is_the_fewest(
    case: tuple[int, int, float, int, float],
    confidence: float,
    fixed: bool,
    subset: bool,
    data: st.DataObject,
) -> None:
    n, k, f, _, a = case
    s = data.draw(st.integers(0, k), label="s") if subset else None
    r = rounds_needed(n, k, f, confidence, a, s, fixed_targets=fixed)
    if r is None:
        assert p_within(n, k, f, MAX_ROUNDS, a, s, fixed_targets=fixed) < confidence
        if fixed:  # the ceiling is below the confidence, or nothing is checked
            assert p_touched(n, k, f) < confidence or s == 0
        else:  # no check at all
            assert p_round(n, k, f, a, s) == 0.0
    else:
        assert 1 <= r <= MAX_ROUNDS
        assert p_within(n, k, f, r, a, s, fixed_targets=fixed) >= confidence
        assert p_within(n, k, f, r - 1, a, s, fixed_targets=fixed) < confidence


@settings(deadline=None, max_examples=150)
@given(settings_(), confidences, st.booleans())
def test_test_meters_needed_is_the_fewest(
    case: tuple[int, int, float, int, float], confidence: float, fixed: bool
) -> None:
    n, _, f, rounds, a = case
    k = meters_needed(n, f, confidence, rounds, a, fixed_targets=fixed)
    if k is None:
        assert p_within(n, n, f, rounds, a, fixed_targets=fixed) < confidence
    else:
        assert 1 <= k <= n
        assert p_within(n, k, f, rounds, a, fixed_targets=fixed) >= confidence
        assert p_within(n, k - 1, f, rounds, a, fixed_targets=fixed) < confidence


def test_needed_figures_of_the_write_up() -> None:
    # one touched meter in 10,000 and one round: P = k/N, so 95.005 % takes 9,501 test meters
    assert meters_needed(10_000, 0.0001, 0.95005, 1, fixed_targets=True) == 9_501
    assert meters_needed(10_000, 0.01, 0.95, 12, 0.25, fixed_targets=True) is not None
    # a = 0.01 and one round: even k = N reaches 1 % only
    assert meters_needed(10_000, 0.5, 0.5, 1, 0.01, fixed_targets=True) is None
    assert meters_needed(10_000, 0.5, 0.5, 0, fixed_targets=False) is None


# --- the helpers of the write-up ----------------------------------------------------------


def test_scenario_and_tables() -> None:
    scenario = Scenario(10_000, 10, 0.01, active=0.5, subset=4)
    assert scenario.touched == 100
    assert scenario.p_round() == p_round(10_000, 10, 0.01, 0.5, 4)
    assert scenario.p_within(12, fixed_targets=True) == p_within(
        10_000, 10, 0.01, 12, 0.5, 4, fixed_targets=True
    )
    assert scenario.rounds_needed(0.01, fixed_targets=False) == rounds_needed(
        10_000, 10, 0.01, 0.01, 0.5, 4, fixed_targets=False
    )
    table = catch_table(10_000, [0.01, 0.1], [1, 10], 1, fixed_targets=True)
    assert table.header == ("test meters k", "f = 1 %", "f = 10 %")
    assert table.rows == (("1", "1.0 %", "10.0 %"), ("10", "9.6 %", "65.1 %"))
    lines = table.markdown().splitlines()
    assert lines[1] == "| --- | --- | --- |" and len(lines) == 4
    needed = meters_needed_table(10_000, [0.01], [0.95], 12)
    assert needed.rows == (("1 %", "100", "294", "25"),)
    assert Table(("a",), ()).markdown() == "| a |\n| --- |"


@pytest.mark.parametrize(
    ("p", "text"),
    [
        (0.0, "0 %"),
        (0.00001, "< 0.01 %"),
        (0.001, "0.10 %"),
        (0.0957, "9.6 %"),
        (0.9949, "99.49 %"),
        (0.99999, "> 99.99 %"),
        (1.0, "> 99.99 %"),
    ],
)
def test_format_probability(p: float, text: str) -> None:
    assert format_probability(p) == text


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: p_round(0, 0, 0.1), "N must satisfy"),
        (lambda: p_round(10, 11, 0.1), "k must satisfy 0 ≤ k ≤ 10"),
        (lambda: p_round(10, -1, 0.1), "k must satisfy"),
        (lambda: p_round(10.0, 1, 0.1), "N must be an integer"),  # type: ignore[arg-type]
        (lambda: p_round(10, True, 0.1), "k must be an integer"),
        (lambda: p_round(10, 1, 0.0), "f must satisfy 0 < f ≤ 1"),
        (lambda: p_round(10, 1, 1.5), "f must satisfy"),
        (lambda: p_round(10, 1, math.nan), "f must satisfy"),
        (lambda: p_round(10, 1, "0.1"), "f must be a number"),  # type: ignore[arg-type]
        (lambda: p_round(10, 1, 0.1, a=0.0), "a must satisfy 0 < a ≤ 1"),
        (lambda: p_round(10, 1, 0.1, a=1.01), "a must satisfy"),
        (lambda: p_round(10, 2, 0.1, s=3), "s must satisfy 0 ≤ s ≤ 2"),
        (lambda: p_within(10, 1, 0.1, -1), "rounds must satisfy"),
        (lambda: rounds_needed(10, 1, 0.1, 1.0, fixed_targets=True), "confidence must satisfy"),
        (lambda: rounds_needed(10, 1, 0.1, 0.0, fixed_targets=True), "confidence must satisfy"),
        (lambda: meters_needed(10, 0.1, 0.9, -2, fixed_targets=True), "rounds must satisfy"),
        (lambda: simulate(10, 1, 0.1, 1, 1.0, None, True, 0, 1), "trials must satisfy"),
        (lambda: simulate(10, 2, 0.1, 1, 1.0, 5, True, 10, 1), "s must satisfy"),
        (lambda: Scenario(10, 20, 0.1), "k must satisfy"),
        (lambda: Scenario(10, 2, 0.1, active=2.0), "a must satisfy"),
    ],
)
def test_bad_input_is_refused(call: object, message: str) -> None:
    assert callable(call)
    with pytest.raises(ValueError, match=message):
        call()
