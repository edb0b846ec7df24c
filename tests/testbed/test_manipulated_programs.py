"""The insider's tariff-program faults (``manipulate_program``), evaluated on ciphertexts.

Each fault must bill wrongly while the program still names the contract's tariff,
configuration digest, register count and software identification. The consistent ones
(shift-schedule, add-constant, threshold) must also pass the display's own checks; price
and skip-reading do not. No cloud: keys, encryption, evaluation and decryption in-process,
one day of quarter hours a period, and two comparison evaluations (TAF 3) in all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest

from metrocloud.core.clock import READINGS_PER_DAY, reading_index
from metrocloud.core.errors import ConfigurationError
from metrocloud.fhe.arith import COMPARISON_PARAMETERS
from metrocloud.fhe.context import CustomerKeyPair, Encryptor, deserialize_ciphertext
from metrocloud.fhe.evaluator import Evaluator
from metrocloud.fhe.packing import Interval
from metrocloud.fhe.params import DEFAULT_PARAMETERS
from metrocloud.tariffs import RegisterSet, TariffProgram, load_program
from metrocloud.tariffs.base import expected_integrity_sums
from metrocloud.tariffs.comparison import ComparisonProgram
from metrocloud.tariffs.register import RegisterProgram
from metrocloud.testbed.insider import FAULT
from metrocloud.testbed.manipulated import (
    ManipulatedLegal,
    applies_to,
    manipulate_program,
)

BLOCK = 4096  # what the messages carry; neither kind of program uses it
METER = "m-0001"
MONDAY = reading_index(datetime(2026, 1, 5, 0, 15, tzinfo=timezone.utc))  # 2026-01-05 00:15

TAF1: dict[str, Any] = {"price_mct_per_kwh": 32_000}
TAF2: dict[str, Any] = {
    "registers": [
        {"name": "HT", "price_mct_per_kwh": 36_000},
        {"name": "NT", "price_mct_per_kwh": 24_000},
    ],
    "windows": [{"days": "mon-fri", "from": "06:00", "to": "22:00", "register": 0}],
    "default_register": 1,
    "utc_offset_minutes": 60,
}
TAF3: dict[str, Any] = {
    "thresholds_wh": [250, 1000],
    "prices_mct_per_kwh": [30_000, 35_000, 42_000],
}
TAF4: dict[str, Any] = {
    "budgets_wh": [10_000, 25_000],
    "prices_mct_per_kwh": [30_000, 35_000, 42_000],
}
CONFIGS = {"taf1": TAF1, "taf2": TAF2, "taf3": TAF3, "taf4": TAF4}

#: every program fault with the programs it applies to
APPLICABLE = [
    ("shift-schedule:8", ("taf1", "taf2")),
    ("price:10", ("taf1", "taf2", "taf3", "taf4")),
    ("price:-100", ("taf1", "taf2", "taf3", "taf4")),
    ("add-constant:500", ("taf1", "taf2")),
    ("skip-reading:3", ("taf1", "taf2")),
    ("threshold:100", ("taf3", "taf4")),
    ("threshold:-50", ("taf3", "taf4")),
]


def honest(tariff: str) -> TariffProgram:
    """The program as the contract (and the certified legal) loads it."""
    params = COMPARISON_PARAMETERS if tariff in ("taf3", "taf4") else DEFAULT_PARAMETERS
    return load_program(tariff, params, CONFIGS[tariff])


def manipulated(tariff: str, fault: str) -> TariffProgram:
    return manipulate_program(honest(tariff), fault)


def day(energies: Sequence[int], errors: Sequence[int] = ()) -> list[Interval]:
    """One period's intervals from :data:`MONDAY`, those at ``errors`` erroneous."""
    return [Interval(MONDAY + j, wh, j in errors) for j, wh in enumerate(energies)]


