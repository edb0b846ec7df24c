"""The gateway: interval energies from register readings, double encryption, signed uploads."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from metrocloud.core.clock import READINGS_PER_DAY, BillingPeriod
from metrocloud.core.errors import Rejected
from metrocloud.core.messages import Envelope, PeriodClose, Transmission, seal
from metrocloud.fhe.arith import COMPARISON_PARAMETERS
from metrocloud.fhe.coefficients import codec_for
from metrocloud.fhe.context import CustomerKeyPair, Encryptor, deserialize_ciphertext
from metrocloud.fhe.evaluator import Evaluator
from metrocloud.fhe.packing import Interval, index_fingerprint
from metrocloud.fhe.params import DEFAULT_PARAMETERS
from metrocloud.field.gateway import Gateway, derive_intervals
from metrocloud.field.meter import DEFAULT_ORIGIN_INDEX, Meter, MeterConfig, MeterStatus, Reading
from metrocloud.pki import Identity, IdentityStore, Role, TrustStore, verify_signature
from metrocloud.tariffs.base import TariffConfigError
from metrocloud.tariffs.comparison import Taf3
from metrocloud.tariffs.register import CoefficientLayout
from metrocloud.tariffs.taf1 import Taf1

P = DEFAULT_PARAMETERS
ERR = MeterStatus.ERROR


def readings(
    start: int, registers: list[int], statuses: dict[int, MeterStatus] | None = None
) -> list[Reading]:
    statuses = statuses or {}
    return [
        Reading("m", start + k, reg, statuses.get(k, MeterStatus.OK))
        for k, reg in enumerate(registers)
    ]


# -- derive_intervals ----------------------------------------------------------------------------


def test_normal_deltas() -> None:
    prev, *rest = readings(10, [1000, 1000, 1017, 6017, 6018])
    assert derive_intervals(prev, rest) == [
        Interval(11, 0),
        Interval(12, 17),
        Interval(13, 5000),  # exactly the maximum is still valid
        Interval(14, 1),
    ]


def test_meter_error_status_goes_to_the_error_register() -> None:
    prev, *rest = readings(10, [0, 5, 25, 30], {2: ERR})
    assert derive_intervals(prev, rest) == [
        Interval(11, 5),
        Interval(12, 20, error=True),
        Interval(13, 5),
    ]


def test_error_status_on_the_previous_reading_does_not_taint_the_next() -> None:
    prev, *rest = readings(10, [0, 5], {0: ERR})
    assert derive_intervals(prev, rest) == [Interval(11, 5)]


def test_register_running_backwards_is_an_error_with_zero() -> None:
    prev, *rest = readings(10, [100, 90, 95])
    assert derive_intervals(prev, rest) == [Interval(11, 0, error=True), Interval(12, 5)]


def test_jump_above_the_maximum_is_an_error() -> None:
    prev, *rest = readings(10, [0, 5001, 5002, 5002 + 12_000])
    assert derive_intervals(prev, rest) == [
        Interval(11, 5001, error=True),
        Interval(12, 1),
        Interval(13, 12_000, error=True),
    ]
    # The maximum is a parameter.
    prev, *rest = readings(10, [0, 101])
    assert derive_intervals(prev, rest, max_interval_wh=100) == [Interval(11, 101, error=True)]
    assert derive_intervals(prev, rest, max_interval_wh=101) == [Interval(11, 101)]


def test_non_consecutive_readings_raise() -> None:
    prev = Reading("m", 10, 0)
    with pytest.raises(ValueError, match="does not follow"):
        derive_intervals(prev, [Reading("m", 12, 5)])
    with pytest.raises(ValueError, match="does not follow"):
        derive_intervals(prev, [Reading("m", 11, 5), Reading("m", 11, 6)])
    with pytest.raises(ValueError, match="does not follow"):
        derive_intervals(prev, [Reading("m", 10, 5)])


def test_no_readings_no_intervals() -> None:
    assert derive_intervals(Reading("m", 10, 0), []) == []


def test_derive_from_a_simulated_meter() -> None:
    meter = Meter(MeterConfig("m-sim", seed=7, error_probability=0.1))
    rs = meter.readings(DEFAULT_ORIGIN_INDEX, 97)
    ivs = derive_intervals(rs[0], rs[1:])
    assert [iv.index for iv in ivs] == list(
        range(DEFAULT_ORIGIN_INDEX + 1, DEFAULT_ORIGIN_INDEX + 97)
    )
    assert [iv.energy_wh for iv in ivs] == [
        meter.interval_energy(i) for i in range(DEFAULT_ORIGIN_INDEX + 1, DEFAULT_ORIGIN_INDEX + 97)
    ]
    assert [iv.error for iv in ivs] == [bool(r.status & ERR) for r in rs[1:]]
    assert any(iv.error for iv in ivs)


# -- Gateway -------------------------------------------------------------------------------------

PER_TX = 32  # small transmissions keep the test fast; the last chunk is a partial one
FIRST_DAY = datetime(2026, 1, 1, tzinfo=timezone.utc)
LAYOUT = CoefficientLayout(P)
TAF1_CONFIG = {"price_mct_per_kwh": 32_000}


@dataclass
class World:
    keys: CustomerKeyPair
    enc: Encryptor
    identity: Identity
    anchor: TrustStore
    gateway: Gateway  # the default: a whole billing period per transmission
    capped: Gateway  # at most PER_TX readings per transmission
    period: BillingPeriod
    prog: Taf1

    def coefficients(self, blob: bytes) -> list[int]:
        """The coefficient vector one encrypted transmission decrypts to."""
        ct = deserialize_ciphertext(blob, P, self.keys.key_tag)
        return codec_for(P).from_slots(self.keys.decrypt(ct, P.slots))


def expected_coefficients(meter_id: str, intervals: list[Interval], period_start: int) -> list[int]:
    """Written out from the layout's description, not with :meth:`CoefficientLayout.pack`."""
    out = [0] * P.ring_dimension
    for iv in intervals:
        out[iv.index - period_start] = 0 if iv.error else iv.energy_wh
    out[LAYOUT.error_at] = sum(iv.energy_wh for iv in intervals if iv.error)
    out[LAYOUT.total_at] = sum(iv.energy_wh for iv in intervals)
    out[LAYOUT.index_at] = sum(iv.index for iv in intervals)
    fingerprints = sum(index_fingerprint(meter_id, iv.index) for iv in intervals)
    out[LAYOUT.fingerprint_at] = fingerprints % P.plaintext_modulus
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base: Path = tmp_path_factory.mktemp("gateway")
    ids = IdentityStore.open_local(base)
    identity = ids.identity("gw-0001", Role.GATEWAY)
    keys = CustomerKeyPair.generate(P, [])
    enc = Encryptor(P, keys.context, keys.public_key)
    taf1 = Taf1(P, TAF1_CONFIG)
    gw = Gateway("gw-0001", identity)
    capped = Gateway("gw-0001", identity, readings_per_transmission=PER_TX)
    for g in (gw, capped):
        g.attach(Meter(MeterConfig("m-0001", seed=1, error_probability=0.05)), "c-0001", enc, taf1)
        g.attach(Meter(MeterConfig("m-0002", seed=2, profile="commercial")), "c-0002", enc, taf1)
    start = BillingPeriod.days(FIRST_DAY, 1).start
    period = BillingPeriod(start, start + 2 * PER_TX + 16)  # capped: chunks of 32, 32, 16
    yield World(keys, enc, identity, ids.trust, gw, capped, period, taf1)


