"""TAF 1: configuration checks, identification, and exactness of the encrypted read-out."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrocloud.fhe.context import (
    Ciphertext,
    CustomerKeyPair,
    Encryptor,
    deserialize_ciphertext,
    load_evaluation_keys,
)
from metrocloud.fhe.evaluator import Evaluator
from metrocloud.fhe.packing import Interval, index_fingerprint
from metrocloud.fhe.params import DEFAULT_PARAMETERS, FheParameters
from metrocloud.tariffs import PROGRAMS, RegisterSet, TariffConfigError, load_program
from metrocloud.tariffs.base import expected_integrity_sums
from metrocloud.tariffs.register import CoefficientLayout, RegisterProgram
from metrocloud.tariffs.taf1 import MAX_INTERVALS_PER_PERIOD, Taf1

P = DEFAULT_PARAMETERS
T = P.plaintext_modulus
MAX_WH = 5000
PRICE = 32_000  # m¢/kWh
# The largest price TAF1 accepts with the default max_interval_wh: the worst bill stays below t.
MAX_PRICE = (T - 1) // (MAX_WH * MAX_INTERVALS_PER_PERIOD)
PER_TX = 96  # a day of quarter hours
CAPACITY = CoefficientLayout(P).capacity  # quarter hours one period can hold: N/2 - 4

# -- configuration ----------------------------------------------------------------------------


def test_registered_under_its_name() -> None:
    assert PROGRAMS["taf1"] is Taf1
    prog = load_program("taf1", P, {"price_mct_per_kwh": PRICE})
    assert isinstance(prog, Taf1)
    with pytest.raises(TariffConfigError, match="unknown tariff program"):
        load_program("taf99", P, {"price_mct_per_kwh": PRICE})


def test_valid_config_and_defaults() -> None:
    prog = Taf1(P, {"price_mct_per_kwh": PRICE})
    assert prog.price == PRICE
    assert prog.config == {"price_mct_per_kwh": PRICE, "max_interval_wh": MAX_WH}
    assert prog.tariff_registers == 1


def test_config_is_copied_not_mutated() -> None:
    config: dict[str, Any] = {"price_mct_per_kwh": PRICE}
    Taf1(P, config)
    assert config == {"price_mct_per_kwh": PRICE}


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"max_interval_wh": 5000},
        {"price_mct_per_kwh": None},
        {"price_mct_per_kwh": 0},
        {"price_mct_per_kwh": -1},
        {"price_mct_per_kwh": -PRICE},
        {"price_mct_per_kwh": True},
        {"price_mct_per_kwh": False},
        {"price_mct_per_kwh": 32.5},
        {"price_mct_per_kwh": "32000"},
        {"price_mct_per_kwh": PRICE, "max_interval_wh": 0},
        {"price_mct_per_kwh": PRICE, "max_interval_wh": -5},
        {"price_mct_per_kwh": PRICE, "max_interval_wh": 50.0},
        {"price_mct_per_kwh": PRICE, "max_interval_wh": "5000"},
    ],
    ids=repr,
)
def test_bad_config_raises(config: dict[str, Any]) -> None:
    with pytest.raises(TariffConfigError, match="taf1"):
        Taf1(P, config)


@pytest.mark.parametrize(
    "extra", [{"price": 1}, {"price_ct_per_kwh": 1}, {"night_price_mct_per_kwh": 1}]
)
def test_unknown_keys_raise(extra: dict[str, Any]) -> None:
    with pytest.raises(TariffConfigError, match="unknown settings") as exc:
        Taf1(P, {"price_mct_per_kwh": PRICE, **extra})
    assert next(iter(extra)) in str(exc.value)


def test_tariff_config_error_is_a_value_error() -> None:
    assert issubclass(TariffConfigError, ValueError)


def test_price_at_the_edge_of_the_exact_range() -> None:
    assert MAX_WH * MAX_INTERVALS_PER_PERIOD * MAX_PRICE < T
    assert MAX_WH * MAX_INTERVALS_PER_PERIOD * (MAX_PRICE + 1) >= T
    Taf1(P, {"price_mct_per_kwh": MAX_PRICE})
    with pytest.raises(TariffConfigError) as exc:
        Taf1(P, {"price_mct_per_kwh": MAX_PRICE + 1})
    message = str(exc.value)
    assert "exact range" in message
    assert str(T) in message
    assert P.parameters_id in message


def test_max_interval_too_large_for_the_range() -> None:
    wh = (T - 1) // (MAX_INTERVALS_PER_PERIOD * PRICE)
    Taf1(P, {"price_mct_per_kwh": PRICE, "max_interval_wh": wh})
    with pytest.raises(TariffConfigError, match=re.escape(str(T))):
        Taf1(P, {"price_mct_per_kwh": PRICE, "max_interval_wh": wh + 1})


def test_huge_price_raises() -> None:
    with pytest.raises(TariffConfigError, match="exact range"):
        Taf1(P, {"price_mct_per_kwh": 10**30})


# -- identification ------------------------------------------------------------------------------


def test_software_id() -> None:
    a = Taf1(P, {"price_mct_per_kwh": PRICE}).software_id
    b = Taf1(P, {"price_mct_per_kwh": 1}).software_id
    assert a.name == "taf1"
    assert a.version == Taf1.version
    assert re.fullmatch(r"[0-9a-f]{64}", a.checksum)
    assert a == b  # the code, not the configuration
    assert type(a).from_dict(a.to_dict()) == a


def test_config_digest() -> None:
    a = Taf1(P, {"price_mct_per_kwh": PRICE})
    assert re.fullmatch(r"[0-9a-f]{64}", a.config_digest)
    assert a.config_digest == Taf1(P, {"price_mct_per_kwh": PRICE}).config_digest
    # The default is part of the configuration that is digested.
    explicit = Taf1(P, {"price_mct_per_kwh": PRICE, "max_interval_wh": MAX_WH})
    assert a.config_digest == explicit.config_digest
    assert a.config_digest != Taf1(P, {"price_mct_per_kwh": PRICE + 1}).config_digest
    other_max = Taf1(P, {"price_mct_per_kwh": PRICE, "max_interval_wh": MAX_WH - 1})
    assert a.config_digest != other_max.config_digest


# -- no evaluation keys, one transmission per period ---------------------------------------------


@pytest.mark.parametrize("block", [1, 2, 64, 128, 4096])
def test_register_programs_need_no_evaluation_key(block: int) -> None:
    prog = Taf1(P, {"price_mct_per_kwh": PRICE})
    assert prog.rotation_steps(block) == set()
    assert prog.automorphisms() == []
    assert prog.relinearization is False
    keys = CustomerKeyPair.for_program(prog, block)
    assert keys.rotation_steps == ()
    assert keys.automorphisms == ()
    assert keys.relinearization is False
    assert keys.relinearization_key_bytes() == b""


def test_the_empty_evaluation_key_blob_loads() -> None:
    prog = Taf1(P, {"price_mct_per_kwh": PRICE})
    keys = CustomerKeyPair.for_program(prog, PER_TX)
    assert keys.rotation_keys_bytes() == b""
    blob = keys.evaluation_keys_bytes()
    assert msgpack.unpackb(blob, raw=False) == {"automorphism": b"", "mult": b""}
    load_evaluation_keys(blob)  # what the cloud does with a registration: nothing to install


def test_a_whole_period_is_one_transmission() -> None:
    prog = Taf1(P, {"price_mct_per_kwh": PRICE})
    assert P.ring_dimension // 2 - 4 == CAPACITY
    for n in (1, PER_TX, 28 * PER_TX, MAX_INTERVALS_PER_PERIOD, CAPACITY):
        assert prog.transmission_intervals(n) == n


@pytest.mark.parametrize("n", [CAPACITY + 1, P.ring_dimension // 2, 43 * PER_TX, 10**6])
def test_a_period_longer_than_the_capacity_is_refused(n: int) -> None:
    with pytest.raises(TariffConfigError, match="does not fit") as exc:
        Taf1(P, {"price_mct_per_kwh": PRICE}).transmission_intervals(n)
    assert str(CAPACITY) in str(exc.value)


@pytest.mark.parametrize("position", [-1, -PER_TX, CAPACITY, CAPACITY + 4, 10**6])
def test_pack_refuses_an_interval_outside_the_period(position: int) -> None:
    start = 50_000
    layout = CoefficientLayout(P)
    good = [Interval(start, 1), Interval(start + CAPACITY - 1, 1)]
    layout.pack("m-1", good, start)  # the first and the last position are fine
    with pytest.raises(ValueError, match="outside"):
        layout.pack("m-1", [*good, Interval(start + position, 1)], start)
    prog = Taf1(P, {"price_mct_per_kwh": PRICE})
    with pytest.raises(ValueError, match="outside"):
        prog.encode("m-1", [Interval(start + position, 1)], PER_TX, start)


def test_pack_refuses_negative_energy() -> None:
    with pytest.raises(ValueError, match="negative"):
        CoefficientLayout(P).pack("m-1", [Interval(7, -1)], 0)


def test_pack_layout() -> None:
    layout = CoefficientLayout(P)
    h = P.ring_dimension // 2
    assert (layout.error_at, layout.total_at, layout.index_at, layout.fingerprint_at) == (
        h - 4,
        h - 3,
        h - 2,
        h - 1,
    )
    assert layout.outputs_at == (h - 1, P.ring_dimension - 1)
    intervals = [Interval(1003, 17), Interval(1004, 5000, error=True), Interval(1010, 4)]
    c = layout.pack("m-1", intervals, 1000)
    assert len(c) == h
    assert c[:8] == [0, 0, 0, 17, 0, 0, 0, 0]
    assert c[10] == 4
    assert sum(c[: layout.capacity]) == 21
    assert c[layout.error_at :] == [
        5000,
        5021,
        1003 + 1004 + 1010,
        sum(index_fingerprint("m-1", i) for i in (1003, 1004, 1010)),
    ]


def test_encode_makes_one_centred_slot_vector() -> None:
    prog = Taf1(P, {"price_mct_per_kwh": PRICE})
    intervals = [Interval(100 + k, 5000) for k in range(PER_TX)]
    (slots,) = prog.encode("m-1", intervals, PER_TX, 100)
    assert len(slots) == P.slots
    assert all(-(T // 2) <= v <= T // 2 for v in slots)
    assert prog.encode("m-1", intervals, 1, 100) == [slots]  # the block plays no part
    assert prog.encode("m-1", intervals, PER_TX, 99) != [slots]  # the period start does


def test_decode_refuses_a_wrong_number_of_result_ciphertexts() -> None:
    prog = Taf1(P, {"price_mct_per_kwh": PRICE})
    zero = [0] * P.slots
    assert prog.decode([zero, zero], PER_TX) == RegisterSet((0,), 0, 0, 0, 0, 0)
    for count in (0, 1, 3, 4):
        with pytest.raises(ValueError, match="result ciphertexts"):
            prog.decode([zero] * count, PER_TX)
    with pytest.raises(ValueError, match="slots"):
        prog.decode([zero, zero[:-1]], PER_TX)


# -- RegisterSet ---------------------------------------------------------------------------------


def test_register_set_consistency() -> None:
    ok = RegisterSet((10,), 5, 15, 10 * PRICE, 0, 0)
    bad = RegisterSet((10,), 5, 16, 10 * PRICE, 0, 0)
    assert ok.consistent
    assert not bad.consistent
    assert RegisterSet((1, 2, 3), 4, 10, 0, 0, 0).consistent
    assert RegisterSet((0,), 0, 0, 100_000_000, 0, 0).bill_euro == 1.0


# -- encrypted exactness ---------------------------------------------------------------------


def block_for(intervals: int) -> int:
    """The block a gateway names (a power of two >= a transmission's intervals); unused."""
    block = 1
    while block < intervals:
        block *= 2
    return block


@dataclass
class World:
    """A receiver's keys, a gateway's encryptor and a cloud evaluator for one program."""

    prog: RegisterProgram
    keys: CustomerKeyPair
    enc: Encryptor
    ev: Evaluator

    @classmethod
    def create(cls, prog: RegisterProgram) -> World:
        keys = CustomerKeyPair.for_program(prog, PER_TX)
        return cls(
            prog,
            keys,
            Encryptor(P, keys.context, keys.public_key),
            Evaluator(keys.context, P.slots),
        )

    def transmit(
        self, meter: str, tx: Sequence[Interval], block: int, period_start: int
    ) -> list[Ciphertext]:
        """What the gateway sends and the cloud parses: one ciphertext per slot vector."""
        vectors = self.prog.encode(meter, tx, block, period_start)
        return [deserialize_ciphertext(self.enc.encrypt(v), P, self.keys.key_tag) for v in vectors]

    def result(
        self, meter: str, transmissions: Sequence[Sequence[Interval]], period_start: int
    ) -> list[Ciphertext]:
        block = block_for(max(len(tx) for tx in transmissions))
        partials = [
            self.prog.evaluate(
                self.ev,
                self.transmit(meter, tx, block, period_start),
                block,
                tx[0].index if tx else period_start,
            )
            for tx in transmissions
        ]
        return self.prog.read_out(self.ev, partials, block, period_start)

    def decrypt(self, result: Sequence[Ciphertext]) -> RegisterSet:
        return self.prog.decode([self.keys.decrypt(ct, P.slots) for ct in result], PER_TX)

    def billed(
        self,
        meter: str,
        transmissions: Sequence[Sequence[Interval]],
        period_start: int | None = None,
    ) -> RegisterSet:
        """The decrypted registers of a period (by default it starts at its first reading)."""
        if period_start is None:
            period_start = min(iv.index for tx in transmissions for iv in tx)
        return self.decrypt(self.result(meter, transmissions, period_start))


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    yield World.create(Taf1(P, {"price_mct_per_kwh": PRICE}))


def split(
    start: int, sizes: Sequence[int], energies: Sequence[tuple[int, bool]]
) -> list[list[Interval]]:
    """Consecutive intervals from ``start``, cut into transmissions of the given sizes."""
    out, k = [], 0
    for size in sizes:
        out.append([Interval(start + k + j, *energies[k + j]) for j in range(size)])
        k += size
    return out


def flat(transmissions: Sequence[Sequence[Interval]]) -> list[Interval]:
    return [iv for tx in transmissions for iv in tx]


@dataclass
class Period:
    meter: str
    start: int  # the period's first reading index (not necessarily a transmitted one)
    transmissions: list[list[Interval]]


@st.composite
def periods(draw: st.DrawFn) -> Period:
    """A period in transmissions of varied sizes: the whole month in one, days, a handful of
    single quarter hours, or mixed sizes with gaps (readings the gateway never sent)."""
    shape = draw(st.sampled_from(["month", "days", "singles", "mixed"]))
    if shape == "month":
        sizes = [
            draw(st.sampled_from([MAX_INTERVALS_PER_PERIOD, CAPACITY]) | st.integers(1, CAPACITY))
        ]
    elif shape == "days":
        sizes = [PER_TX] * draw(st.integers(1, 31))
    elif shape == "singles":
        sizes = [1] * draw(st.integers(1, 5))
    else:
        sizes = draw(st.lists(st.integers(1, 2 * PER_TX), min_size=2, max_size=6))
    gaps = draw(st.lists(st.integers(0, 40), min_size=len(sizes), max_size=len(sizes)))
    if sum(sizes) + sum(gaps) > CAPACITY:
        gaps = [0] * len(sizes)
    offset = draw(st.integers(0, CAPACITY - sum(sizes) - sum(gaps)))  # first reading - start
    start = draw(st.integers(0, 10**7))
    seed = draw(st.integers(0, 2**32 - 1))
    error_rate = draw(st.sampled_from([0.0, 0.05, 0.5, 1.0]))
    rng = random.Random(seed)

    def interval(index: int) -> Interval:
        energy = rng.choice([0, 1, 4999, 5000, rng.randint(0, 5000)])
        return Interval(index, energy, rng.random() < error_rate)

    transmissions, index = [], start + offset
    for size, gap in zip(sizes, gaps, strict=True):
        index += gap
        transmissions.append([interval(index + j) for j in range(size)])
        index += size
    meter = draw(st.sampled_from(["m-0001", "meter/ü", "x"]))
    return Period(meter, start, transmissions)


@settings(max_examples=24, deadline=None)
@given(periods())
def test_read_out_equals_reference(world: World, period: Period) -> None:
    got = world.billed(period.meter, period.transmissions, period.start)
    expected = world.prog.reference(period.meter, flat(period.transmissions))
    assert got == expected
    assert got.consistent
    assert got.bill_microcent == got.tariff_registers_wh[0] * PRICE


def test_result_is_the_period_and_one_product(world: World) -> None:
    txs = split(1000, [PER_TX, PER_TX], [(7, False)] * (2 * PER_TX))
    cts = [world.transmit("m-1", tx, PER_TX, 1000) for tx in txs]
    assert all(len(c) == 1 for c in cts)
    partials = [
        world.prog.evaluate(world.ev, c, PER_TX, tx[0].index)
        for c, tx in zip(cts, txs, strict=True)
    ]
    assert [p[0] for p in partials] == [c[0] for c in cts]  # evaluate is the identity
    result = world.prog.read_out(world.ev, partials, PER_TX, 1000)
    assert len(result) == 2  # S and S * q: 1 tariff register + the bill fill one product
    assert world.decrypt(result) == world.prog.reference("m-1", flat(txs))
    # The block is carried but plays no part.
    again = world.prog.read_out(world.ev, partials, 1, 1000)
    assert world.decrypt(again) == world.decrypt(result)


def test_all_zeros(world: World) -> None:
    txs = split(500, [PER_TX, PER_TX], [(0, False)] * (2 * PER_TX))
    got = world.billed("m-1", txs)
    assert got == world.prog.reference("m-1", flat(txs))
    assert (got.tariff_registers_wh, got.error_register_wh, got.total_register_wh) == ((0,), 0, 0)
    assert got.bill_microcent == 0
    assert got.index_sum == sum(range(500, 500 + 2 * PER_TX))


@pytest.mark.parametrize("per_tx", [PER_TX, MAX_INTERVALS_PER_PERIOD], ids=["days", "one"])
def test_full_month_at_the_maximum_is_exact_below_t(per_tx: int) -> None:
    """31 days of 96 intervals, every one at 5000 Wh, at the highest price TAF1 accepts."""
    prog = Taf1(P, {"price_mct_per_kwh": MAX_PRICE})
    w = World.create(prog)
    start = 200_001  # an odd quarter hour
    sizes = [per_tx] * (MAX_INTERVALS_PER_PERIOD // per_tx)
    txs = split(start, sizes, [(MAX_WH, False)] * MAX_INTERVALS_PER_PERIOD)
    got = w.billed("m-max", txs)
    assert got == prog.reference("m-max", flat(txs))
    total_wh = MAX_WH * MAX_INTERVALS_PER_PERIOD
    assert got.tariff_registers_wh == (total_wh,)
    assert got.total_register_wh == total_wh
    assert got.error_register_wh == 0
    assert got.bill_microcent == total_wh * MAX_PRICE  # exact, not reduced mod t
    assert T - T // 1000 < got.bill_microcent < T  # and close to the edge of the range
    assert got.consistent
    assert (got.index_sum, got.fingerprint_sum) == expected_integrity_sums(
        "m-max", range(start, start + MAX_INTERVALS_PER_PERIOD), T
    )


def test_all_error_period(world: World) -> None:
    txs = split(7, [PER_TX, 50], [(MAX_WH, True)] * (PER_TX + 50))
    got = world.billed("m-err", txs)
    assert got == world.prog.reference("m-err", flat(txs))
    assert got.tariff_registers_wh == (0,)
    assert got.error_register_wh == got.total_register_wh == MAX_WH * (PER_TX + 50)
    assert got.bill_microcent == 0
    assert got.consistent


def test_single_interval(world: World) -> None:
    got = world.billed("m-1", [[Interval(123_456, 4321)]])
    assert got == world.prog.reference("m-1", [Interval(123_456, 4321)])
    assert got.tariff_registers_wh == (4321,)
    assert got.total_register_wh == 4321
    assert got.bill_microcent == 4321 * PRICE
    assert got.index_sum == 123_456
    assert got.consistent


def test_single_error_interval(world: World) -> None:
    got = world.billed("m-1", [[Interval(9, 1, error=True)]])
    assert (got.tariff_registers_wh, got.error_register_wh, got.total_register_wh) == ((0,), 1, 1)
    assert got.bill_microcent == 0


def test_the_first_and_the_last_position_of_a_period(world: World) -> None:
    start = 77_777
    txs = [[Interval(start, 5000)], [Interval(start + CAPACITY - 1, 4999)]]
    got = world.billed("m-1", txs, start)
    assert got == world.prog.reference("m-1", flat(txs))
    assert got.tariff_registers_wh == (9999,)
    assert got.index_sum == 2 * start + CAPACITY - 1


def test_fingerprint_sum_wraps_like_the_reference(world: World) -> None:
    """Many 32-bit fingerprints exceed t: both sides must reduce mod t alike."""
    n = 31 * PER_TX
    _, fp = expected_integrity_sums("m-fp", range(n), T)
    assert sum(index_fingerprint("m-fp", i) for i in range(n)) > T  # really wraps
    txs = split(0, [PER_TX] * 31, [(1, False)] * n)
    got = world.billed("m-fp", txs)
    assert got.fingerprint_sum == fp
    assert got == world.prog.reference("m-fp", flat(txs))


def test_another_meters_reference_differs_in_the_fingerprints(world: World) -> None:
    """r computed from meter A's readings does not pass as meter B's period."""
    txs = split(4_000, [PER_TX, PER_TX], [(100, False)] * (2 * PER_TX))
    got = world.billed("m-A", txs)
    mine, theirs = world.prog.reference("m-A", flat(txs)), world.prog.reference("m-B", flat(txs))
    assert got == mine
    assert got != theirs
    assert got.fingerprint_sum != theirs.fingerprint_sum
    assert (got.tariff_registers_wh, got.index_sum) == (
        theirs.tariff_registers_wh,
        theirs.index_sum,
    )


def test_a_repeated_or_missing_transmission_shows_in_the_integrity_sums(world: World) -> None:
    txs = split(9_000, [PER_TX] * 3, [(10, False)] * (3 * PER_TX))
    expected = world.prog.reference("m-1", flat(txs))
    assert world.billed("m-1", txs) == expected
    for wrong in ([txs[0], txs[1], txs[1], txs[2]], txs[:2]):
        got = world.billed("m-1", wrong, 9_000)
        assert got.index_sum != expected.index_sum
        assert got.fingerprint_sum != expected.fingerprint_sum


def test_one_program_serves_several_customers(world: World) -> None:
    """The cloud keeps one program per configuration; its weight plaintexts must work under
    every customer's context."""
    other = World.create(world.prog)
    assert other.keys.key_tag != world.keys.key_tag
    txs = split(31_001, [PER_TX, 3], [(4999, False)] * (PER_TX + 3))
    expected = world.prog.reference("m-2", flat(txs))
    for w in (world, other, world):
        assert w.billed("m-2", txs) == expected


def test_other_parameter_set_is_checked_against_its_own_range() -> None:
    p2 = FheParameters(multiplicative_depth=2)
    assert p2 != P
    Taf1(p2, {"price_mct_per_kwh": MAX_PRICE})
    with pytest.raises(TariffConfigError, match=re.escape(p2.parameters_id)):
        Taf1(p2, {"price_mct_per_kwh": MAX_PRICE + 1})


def test_register_differences_name_each_register_in_words() -> None:
    base = RegisterSet((100, 200), 5, 305, 1_000, 7, 9)
    assert base.differences(base, ["T1", "T2"], this="cloud", that="recomputed") == []
    other = RegisterSet((100, 210), 5, 315, 2_000, 7, 8)
    assert base.differences(other, ["T1", "T2"], this="cloud", that="recomputed") == [
        "register T2: cloud 200 Wh, recomputed 210 Wh",
        "total register: cloud 305 Wh, recomputed 315 Wh",
        "bill: cloud 0.00001 €, recomputed 0.00002 €",
        "index sums: cloud and recomputed are of other quarter hours",
    ]
    shorter = RegisterSet((100,), 5, 305, 1_000, 7, 9)
    assert base.differences(shorter, ["T1", "T2"], this="a", that="b") == [
        "a different number of tariff registers"
    ]
