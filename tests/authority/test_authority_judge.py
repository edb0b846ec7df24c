"""The authority's check (:func:`judge`) on real encrypted results: no cloud, no broker.

A test meter's secret series is encrypted twice as its gateway would (one transmission for
the whole period), evaluated by an honest or a manipulated tariff program as ``legal`` does
(``c`` and ``c'`` separately, then the read-outs ``r`` and ``r'``), and signed as a
:class:`TariffResult` by an identity ``legal`` of the SERVICE role from a PKI made at test
time. The consistent manipulations (``add-constant``, ``threshold``) pass the display's own
check and only the comparison with the test vector catches them. TAF 3 costs a comparison
circuit per ciphertext set (~5 s): one manipulated result (an honest TAF 3 result equals
the plaintext reference in tests/scenarios/test_pipeline.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from metrocloud.authority.checks import CheckOutcome, CheckPlan, CheckRound, TestMeter, judge
from metrocloud.core.clock import READINGS_PER_DAY, BillingPeriod
from metrocloud.core.messages import TariffResult, seal
from metrocloud.fhe.context import CustomerKeyPair, Encryptor, deserialize_ciphertext, serialize
from metrocloud.fhe.evaluator import Evaluator
from metrocloud.fhe.packing import Interval
from metrocloud.field.gateway import block_for
from metrocloud.pki import Identity, IdentityStore, Role, TrustStore
from metrocloud.receiver.verify import check_result
from metrocloud.tariffs import RegisterSet, TariffProgram
from metrocloud.tariffs.comparison import ComparisonProgram
from metrocloud.testbed.manipulated import manipulate_program
from metrocloud.testbed.pipeline import PipelineConfig

METER = "m-0003"
CUSTOMER = "c-0003"
OTHER_METER = "m-0008"
PLAN = CheckPlan(b"k" * 32, (TestMeter(METER, CUSTOMER), TestMeter(OTHER_METER, "c-0008")))
TAF1 = PipelineConfig(days=1)
TAF3 = PipelineConfig(tariff="taf3", days=1)
PERIOD = TAF1.period
NEXT_DAY = BillingPeriod(PERIOD.end, PERIOD.end + READINGS_PER_DAY)
BLOCK = block_for(PERIOD.intervals)  # what the gateway declares for one whole-period transmission


@dataclass(frozen=True)
class Legal:
    """The signing side: ``legal``'s identity and the trust store the authority checks with."""

    identity: Identity
    display: Identity  # a SERVICE identity that is not legal
    trust: TrustStore


@dataclass
class Customer:
    """A test customer on one contract: keys (the authority is the receiver), the gateway's
    two encryptions of the period's series, and a cloud evaluator."""

    contract: TariffProgram
    keys: CustomerKeyPair
    ev: Evaluator
    series: list[Interval]
    c: list[Any]
    c_dup: list[Any]

    @classmethod
    def create(cls, contract: TariffProgram) -> Customer:
        assert contract.transmission_intervals(PERIOD.intervals) == PERIOD.intervals
        params = contract.params
        keys = CustomerKeyPair.for_program(contract, BLOCK)
        enc = Encryptor(params, keys.context, keys.public_key)
        series = PLAN.series(METER, PERIOD)
        vectors = contract.encode(METER, series, BLOCK, PERIOD.start)

        def encrypted() -> list[Any]:
            return [deserialize_ciphertext(enc.encrypt(v), params, keys.key_tag) for v in vectors]

        ev = Evaluator(keys.context, params.slots)
        return cls(contract, keys, ev, series, c=encrypted(), c_dup=encrypted())

    @property
    def expected(self) -> RegisterSet:
        return PLAN.expected(METER, PERIOD, self.contract)

    def computed(self, program: TariffProgram) -> tuple[list[bytes], list[bytes]]:
        """``r`` and ``r'`` as legal computes them with ``program`` (one transmission)."""

        def result(cts: Sequence[Any]) -> list[bytes]:
            partial = program.evaluate(self.ev, cts, BLOCK, PERIOD.start)
            return [
                serialize(ct) for ct in program.read_out(self.ev, [partial], BLOCK, PERIOD.start)
            ]

        return result(self.c), result(self.c_dup)

    def sealed(self, signer: Identity, r: list[bytes], r_dup: list[bytes], **changes: Any) -> bytes:
        """The signed result as legal publishes it (the program names the contract's tariff,
        configuration digest and software identification, manipulated or not)."""
        body = TariffResult(
            meter=METER,
            customer=CUSTOMER,
            period_start=PERIOD.start,
            period_end=PERIOD.end,
            transmissions=1,
            tariff=self.contract.software_id.to_dict(),
            tariff_config_digest=self.contract.config_digest,
            registers=self.contract.tariff_registers,
            block=BLOCK,
            parameters_id=self.contract.params.parameters_id,
            r=r,
            r_dup=r_dup,
            computed_at="2026-01-02T00:05:00+00:00",
        )
        return seal(signer, dataclasses.replace(body, **changes))

    def judge(
        self,
        result: bytes | None,
        legal: Legal,
        *,
        meter_id: str = METER,
        period: BillingPeriod = PERIOD,
    ) -> CheckOutcome:
        return judge(
            result,
            self.keys,
            legal.trust,
            meter_id=meter_id,
            period=period,
            contract=self.contract,
            expected=PLAN.expected(meter_id, period, self.contract),
        )

    def display_check(self, result: bytes, legal: Legal) -> Any:
        return check_result(
            result, self.keys, legal.trust, meter_id=METER, period=PERIOD, contract=self.contract
        )