def check_envelope_fields(world: World, tx: Transmission, meter: str, customer: str) -> None:
    assert (tx.gateway, tx.meter, tx.customer) == ("gw-0001", meter, customer)
    assert (tx.period_start, tx.period_end) == (world.period.start, world.period.end)
    assert tx.period_id == world.period.period_id
    assert tx.parameters_id == P.parameters_id
    assert tx.key_tag == world.keys.key_tag
    assert tx.c != tx.c_dup  # fresh randomness each time
    assert len(tx.c) == len(tx.c_dup) == 1  # TAF 1: one ciphertext per copy


def test_by_default_a_whole_period_is_one_transmission(world: World) -> None:
    p = world.period
    assert world.gateway.per_transmission is None
    assert world.gateway.chunks("m-0001", p) == [(p.start, p.intervals)]
    tx = world.gateway.transmission("m-0001", p, 0)
    assert (tx.seq, tx.first_index, tx.count) == (0, p.start, p.intervals)
    assert tx.block == 128  # the smallest power of two >= 80; TAF 1 does not use it
    check_envelope_fields(world, tx, "m-0001", "c-0001")
    intervals = world.gateway.intervals("m-0001", p.start, p.intervals)
    assert [iv.index for iv in intervals] == list(range(p.start, p.end))
    assert any(iv.error for iv in intervals)
    expected = expected_coefficients("m-0001", intervals, p.start)
    for blob in (*tx.c, *tx.c_dup):
        assert world.coefficients(blob) == expected
    with pytest.raises(IndexError):
        world.gateway.transmission("m-0001", p, 1)


