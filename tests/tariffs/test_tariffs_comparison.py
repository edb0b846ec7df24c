"""TAF 3 and TAF 4 (comparison tariffs): configuration, lane layout, reference, exactness.

One encrypted evaluation of a period costs a few seconds (TAF 3 ~3 s, TAF 4 ~5 s on two
cores) whatever its length, so every encrypted case packs many edge values into one period,
key pairs are generated once per module and program, and the property tests draw two periods
each. The register choice of a lane depends only on that lane (TAF 3) or on the lanes before
it (TAF 4), so one period can hold every threshold edge at once.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrocloud.core.clock import reading_index
from metrocloud.fhe.arith import COMPARISON_PARAMETERS
from metrocloud.fhe.context import CustomerKeyPair, Encryptor, deserialize_ciphertext
from metrocloud.fhe.evaluator import Evaluator
from metrocloud.fhe.packing import Interval, index_fingerprint
from metrocloud.fhe.params import DEFAULT_PARAMETERS
from metrocloud.tariffs import PROGRAMS, RegisterSet, TariffConfigError, load_program
from metrocloud.tariffs.base import expected_integrity_sums
from metrocloud.tariffs.comparison import (
    BLOCK_STEP,
    LANES_PER_ROW,
    MAX_LANES,
    SUM_STEPS,
    ComparisonProgram,
    LaneLayout,
    Taf3,
    Taf4,
)
from metrocloud.tariffs.taf1 import MAX_INTERVALS_PER_PERIOD

P = COMPARISON_PARAMETERS
T = P.plaintext_modulus
HALF = P.row
BLOCK = 4096  # what the messages carry; the comparison programs ignore it
MAX_WH = 5000
JANUARY = reading_index(datetime(2026, 1, 1, 0, 15, tzinfo=timezone.utc))  # 2026-01-01 00:15
MONTH = MAX_INTERVALS_PER_PERIOD  # January: 31 days x 96 quarter hours
#: the largest price the default max_interval_wh allows: a month at 5000 Wh stays below t
MAX_PRICE = (T - 1) // (MAX_WH * MAX_INTERVALS_PER_PERIOD)

TAF3_CONFIG: dict[str, Any] = {
    "thresholds_wh": [250, 1000],
    "prices_mct_per_kwh": [30_000, 35_000, 42_000],
}
TAF4_CONFIG: dict[str, Any] = {
    "budgets_wh": [100_000, 250_000],
    "prices_mct_per_kwh": [30_000, 35_000, 42_000],
}
CONFIGS: dict[type[ComparisonProgram], dict[str, Any]] = {Taf3: TAF3_CONFIG, Taf4: TAF4_CONFIG}
BITS = {Taf3: 13, Taf4: 24}


def with_(cls: type[ComparisonProgram], **change: Any) -> dict[str, Any]:
    return {**CONFIGS[cls], **change}


def month(energies: Sequence[tuple[int, bool]], start: int = JANUARY) -> list[Interval]:
    return [Interval(start + k, wh, err) for k, (wh, err) in enumerate(energies)]


# -- registration and identification ------------------------------------------------------------


@pytest.mark.parametrize("cls", [Taf3, Taf4])
def test_registered_under_its_name(cls: type[ComparisonProgram]) -> None:
    assert PROGRAMS[cls.name] is cls
    prog = load_program(cls.name, cls.parameters, CONFIGS[cls])
    assert type(prog) is cls
    assert cls.parameters == P
    assert (P.ring_dimension, P.multiplicative_depth) == (16384, 6)
    assert cls.relinearization


def test_software_ids_differ_and_are_stable() -> None:
    a3 = Taf3(P, TAF3_CONFIG).software_id
    a4 = Taf4(P, TAF4_CONFIG).software_id
    assert (a3.name, a4.name) == ("taf3", "taf4")
    assert (a3.version, a4.version) == (Taf3.version, Taf4.version)
    assert a3 != a4
    for sid in (a3, a4):
        assert re.fullmatch(r"[0-9a-f]{64}", sid.checksum)
        assert type(sid).from_dict(sid.to_dict()) == sid
    # the code, not the configuration, and the same on every call
    assert Taf3(P, with_(Taf3, thresholds_wh=[1], prices_mct_per_kwh=[1, 2])).software_id == a3
    assert Taf4(P, with_(Taf4, max_interval_wh=100)).software_id == a4
    assert Taf3(P, TAF3_CONFIG).software_id == a3
    assert Taf4(P, TAF4_CONFIG).software_id == a4


def test_config_digest_and_defaults() -> None:
    config = dict(TAF3_CONFIG)
    prog = Taf3(P, config)
    assert config == TAF3_CONFIG  # copied, not mutated
    assert prog.config["max_interval_wh"] == MAX_WH
    assert prog.config_digest == Taf3(P, with_(Taf3, max_interval_wh=MAX_WH)).config_digest
    assert prog.config_digest != Taf3(P, with_(Taf3, thresholds_wh=[250, 1001])).config_digest
    assert prog.thresholds == [250, 1000]
    assert prog.prices == [30_000, 35_000, 42_000]
    assert prog.tariff_registers == 3
    assert Taf4(P, TAF4_CONFIG).tariff_registers == 3


@pytest.mark.parametrize("cls", [Taf3, Taf4])
def test_evaluation_keys_are_the_lane_sum_block_step_and_row_swap(
    cls: type[ComparisonProgram],
) -> None:
    prog = cls(P, CONFIGS[cls])
    assert prog.rotation_steps(BLOCK) == {1, 8, 64, 512, 2048} == {*SUM_STEPS, BLOCK_STEP}
    assert prog.rotation_steps(128) == prog.rotation_steps(BLOCK)  # independent of the block
    assert prog.automorphisms() == [2 * P.ring_dimension - 1]


def test_needs_rows_of_8192_slots() -> None:
    with pytest.raises(ValueError, match="8192"):
        Taf3(DEFAULT_PARAMETERS, TAF3_CONFIG)
    with pytest.raises(ValueError, match="8192"):
        Taf4(DEFAULT_PARAMETERS, TAF4_CONFIG)


# -- configuration checks -----------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Taf3, Taf4])
@pytest.mark.parametrize(
    ("thresholds", "message"),
    [
        ([1000, 250], "increasing"),
        ([250, 250], "increasing"),
        ([0, 250], "positive"),
        ([-1, 250], "positive"),
        ([-250], "positive"),
        ([True, 250], "positive integers"),
        ([250.0, 1000], "positive integers"),
        (["250", 1000], "positive integers"),
        (None, "1 to 6"),
        ([], "1 to 6"),
        ([1, 2, 3, 4, 5, 6, 7], "1 to 6"),
        ((250, 1000), "1 to 6"),
        (250, "1 to 6"),
    ],
    ids=repr,
)
def test_bad_thresholds(cls: type[ComparisonProgram], thresholds: Any, message: str) -> None:
    n = len(thresholds) if isinstance(thresholds, list) else 2
    config = with_(cls, prices_mct_per_kwh=[1] * (n + 1))
    config[cls.threshold_key] = thresholds
    if thresholds is None:
        del config[cls.threshold_key]
    with pytest.raises(TariffConfigError, match=message) as exc:
        cls(P, config)
    assert str(exc.value).startswith(cls.name)


@pytest.mark.parametrize("cls", [Taf3, Taf4])
def test_thresholds_at_the_edge_of_the_bit_range(cls: type[ComparisonProgram]) -> None:
    top = (1 << BITS[cls]) - 1
    cls(P, {cls.threshold_key: [1, top], "prices_mct_per_kwh": [1, 2, 3]})
    cls(P, {cls.threshold_key: [1, 2, 3, 4, 5, top], "prices_mct_per_kwh": [1] * 7})
    with pytest.raises(TariffConfigError, match=rf"{top + 1} exceeds the {BITS[cls]}-bit range"):
        cls(P, {cls.threshold_key: [1, top + 1], "prices_mct_per_kwh": [1, 2, 3]})


@pytest.mark.parametrize("cls", [Taf3, Taf4])
@pytest.mark.parametrize(
    "prices",
    [[1, 2], [1, 2, 3, 4], [], None, (1, 2, 3), [0, 2, 3], [1, -2, 3], [1, 2, True],
     [1, 2.0, 3], [1, "2", 3], [False, 2, 3]],
    ids=repr,
)  # fmt: skip
def test_bad_prices(cls: type[ComparisonProgram], prices: Any) -> None:
    with pytest.raises(TariffConfigError, match=cls.name) as exc:
        cls(P, with_(cls, prices_mct_per_kwh=prices))
    assert "price" in str(exc.value)


@pytest.mark.parametrize("cls", [Taf3, Taf4])
def test_wrong_number_of_prices_names_the_count(cls: type[ComparisonProgram]) -> None:
    with pytest.raises(TariffConfigError, match=r"one price per band \(3\)"):
        cls(P, with_(cls, prices_mct_per_kwh=[1, 2]))


@pytest.mark.parametrize("cls", [Taf3, Taf4])
@pytest.mark.parametrize(
    "extra",
    [{"threshold_wh": [1]}, {"price_mct_per_kwh": 1}, {"utc_offset_minutes": 60}, {"x": None}],
    ids=repr,
)
def test_unknown_keys(cls: type[ComparisonProgram], extra: dict[str, Any]) -> None:
    with pytest.raises(TariffConfigError, match="unknown settings") as exc:
        cls(P, with_(cls, **extra))
    assert next(iter(extra)) in str(exc.value)


def test_each_program_refuses_the_others_threshold_key() -> None:
    with pytest.raises(TariffConfigError, match=r"unknown settings \['budgets_wh'\]"):
        Taf3(P, {**TAF3_CONFIG, "budgets_wh": [1]})
    with pytest.raises(TariffConfigError, match=r"unknown settings \['thresholds_wh'\]"):
        Taf4(P, {**TAF4_CONFIG, "thresholds_wh": [1]})


@pytest.mark.parametrize("cls", [Taf3, Taf4])
@pytest.mark.parametrize("max_wh", [0, -1, True, 5000.0, "5000", None], ids=repr)
def test_bad_max_interval(cls: type[ComparisonProgram], max_wh: Any) -> None:
    with pytest.raises(TariffConfigError, match="max_interval_wh must be a positive integer"):
        cls(P, with_(cls, max_interval_wh=max_wh))


def test_max_interval_must_fit_13_bits() -> None:
    Taf3(P, with_(Taf3, max_interval_wh=8191, prices_mct_per_kwh=[1, 2, 3]))
    with pytest.raises(TariffConfigError, match="below 8192"):
        Taf3(P, with_(Taf3, max_interval_wh=8192, prices_mct_per_kwh=[1, 2, 3]))


@pytest.mark.parametrize("cls", [Taf3, Taf4])
def test_price_at_the_edge_of_the_exact_range(cls: type[ComparisonProgram]) -> None:
    assert MAX_WH * MONTH * MAX_PRICE < T <= MAX_WH * MONTH * (MAX_PRICE + 1)
    cls(P, with_(cls, prices_mct_per_kwh=[1, 2, MAX_PRICE]))
    for prices in ([1, 2, MAX_PRICE + 1], [MAX_PRICE + 1, 2, 3], [1, 10**30, 3]):
        with pytest.raises(TariffConfigError, match="beyond the exact range") as exc:
            cls(P, with_(cls, prices_mct_per_kwh=prices))
        assert str(T) in str(exc.value)
        assert P.parameters_id in str(exc.value)
    # a smaller max_interval_wh buys a higher price, and the reverse
    cls(P, with_(cls, prices_mct_per_kwh=[1, 2, 2 * MAX_PRICE], max_interval_wh=MAX_WH // 2))
    with pytest.raises(TariffConfigError, match="exact range"):
        cls(P, with_(cls, prices_mct_per_kwh=[1, 2, MAX_PRICE], max_interval_wh=MAX_WH + 1))


def test_taf4_period_consumption_must_fit_24_bits() -> None:
    most = (1 << 24) // MONTH  # 5637 Wh per quarter hour: a month stays below 2^24
    assert most * MONTH < 1 << 24 <= (most + 1) * MONTH
    Taf4(P, with_(Taf4, max_interval_wh=most))
    with pytest.raises(TariffConfigError, match="beyond 24 bits") as exc:
        Taf4(P, with_(Taf4, max_interval_wh=most + 1))
    assert str((most + 1) * MONTH) in str(exc.value)
    Taf3(P, with_(Taf3, max_interval_wh=most + 1))  # TAF 3 compares one interval only


def test_config_error_is_a_value_error() -> None:
    assert issubclass(TariffConfigError, ValueError)


# -- lane layout and gateway encoding -------------------------------------------------------------


def test_lane_layout_slots() -> None:
    layout = LaneLayout(P)
    assert layout.slot(0, 0) == 0
    assert layout.slot(2047, 0) == 2047
    assert layout.slot(5, 1) == 2048 + 5
    assert layout.slot(5, 3) == 3 * 2048 + 5
    assert layout.slot(5, 4) == 5  # block 4 is block 0 of the next ciphertext
    assert layout.slot(2048, 0) == HALF  # lane 2048 starts row 1
    assert layout.slot(2049, 2) == HALF + 2 * 2048 + 1
    assert layout.slot(MAX_LANES - 1, 3) == 2 * HALF - 1
    mask = layout.lane_mask()
    assert sum(mask) == MAX_LANES
    assert all(mask[layout.slot(lane, 0)] == 1 for lane in (0, 2047, 2048, 4095))
    assert mask[2048] == mask[HALF - 1] == 0


def expected_blocks(
    cls: type[ComparisonProgram], meter: str, ivs: Sequence[Interval]
) -> list[list[int]]:
    """What the gateway must send, built here without the program's helpers."""
    if cls is Taf3:
        compared = [0 if iv.error else iv.energy_wh for iv in ivs]
    else:
        compared = [sum(iv.energy_wh for iv in ivs[:k]) for k in range(len(ivs))]
    blocks = [[(x >> j) & 1 for x in compared] for j in range(BITS[cls])]
    if cls is Taf4:
        blocks.append([0 if iv.error else iv.energy_wh for iv in ivs])
    blocks.append([iv.energy_wh if iv.error else 0 for iv in ivs])
    blocks.append([iv.index for iv in ivs])
    blocks.append([index_fingerprint(meter, iv.index) for iv in ivs])
    return blocks


