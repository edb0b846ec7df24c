"""TAF 2 (time-dependent): switching tables and exact encrypted registers."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrocloud.core.clock import reading_index
from metrocloud.fhe.context import Ciphertext, CustomerKeyPair, Encryptor, deserialize_ciphertext
from metrocloud.fhe.evaluator import Evaluator
from metrocloud.fhe.packing import Interval
from metrocloud.fhe.params import DEFAULT_PARAMETERS as P
from metrocloud.tariffs import TariffConfigError, load_program
from metrocloud.tariffs.base import RegisterSet
from metrocloud.tariffs.register import SCHEDULE_PERIOD, CoefficientLayout
from metrocloud.tariffs.taf1 import MAX_INTERVALS_PER_PERIOD
from metrocloud.tariffs.taf2 import Taf2
from metrocloud.testbed.pipeline import DEFAULT_TARIFF_CONFIG

CONFIG: dict[str, Any] = DEFAULT_TARIFF_CONFIG["taf2"]
MONDAY = datetime(2026, 1, 5, tzinfo=timezone.utc)  # a Monday
T = P.plaintext_modulus
DAY = 96
WEEK = 7 * DAY
CAPACITY = CoefficientLayout(P).capacity
MAX_PRICE = (T - 1) // (5000 * MAX_INTERVALS_PER_PERIOD)  # the largest price any register takes


def index_at(day: int, hh: int, mm: int) -> int:
    """Index of the quarter hour that *starts* at local (UTC+1) day/hh:mm after MONDAY."""
    start = reading_index(MONDAY) + day * 96 + (hh * 60 + mm) // 15 - 4  # UTC+1 -> UTC
    return start + 1


def test_switching_table_picks_register_by_local_weekday_and_time() -> None:
    prog = Taf2(P, CONFIG)
    assert prog.register_of(index_at(0, 5, 45)) == 1  # Monday before 06:00 local: off-peak
    assert prog.register_of(index_at(0, 6, 0)) == 0  # 06:00 starts the peak window
    assert prog.register_of(index_at(0, 21, 45)) == 0  # last peak quarter hour
    assert prog.register_of(index_at(0, 22, 0)) == 1  # 22:00 ends it
    assert prog.register_of(index_at(5, 12, 0)) == 2  # Saturday
    assert prog.register_of(index_at(6, 23, 45)) == 2  # Sunday night
    assert prog.register_of(index_at(7, 0, 0)) == 1  # Monday 00:00 again


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"registers": []}, "1 to 8 registers"),
        ({"registers": [{"name": "x", "price_mct_per_kwh": -1}]}, "positive integer"),
        ({"default_register": 7}, "default_register"),
        ({"windows": [{"days": "mon", "from": "06:10", "to": "07:00", "register": 0}]}, "quarter"),
        ({"windows": [{"days": "mon", "from": "08:00", "to": "07:00", "register": 0}]}, "ends"),
        ({"windows": [{"days": "funday", "from": "06:00", "to": "07:00", "register": 0}]}, "day"),
        ({"windows": [{"days": "mon", "from": "06:00", "to": "07:00", "register": 9}]}, "register"),
        (
            {
                "windows": [
                    {"days": "mon", "from": "06:00", "to": "08:00", "register": 0},
                    {"days": "mon-tue", "from": "07:00", "to": "09:00", "register": 1},
                ]
            },
            "overlaps",
        ),
        ({"utc_offset_minutes": 7}, "utc_offset_minutes"),
        ({"colour": "red"}, "unknown settings"),
        (
            {
                "registers": [{"name": "x", "price_mct_per_kwh": 10**9}],
                "windows": [],
                "default_register": 0,
            },
            "exact range",
        ),
    ],
)
def test_bad_configuration_is_refused_clearly(change: dict[str, Any], message: str) -> None:
    with pytest.raises(TariffConfigError, match=message):
        Taf2(P, {**CONFIG, **change})


def test_the_largest_price_is_accepted_in_every_register() -> None:
    registers = [{"name": n, "price_mct_per_kwh": MAX_PRICE} for n in ("a", "b", "c")]
    Taf2(P, {**CONFIG, "registers": registers})
    for r in range(3):
        over = [dict(reg) for reg in registers]
        over[r]["price_mct_per_kwh"] = MAX_PRICE + 1
        with pytest.raises(TariffConfigError, match="exact range"):
            Taf2(P, {**CONFIG, "registers": over})


def test_weights_give_each_position_its_register_and_price() -> None:
    prog = Taf2(P, CONFIG)
    start = index_at(4, 21, 15)  # a Friday evening: peak, off-peak, weekend within a day
    sums = prog.sums(start)
    assert len(sums) == prog.tariff_registers + 1
    assert all(len(row) == CAPACITY for row in sums)
    prices = prog.prices()
    for j in range(CAPACITY):
        owner = prog.register_of(start + j)
        assert [row[j] for row in sums[:-1]] == [int(r == owner) for r in range(3)]
        assert sums[-1][j] == prices[owner]
    assert sums[0][:3] == [1, 1, 1] and sums[1][3:11] == [1] * 8 and sums[2][11] == 1
    assert prog.sums(start + SCHEDULE_PERIOD) == sums  # the week repeats


def test_config_digest_and_software_id() -> None:
    a, b = Taf2(P, CONFIG), Taf2(P, {**CONFIG, "utc_offset_minutes": 120})
    assert a.config_digest != b.config_digest
    assert a.software_id == b.software_id and a.software_id.name == "taf2"
    assert load_program("taf2", P, CONFIG).tariff_registers == 3


# -- encrypted registers ---------------------------------------------------------------------------


class Engine:
    """Receiver keys, gateway encryptor and cloud evaluator for one TAF 2 program."""

    def __init__(self, prog: Taf2 | None = None) -> None:
        self.prog = prog or Taf2(P, CONFIG)
        self.keys = CustomerKeyPair.for_program(self.prog, DAY)
        self.enc = Encryptor(P, self.keys.context, self.keys.public_key)
        self.ev = Evaluator(self.keys.context, P.slots)

    def result(
        self, transmissions: Sequence[Sequence[Interval]], period_start: int, meter: str = "m-1"
    ) -> list[Ciphertext]:
        block = max(len(tx) for tx in transmissions)
        partials = []
        for tx in transmissions:
            cts = [
                deserialize_ciphertext(self.enc.encrypt(v), P, self.keys.key_tag)
                for v in self.prog.encode(meter, tx, block, period_start)
            ]
            partials.append(self.prog.evaluate(self.ev, cts, block, tx[0].index))
        return self.prog.read_out(self.ev, partials, block, period_start)

    def billed(
        self,
        transmissions: Sequence[Sequence[Interval]],
        period_start: int | None = None,
        meter: str = "m-1",
    ) -> RegisterSet:
        if period_start is None:
            period_start = transmissions[0][0].index
        result = self.result(transmissions, period_start, meter)
        assert len(result) == 1 + (self.prog.tariff_registers + 2) // 2
        return self.prog.decode([self.keys.decrypt(ct, P.slots) for ct in result], DAY)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    yield Engine()


def day_of(first: int, energies: Sequence[int], errors: Sequence[bool]) -> list[Interval]:
    return [
        Interval(first + s, e, err) for s, (e, err) in enumerate(zip(energies, errors, strict=True))
    ]


def ones(first: int, count: int) -> list[Interval]:
    return [Interval(first + k, 1) for k in range(count)]


def cut(intervals: Sequence[Interval], sizes: Sequence[int]) -> list[list[Interval]]:
    """Intervals cut into transmissions of these sizes (the last one takes the rest)."""
    out, k = [], 0
    for size in sizes:
        if k < len(intervals):
            out.append(list(intervals[k : k + size]))
            k += size
    if k < len(intervals):
        out.append(list(intervals[k:]))
    return out


def flat(transmissions: Sequence[Sequence[Interval]]) -> list[Interval]:
    return [iv for tx in transmissions for iv in tx]


transmission_sizes = st.sampled_from([[CAPACITY], [DAY] * 42, [1, 1, 1]]) | st.lists(
    st.integers(1, 3 * DAY), min_size=1, max_size=5
)


@settings(max_examples=16, deadline=None)
@given(
    start=st.integers(0, 2 * WEEK),  # any quarter hour of two weeks: odd ones, every weekday
    offset=st.integers(0, 40),  # the first reading may come after the period start
    days=st.integers(1, 3),
    sizes=transmission_sizes,
    seed=st.integers(0, 2**32 - 1),
)
def test_encrypted_registers_equal_the_reference(
    engine: Engine, start: int, offset: int, days: int, sizes: list[int], seed: int
) -> None:
    rng = random.Random(seed)
    period_start = reading_index(MONDAY) + 1 + start
    readings = day_of(
        period_start + offset,
        [rng.choice([0, 1, 4999, 5000, rng.randint(0, 5000)]) for _ in range(days * DAY)],
        [rng.random() < 0.05 for _ in range(days * DAY)],
    )
    transmissions = cut(readings, sizes)
    got = engine.billed(transmissions, period_start)
    want = engine.prog.reference("m-1", readings)
    assert got == want and got.consistent


@settings(max_examples=10, deadline=None)
@given(start=st.integers(0, WEEK - 1), sizes=transmission_sizes)
def test_a_week_from_any_quarter_hour_counts_every_window_once(
    engine: Engine, start: int, sizes: list[int]
) -> None:
    """One Wh in each quarter hour of any 7 days: 5 x 16 h peak, 5 x 8 h off-peak, 2 x 24 h
    weekend, wherever in the week the period starts and however it is cut."""
    first = index_at(0, 0, 0) + start
    readings = ones(first, WEEK)
    got = engine.billed(cut(readings, sizes))
    assert got.tariff_registers_wh == (5 * 64, 5 * 32, 2 * 96)
    assert got == engine.prog.reference("m-1", readings)


def test_a_full_month_at_the_maximum_is_exact(engine: Engine) -> None:
    first = reading_index(MONDAY) + 1
    month = [day_of(first + d * 96, [5000] * 96, [False] * 96) for d in range(31)]
    got = engine.billed(month)
    want = engine.prog.reference("m-1", [iv for t in month for iv in t])
    assert got == want
    assert got.total_register_wh == 31 * 96 * 5000
    assert 0 < got.bill_microcent < P.plaintext_modulus


@pytest.mark.parametrize("per_tx", [DAY, MAX_INTERVALS_PER_PERIOD], ids=["days", "one"])
def test_a_full_month_at_the_largest_prices_is_exact_just_below_t(per_tx: int) -> None:
    registers = [{"name": n, "price_mct_per_kwh": MAX_PRICE} for n in ("a", "b", "c")]
    e = Engine(Taf2(P, {**CONFIG, "registers": registers}))
    first = index_at(2, 13, 45)  # a Wednesday afternoon
    readings = [Interval(first + k, 5000) for k in range(MAX_INTERVALS_PER_PERIOD)]
    got = e.billed(cut(readings, [per_tx] * 31))
    assert got == e.prog.reference("m-1", readings)
    total = 5000 * MAX_INTERVALS_PER_PERIOD
    assert got.total_register_wh == sum(got.tariff_registers_wh) == total
    assert all(r > 0 for r in got.tariff_registers_wh)
    assert got.bill_microcent == total * MAX_PRICE  # exact: not reduced mod t
    assert T - T // 1000 < got.bill_microcent < T


def test_window_boundaries_land_in_their_registers(engine: Engine) -> None:
    """One Wh in each quarter hour of a Monday: every register counts its own quarter hours."""
    first = index_at(0, 0, 0)
    day = day_of(first, [1] * 96, [False] * 96)
    got = engine.billed([day])
    assert got.tariff_registers_wh == (64, 32, 0)  # 06:00-22:00 peak, the rest off-peak


@pytest.mark.parametrize(
    ("day", "hh", "mm", "registers"),
    [
        (4, 12, 0, (40, 8, 48)),  # Fri 12:00-22:00 peak, 22:00-24:00 off-peak, Sat weekend
        (6, 12, 0, (24, 24, 48)),  # Sun 12:00 weekend, Mon 00:00 off-peak, 06:00 peak
        (4, 21, 45, (1, 8, 87)),  # the last peak quarter hour of the week, then the weekend
        (0, 5, 45, (64, 32, 0)),  # Monday 05:45 to Tuesday 05:45
        (6, 23, 45, (64, 31, 1)),  # the last quarter hour of the week, then a Monday
    ],
)
def test_a_day_across_weekday_boundaries(
    engine: Engine, day: int, hh: int, mm: int, registers: tuple[int, int, int]
) -> None:
    first = index_at(day, hh, mm)
    readings = ones(first, DAY)
    got = engine.billed(cut(readings, [DAY // 2]))  # two transmissions: across the boundary
    assert got.tariff_registers_wh == registers
    assert got == engine.prog.reference("m-1", readings)


def test_one_quarter_hour_per_window_edge(engine: Engine) -> None:
    """Single-interval transmissions on both sides of every switching time of a week."""
    edges = [
        (0, 5, 45, 1),
        (0, 6, 0, 0),
        (0, 21, 45, 0),
        (0, 22, 0, 1),
        (4, 21, 45, 0),
        (4, 22, 0, 1),
        (4, 23, 45, 1),
        (5, 0, 0, 2),
        (6, 23, 45, 2),
        (7, 0, 0, 1),
    ]
    start = index_at(0, 0, 0)
    energies = [2**k for k in range(len(edges))]  # a distinct bit per quarter hour
    txs = [
        [Interval(index_at(d, hh, mm), e)]
        for (d, hh, mm, _), e in zip(edges, energies, strict=True)
    ]
    got = engine.billed(txs, start)
    expected = [0, 0, 0]
    for (*_, register), e in zip(edges, energies, strict=True):
        expected[register] += e
    assert got.tariff_registers_wh == tuple(expected)
    assert got == engine.prog.reference("m-1", flat(txs))


def test_the_same_weekly_phase_in_other_weeks_and_other_phases(engine: Engine) -> None:
    """The cloud encodes the weights once per place in the week: a later week reuses them,
    another start does not."""
    base = index_at(1, 7, 15)  # a Tuesday, at an odd quarter hour
    cc = engine.keys.context
    assert engine.prog.weight_plaintexts(cc, base) is engine.prog.weight_plaintexts(
        cc, base + 3 * SCHEDULE_PERIOD
    )
    for period_start in (base, base + SCHEDULE_PERIOD, base + 1, base - 1, base + DAY):
        readings = [Interval(period_start + k, (k * 37) % 5001) for k in range(DAY + 5)]
        got = engine.billed(cut(readings, [DAY]), period_start)
        assert got == engine.prog.reference("m-1", readings)


def test_readings_after_the_period_start_keep_their_time(engine: Engine) -> None:
    """Position = index - period start: a period whose first readings are missing still puts
    every quarter hour into the register of its own time."""
    period_start = index_at(0, 0, 0)
    readings = ones(index_at(0, 6, 0), 16 * 4)  # Monday 06:00-22:00 only
    got = engine.billed([readings], period_start)
    assert got.tariff_registers_wh == (64, 0, 0)


def test_one_program_serves_several_customers(engine: Engine) -> None:
    other = Engine(engine.prog)
    readings = ones(index_at(3, 3, 30), DAY)
    want = engine.prog.reference("m-1", readings)
    for e in (engine, other, engine):
        assert e.billed([readings]) == want


def config_with(registers: int) -> dict[str, Any]:
    """Register r > 0 takes the two hours from 2r:00 every day; register 0 the rest."""
    return {
        "registers": [
            {"name": f"r{r}", "price_mct_per_kwh": 10_000 + 1_000 * r} for r in range(registers)
        ],
        "windows": [
            {"days": "daily", "from": f"{2 * r:02d}:00", "to": f"{2 * r + 2:02d}:00", "register": r}
            for r in range(1, registers)
        ],
        "default_register": 0,
        "utc_offset_minutes": 60,
    }


@pytest.mark.parametrize("registers", [1, 2, 4, 7, 8])
def test_any_number_of_registers(registers: int) -> None:
    """R registers and the bill take ceil((R + 1) / 2) products: odd and even R."""
    e = Engine(Taf2(P, config_with(registers)))
    assert e.prog.tariff_registers == registers
    rng = random.Random(registers)
    readings = [Interval(index_at(2, 0, 0) + k, rng.randint(0, 5000)) for k in range(2 * DAY)]
    got = e.billed(cut(readings, [DAY]))  # the length of the result is checked in billed
    assert got == e.prog.reference("m-1", readings)
    assert all(r > 0 for r in got.tariff_registers_wh)
    expected = 1 + (registers + 2) // 2
    zero = [0] * P.slots
    for wrong in (expected - 1, expected + 1):
        with pytest.raises(ValueError, match="result ciphertexts"):
            e.prog.decode([zero] * wrong, DAY)


def test_no_evaluation_keys(engine: Engine) -> None:
    assert engine.prog.rotation_steps(DAY) == set()
    assert engine.keys.rotation_steps == () and not engine.keys.relinearization
    assert engine.prog.transmission_intervals(MAX_INTERVALS_PER_PERIOD) == MAX_INTERVALS_PER_PERIOD
    with pytest.raises(TariffConfigError, match="does not fit"):
        engine.prog.transmission_intervals(CAPACITY + 1)