@pytest.fixture(scope="module")
def legal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Legal]:
    ids = IdentityStore.open_local(tmp_path_factory.mktemp("judge-pki"))
    yield Legal(
        ids.identity("legal", Role.SERVICE), ids.identity("display", Role.SERVICE), ids.trust
    )
    assert ids.pki is not None
    ids.pki.close()


@pytest.fixture(scope="module")
def taf1() -> Customer:
    """TAF 1 needs no evaluation key: encryption and evaluation are cheap."""
    return Customer.create(TAF1.program())


@pytest.fixture(scope="module")
def taf1_honest(taf1: Customer) -> tuple[list[bytes], list[bytes]]:
    return taf1.computed(TAF1.program())


@pytest.fixture(scope="module")
def taf3() -> Customer:
    """Relinearization and rotation keys for the comparison circuit: made once."""
    return Customer.create(TAF3.program())


def manipulated(config: PipelineConfig, fault: str) -> TariffProgram:
    """A freshly loaded contract program, manipulated as the insider's legal loads it."""
    return manipulate_program(config.program(), fault)


# -- TAF 1 ----------------------------------------------------------------------------------------


def test_an_honest_result_equals_the_test_vector(
    taf1: Customer, taf1_honest: tuple[list[bytes], list[bytes]], legal: Legal
) -> None:
    r, r_dup = taf1_honest
    assert r != r_dup  # two encryptions, two evaluations
    outcome = taf1.judge(taf1.sealed(legal.identity, r, r_dup), legal)
    assert outcome.passed, outcome.reason
    assert outcome.reason == "equal to the test vector"
    assert (outcome.meter_id, outcome.period_id) == (METER, PERIOD.period_id)
    software = taf1.contract.software_id
    assert (outcome.program, outcome.program_version) == (software.name, software.version)
    assert outcome.expected == outcome.found == taf1.expected
    assert outcome.expected == taf1.contract.reference(METER, taf1.series)
    assert outcome.expected.total_register_wh > 0 and outcome.expected.bill_microcent > 0


def test_the_program_version_is_the_one_the_result_names(
    taf1: Customer, taf1_honest: tuple[list[bytes], list[bytes]], legal: Legal
) -> None:
    """Not the contract's: the display checks the tariff's name and configuration, not its
    version, and a round groups by the version legal actually ran."""
    named = {**taf1.contract.software_id.to_dict(), "version": "9.9.9-insider"}
    outcome = taf1.judge(taf1.sealed(legal.identity, *taf1_honest, tariff=named), legal)
    assert outcome.passed, outcome.reason
    assert (outcome.program, outcome.program_version) == (taf1.contract.name, "9.9.9-insider")


def test_add_constant_passes_the_display_but_not_the_test_vector(
    taf1: Customer, taf1_honest: tuple[list[bytes], list[bytes]], legal: Legal
) -> None:
    program = manipulated(TAF1, "add-constant:500")
    result = taf1.sealed(legal.identity, *taf1.computed(program))
    verdict = taf1.display_check(result, legal)
    assert verdict.verified, verdict.reason  # consistent in r and r', registers and bill

    outcome = taf1.judge(result, legal)
    assert not outcome.passed
    assert outcome.reason.startswith("result differs from the test vector: ")
    want = taf1.expected
    assert (
        f"total register: result {want.total_register_wh + 500} Wh, "
        f"expected {want.total_register_wh} Wh" in outcome.reason
    )
    assert "register T1: result" in outcome.reason and "bill: " in outcome.reason
    assert "index sums" not in outcome.reason and "error register" not in outcome.reason
    (first,) = want.tariff_registers_wh
    assert outcome.found == dataclasses.replace(
        want,
        tariff_registers_wh=(first + 500,),
        total_register_wh=want.total_register_wh + 500,
        bill_microcent=want.bill_microcent + taf1.contract.bill([500]),
    )
    software = taf1.contract.software_id
    assert (outcome.program, outcome.program_version) == (software.name, software.version)

    # in a round, the honest and the manipulated result count against the same version
    honest = taf1.judge(taf1.sealed(legal.identity, *taf1_honest), legal)
    (verdict_of_round,) = CheckRound.of([honest, outcome], "r-1").verdicts
    assert (verdict_of_round.checks, verdict_of_round.failures) == (2, 1)
    assert not verdict_of_round.passed


