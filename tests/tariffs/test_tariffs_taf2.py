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
from metrocloud.fhe.context import CustomerKeyPair, Encryptor, deserialize_ciphertext
from metrocloud.fhe.evaluator import Evaluator
from metrocloud.fhe.packing import Interval, SlotLayout
from metrocloud.fhe.params import DEFAULT_PARAMETERS as P
from metrocloud.tariffs import TariffConfigError, load_program
from metrocloud.tariffs.base import RegisterSet
from metrocloud.tariffs.taf2 import Taf2
from metrocloud.testbed.pipeline import DEFAULT_TARIFF_CONFIG

CONFIG: dict[str, Any] = DEFAULT_TARIFF_CONFIG["taf2"]
MONDAY = datetime(2026, 1, 5, tzinfo=timezone.utc)  # a Monday


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


def test_config_digest_and_software_id() -> None:
    a, b = Taf2(P, CONFIG), Taf2(P, {**CONFIG, "utc_offset_minutes": 120})
    assert a.config_digest != b.config_digest
    assert a.software_id == b.software_id and a.software_id.name == "taf2"
    assert load_program("taf2", P, CONFIG).tariff_registers == 3


class Engine:
    def __init__(self) -> None:
        self.prog = Taf2(P, CONFIG)
        self.layout = SlotLayout.for_intervals(P, 96)
        self.keys = CustomerKeyPair.generate(P, self.prog.rotation_steps(self.layout.block))
        self.enc = Encryptor(P, self.keys.context, self.keys.public_key)
        self.ev = Evaluator(self.keys.context, P.slots)

    def billed(self, days: Sequence[Sequence[Interval]]) -> RegisterSet:
        partials = []
        for day in days:
            blob = self.enc.encrypt(self.layout.pack("m-1", day))
            ct = deserialize_ciphertext(blob, P, self.keys.key_tag)
            partials.append(self.prog.evaluate(self.ev, [ct], self.layout.block, day[0].index))
        (r,) = self.prog.read_out(self.ev, partials, self.layout.block)
        out = self.prog.result_layout(self.layout)
        return out.decode(self.keys.decrypt(r, out.length))


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    yield Engine()


def day_of(first: int, energies: Sequence[int], errors: Sequence[bool]) -> list[Interval]:
    return [
        Interval(first + s, e, err) for s, (e, err) in enumerate(zip(energies, errors, strict=True))
    ]


@settings(max_examples=8, deadline=None)
@given(
    start_day=st.integers(0, 13),
    days=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_encrypted_registers_equal_the_reference(
    engine: Engine, start_day: int, days: int, seed: int
) -> None:
    rng = random.Random(seed)
    first = reading_index(MONDAY) + 1 + start_day * 96
    transmissions = [
        day_of(
            first + d * 96,
            [rng.choice([0, 1, 4999, 5000, rng.randint(0, 5000)]) for _ in range(96)],
            [rng.random() < 0.05 for _ in range(96)],
        )
        for d in range(days)
    ]
    got = engine.billed(transmissions)
    want = engine.prog.reference("m-1", [iv for t in transmissions for iv in t])
    assert got == want and got.consistent


def test_a_full_month_at_the_maximum_is_exact(engine: Engine) -> None:
    first = reading_index(MONDAY) + 1
    month = [day_of(first + d * 96, [5000] * 96, [False] * 96) for d in range(31)]
    got = engine.billed(month)
    want = engine.prog.reference("m-1", [iv for t in month for iv in t])
    assert got == want
    assert got.total_register_wh == 31 * 96 * 5000
    assert 0 < got.bill_microcent < P.plaintext_modulus


def test_window_boundaries_land_in_their_registers(engine: Engine) -> None:
    """One Wh in each quarter hour of a Monday: every register counts its own quarter hours."""
    first = index_at(0, 0, 0)
    day = day_of(first, [1] * 96, [False] * 96)
    got = engine.billed([day])
    assert got.tariff_registers_wh == (64, 32, 0)  # 06:00-22:00 peak, the rest off-peak
