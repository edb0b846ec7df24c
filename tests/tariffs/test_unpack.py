"""The receiver's inverse of every tariff layout, and the recomputation built on it.

No FHE here: a decrypted transmission is the gateway's slot vectors reduced modulo t, so
``unpack(encode(x))`` must give back ``x`` and the recomputation must equal the plaintext
reference of the whole period, for TAF 1-4, erroneous quarter hours included.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrocloud.fhe.packing import Interval
from metrocloud.tariffs import PROGRAMS, TariffProgram, load_program
from metrocloud.testbed.pipeline import DEFAULT_TARIFF_CONFIG

METER = "m-0007"
PERIOD_START = 2_000_000
PROGRAM = {
    name: load_program(name, PROGRAMS[name].parameters, DEFAULT_TARIFF_CONFIG[name])
    for name in ("taf1", "taf2", "taf3", "taf4")
}


def decrypted(program: TariffProgram, intervals: list[Interval], start: int) -> list[list[int]]:
    t = program.params.plaintext_modulus
    vectors = program.encode(METER, intervals, 0, PERIOD_START)
    return [
        [v % t for v in vector] + [0] * (program.params.slots - len(vector)) for vector in vectors
    ]


@pytest.mark.parametrize("name", sorted(PROGRAM))
@settings(max_examples=12, deadline=None)
@given(
    values=st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 9)), min_size=1, max_size=300)
)
def test_unpack_inverts_encode_and_recompute_is_the_reference(
    name: str, values: list[tuple[int, int]]
) -> None:
    program = PROGRAM[name]
    # about one quarter hour in ten is erroneous
    intervals = [Interval(PERIOD_START + i, wh, flag == 0) for i, (wh, flag) in enumerate(values)]
    content = program.unpack(
        METER,
        decrypted(program, intervals, PERIOD_START),
        PERIOD_START,
        len(intervals),
        PERIOD_START,
    )
    assert content.consistent
    assert content.error_wh == sum(iv.energy_wh for iv in intervals if iv.error)
    assert content.total_wh == sum(iv.energy_wh for iv in intervals)
    assert [iv.index for iv in content.intervals] == [iv.index for iv in intervals]
    valid = [0 if iv.error else iv.energy_wh for iv in intervals]
    assert [0 if iv.error else iv.energy_wh for iv in content.intervals] == valid
    assert program.recompute(METER, [content]) == program.reference(METER, intervals)


@pytest.mark.parametrize("name", ["taf1", "taf2"])
def test_a_period_split_into_transmissions_recomputes_as_a_whole(name: str) -> None:
    program = PROGRAM[name]
    intervals = [Interval(PERIOD_START + i, (i * 37) % 900, i % 13 == 0) for i in range(960)]
    contents = []
    for first in range(0, 960, 96):  # ten transmissions of a day each
        chunk = intervals[first : first + 96]
        slots = decrypted(program, chunk, PERIOD_START)
        contents.append(program.unpack(METER, slots, PERIOD_START + first, 96, PERIOD_START))
    assert program.recompute(METER, contents) == program.reference(METER, intervals)


@pytest.mark.parametrize("name", sorted(PROGRAM))
def test_values_outside_the_transmission_are_refused(name: str) -> None:
    program = PROGRAM[name]
    intervals = [Interval(PERIOD_START + i, 100 + i, False) for i in range(8)]
    slots = decrypted(program, intervals, PERIOD_START)
    with pytest.raises(ValueError, match="outside"):
        # told it holds 4 quarter hours, it holds 8
        program.unpack(METER, slots, PERIOD_START, 4, PERIOD_START)


def test_taf4_bit_planes_that_disagree_with_the_energies_are_refused() -> None:
    program = PROGRAM["taf4"]
    intervals = [Interval(PERIOD_START + i, 300, False) for i in range(8)]
    slots = decrypted(program, intervals, PERIOD_START)
    layout = program.layout  # type: ignore[attr-defined]
    slots[0][layout.slot(5, 0)] ^= 1  # the consumption before quarter hour 5, one Wh off
    with pytest.raises(ValueError, match="bit planes"):
        program.unpack(METER, slots, PERIOD_START, 8, PERIOD_START)


def test_taf3_an_erroneous_quarter_hour_with_energy_bits_is_refused() -> None:
    program = PROGRAM["taf3"]
    intervals = [Interval(PERIOD_START + i, 300, i == 5) for i in range(8)]
    slots = decrypted(program, intervals, PERIOD_START)
    layout = program.layout  # type: ignore[attr-defined]
    slots[0][layout.slot(5, 0)] = 1  # bits sent for an erroneous quarter hour
    with pytest.raises(ValueError, match="valid and erroneous"):
        program.unpack(METER, slots, PERIOD_START, 8, PERIOD_START)


def test_register_names_say_what_each_register_is() -> None:
    assert PROGRAM["taf1"].register_names() == ["T1"]
    assert PROGRAM["taf2"].register_names() == ["peak", "off-peak", "weekend"]
    assert PROGRAM["taf3"].register_names() == ["< 250 Wh", "250–1000 Wh", "≥ 1000 Wh"]
