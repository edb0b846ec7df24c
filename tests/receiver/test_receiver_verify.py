"""The receiver's check of a signed result against real TAF1 read-outs of real encryptions."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from metrocloud.core.clock import BillingPeriod
from metrocloud.core.messages import Envelope, TariffResult, seal
from metrocloud.fhe.context import (
    CustomerKeyPair,
    Encryptor,
    deserialize_ciphertext,
    serialize,
)
from metrocloud.fhe.evaluator import Evaluator, Placement
from metrocloud.fhe.packing import Interval, SlotLayout
from metrocloud.fhe.params import DEFAULT_PARAMETERS
from metrocloud.pki import Identity, IdentityStore, Role
from metrocloud.receiver.verify import check_result
from metrocloud.tariffs.taf1 import Taf1

P = DEFAULT_PARAMETERS
METER = "m-0001"
OTHER_METER = "m-0002"
PRICE = 32_000
PERIOD = BillingPeriod.days(datetime(2026, 1, 1, tzinfo=timezone.utc), 3)  # 3 transmissions


def flip_middle(blob: bytes) -> bytes:
    middle = len(blob) // 2
    return blob[:middle] + bytes(b ^ 0xFF for b in blob[middle : middle + 16]) + blob[middle + 16 :]


@dataclass
class World:
    prog: Taf1
    layout: SlotLayout
    keys: CustomerKeyPair
    other_keys: CustomerKeyPair
    ev: Evaluator
    anchor: x509.Certificate
    legal: Identity
    display: Identity
    gateway: Identity
    foreign_legal: Identity  # "legal" under another CA
    intervals: list[list[Interval]]
    c: list[Any]  # per transmission
    c_dup: list[Any]
    c_other_meter: list[Any]  # same indices and energies, packed for another meter
    r: bytes
    r_dup: bytes

    def read_out(self, cts: Sequence[Any]) -> bytes:
        (r,) = self.prog.read_out(self.ev, self.partials(self.prog, cts), self.layout.block)
        return serialize(r)

    def partials(self, prog: Taf1, cts: Sequence[Any]) -> list[Any]:
        # TAF 1 puts every quarter hour in its one register: the time does not matter
        return [prog.evaluate(self.ev, [ct], self.layout.block, 0) for ct in cts]

    def result(self, r: bytes, r_dup: bytes, **changes: Any) -> TariffResult:
        base = TariffResult(
            meter=METER,
            customer="c-0001",
            period_start=PERIOD.start,
            period_end=PERIOD.end,
            transmissions=len(self.c),
            tariff=self.prog.software_id.to_dict(),
            tariff_config_digest=self.prog.config_digest,
            registers=self.prog.tariff_registers,
            block=self.layout.block,
            parameters_id=P.parameters_id,
            r=[r],
            r_dup=[r_dup],
            computed_at="2026-02-01T00:00:00+00:00",
        )
        return dataclasses.replace(base, **changes)

    def sealed(self, r: bytes, r_dup: bytes, signer: Identity | None = None, **kw: Any) -> bytes:
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
    ids = IdentityStore(base / "pki")
    foreign = IdentityStore(base / "other-pki")
    prog = Taf1(P, {"price_mct_per_kwh": PRICE})
    layout = SlotLayout.for_intervals(P, 96)
    keys = CustomerKeyPair.generate(P, prog.rotation_steps(layout.block))
    other_keys = CustomerKeyPair.generate(P, prog.rotation_steps(layout.block))
    enc = Encryptor(P, keys.context, keys.public_key)

    def encrypt(meter: str, ivs: list[Interval]) -> Any:
        return deserialize_ciphertext(enc.encrypt(layout.pack(meter, ivs)), P, keys.key_tag)

    intervals = [make_intervals(first, count) for first, count in PERIOD.chunks(96)]
    c = [encrypt(METER, ivs) for ivs in intervals]
    c_dup = [encrypt(METER, ivs) for ivs in intervals]
    c_other = [encrypt(OTHER_METER, ivs) for ivs in intervals]
    ev = Evaluator(keys.context, P.slots)
    w = World(
        prog=prog,
        layout=layout,
        keys=keys,
        other_keys=other_keys,
        ev=ev,
        anchor=ids.trust_anchor,
        legal=ids.identity("legal", Role.SERVICE),
        display=ids.identity("display", Role.SERVICE),
        gateway=ids.identity("gw-0001", Role.GATEWAY),
        foreign_legal=foreign.identity("legal", Role.SERVICE),
        intervals=intervals,
        c=c,
        c_dup=c_dup,
        c_other_meter=c_other,
        r=b"",
        r_dup=b"",
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
    flat = [iv for tx in world.intervals for iv in tx]
    assert verdict.registers == world.prog.reference(METER, flat)
    assert verdict.registers is not None and verdict.registers.consistent
    assert verdict.registers.error_register_wh > 0  # the period really has error intervals
    assert verdict.result is not None and verdict.result.r == [world.r]


def test_result_with_r_equal_r_dup_is_still_verified(world: World) -> None:
    """Both halves from ``c`` only: nothing was manipulated, so it verifies."""
    assert world.check(world.sealed(world.r, world.r)).verified


# -- manipulated ciphertexts -------------------------------------------------------------------


def test_flipped_bytes_in_r(world: World) -> None:
    verdict = world.check(world.sealed(flip_middle(world.r), world.r_dup))
    assert not verdict.verified
    assert verdict.reason.startswith("dec(r) != dec(r')")
    assert verdict.registers is None


def test_flipped_bytes_in_r_dup(world: World) -> None:
    verdict = world.check(world.sealed(world.r, flip_middle(world.r_dup)))
    assert not verdict.verified
    assert verdict.reason.startswith("dec(r) != dec(r')")


def test_r_replaced_by_another_consistent_read_out(world: World) -> None:
    """r over the first two transmissions only: well-formed, consistent, but not r'."""
    other = world.read_out(world.c[:2])
    verdict = world.check(world.sealed(other, world.r_dup))
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


