"""Recompute, don't trust: bills recomputed from real encrypted, signed transmissions.

A real gateway reads simulated meters, encrypts every transmission twice under the
customer's public key and signs it; the display decrypts, unpacks and recomputes. For TAF
1-4 the recomputation equals the plaintext reference, and a cloud result that differs is
named; a changed, foreign, unsigned or missing transmission is refused with its reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from metrocloud.core.clock import BillingPeriod
from metrocloud.core.messages import Envelope, Transmission, seal
from metrocloud.fhe.context import CustomerKeyPair, Encryptor
from metrocloud.field.gateway import Gateway
from metrocloud.field.meter import Meter, MeterConfig
from metrocloud.pki import Identity, IdentityStore, Role, TrustStore
from metrocloud.receiver.recompute import Recomputation, recompute
from metrocloud.tariffs import PROGRAMS, RegisterSet, TariffProgram, load_program
from metrocloud.testbed.pipeline import DEFAULT_TARIFF_CONFIG

METER, CUSTOMER = "m-0001", "c-0001"
PERIOD = BillingPeriod.days(datetime(2026, 3, 2, tzinfo=timezone.utc), 2)


@dataclass
class Setup:
    program: TariffProgram
    keys: CustomerKeyPair
    trust: TrustStore
    gateway: Gateway
    service: Identity  # a cloud service: not who may sign readings

    def transmissions(self, meter: str = METER) -> list[bytes]:
        return [
            seal(self.gateway.identity, self.gateway.transmission(meter, PERIOD, seq))
            for seq in range(len(self.gateway.chunks(meter, PERIOD)))
        ]

    @property
    def reference(self) -> RegisterSet:
        intervals = self.gateway.intervals(METER, PERIOD.start, PERIOD.intervals)
        return self.program.reference(METER, intervals)

    def recompute(self, transmissions: list[bytes], cloud: RegisterSet | None) -> Recomputation:
        return recompute(
            transmissions,
            self.keys,
            self.trust,
            meter_id=METER,
            customer_id=CUSTOMER,
            period=PERIOD,
            contract=self.program,
            cloud=cloud,
        )


@pytest.fixture(scope="module")
def ids(tmp_path_factory: pytest.TempPathFactory) -> IdentityStore:
    base: Path = tmp_path_factory.mktemp("recompute")
    return IdentityStore.open_local(base)


def make_setup(ids: IdentityStore, name: str, per_transmission: int | None = None) -> Setup:
    program = load_program(name, PROGRAMS[name].parameters, DEFAULT_TARIFF_CONFIG[name])
    keys = CustomerKeyPair.generate(program.params, [])  # decrypting needs no evaluation key
    gateway = Gateway(
        "gw-0001",
        ids.identity("gw-0001", Role.GATEWAY),
        readings_per_transmission=per_transmission,
    )
    encryptor = Encryptor(program.params, keys.context, keys.public_key)
    for meter in (METER, "m-0002"):
        # one erroneous reading in twenty: the error register is not empty
        config = MeterConfig(meter, seed=11 if meter == METER else 12, error_probability=0.05)
        gateway.attach(Meter(config), CUSTOMER, encryptor, program)
    return Setup(program, keys, ids.trust, gateway, ids.identity("legal", Role.SERVICE))


@pytest.fixture(scope="module")
def taf1(ids: IdentityStore) -> Iterator[Setup]:
    yield make_setup(ids, "taf1", per_transmission=96)  # a day per transmission


@pytest.mark.parametrize("name", ["taf1", "taf2", "taf3", "taf4"])
def test_recomputation_from_ciphertexts_equals_the_reference(ids: IdentityStore, name: str) -> None:
    setup = make_setup(ids, name)
    reference = setup.reference
    assert reference.error_register_wh > 0  # erroneous quarter hours are in the period
    outcome = setup.recompute(setup.transmissions(), cloud=reference)
    assert outcome.status == "match", outcome.reason
    assert outcome.registers == reference
    assert outcome.gateway == "gw-0001"
    intervals = setup.gateway.intervals(METER, PERIOD.start, PERIOD.intervals)
    assert [iv.index for iv in outcome.intervals] == list(range(PERIOD.start, PERIOD.end))
    valid = [0 if iv.error else iv.energy_wh for iv in intervals]
    assert [0 if iv.error else iv.energy_wh for iv in outcome.intervals] == valid
    assert outcome.error_wh == reference.error_register_wh


def test_a_result_that_differs_is_named(taf1: Setup) -> None:
    reference = taf1.reference
    inflated = dataclasses.replace(
        reference,
        tariff_registers_wh=(reference.tariff_registers_wh[0] + 500,),
        total_register_wh=reference.total_register_wh + 500,
        bill_microcent=reference.bill_microcent + 500 * 32_000,
    )
    outcome = taf1.recompute(taf1.transmissions(), cloud=inflated)
    assert outcome.status == "mismatch"
    assert f"register T1: cloud {reference.tariff_registers_wh[0] + 500} Wh" in outcome.reason
    assert "total register" in outcome.reason and "bill: cloud" in outcome.reason
    assert outcome.registers == reference


def test_without_a_verified_result_it_recomputes_but_compares_nothing(taf1: Setup) -> None:
    outcome = taf1.recompute(taf1.transmissions(), cloud=None)
    assert outcome.status == "not-run"
    assert outcome.registers == taf1.reference


def test_a_missing_transmission_fails_the_recomputation(taf1: Setup) -> None:
    sent = taf1.transmissions()
    assert len(sent) == 2
    outcome = taf1.recompute(sent[:1], cloud=taf1.reference)
    assert outcome.status == "failed"
    assert "96 quarter hours; the period has 192" in outcome.reason


def test_a_doubled_transmission_fails_the_recomputation(taf1: Setup) -> None:
    sent = taf1.transmissions()
    outcome = taf1.recompute([sent[0], sent[0], sent[1]], cloud=taf1.reference)
    assert outcome.status == "failed" and "each exactly once" in outcome.reason


def resealed(setup: Setup, raw: bytes, signer: Identity | None = None, **changes: object) -> bytes:
    tx = Transmission.decode(Envelope.decode(raw).body)
    return seal(signer or setup.gateway.identity, dataclasses.replace(tx, **changes))  # type: ignore[arg-type]


def test_readings_changed_in_one_copy_are_refused(taf1: Setup) -> None:
    first, second = taf1.transmissions()
    other = Transmission.decode(Envelope.decode(second).body)
    # c' of the first day replaced by the second day's: dec(c) != dec(c')
    forged = resealed(taf1, first, c_dup=other.c_dup)
    outcome = taf1.recompute([forged, second], cloud=taf1.reference)
    assert outcome.status == "failed"
    assert "transmission 0: dec(c) != dec(c')" in outcome.reason


def test_readings_not_signed_by_a_gateway_are_refused(taf1: Setup) -> None:
    first, second = taf1.transmissions()
    outcome = taf1.recompute([resealed(taf1, first, signer=taf1.service), second], taf1.reference)
    assert outcome.status == "failed"
    assert "transmission not authentic" in outcome.reason and "wrong-role" in outcome.reason


def test_a_flipped_signature_byte_is_refused(taf1: Setup) -> None:
    first, second = taf1.transmissions()
    env = Envelope.decode(first)
    broken = dataclasses.replace(env, signature=env.signature[:-1] + bytes([env.signature[-1] ^ 1]))
    outcome = taf1.recompute([broken.encode(), second], cloud=taf1.reference)
    assert outcome.status == "failed" and "not authentic" in outcome.reason


def test_another_meters_readings_are_refused(taf1: Setup) -> None:
    outcome = taf1.recompute(taf1.transmissions("m-0002"), cloud=taf1.reference)
    assert outcome.status == "failed"
    assert "is for m-0002" in outcome.reason


def test_readings_relabelled_as_another_meters_fail_the_index_check(taf1: Setup) -> None:
    """The other meter's transmissions, signed again as if they were this meter's: the
    fingerprints of (meter, index) inside the ciphertexts give them away."""
    relabelled = [resealed(taf1, raw, meter=METER) for raw in taf1.transmissions("m-0002")]
    outcome = taf1.recompute(relabelled, cloud=taf1.reference)
    assert outcome.status == "failed"
    assert "index sums are not those of its quarter hours" in outcome.reason


def test_readings_under_another_key_cannot_be_decrypted(ids: IdentityStore, taf1: Setup) -> None:
    stranger = CustomerKeyPair.generate(taf1.program.params, [])
    outcome = recompute(
        taf1.transmissions(),
        stranger,
        taf1.trust,
        meter_id=METER,
        customer_id=CUSTOMER,
        period=PERIOD,
        contract=taf1.program,
        cloud=taf1.reference,
    )
    assert outcome.status == "failed"
    assert "cannot be decrypted" in outcome.reason and "wrong-crypto-context" in outcome.reason