def test_price_fails_already_in_the_display_check(taf1: Customer, legal: Legal) -> None:
    result = taf1.sealed(legal.identity, *taf1.computed(manipulated(TAF1, "price:10")))
    outcome = taf1.judge(result, legal)
    assert not outcome.passed
    assert outcome.reason.startswith("the display's check failed: ")
    assert "the bill is not what the contract's prices give" in outcome.reason
    assert outcome.found is None and outcome.expected == taf1.expected
    assert outcome.program_version == taf1.contract.software_id.version  # from the result


def test_no_result(taf1: Customer, legal: Legal) -> None:
    outcome = taf1.judge(None, legal)
    assert not outcome.passed
    assert outcome.reason.startswith("no result")
    assert (outcome.program, outcome.program_version) == (taf1.contract.name, "unknown")
    assert outcome.found is None and outcome.expected == taf1.expected


@pytest.mark.parametrize(
    "case", ["judged-for-another-period", "judged-for-another-meter", "names-another-meter"]
)
def test_a_result_for_another_period_or_meter_fails(
    taf1: Customer, taf1_honest: tuple[list[bytes], list[bytes]], legal: Legal, case: str
) -> None:
    if case == "names-another-meter":
        outcome = taf1.judge(taf1.sealed(legal.identity, *taf1_honest, meter=OTHER_METER), legal)
        named = f"{OTHER_METER} {PERIOD.period_id}"
    else:
        meter, period = (
            (METER, NEXT_DAY) if case == "judged-for-another-period" else (OTHER_METER, PERIOD)
        )
        outcome = taf1.judge(
            taf1.sealed(legal.identity, *taf1_honest), legal, meter_id=meter, period=period
        )
        assert (outcome.meter_id, outcome.period_id) == (meter, period.period_id)
        named = f"{METER} {PERIOD.period_id}"
    assert not outcome.passed
    assert outcome.reason == f"the display's check failed: result is for {named}"
    assert outcome.found is None


def test_a_result_not_signed_by_legal_fails(
    taf1: Customer, taf1_honest: tuple[list[bytes], list[bytes]], legal: Legal
) -> None:
    outcome = taf1.judge(taf1.sealed(legal.display, *taf1_honest), legal)
    assert not outcome.passed
    assert outcome.reason == "the display's check failed: result signed by display, not by legal"
    assert outcome.program_version == "unknown"  # nothing of the body is believed


# -- TAF 3 (one comparison result; the honest one: tests/scenarios/test_pipeline.py) ---------


def test_taf3_threshold_passes_the_display_but_not_the_test_vector(
    taf3: Customer, legal: Legal
) -> None:
    program = manipulated(TAF3, "threshold:-150")
    assert isinstance(program, ComparisonProgram) and program.thresholds == [100, 850]
    # in plaintext first: the series has quarter hours the lowered thresholds move up a band
    want = taf3.expected
    moved = program.reference(METER, taf3.series)
    assert moved.tariff_registers_wh != want.tariff_registers_wh
    assert moved.tariff_registers_wh[0] < want.tariff_registers_wh[0]
    assert moved.total_register_wh == want.total_register_wh and moved.consistent
    assert moved.bill_microcent == taf3.contract.bill(moved.tariff_registers_wh)
    assert moved.bill_microcent > want.bill_microcent

    result = taf3.sealed(legal.identity, *taf3.computed(program))
    verdict = taf3.display_check(result, legal)
    assert verdict.verified, verdict.reason
    assert verdict.registers == moved

    outcome = taf3.judge(result, legal)
    assert not outcome.passed
    assert outcome.reason.startswith("result differs from the test vector: register ")
    assert f"expected {want.tariff_registers_wh[0]} Wh" in outcome.reason
    assert "bill: " in outcome.reason
    assert "total register" not in outcome.reason and "index sums" not in outcome.reason
    assert outcome.found == moved