def test_both_over_another_meters_transmissions(world: World) -> None:
    """Same indices and energies, but fingerprints of another meter: foreign readings."""
    r = world.read_out(world.c_other_meter)
    verdict = world.check(world.sealed(r, r))
    assert not verdict.verified
    assert verdict.reason.startswith("index check failed")


def test_inconsistent_registers(world: World) -> None:
    """A read-out whose total omits the error register (same in r and r')."""
    out = world.prog.result_layout(world.layout)
    placements = [
        Placement(world.layout.valid_at, 0),
        Placement(world.layout.error_at, out.error_at),
        Placement(world.layout.valid_at, out.total_at),
        Placement(world.layout.index_at, out.index_sum_at),
        Placement(world.layout.fingerprint_at, out.fingerprint_sum_at),
    ]

    def bad_read_out(cts: list[Any]) -> bytes:
        sums = world.ev.block_sum(world.ev.add_all(cts), world.layout.blocksum_steps())
        return serialize(world.ev.assemble(sums, placements))

    verdict = world.check(world.sealed(bad_read_out(world.c), bad_read_out(world.c_dup)))
    assert not verdict.verified
    assert "differ from the total" in verdict.reason


def test_result_under_another_customers_key(world: World) -> None:
    enc = Encryptor(P, world.other_keys.context, world.other_keys.public_key)
    foreign = enc.encrypt([1, 2, 3])
    verdict = world.check(world.sealed(foreign, foreign))
    assert not verdict.verified
    assert "undecryptable" in verdict.reason
    assert "wrong-crypto-context" in verdict.reason


def test_garbage_instead_of_r(world: World) -> None:
    verdict = world.check(world.sealed(b"\x00" * 64, world.r_dup))
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

    def read_out(prog: Taf1, cts: Sequence[Any]) -> bytes:
        (r,) = prog.read_out(world.ev, world.partials(prog, cts), world.layout.block)
        return serialize(r)

    r, r_dup = read_out(dearer, world.c), read_out(dearer, world.c_dup)
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