def test_a_whole_period_transmission_reads_out_to_the_reference(world: World) -> None:
    p = world.period
    tx = world.gateway.transmission("m-0002", p, 0)
    check_envelope_fields(world, tx, "m-0002", "c-0002")
    ev = Evaluator(world.keys.context, P.slots)
    partials = []
    for blob in tx.c:
        ct = deserialize_ciphertext(blob, P, world.keys.key_tag)
        partials.append(world.prog.evaluate(ev, [ct], tx.block, tx.first_index))
    r = world.prog.read_out(ev, partials, tx.block, p.start)
    got = world.prog.decode([world.keys.decrypt(ct, P.slots) for ct in r], tx.block)
    intervals = world.gateway.intervals("m-0002", p.start, p.intervals)
    assert got == world.prog.reference("m-0002", intervals)
    assert got.tariff_registers_wh[0] > 0


def test_capped_transmissions_are_two_encryptions_of_the_packed_intervals(world: World) -> None:
    p = world.period
    chunks = p.chunks(PER_TX)
    assert [count for _, count in chunks] == [32, 32, 16]
    assert world.capped.chunks("m-0001", p) == chunks
    whole = [0] * P.ring_dimension
    for seq, (first, count) in enumerate(chunks):
        tx = world.capped.transmission("m-0001", p, seq)
        assert (tx.seq, tx.first_index, tx.count) == (seq, first, count)
        assert tx.block == PER_TX
        check_envelope_fields(world, tx, "m-0001", "c-0001")
        intervals = world.capped.intervals("m-0001", first, count)
        assert [iv.index for iv in intervals] == list(range(first, first + count))
        # energies at their place in the period (index - period start), zeros elsewhere
        expected = expected_coefficients("m-0001", intervals, p.start)
        assert not any(expected[: first - p.start])
        for blob in (*tx.c, *tx.c_dup):
            assert world.coefficients(blob) == expected
        whole = [(a + b) % P.plaintext_modulus for a, b in zip(whole, expected, strict=True)]
    # transmissions occupy disjoint positions: together they are the whole-period one
    (blob,) = world.gateway.transmission("m-0001", p, 0).c
    assert world.coefficients(blob) == whole


def test_the_cap_never_exceeds_the_period(world: World) -> None:
    gw = Gateway("gw-0001", world.identity, readings_per_transmission=10_000)
    gw.attach(Meter(MeterConfig("m-0003", seed=3)), "c-0003", world.enc, world.prog)
    p = world.period
    assert gw.chunks("m-0003", p) == [(p.start, p.intervals)]


def test_a_period_beyond_the_layout_is_refused(world: World) -> None:
    gw = Gateway("gw-0001", world.identity)
    gw.attach(Meter(MeterConfig("m-0003", seed=3)), "c-0003", world.enc, world.prog)
    start = world.period.start
    assert gw.chunks("m-0003", BillingPeriod(start, start + LAYOUT.capacity)) == [
        (start, LAYOUT.capacity)
    ]
    with pytest.raises(TariffConfigError, match="does not fit"):
        gw.chunks("m-0003", BillingPeriod(start, start + LAYOUT.capacity + 1))


def test_comparison_tariffs_always_send_whole_periods(world: World) -> None:
    taf3 = Taf3(COMPARISON_PARAMETERS, {"thresholds_wh": [250], "prices_mct_per_kwh": [1, 2]})
    month = BillingPeriod.days(FIRST_DAY, 31)
    for gw in (Gateway("gw-0001", world.identity), world.capped):
        gw.attach(Meter(MeterConfig("m-0004", seed=4)), "c-0004", world.enc, taf3)
        assert gw.chunks("m-0004", month) == [(month.start, month.intervals)]
        del gw.meters["m-0004"]


def test_period_intervals_come_from_the_meter(world: World) -> None:
    meter = world.gateway.meters["m-0002"].meter
    p = world.period
    ivs = world.gateway.intervals("m-0002", p.start, p.intervals)
    assert [iv.energy_wh for iv in ivs] == [meter.interval_energy(i) for i in range(p.start, p.end)]
    assert not any(iv.error for iv in ivs)


def test_period_close(world: World) -> None:
    close = world.capped.period_close("m-0002", world.period)
    assert close.transmissions == len(world.period.chunks(PER_TX)) == 3
    assert (close.gateway, close.meter, close.customer) == ("gw-0001", "m-0002", "c-0002")
    assert close.block == PER_TX
    assert close.period_id == world.period.period_id
    close = world.gateway.period_close("m-0002", world.period)
    assert (close.transmissions, close.block) == (1, 128)