#: a day of varied energies, two of them erroneous, for the register programs
REGISTER_DAY = day([37 * j % 500 + 1 for j in range(READINGS_PER_DAY)], errors=(10, 50))
#: energies near TAF 3's thresholds (250, 1000) and near them shifted by 100, one erroneous
NEAR = [0, 100, 249, 250, 260, 300, 349, 350, 351, 999, 1000, 1050, 1099, 1100, 1200, 2000]
COMPARISON_DAY = day(NEAR * (READINGS_PER_DAY // len(NEAR)), errors=(5,))


@dataclass
class World:
    """A customer's keys, a gateway's encryptor and a cloud evaluator for one parameter set."""

    keys: CustomerKeyPair
    enc: Encryptor
    ev: Evaluator

    @classmethod
    def create(cls, program: TariffProgram) -> World:
        keys = CustomerKeyPair.for_program(program, BLOCK)
        params = program.params
        return cls(
            keys,
            Encryptor(params, keys.context, keys.public_key),
            Evaluator(keys.context, params.slots),
        )

    def billed(
        self, program: TariffProgram, contract: TariffProgram, ivs: Sequence[Interval]
    ) -> RegisterSet:
        """What the receiver decodes (with its contract) from ``program``'s result of a period
        that starts at the first reading and is one transmission."""
        params, start = program.params, ivs[0].index
        cts = [
            deserialize_ciphertext(self.enc.encrypt(v), params, self.keys.key_tag)
            for v in program.encode(METER, ivs, BLOCK, start)
        ]
        partial = program.evaluate(self.ev, cts, BLOCK, start)
        result = program.read_out(self.ev, [partial], BLOCK, start)
        return contract.decode([self.keys.decrypt(ct, params.slots) for ct in result], BLOCK)


@pytest.fixture(scope="module")
def registers() -> World:
    """One key pair serves TAF 1 and TAF 2: register programs need no evaluation key."""
    return World.create(honest("taf1"))


@pytest.fixture(scope="module")
def comparison() -> World:
    return World.create(honest("taf3"))


def display_accepts(
    contract: TariffProgram, got: RegisterSet, ivs: Sequence[Interval]
) -> dict[str, bool]:
    """The display's own checks of decrypted registers (as :mod:`metrocloud.receiver.verify`)."""
    modulus = contract.params.plaintext_modulus
    return {
        "consistent": got.consistent,
        "bill": got.bill_microcent == contract.bill(got.tariff_registers_wh),
        "index sums": (got.index_sum, got.fingerprint_sum)
        == expected_integrity_sums(METER, [iv.index for iv in ivs], modulus),
    }


ALL_PASS = {"consistent": True, "bill": True, "index sums": True}


def changed(reference: RegisterSet, **change: Any) -> RegisterSet:
    return RegisterSet(**{**reference.__dict__, **change})


# -- what the receiver compares with the contract stays as it was ---------------------------------


@pytest.mark.parametrize(
    ("fault", "tariff"), [(fault, tariff) for fault, tariffs in APPLICABLE for tariff in tariffs]
)
def test_the_program_still_names_the_contract(fault: str, tariff: str) -> None:
    contract, program = honest(tariff), manipulated(tariff, fault)
    assert FAULT.fullmatch(fault) and applies_to(program, fault)
    assert program.name == contract.name
    assert program.config == contract.config
    assert program.config_digest == contract.config_digest
    assert program.tariff_registers == contract.tariff_registers
    assert program.software_id == contract.software_id
    assert isinstance(program, type(contract))
    assert type(program) is not type(contract)
    assert type(program).__name__ == type(contract).__name__


def test_manipulated_legal_changes_only_the_programs_a_fault_applies_to() -> None:
    """``load_program`` needs nothing of the service but its fault, so no data folder."""
    legal = ManipulatedLegal.__new__(ManipulatedLegal)
    legal.fault = "threshold:100"
    taf3 = legal.load_program("taf3", COMPARISON_PARAMETERS, TAF3)
    taf1 = legal.load_program("taf1", DEFAULT_PARAMETERS, TAF1)
    assert isinstance(taf3, ComparisonProgram) and taf3.thresholds == [350, 1100]
    assert type(taf1) is type(honest("taf1"))  # one legal serves every meter: billed honestly
    legal.fault = "flip-r:m-0001"
    assert type(legal.load_program("taf3", COMPARISON_PARAMETERS, TAF3)) is type(honest("taf3"))


# -- register programs (TAF 1, 2) -----------------------------------------------------------------


@pytest.mark.parametrize(("tariff", "percent"), [("taf1", 10), ("taf2", -25)])
def test_price_scales_the_bill_and_the_display_sees_it(
    registers: World, tariff: str, percent: int
) -> None:
    contract = honest(tariff)
    assert isinstance(contract, RegisterProgram)
    got = registers.billed(manipulated(tariff, f"price:{percent}"), contract, REGISTER_DAY)
    reference = contract.reference(METER, REGISTER_DAY)
    assert got.tariff_registers_wh == reference.tariff_registers_wh
    # the prices here are multiples of 100 / gcd: scaling them is exact, so is the bill's
    assert got.bill_microcent * 100 == reference.bill_microcent * (100 + percent)
    assert got == changed(reference, bill_microcent=got.bill_microcent)
    assert display_accepts(contract, got, REGISTER_DAY) == {**ALL_PASS, "bill": False}


@pytest.mark.parametrize("tariff", ["taf1", "taf2"])
def test_add_constant_is_consistent_in_r_and_r_dup(registers: World, tariff: str) -> None:
    contract = honest(tariff)
    assert isinstance(contract, RegisterProgram)
    program = manipulated(tariff, "add-constant:500")
    got = registers.billed(program, contract, REGISTER_DAY)
    assert registers.billed(program, contract, REGISTER_DAY) == got  # r' (its own encryption)
    reference = contract.reference(METER, REGISTER_DAY)
    first, *others = reference.tariff_registers_wh
    assert got == changed(
        reference,
        tariff_registers_wh=(first + 500, *others),
        total_register_wh=reference.total_register_wh + 500,
        bill_microcent=reference.bill_microcent + contract.prices()[0] * 500,
    )
    assert display_accepts(contract, got, REGISTER_DAY) == ALL_PASS


@pytest.mark.parametrize("tariff", ["taf1", "taf2"])
def test_skip_reading_leaves_one_quarter_hour_out_and_the_display_sees_it(
    registers: World, tariff: str
) -> None:
    contract = honest(tariff)
    assert isinstance(contract, RegisterProgram)
    got = registers.billed(manipulated(tariff, "skip-reading:3"), contract, REGISTER_DAY)
    reference = contract.reference(METER, REGISTER_DAY)
    skipped = REGISTER_DAY[3]
    assert skipped.energy_wh > 0 and not skipped.error
    owner = contract.register_of(skipped.index)
    want = list(reference.tariff_registers_wh)
    want[owner] -= skipped.energy_wh
    assert got == changed(
        reference,
        tariff_registers_wh=tuple(want),
        bill_microcent=reference.bill_microcent - contract.prices()[owner] * skipped.energy_wh,
    )
    assert got.total_register_wh == reference.total_register_wh  # the total still counts it
    assert display_accepts(contract, got, REGISTER_DAY) == {**ALL_PASS, "consistent": False}


def test_skip_reading_counts_from_the_period_start(registers: World) -> None:
    """Position 3 of the period, whatever the first transmitted reading."""
    contract = honest("taf1")
    program = manipulated("taf1", "skip-reading:3")
    ivs = REGISTER_DAY[2:20]
    params = program.params
    cts = [
        deserialize_ciphertext(registers.enc.encrypt(v), params, registers.keys.key_tag)
        for v in program.encode(METER, ivs, BLOCK, MONDAY)
    ]
    partial = program.evaluate(registers.ev, cts, BLOCK, ivs[0].index)
    result = program.read_out(registers.ev, [partial], BLOCK, MONDAY)
    got = contract.decode([registers.keys.decrypt(ct, params.slots) for ct in result], BLOCK)
    reference = contract.reference(METER, ivs)
    assert got.tariff_registers_wh == (
        reference.tariff_registers_wh[0] - REGISTER_DAY[3].energy_wh,
    )


def test_shift_schedule_is_consistent(registers: World) -> None:
    contract = honest("taf2")
    assert isinstance(contract, RegisterProgram)
    got = registers.billed(manipulated("taf2", "shift-schedule:8"), contract, REGISTER_DAY)
    want = [0, 0]
    for iv in REGISTER_DAY:
        if not iv.error:
            want[contract.register_of(iv.index + 8)] += iv.energy_wh
    reference = contract.reference(METER, REGISTER_DAY)
    assert got == contract.register_set(METER, REGISTER_DAY, want)
    assert got.tariff_registers_wh != reference.tariff_registers_wh
    assert display_accepts(contract, got, REGISTER_DAY) == ALL_PASS


# -- comparison programs (TAF 3, 4) ---------------------------------------------------------------


def test_threshold_moves_readings_to_other_bands_consistently(comparison: World) -> None:
    contract = honest("taf3")
    got = comparison.billed(manipulated("taf3", "threshold:100"), contract, COMPARISON_DAY)
    want = [0, 0, 0]
    for iv in COMPARISON_DAY:
        if not iv.error:
            want[sum(iv.energy_wh >= t for t in (350, 1100))] += iv.energy_wh
    reference = contract.reference(METER, COMPARISON_DAY)
    assert got == contract.register_set(METER, COMPARISON_DAY, want)
    assert got.tariff_registers_wh != reference.tariff_registers_wh
    assert got.total_register_wh == reference.total_register_wh
    assert display_accepts(contract, got, COMPARISON_DAY) == ALL_PASS


def test_price_on_a_comparison_program_and_the_display_sees_it(comparison: World) -> None:
    contract = honest("taf3")
    got = comparison.billed(manipulated("taf3", "price:10"), contract, COMPARISON_DAY)
    reference = contract.reference(METER, COMPARISON_DAY)
    assert got == changed(reference, bill_microcent=reference.bill_microcent * 110 // 100)
    assert reference.bill_microcent * 110 % 100 == 0  # prices of whole tens: exact
    assert display_accepts(contract, got, COMPARISON_DAY) == {**ALL_PASS, "bill": False}


def test_threshold_and_price_on_taf4_in_plaintext() -> None:
    """TAF 4's budgets and prices as its encrypted evaluation reads them (a TAF 4 evaluation
    costs ~10 s; the same properties drive TAF 3's, checked encrypted above)."""
    contract = honest("taf4")
    shifted = manipulated("taf4", "threshold:-2000")
    assert isinstance(shifted, ComparisonProgram)
    assert shifted.thresholds == [8_000, 23_000]
    assert shifted.config["budgets_wh"] == [10_000, 25_000]
    ivs = day([500] * READINGS_PER_DAY)  # 48,000 Wh: crosses both budgets
    moved = shifted.reference(METER, ivs)
    assert moved.tariff_registers_wh == (8_000, 15_000, 25_000)
    assert contract.reference(METER, ivs).tariff_registers_wh == (10_000, 15_000, 23_000)
    assert moved.bill_microcent == contract.bill(moved.tariff_registers_wh)
    cheaper = manipulated("taf4", "price:-10")
    assert isinstance(cheaper, ComparisonProgram)
    assert cheaper.prices == [27_000, 31_500, 37_800]
    assert cheaper.config["prices_mct_per_kwh"] == [30_000, 35_000, 42_000]


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        "",
        "price",
        "price:",
        "price:ten",
        "price:-101",
        "price:1000",
        "price:+10",
        "add-constant:",
        "add-constant:1.5",
        "skip-reading:-1",
        "threshold:",
        "threshold:1e3",
        "drop:3",
        "flip-r:m-0001",  # a fault, but not one of the program
    ],
)
def test_a_string_that_is_no_program_fault_is_refused(fault: str) -> None:
    program = honest("taf1")
    with pytest.raises(ConfigurationError, match="no program fault") as exc:
        manipulate_program(program, fault)
    assert repr(fault) in str(exc.value) and "add-constant:<Wh>" in str(exc.value)
    assert type(program) is type(honest("taf1"))


@pytest.mark.parametrize(
    ("tariff", "fault", "needs"),
    [
        ("taf1", "threshold:100", "comparison programs"),
        ("taf2", "threshold:-5", "comparison programs"),
        ("taf3", "add-constant:500", "register programs"),
        ("taf4", "skip-reading:3", "register programs"),
        ("taf3", "shift-schedule:8", "register programs"),
    ],
)
def test_a_fault_on_the_wrong_kind_of_program_is_refused(
    tariff: str, fault: str, needs: str
) -> None:
    program = honest(tariff)
    with pytest.raises(ConfigurationError, match=f"applies to {needs} .*, not to {tariff}$"):
        manipulate_program(program, fault)
    assert type(program) is type(honest(tariff))
    assert not applies_to(program, fault)


def test_skip_reading_beyond_the_period_is_refused() -> None:
    program = honest("taf1")
    assert isinstance(program, RegisterProgram)
    capacity = program.coefficients.capacity
    manipulate_program(honest("taf1"), f"skip-reading:{capacity - 1}")
    with pytest.raises(ConfigurationError, match=f"holds {capacity} quarter hours"):
        manipulate_program(program, f"skip-reading:{capacity}")
