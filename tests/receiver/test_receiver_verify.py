"""The receiver's check of a signed result against real TAF1 read-outs of real encryptions.

TAF 1 uses the coefficient encoding of :mod:`metrocloud.tariffs.register`: a result is the
period's sum ``S`` of the transmissions and one plaintext product ``S * q`` that carries the
tariff register and the bill. Forged results are either real read-outs of manipulated,
missing, duplicated or foreign transmissions, or coefficient vectors crafted per
:class:`CoefficientLayout` and encrypted under the customer's public key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from metrocloud.core.clock import BillingPeriod
from metrocloud.core.messages import Envelope, TariffResult, seal
from metrocloud.fhe.coefficients import codec_for
from metrocloud.fhe.context import (
    CustomerKeyPair,
    Encryptor,
    deserialize_ciphertext,
    serialize,
)
from metrocloud.fhe.evaluator import Evaluator
from metrocloud.fhe.packing import Interval
from metrocloud.fhe.params import DEFAULT_PARAMETERS
from metrocloud.pki import Identity, IdentityStore, Role, TrustStore
from metrocloud.receiver.verify import check_result
from metrocloud.tariffs import RegisterSet
from metrocloud.tariffs.base import expected_integrity_sums
from metrocloud.tariffs.register import CoefficientLayout
from metrocloud.tariffs.taf1 import Taf1

P = DEFAULT_PARAMETERS
T = P.plaintext_modulus
METER = "m-0001"
OTHER_METER = "m-0002"
PRICE = 32_000
PER_TX = 96  # a day per transmission, so that transmissions can go missing or be doubled
BLOCK = 128  # what the gateway declares for transmissions of 96; TAF 1 ignores it
PERIOD = BillingPeriod.days(datetime(2026, 1, 1, tzinfo=timezone.utc), 3)  # 3 transmissions
LAYOUT = CoefficientLayout(P)


def flip_middle(blob: bytes) -> bytes:
    middle = len(blob) // 2
    return blob[:middle] + bytes(b ^ 0xFF for b in blob[middle : middle + 16]) + blob[middle + 16 :]


def crafted(registers: RegisterSet) -> list[list[int]]:
    """The coefficient vectors of a TAF 1 result that claims exactly these registers: the
    period vector with the error, total and integrity sums in its last four coefficients of
    the first half, and one product with the tariff register and the bill at its outputs."""
    (tariff,) = registers.tariff_registers_wh
    period = [0] * P.ring_dimension
    period[LAYOUT.error_at] = registers.error_register_wh
    period[LAYOUT.total_at] = registers.total_register_wh
    period[LAYOUT.index_at] = registers.index_sum
    period[LAYOUT.fingerprint_at] = registers.fingerprint_sum
    product = [0] * P.ring_dimension
    register_at, bill_at = LAYOUT.outputs_at
    product[register_at] = tariff
    product[bill_at] = registers.bill_microcent
    return [period, product]


@dataclass
class World:
    prog: Taf1
    keys: CustomerKeyPair
    other_keys: CustomerKeyPair
    enc: Encryptor
    ev: Evaluator
    anchor: TrustStore
    legal: Identity
    display: Identity
    gateway: Identity
    foreign_legal: Identity  # "legal" under another CA
    intervals: list[list[Interval]]
    c: list[Any]  # per transmission
    c_dup: list[Any]
    c_other_meter: list[Any]  # same indices and energies, packed for another meter
    r: list[bytes]
    r_dup: list[bytes]

    @property
    def reference(self) -> RegisterSet:
        return self.prog.reference(METER, [iv for tx in self.intervals for iv in tx])

    def encrypt(self, coefficients: Sequence[int]) -> Any:
        """A fresh encryption of the polynomial with these coefficients (reduced mod t)."""
        slots = codec_for(P).to_slots([x % T for x in coefficients])
        return deserialize_ciphertext(self.enc.encrypt(slots), P, self.keys.key_tag)

    def encrypted(self, vectors: Sequence[Sequence[int]]) -> list[bytes]:
        return [serialize(self.encrypt(v)) for v in vectors]

    def read_out(self, cts: Sequence[Any], prog: Taf1 | None = None) -> list[bytes]:
        """What legal makes of these transmissions (one ciphertext each). A register
        program's per-transmission step passes them on whatever their first index: the
        positions in the period carry the time, and TAF 1 has one register anyway."""
        prog = prog or self.prog
        partials = [prog.evaluate(self.ev, [ct], BLOCK, PERIOD.start) for ct in cts]
        return [serialize(r) for r in prog.read_out(self.ev, partials, BLOCK, PERIOD.start)]

    def decrypted(self, r: Sequence[bytes]) -> list[list[int]]:
        cts = [deserialize_ciphertext(b, P, self.keys.key_tag) for b in r]
        return [self.keys.decrypt(ct, P.slots) for ct in cts]

    def result(self, r: list[bytes], r_dup: list[bytes], **changes: Any) -> TariffResult:
        base = TariffResult(
            meter=METER,
            customer="c-0001",
            period_start=PERIOD.start,
            period_end=PERIOD.end,
            transmissions=len(self.c),
            tariff=self.prog.software_id.to_dict(),
            tariff_config_digest=self.prog.config_digest,
            registers=self.prog.tariff_registers,
            block=BLOCK,
            parameters_id=P.parameters_id,
            r=r,
            r_dup=r_dup,
            computed_at="2026-02-01T00:00:00+00:00",
        )
        return dataclasses.replace(base, **changes)

    def sealed(
        self, r: list[bytes], r_dup: list[bytes], signer: Identity | None = None, **kw: Any
    ) -> bytes:
        return seal(signer or self.legal, self.result(r, r_dup, **kw))

    def check(self, envelope: bytes, meter: str = METER, period: BillingPeriod = PERIOD) -> Any:
        return check_result(
            envelope, self.keys, self.anchor, meter_id=meter, period=period, contract=self.prog
        )


def make_intervals(start: int, count: int) -> list[Interval]:
    # Varied energies, a few error intervals, the range edges 0 and 5000 included.
    return [
        Interval(i, (i * 37) % 5001 if i % 11 else 5000, error=(i % 29 == 0))
        for i in range(start, start + count)
    ]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base: Path = tmp_path_factory.mktemp("receiver")
    ids = IdentityStore.open_local(base)
    foreign = IdentityStore.open_local(base / "other-pki")
    prog = Taf1(P, {"price_mct_per_kwh": PRICE})
    assert prog.rotation_steps(BLOCK) == set() and not prog.relinearization
    keys = CustomerKeyPair.for_program(prog, BLOCK)
    other_keys = CustomerKeyPair.for_program(prog, BLOCK)
    enc = Encryptor(P, keys.context, keys.public_key)

    def encrypt(meter: str, ivs: list[Interval]) -> Any:
        (vector,) = prog.encode(meter, ivs, BLOCK, PERIOD.start)
        return deserialize_ciphertext(enc.encrypt(vector), P, keys.key_tag)

    intervals = [make_intervals(first, count) for first, count in PERIOD.chunks(PER_TX)]
    c = [encrypt(METER, ivs) for ivs in intervals]
    c_dup = [encrypt(METER, ivs) for ivs in intervals]
    c_other = [encrypt(OTHER_METER, ivs) for ivs in intervals]
    w = World(
        prog=prog,
        keys=keys,
        other_keys=other_keys,
        enc=enc,
        ev=Evaluator(keys.context, P.slots),
        anchor=ids.trust,
        legal=ids.identity("legal", Role.SERVICE),
        display=ids.identity("display", Role.SERVICE),
        gateway=ids.identity("gw-0001", Role.GATEWAY),
        foreign_legal=foreign.identity("legal", Role.SERVICE),
        intervals=intervals,
        c=c,
        c_dup=c_dup,
        c_other_meter=c_other,
        r=[],
        r_dup=[],
    )
    w.r = w.read_out(c)
    w.r_dup = w.read_out(c_dup)
    yield w


# -- honest ---------------------------------------------------------------------------------------


def test_honest_result_is_verified(world: World) -> None:
    verdict = world.check(world.sealed(world.r, world.r_dup))
    assert verdict.verified, verdict.reason
    assert verdict.reason == "verified"
    assert verdict.meter_id == METER
    assert verdict.period_id == PERIOD.period_id
    assert verdict.registers == world.reference
    assert verdict.registers is not None and verdict.registers.consistent
    assert verdict.registers.error_register_wh > 0  # the period really has error intervals
    assert verdict.registers.tariff_registers_wh[0] > 0
    assert verdict.result is not None and verdict.result.r == world.r
    assert len(world.r) == len(world.r_dup) == 2  # S and one product (register and bill)


def test_result_with_r_equal_r_dup_is_still_verified(world: World) -> None:
    """Both halves from ``c`` only: nothing was manipulated, so it verifies."""
    assert world.check(world.sealed(world.r, world.r)).verified


def test_one_whole_period_transmission_gives_the_same_result(world: World) -> None:
    """What the gateway sends by default: the whole period in one transmission. Its
    read-out decrypts to exactly what the three daily transmissions give."""
    flat = [iv for tx in world.intervals for iv in tx]
    (vector,) = world.prog.encode(METER, flat, BLOCK, PERIOD.start)
    whole = deserialize_ciphertext(world.enc.encrypt(vector), P, world.keys.key_tag)
    r = world.read_out([whole])
    assert world.decrypted(r) == world.decrypted(world.r)
    verdict = world.check(world.sealed(r, world.r_dup, transmissions=1))
    assert verdict.verified, verdict.reason
    assert verdict.registers == world.reference


def test_crafted_result_is_read_where_the_layout_puts_it(world: World) -> None:
    """The decoder reads the registers from the coefficients :class:`CoefficientLayout`
    names, and the honest result holds exactly those coefficients (nothing else non-zero in
    the product's two outputs)."""
    ref = world.reference
    assert world.prog.decode(world.decrypted(world.encrypted(crafted(ref))), BLOCK) == ref
    codec = codec_for(P)
    period, product = (codec.from_slots(slots) for slots in world.decrypted(world.r))
    want = [0] * LAYOUT.half
    for iv in (iv for tx in world.intervals for iv in tx):
        want[iv.index - PERIOD.start] = 0 if iv.error else iv.energy_wh
    want[LAYOUT.error_at :] = [
        ref.error_register_wh,
        ref.total_register_wh,
        ref.index_sum,
        ref.fingerprint_sum,
    ]
    assert period == want + [0] * LAYOUT.half
    assert [product[at] for at in LAYOUT.outputs_at] == [
        ref.tariff_registers_wh[0],
        ref.bill_microcent,
    ]


# -- manipulated ciphertexts -------------------------------------------------------------------


@pytest.mark.parametrize("which", [0, 1], ids=["period-sum", "product"])
def test_flipped_bytes_in_r(world: World, which: int) -> None:
    r = list(world.r)
    r[which] = flip_middle(r[which])
    verdict = world.check(world.sealed(r, world.r_dup))
    assert not verdict.verified
    assert verdict.reason.startswith("dec(r) != dec(r')")
    assert verdict.registers is None


@pytest.mark.parametrize("which", [0, 1], ids=["period-sum", "product"])
def test_flipped_bytes_in_r_dup(world: World, which: int) -> None:
    r_dup = list(world.r_dup)
    r_dup[which] = flip_middle(r_dup[which])
    verdict = world.check(world.sealed(world.r, r_dup))
    assert not verdict.verified
    assert verdict.reason.startswith("dec(r) != dec(r')")


def test_r_replaced_by_another_consistent_read_out(world: World) -> None:
    """r over the first two transmissions only: well-formed, consistent, but not r'."""
    other = world.read_out(world.c[:2])
    verdict = world.check(world.sealed(other, world.r_dup))
    assert not verdict.verified
    assert verdict.reason.startswith("dec(r) != dec(r')")


def test_r_and_r_dup_swapped_halves(world: World) -> None:
    """The period sum of r with the product of another read-out: not r' either."""
    other = world.read_out(world.c[:2])
    verdict = world.check(world.sealed([world.r[0], other[1]], world.r_dup))
    assert not verdict.verified
    assert verdict.reason.startswith("dec(r) != dec(r')")


def test_both_over_a_period_with_one_transmission_missing(world: World) -> None:
    r = world.read_out([world.c[0], world.c[2]])
    r_dup = world.read_out([world.c_dup[0], world.c_dup[2]])
    verdict = world.check(world.sealed(r, r_dup, transmissions=2))
    assert not verdict.verified
    assert verdict.reason.startswith("index check failed")


def test_both_with_one_transmission_counted_twice(world: World) -> None:
    r = world.read_out([*world.c, world.c[1]])
    r_dup = world.read_out([*world.c_dup, world.c_dup[1]])
    verdict = world.check(world.sealed(r, r_dup, transmissions=4))
    assert not verdict.verified
    assert verdict.reason.startswith("index check failed")


def test_both_with_one_transmission_replaced_by_its_copy(world: World) -> None:
    """c'_1 in r and c_1 in r': other ciphertexts of the same plaintexts, so the results
    decrypt alike and the period is billed exactly."""
    r = world.read_out([world.c[0], world.c_dup[1], world.c[2]])
    r_dup = world.read_out([world.c_dup[0], world.c[1], world.c_dup[2]])
    verdict = world.check(world.sealed(r, r_dup))
    assert verdict.verified, verdict.reason
    assert verdict.registers == world.reference


def test_both_over_another_meters_transmissions(world: World) -> None:
    """Same indices and energies, but fingerprints of another meter: foreign readings."""
    r = world.read_out(world.c_other_meter)
    verdict = world.check(world.sealed(r, r))
    assert not verdict.verified
    assert verdict.reason.startswith("index check failed")


def test_both_with_one_transmission_of_another_meter(world: World) -> None:
    r = world.read_out([world.c[0], world.c_other_meter[1], world.c[2]])
    r_dup = world.read_out([world.c_dup[0], world.c_other_meter[1], world.c_dup[2]])
    verdict = world.check(world.sealed(r, r_dup))
    assert not verdict.verified
    assert verdict.reason.startswith("index check failed")


def test_inconsistent_registers(world: World) -> None:
    """A read-out whose total omits the error register (same in r and r'): legal's real
    circuit applied to a period sum whose total coefficient was replaced."""
    ref = world.reference
    flat = [iv for tx in world.intervals for iv in tx]
    period = LAYOUT.pack(METER, flat, PERIOD.start)
    assert period[LAYOUT.total_at] == ref.total_register_wh
    period[LAYOUT.total_at] -= ref.error_register_wh

    def bad_read_out() -> list[bytes]:
        (partial,) = world.prog.evaluate(world.ev, [world.encrypt(period)], BLOCK, PERIOD.start)
        out = world.prog.read_out(world.ev, [[partial]], BLOCK, PERIOD.start)
        return [serialize(ct) for ct in out]

    r, r_dup = bad_read_out(), bad_read_out()
    assert r != r_dup
    got = world.prog.decode(world.decrypted(r), BLOCK)
    assert got.tariff_registers_wh == ref.tariff_registers_wh  # everything else is honest
    assert (got.index_sum, got.fingerprint_sum) == (ref.index_sum, ref.fingerprint_sum)
    verdict = world.check(world.sealed(r, r_dup))
    assert not verdict.verified
    assert "differ from the total" in verdict.reason


@pytest.mark.parametrize("register", ["error", "total", "tariff"])
def test_crafted_inconsistent_registers(world: World, register: str) -> None:
    """Crafted results in which one register is 1 Wh off, everything else honest."""
    ref = world.reference
    (tariff,) = ref.tariff_registers_wh
    forged = {
        "error": dataclasses.replace(ref, error_register_wh=ref.error_register_wh + 1),
        "total": dataclasses.replace(ref, total_register_wh=ref.total_register_wh + 1),
        "tariff": dataclasses.replace(
            ref, tariff_registers_wh=(tariff + 1,), bill_microcent=world.prog.bill([tariff + 1])
        ),
    }[register]
    assert not forged.consistent
    verdict = world.check(
        world.sealed(world.encrypted(crafted(forged)), world.encrypted(crafted(forged)))
    )
    assert not verdict.verified
    assert "differ from the total" in verdict.reason


def test_crafted_bill_that_does_not_fit_the_registers(world: World) -> None:
    ref = world.reference
    forged = dataclasses.replace(ref, bill_microcent=ref.bill_microcent - 1)
    verdict = world.check(
        world.sealed(world.encrypted(crafted(forged)), world.encrypted(crafted(forged)))
    )
    assert not verdict.verified
    assert "contract's prices" in verdict.reason


def test_crafted_result_with_a_reading_dropped(world: World) -> None:
    """A crafted result consistent in itself (registers, bill and both integrity sums) but
    over the period without its last reading."""
    ref = world.reference
    last = world.intervals[-1][-1]
    assert not last.error and last.energy_wh > 0
    tariff = ref.tariff_registers_wh[0] - last.energy_wh
    index_sum, fingerprint_sum = expected_integrity_sums(
        METER, range(PERIOD.start, PERIOD.end - 1), T
    )
    forged = dataclasses.replace(
        ref,
        tariff_registers_wh=(tariff,),
        total_register_wh=ref.total_register_wh - last.energy_wh,
        bill_microcent=world.prog.bill([tariff]),
        index_sum=index_sum,
        fingerprint_sum=fingerprint_sum,
    )
    assert forged.consistent
    verdict = world.check(
        world.sealed(world.encrypted(crafted(forged)), world.encrypted(crafted(forged)))
    )
    assert not verdict.verified
    assert verdict.reason.startswith("index check failed")


def test_result_without_its_product(world: World) -> None:
    """Only the period sum: the contract's layout has a product ciphertext too."""
    verdict = world.check(world.sealed(world.r[:1], world.r_dup[:1]))
    assert not verdict.verified
    assert "does not fit the contract's layout" in verdict.reason


def test_result_with_unequal_numbers_of_ciphertexts(world: World) -> None:
    verdict = world.check(world.sealed(world.r[:1], world.r_dup))
    assert not verdict.verified
    assert "unequal numbers of ciphertexts" in verdict.reason
    verdict = world.check(world.sealed([], []))
    assert not verdict.verified
    assert "no or unequal numbers of ciphertexts" in verdict.reason


def test_result_claiming_another_number_of_registers(world: World) -> None:
    verdict = world.check(world.sealed(world.r, world.r_dup, registers=2))
    assert not verdict.verified
    assert "not the contract's" in verdict.reason


def test_result_under_another_customers_key(world: World) -> None:
    enc = Encryptor(P, world.other_keys.context, world.other_keys.public_key)
    foreign = [enc.encrypt([1, 2, 3]), enc.encrypt([4, 5, 6])]
    verdict = world.check(world.sealed(foreign, foreign))
    assert not verdict.verified
    assert "undecryptable" in verdict.reason
    assert "wrong-crypto-context" in verdict.reason


@pytest.mark.parametrize("which", [0, 1], ids=["period-sum", "product"])
def test_garbage_instead_of_r(world: World, which: int) -> None:
    r = list(world.r)
    r[which] = b"\x00" * 64
    verdict = world.check(world.sealed(r, world.r_dup))
    assert not verdict.verified
    assert "malformed-ciphertext" in verdict.reason


# -- authenticity ----------------------------------------------------------------------------------


def test_signed_by_another_service(world: World) -> None:
    verdict = world.check(world.sealed(world.r, world.r_dup, signer=world.display))
    assert not verdict.verified
    assert "display" in verdict.reason and "not by legal" in verdict.reason


def test_signed_by_a_gateway(world: World) -> None:
    verdict = world.check(world.sealed(world.r, world.r_dup, signer=world.gateway))
    assert not verdict.verified
    assert "not authentic" in verdict.reason and "wrong-role" in verdict.reason


def test_signed_by_a_legal_of_another_ca(world: World) -> None:
    verdict = world.check(world.sealed(world.r, world.r_dup, signer=world.foreign_legal))
    assert not verdict.verified
    assert "not authentic" in verdict.reason


def test_body_altered_after_signing(world: World) -> None:
    env = Envelope.decode(world.sealed(world.r, world.r_dup))
    altered = world.result(world.r, world.r_dup, computed_at="2026-02-02T00:00:00+00:00")
    forged = Envelope(altered.encode(), env.certificate, env.signature).encode()
    verdict = world.check(forged)
    assert not verdict.verified
    assert "not authentic" in verdict.reason and "bad-signature" in verdict.reason


def test_body_bytes_flipped_after_signing(world: World) -> None:
    env = Envelope.decode(world.sealed(world.r, world.r_dup))
    forged = Envelope(flip_middle(env.body), env.certificate, env.signature).encode()
    verdict = world.check(forged)
    assert not verdict.verified
    assert "not authentic" in verdict.reason


def test_signature_of_another_result(world: World) -> None:
    honest = Envelope.decode(world.sealed(world.r, world.r_dup))
    other = Envelope.decode(world.sealed(world.r, world.r))
    forged = Envelope(other.body, honest.certificate, honest.signature).encode()
    assert not world.check(forged).verified


@pytest.mark.parametrize("raw", [b"", b"garbage", b"\x81\xa1v\x02"])
def test_not_an_envelope(world: World, raw: bytes) -> None:
    verdict = world.check(raw)
    assert not verdict.verified
    assert "not authentic" in verdict.reason


def test_envelope_with_another_body_kind(world: World) -> None:
    from metrocloud.core.messages import DisplayRequest

    body = DisplayRequest("c-0001", METER, PERIOD.period_id, "now")
    verdict = world.check(seal(world.legal, body))
    assert not verdict.verified
    assert "not authentic" in verdict.reason and "malformed-message" in verdict.reason


# -- wrong meter or period -----------------------------------------------------------------------


def test_wrong_meter(world: World) -> None:
    sealed = world.sealed(world.r, world.r_dup)
    verdict = world.check(sealed, meter=OTHER_METER)
    assert not verdict.verified
    assert verdict.reason.startswith(f"result is for {METER}")
    # ... and a result that claims another meter for the same ciphertexts.
    verdict = world.check(world.sealed(world.r, world.r_dup, meter=OTHER_METER))
    assert not verdict.verified
    assert f"result is for {OTHER_METER}" in verdict.reason


def test_wrong_period(world: World) -> None:
    sealed = world.sealed(world.r, world.r_dup)
    later = BillingPeriod(PERIOD.end, PERIOD.end + PERIOD.intervals)
    verdict = world.check(sealed, period=later)
    assert not verdict.verified
    assert verdict.period_id == later.period_id
    assert "result is for" in verdict.reason


def test_result_claiming_a_shorter_period(world: World) -> None:
    """The body names a period that matches what was summed, but not the one asked for."""
    shorter = BillingPeriod(PERIOD.start, PERIOD.start + 2 * 96)
    r = world.read_out(world.c[:2])
    r_dup = world.read_out(world.c_dup[:2])
    sealed = world.sealed(r, r_dup, period_end=shorter.end)
    assert world.check(sealed, period=shorter).verified
    verdict = world.check(sealed)
    assert not verdict.verified
    assert "result is for" in verdict.reason


def test_the_contract_tariff_and_prices_are_checked(world: World) -> None:
    """Legal billing with another price is caught when the receiver knows its contract."""
    contract = world.prog
    honest = world.sealed(world.r, world.r_dup)
    verdict = check_result(
        honest, world.keys, world.anchor, meter_id=METER, period=PERIOD, contract=contract
    )
    assert verdict.verified, verdict.reason

    dearer = Taf1(P, {"price_mct_per_kwh": PRICE + 1_000})

    r, r_dup = world.read_out(world.c, dearer), world.read_out(world.c_dup, dearer)
    # declared honestly: the configuration digest gives it away
    declared = world.sealed(
        r, r_dup, tariff=dearer.software_id.to_dict(), tariff_config_digest=dearer.config_digest
    )
    verdict = check_result(
        declared, world.keys, world.anchor, meter_id=METER, period=PERIOD, contract=contract
    )
    assert not verdict.verified and "not the contract's" in verdict.reason
    # disguised as the contract's configuration: the bill does not fit the registers
    disguised = world.sealed(r, r_dup)
    verdict = check_result(
        disguised, world.keys, world.anchor, meter_id=METER, period=PERIOD, contract=contract
    )
    assert not verdict.verified and "contract's prices" in verdict.reason
    # a receiver whose contract had the dearer price would accept it: a consistent
    # manipulation of the program itself is what the authority's functionality checks catch
    assert check_result(
        declared, world.keys, world.anchor, meter_id=METER, period=PERIOD, contract=dearer
    ).verified