def test_period_close_of_a_month(world: World) -> None:
    month = BillingPeriod.days(FIRST_DAY, 31)
    gw = Gateway("gw-0001", world.identity)  # default: the whole month in one transmission
    gw.attach(Meter(MeterConfig("m-0003", seed=3)), "c-0003", world.enc, Taf1(P, TAF1_CONFIG))
    assert gw.per_transmission is None
    close = gw.period_close("m-0003", month)
    assert (close.transmissions, close.block) == (1, 4096)
    daily = Gateway("gw-0001", world.identity, readings_per_transmission=READINGS_PER_DAY)
    daily.attach(Meter(MeterConfig("m-0003", seed=3)), "c-0003", world.enc, Taf1(P, TAF1_CONFIG))
    assert daily.per_transmission == READINGS_PER_DAY
    close = daily.period_close("m-0003", month)
    assert (close.transmissions, close.block) == (31, 128)
    assert daily.chunks("m-0003", month) == month.chunks(READINGS_PER_DAY)


def test_daily_transmissions_of_a_month(world: World) -> None:
    """Capped at a day: transmission k carries day k at positions 96 k .. 96 k + 95."""
    month = BillingPeriod.days(FIRST_DAY, 31)
    daily = Gateway("gw-0001", world.identity, readings_per_transmission=READINGS_PER_DAY)
    daily.attach(Meter(MeterConfig("m-0003", seed=3)), "c-0003", world.enc, world.prog)
    seq = 30  # the last day: its readings sit at the end of the period's positions
    tx = daily.transmission("m-0003", month, seq)
    first = month.start + seq * READINGS_PER_DAY
    assert (tx.seq, tx.first_index, tx.count, tx.block) == (seq, first, READINGS_PER_DAY, 128)
    coefficients = world.coefficients(tx.c[0])
    intervals = daily.intervals("m-0003", first, READINGS_PER_DAY)
    assert coefficients == expected_coefficients("m-0003", intervals, month.start)
    day = slice(seq * READINGS_PER_DAY, (seq + 1) * READINGS_PER_DAY)
    assert coefficients[day] == [0 if iv.error else iv.energy_wh for iv in intervals]
    assert not any(coefficients[: day.start]) and not any(coefficients[day.stop : LAYOUT.capacity])
    assert coefficients[LAYOUT.total_at] == sum(iv.energy_wh for iv in intervals) > 0
    assert coefficients[LAYOUT.index_at] == sum(range(first, first + READINGS_PER_DAY))


def test_uploads_are_signed_envelopes(world: World) -> None:
    uploads = list(world.capped.uploads("m-0001", world.period))
    n = len(world.period.chunks(PER_TX))
    assert len(uploads) == n + 1
    kinds = []
    for raw in uploads:
        env = Envelope.decode(raw)
        cert = world.anchor.verify(env.certificate, expected_role=Role.GATEWAY)
        verify_signature(cert, env.body, env.signature)  # raises if it does not hold
        kinds.append(env.body_kind())
    assert kinds == ["transmission"] * n + ["period-close"]
    txs = [Transmission.decode(Envelope.decode(raw).body) for raw in uploads[:-1]]
    assert [tx.seq for tx in txs] == list(range(n))
    assert [tx.first_index for tx in txs] == [f for f, _ in world.period.chunks(PER_TX)]
    close = PeriodClose.decode(Envelope.decode(uploads[-1]).body)
    assert close.transmissions == n
    # Each upload decrypts to the same coefficients as a direct transmission.
    first, count = world.period.chunks(PER_TX)[1]
    intervals = world.capped.intervals("m-0001", first, count)
    expected = expected_coefficients("m-0001", intervals, world.period.start)
    assert world.coefficients(txs[1].c_dup[0]) == expected


def test_default_uploads_are_one_transmission_and_the_close(world: World) -> None:
    uploads = list(world.gateway.uploads("m-0001", world.period))
    kinds = [Envelope.decode(raw).body_kind() for raw in uploads]
    assert kinds == ["transmission", "period-close"]
    tx = Transmission.decode(Envelope.decode(uploads[0]).body)
    assert (tx.seq, tx.first_index, tx.count) == (0, world.period.start, world.period.intervals)
    assert PeriodClose.decode(Envelope.decode(uploads[1]).body).transmissions == 1


def test_a_signature_does_not_cover_another_body(world: World) -> None:
    a = Envelope.decode(seal(world.identity, world.gateway.period_close("m-0001", world.period)))
    b = Envelope.decode(seal(world.identity, world.gateway.period_close("m-0002", world.period)))
    cert = world.anchor.verify(a.certificate)
    with pytest.raises(Rejected) as exc:
        verify_signature(cert, b.body, a.signature)
    assert exc.value.reason == "bad-signature"


def test_subject(world: World) -> None:
    assert world.gateway.subject == "ingress.upload.gw-0001"


def test_unknown_meter(world: World) -> None:
    with pytest.raises(KeyError):
        world.gateway.transmission("m-9999", world.period, 0)