@pytest.mark.parametrize("cls", [Taf3, Taf4])
def test_encode_puts_every_block_where_the_lane_layout_says(cls: type[ComparisonProgram]) -> None:
    prog = cls(P, CONFIGS[cls])
    layout = LaneLayout(P)
    rng = random.Random(7)
    n = 2100  # lanes in both rows
    ivs = month([(rng.choice([0, 1, 4095, 4096, 5000, rng.randint(0, 5000)]), rng.random() < 0.1)
                 for _ in range(n)])  # fmt: skip
    vectors = prog.encode("m-lay", ivs, BLOCK, JANUARY)
    blocks = expected_blocks(cls, "m-lay", ivs)
    assert len(blocks) == {Taf3: 16, Taf4: 28}[cls]
    assert len(vectors) == len(blocks) // 4 == {Taf3: 4, Taf4: 7}[cls]
    assert all(len(v) == P.slots for v in vectors)
    assert all(0 <= x < T // 2 for v in vectors for x in v)  # what Encryptor accepts
    # spot checks against LaneLayout.slot: lane 2050 (row 1), block by block
    lane, iv = 2050, ivs[2050]
    nb = BITS[cls]
    x = iv.energy_wh * (not iv.error) if cls is Taf3 else sum(v.energy_wh for v in ivs[:lane])
    for j in range(nb):
        assert vectors[j // 4][layout.slot(lane, j)] == (x >> j) & 1
    assert vectors[0][HALF + 2] == x & 1  # lane 2050 is position 2 of row 1
    tail = [iv.energy_wh if iv.error else 0, iv.index, index_fingerprint("m-lay", iv.index)]
    if cls is Taf4:
        tail.insert(0, 0 if iv.error else iv.energy_wh)
    for b, value in enumerate(tail, start=nb):
        assert vectors[b // 4][layout.slot(lane, b)] == value
    # and the whole of every vector: the blocks in their lanes, zeros elsewhere
    want = [[0] * P.slots for _ in vectors]
    for b, values in enumerate(blocks):
        for k, value in enumerate(values):
            want[b // 4][layout.slot(k, b)] = value
    assert vectors == want


def test_encode_refuses_what_does_not_fit() -> None:
    prog3, prog4 = Taf3(P, TAF3_CONFIG), Taf4(P, TAF4_CONFIG)
    with pytest.raises(TariffConfigError, match="at most 2976 intervals"):
        prog3.encode("m", month([(0, False)] * (MONTH + 1)), BLOCK, JANUARY)
    with pytest.raises(TariffConfigError, match="at most 2976 intervals"):
        prog3.transmission_intervals(MONTH + 1)
    assert prog4.transmission_intervals(MONTH) == MONTH  # one transmission per period
    with pytest.raises(ValueError, match="does not fit 13 bits"):
        prog3.encode("m", month([(8192, False)]), BLOCK, JANUARY)
    with pytest.raises(ValueError, match="does not fit 13 bits"):
        prog3.encode("m", month([(-1, False)]), BLOCK, JANUARY)
    assert prog3.encode("m", month([(8192, True)]), BLOCK, JANUARY)  # errors are not compared


# -- plaintext reference, by hand ------------------------------------------------------------------


def test_taf3_reference_by_hand() -> None:
    prog = Taf3(P, {"thresholds_wh": [10, 20], "prices_mct_per_kwh": [100, 200, 300]})
    ivs = month([(5, False), (10, False), (19, False), (20, False), (25, False), (7, True)])
    ref = prog.reference("m-hand", ivs)
    # 5 < 10 -> band 0; 10 and 19 -> band 1 (10 <= e < 20); 20 and 25 -> band 2; 7 is an error
    assert ref.tariff_registers_wh == (5, 29, 45)
    assert ref.error_register_wh == 7
    assert ref.total_register_wh == 86
    assert ref.bill_microcent == 5 * 100 + 29 * 200 + 45 * 300
    assert ref.index_sum == 6 * JANUARY + 15
    assert ref.fingerprint_sum == sum(index_fingerprint("m-hand", JANUARY + k) for k in range(6))
    assert ref.consistent
    assert [prog.band(e) for e in (0, 9, 10, 19, 20, 8191)] == [0, 0, 1, 1, 2, 2]


def test_taf4_reference_by_hand() -> None:
    prog = Taf4(P, {"budgets_wh": [10, 20], "prices_mct_per_kwh": [100, 200, 300]})
    energies = [(5, False), (5, True), (7, False), (4, False), (6, False), (3, False)]
    ivs = month(energies)
    # consumed before each interval, errors included: 0, 5, 10, 17, 21, 27
    assert prog.compared(ivs) == [0, 5, 10, 17, 21, 27]
    ref = prog.reference("m-hand", ivs)
    # 5 -> band 0; the error's 5 Wh reach the first budget exactly, so 7 is band 1; 4 crosses
    # 20 inside its quarter hour and is still band 1; 6 and 3 are band 2
    assert ref.tariff_registers_wh == (5, 11, 9)
    assert ref.error_register_wh == 5
    assert ref.total_register_wh == 30
    assert ref.bill_microcent == 5 * 100 + 11 * 200 + 9 * 300
    assert ref.consistent


def test_reference_of_the_empty_and_the_all_error_period() -> None:
    prog = Taf4(P, TAF4_CONFIG)
    assert prog.reference("m", []) == RegisterSet((0, 0, 0), 0, 0, 0, 0, 0)
    ref = prog.reference("m", month([(5000, True)] * 100))
    assert ref.tariff_registers_wh == (0, 0, 0)
    assert ref.error_register_wh == ref.total_register_wh == 500_000
    assert ref.bill_microcent == 0


def test_register_set_consistency() -> None:
    assert RegisterSet((5, 29, 45), 7, 86, 0, 0, 0).consistent
    assert not RegisterSet((5, 29, 45), 7, 85, 0, 0, 0).consistent
    assert not RegisterSet((5, 29, 45), 0, 86, 0, 0, 0).consistent
    assert RegisterSet((0, 0, 0), 0, 0, 0, 0, 0).consistent
    assert RegisterSet((1, 2, 3, 4, 5, 6, 7), 0, 28, 0, 0, 0).consistent
    assert RegisterSet((0,), 0, 0, 250_000_000, 0, 0).bill_euro == 2.5


# -- encrypted exactness --------------------------------------------------------------------------


@dataclass
class World:
    """One customer's key pair; any configuration of the same program (and parameters) uses the
    same evaluation keys, so one key pair serves every configuration below."""

    keys: CustomerKeyPair
    enc: Encryptor
    ev: Evaluator

    def billed(self, prog: ComparisonProgram, meter: str, ivs: Sequence[Interval]) -> RegisterSet:
        assert prog.rotation_steps(BLOCK) <= set(self.keys.rotation_steps)
        cts = [
            deserialize_ciphertext(self.enc.encrypt(v), prog.params, self.keys.key_tag)
            for v in prog.encode(meter, ivs, BLOCK, ivs[0].index)
        ]
        partial = prog.evaluate(self.ev, cts, BLOCK, ivs[0].index)
        r = prog.read_out(self.ev, [partial], BLOCK, ivs[0].index)
        return prog.decode([self.keys.decrypt(c, P.slots) for c in r], BLOCK)

    def check(self, prog: ComparisonProgram, meter: str, ivs: Sequence[Interval]) -> RegisterSet:
        got = self.billed(prog, meter, ivs)
        assert got == prog.reference(meter, ivs)
        assert got.consistent
        assert (got.index_sum, got.fingerprint_sum) == expected_integrity_sums(
            meter, [iv.index for iv in ivs], T
        )
        return got


def make_world(cls: type[ComparisonProgram]) -> World:
    keys = CustomerKeyPair.for_program(cls(P, CONFIGS[cls]), BLOCK)
    return World(
        keys, Encryptor(P, keys.context, keys.public_key), Evaluator(keys.context, P.slots)
    )


@pytest.fixture(scope="module")
def taf3() -> World:
    return make_world(Taf3)


@pytest.fixture(scope="module")
def taf4() -> World:
    return make_world(Taf4)


def test_keys_hold_exactly_what_the_programs_use(taf3: World, taf4: World) -> None:
    for world in (taf3, taf4):
        assert set(world.keys.rotation_steps) == {*SUM_STEPS, BLOCK_STEP}
        assert world.keys.relinearization
        assert world.keys.relinearization_key_bytes()


def test_taf3_every_threshold_edge(taf3: World) -> None:
    """Thresholds on bit boundaries (1, 255/256, 4095/4096, 8191), every one ± 1, in one
    period; 7 registers spread the results over three ciphertexts."""
    thresholds = [1, 255, 256, 4095, 4096, 8191]
    prices = [1_000, 2_000, 3_000, 4_000, 5_000, 6_000, 45_105]  # 45,105: the most 8191 Wh allow
    prog = Taf3(
        P, {"thresholds_wh": thresholds, "prices_mct_per_kwh": prices, "max_interval_wh": 8191}
    )
    edges = sorted({v for t in thresholds for v in (t - 1, t, t + 1) if 0 <= v <= 8191} | {5000})
    energies = [(e, False) for e in edges] + [(e, True) for e in edges[::3]]
    ivs = month(energies + [(8191, False)] * 20, start=JANUARY + 500)
    got = taf3.check(prog, "m-edge", ivs)
    band_of = {e: sum(e >= t for t in thresholds) for e in edges}
    want = [0] * 7
    for e in edges:
        want[band_of[e]] += e
    want[6] += 20 * 8191
    assert got.tariff_registers_wh == tuple(want)
    assert got.tariff_registers_wh[:2] == (0, 1 + 2 + 254)  # e = 0 is band 0; 1 is band 1
    assert got.error_register_wh == sum(edges[::3])
    assert got.bill_microcent == sum(w * p for w, p in zip(want, prices, strict=True))


def test_taf3_all_error_period(taf3: World) -> None:
    prog = Taf3(P, TAF3_CONFIG)
    energies = [(e, True) for e in [0, 1, 249, 250, 999, 1000, 5000] * 30]
    got = taf3.check(prog, "m-err", month(energies))
    assert got.tariff_registers_wh == (0, 0, 0)
    assert got.error_register_wh == got.total_register_wh == 30 * 7499
    assert got.bill_microcent == 0


def test_taf3_full_month_known_answer(taf3: World) -> None:
    """January (2,976 lanes, both rows), a cycle of 12 intervals around both thresholds."""
    valid = [0, 249, 250, 251, 999, 1000, 1001, 5000, 1, 4999]
    cycle = [(e, False) for e in valid] + [(3000, True), (250, True)]
    assert MONTH % len(cycle) == 0
    prog = Taf3(P, TAF3_CONFIG)
    got = taf3.check(prog, "m-0001", month(cycle * (MONTH // len(cycle))))
    reps = MONTH // len(cycle)  # 248
    assert got.tariff_registers_wh == (250 * reps, 1500 * reps, 12_000 * reps)
    assert got.error_register_wh == 3250 * reps
    assert got.total_register_wh == 17_000 * reps
    assert got.bill_microcent == reps * (250 * 30_000 + 1500 * 35_000 + 12_000 * 42_000)
    assert got.index_sum == MONTH * JANUARY + MONTH * (MONTH - 1) // 2
    _, fp = expected_integrity_sums("m-0001", range(JANUARY, JANUARY + MONTH), T)
    assert got.fingerprint_sum == fp


def test_taf4_budgets_crossed_at_and_inside_intervals(taf4: World) -> None:
    """Budget 1000 is reached exactly at an interval boundary, through an error interval; 5000
    is crossed inside an interval that starts 1 Wh below it; 16,000,000 is never reached."""
    budgets = [1000, 5000, 16_000_000]
    prices = [10_000, 20_000, 30_000, 73_000]
    prog = Taf4(P, {"budgets_wh": budgets, "prices_mct_per_kwh": prices})
    energies = [
        (600, False),  # before 0: band 0
        (399, True),  # before 600: error register, but it counts towards the budget
        (1, False),  # before 999 (budget - 1): band 0
        (500, False),  # before 1000 (exactly the budget): band 1
        (500, False),  # before 1500: band 1
        (0, False),  # before 2000: band 1
        (2999, False),  # before 2000: band 1
        (5000, False),  # before 4999 (budget - 1): band 1, though it crosses 5000 inside
        (0, False),  # before 9999: band 2
        (7, False),  # band 2
        (4999, True),  # error
        (0, True),
        (5000, False),  # before 15005: band 2
    ]
    ivs = month(energies + [(0, False)] * 47, start=JANUARY + 1234)  # 60 intervals
    assert prog.compared(ivs)[:10] == [0, 600, 999, 1000, 1500, 2000, 2000, 4999, 9999, 9999]
    got = taf4.check(prog, "m-cross", ivs)
    assert got.tariff_registers_wh == (601, 8999, 5007, 0)
    assert got.error_register_wh == 5398
    assert got.total_register_wh == 20_005
    assert got.bill_microcent == 601 * 10_000 + 8999 * 20_000 + 5007 * 30_000


def test_taf4_all_error_period_passes_budgets_without_billing(taf4: World) -> None:
    prog = Taf4(P, {"budgets_wh": [1, 100_000], "prices_mct_per_kwh": [1, 2, 3]})
    got = taf4.check(prog, "m-err", month([(5000, True)] * 250 + [(0, True)] * 50))
    assert got.tariff_registers_wh == (0, 0, 0)
    assert got.error_register_wh == got.total_register_wh == 1_250_000
    assert got.bill_microcent == 0


def test_taf4_full_month_known_answer(taf4: World) -> None:
    """January at 5000 Wh every quarter hour: the first budget is reached exactly at the end of
    interval 999, the second inside interval 2048 (the first lane of row 1); prices as high
    as the range allows, so the bill lies close to t."""
    budgets = [5000 * 1000, 5000 * 2048 + 2500]
    prices = [MAX_PRICE - 2000, MAX_PRICE - 1000, MAX_PRICE]
    prog = Taf4(P, {"budgets_wh": budgets, "prices_mct_per_kwh": prices})
    energies = [(MAX_WH, 10 <= k < 20) for k in range(MONTH)]  # ten error intervals
    got = taf4.check(prog, "m-0001", month(energies))
    registers = (990 * MAX_WH, 1049 * MAX_WH, (MONTH - 2049) * MAX_WH)
    assert got.tariff_registers_wh == registers
    assert got.error_register_wh == 10 * MAX_WH
    assert got.total_register_wh == MONTH * MAX_WH == 14_880_000
    bill = sum(r * p for r, p in zip(registers, prices, strict=True))
    assert got.bill_microcent == bill  # exact, not reduced mod t
    assert 0.98 * T < bill < T


@st.composite
def period_seeds(draw: st.DrawFn) -> tuple[int, str]:
    """A seed for a random period (drawn below, so that even Hypothesis' first, simplest
    example is a full random period) and a meter id."""
    return draw(st.integers(0, 2**32)), draw(st.sampled_from(["m-0001", "meter/ü", "x"]))


def random_period(rng: random.Random, edges: Sequence[int]) -> list[Interval]:
    n = rng.choice([rng.randint(1, 300), rng.randint(LANES_PER_ROW, MONTH)])
    start = JANUARY + rng.randint(0, 10**6)

    def energy() -> int:
        kind = rng.random()
        if kind < 0.3:
            return rng.choice([0, MAX_WH, *edges])
        if kind < 0.6:
            return rng.randint(0, 400)  # a household's typical quarter hour
        return rng.randint(0, MAX_WH)

    return [Interval(start + k, energy(), rng.random() < 0.05) for k in range(n)]


def band_prices(rng: random.Random, n: int) -> list[int]:
    """Prices in any order: rising, falling (volume discounts) or mixed."""
    prices = [rng.randint(1, MAX_PRICE) for _ in range(n)]
    return sorted(prices) if rng.random() < 0.5 else prices


@settings(max_examples=2, deadline=None)
@given(period_seeds())
def test_taf3_random_periods_equal_the_reference(taf3: World, drawn: tuple[int, str]) -> None:
    seed, meter = drawn
    rng = random.Random(seed)
    thresholds = sorted(rng.sample(range(1, MAX_WH + 2), rng.randint(1, 2)))
    prices = band_prices(rng, len(thresholds) + 1)
    prog = Taf3(P, {"thresholds_wh": thresholds, "prices_mct_per_kwh": prices})
    edges = [v for t in thresholds for v in (t - 1, t, t + 1) if v <= MAX_WH]
    taf3.check(prog, meter, random_period(rng, edges))


@settings(max_examples=2, deadline=None)
@given(period_seeds())
def test_taf4_random_periods_equal_the_reference(taf4: World, drawn: tuple[int, str]) -> None:
    seed, meter = drawn
    rng = random.Random(seed)
    ivs = random_period(rng, [])
    consumed = Taf4(P, TAF4_CONFIG).compared(ivs)  # before each interval
    # budgets reached exactly at a boundary, at random (maybe inside an interval), never
    pool = {rng.choice(consumed) or 1, rng.randint(1, max(1, consumed[-1])), consumed[-1] + 10**6}
    budgets = sorted(rng.sample(sorted(pool), rng.randint(1, min(2, len(pool)))))
    prices = band_prices(rng, len(budgets) + 1)
    prog = Taf4(P, {"budgets_wh": budgets, "prices_mct_per_kwh": prices})
    taf4.check(prog, meter, ivs)


# -- regressions of bugs this file found --------------------------------------------------------


def test_taf4_falling_prices_are_exact(taf4: World) -> None:
    """A volume discount: energy beyond the budget is cheaper. The configuration is accepted,
    so its bill must be exact too (a negative constant once multiplied the noise by ~t)."""
    prog = Taf4(P, {"budgets_wh": [100_000], "prices_mct_per_kwh": [42_000, 30_000]})
    ivs = month([(k * 37 % 5001, k % 29 == 0) for k in range(300)])
    assert prog.compared(ivs)[-1] > 100_000  # the budget is passed
    taf4.check(prog, "m-fall", ivs)


def test_longest_accepted_period_stays_in_the_exact_range() -> None:
    try:
        prog = Taf3(P, with_(Taf3, prices_mct_per_kwh=[1, 2, MAX_PRICE]))
    except TariffConfigError:
        return  # fixed by a tighter range check

    def accepted(n: int) -> bool:
        try:
            prog.transmission_intervals(n)
        except TariffConfigError:
            return False
        return True

    longest = max(n for n in (MONTH, MAX_LANES) if accepted(n))
    ref = prog.reference("m", month([(MAX_WH, False)] * longest))
    assert ref.bill_microcent < T
