"""TAF 1: configuration checks, identification, and exactness of the encrypted read-out."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrocloud.fhe.context import CustomerKeyPair, Encryptor, deserialize_ciphertext
from metrocloud.fhe.evaluator import Evaluator
from metrocloud.fhe.packing import Interval, SlotLayout, index_fingerprint
from metrocloud.fhe.params import DEFAULT_PARAMETERS, FheParameters
from metrocloud.tariffs import PROGRAMS, RegisterSet, TariffConfigError, load_program
from metrocloud.tariffs.base import expected_integrity_sums
from metrocloud.tariffs.taf1 import MAX_INTERVALS_PER_PERIOD, Taf1

P = DEFAULT_PARAMETERS
T = P.plaintext_modulus
MAX_WH = 5000
PRICE = 32_000  # m¢/kWh
# The largest price TAF1 accepts with the default max_interval_wh: the worst bill stays below t.
MAX_PRICE = (T - 1) // (MAX_WH * MAX_INTERVALS_PER_PERIOD)
PER_TX = 96

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


def test_rotation_steps_cover_the_read_out() -> None:
    prog = Taf1(P, {"price_mct_per_kwh": PRICE})
    layout = SlotLayout.for_intervals(P, PER_TX)
    steps = prog.rotation_steps(layout.block)
    assert set(layout.blocksum_steps()) <= steps
    assert 0 not in steps
    assert len(steps) <= 12  # only what the evaluation uses


# -- RegisterSet ---------------------------------------------------------------------------------


def test_register_set_consistency() -> None:
    ok = RegisterSet((10,), 5, 15, 10 * PRICE, 0, 0)
    bad = RegisterSet((10,), 5, 16, 10 * PRICE, 0, 0)
    assert ok.consistent
    assert not bad.consistent
    assert RegisterSet((1, 2, 3), 4, 10, 0, 0, 0).consistent
    assert RegisterSet((0,), 0, 0, 100_000_000, 0, 0).bill_euro == 1.0


# -- encrypted exactness ---------------------------------------------------------------------


@dataclass
class World:
    prog: Taf1
    keys: CustomerKeyPair
    enc: Encryptor
    ev: Evaluator
    layout: SlotLayout

    def encrypt(self, meter: str, intervals: Sequence[Interval]) -> Any:
        data = self.enc.encrypt(self.layout.pack(meter, intervals))
        return deserialize_ciphertext(data, P, self.keys.key_tag)

    def billed(self, meter: str, transmissions: Sequence[Sequence[Interval]]) -> RegisterSet:
        cts = [self.encrypt(meter, tx) for tx in transmissions]
        partials = [
            self.prog.evaluate(self.ev, [ct], self.layout.block, tx[0].index if tx else 0)
            for ct, tx in zip(cts, transmissions, strict=True)
        ]
        (r,) = self.prog.read_out(self.ev, partials, self.layout.block)
        out = self.prog.result_layout(self.layout)
        return out.decode(self.keys.decrypt(r, out.length))


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    prog = Taf1(P, {"price_mct_per_kwh": PRICE})
    layout = SlotLayout.for_intervals(P, PER_TX)
    keys = CustomerKeyPair.generate(P, prog.rotation_steps(layout.block))
    enc = Encryptor(P, keys.context, keys.public_key)
    yield World(prog, keys, enc, Evaluator(keys.context, P.slots), layout)


def split(
    start: int, sizes: Sequence[int], energies: Sequence[tuple[int, bool]]
) -> list[list[Interval]]:
    """Consecutive intervals from ``start``, cut into transmissions of the given sizes."""
    out, k = [], 0
    for size in sizes:
        out.append([Interval(start + k + j, *energies[k + j]) for j in range(size)])
        k += size
    return out


energy = st.sampled_from([0, 1, 4999, 5000]) | st.integers(0, 5000)


@st.composite
def periods(draw: st.DrawFn) -> tuple[str, list[list[Interval]]]:
    sizes = draw(st.lists(st.integers(1, PER_TX), min_size=1, max_size=4))
    values = draw(
        st.lists(st.tuples(energy, st.booleans()), min_size=sum(sizes), max_size=sum(sizes))
    )
    start = draw(st.integers(0, 10**7))
    meter = draw(st.sampled_from(["m-0001", "meter/ü", "x"]))
    return meter, split(start, sizes, values)


@settings(max_examples=12, deadline=None)
@given(periods())
def test_read_out_equals_reference(world: World, period: tuple[str, list[list[Interval]]]) -> None:
    meter, transmissions = period
    got = world.billed(meter, transmissions)
    flat = [iv for tx in transmissions for iv in tx]
    expected = world.prog.reference(meter, flat)
    assert got == expected
    assert got.consistent
    assert got.bill_microcent == got.tariff_registers_wh[0] * PRICE


def test_all_zeros(world: World) -> None:
    txs = split(500, [PER_TX, PER_TX], [(0, False)] * (2 * PER_TX))
    got = world.billed("m-1", txs)
    assert got == world.prog.reference("m-1", [iv for tx in txs for iv in tx])
    assert (got.tariff_registers_wh, got.error_register_wh, got.total_register_wh) == ((0,), 0, 0)
    assert got.bill_microcent == 0
    assert got.index_sum == sum(range(500, 500 + 2 * PER_TX))


def test_full_month_at_the_maximum_is_exact_below_t() -> None:
    """31 days of 96 intervals, every one at 5000 Wh, at the highest price TAF1 accepts."""
    prog = Taf1(P, {"price_mct_per_kwh": MAX_PRICE})
    layout = SlotLayout.for_intervals(P, PER_TX)
    keys = CustomerKeyPair.generate(P, prog.rotation_steps(layout.block))
    w = World(
        prog,
        keys,
        Encryptor(P, keys.context, keys.public_key),
        Evaluator(keys.context, P.slots),
        layout,
    )
    start = 200_000
    txs = split(start, [PER_TX] * 31, [(MAX_WH, False)] * MAX_INTERVALS_PER_PERIOD)
    got = w.billed("m-max", txs)
    flat = [iv for tx in txs for iv in tx]
    assert got == prog.reference("m-max", flat)
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
    assert got == world.prog.reference("m-err", [iv for tx in txs for iv in tx])
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


def test_fingerprint_sum_wraps_like_the_reference(world: World) -> None:
    """Many 32-bit fingerprints exceed t: both sides must reduce mod t alike."""
    n = 31 * PER_TX
    _, fp = expected_integrity_sums("m-fp", range(n), T)
    assert sum(index_fingerprint("m-fp", i) for i in range(n)) > T  # really wraps
    txs = split(0, [PER_TX] * 31, [(1, False)] * n)
    got = world.billed("m-fp", txs)
    assert got.fingerprint_sum == fp
    assert got == world.prog.reference("m-fp", [iv for tx in txs for iv in tx])


def test_other_parameter_set_is_checked_against_its_own_range() -> None:
    p1 = FheParameters(multiplicative_depth=1)
    Taf1(p1, {"price_mct_per_kwh": MAX_PRICE})
    with pytest.raises(TariffConfigError, match=re.escape(p1.parameters_id)):
        Taf1(p1, {"price_mct_per_kwh": MAX_PRICE + 1})
