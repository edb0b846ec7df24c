"""The gateway: interval energies from register readings, double encryption, signed uploads."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography import x509

from metrocloud.core.clock import READINGS_PER_DAY, BillingPeriod
from metrocloud.core.errors import Rejected
from metrocloud.core.messages import Envelope, PeriodClose, Transmission, seal
from metrocloud.fhe.context import CustomerKeyPair, Encryptor, deserialize_ciphertext
from metrocloud.fhe.packing import Interval, SlotLayout
from metrocloud.fhe.params import DEFAULT_PARAMETERS
from metrocloud.field.gateway import Gateway, derive_intervals
from metrocloud.field.meter import DEFAULT_ORIGIN_INDEX, Meter, MeterConfig, MeterStatus, Reading
from metrocloud.pki import Identity, IdentityStore, Role, verify_certificate, verify_signature
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


@dataclass
class World:
    keys: CustomerKeyPair
    enc: Encryptor
    identity: Identity
    anchor: x509.Certificate
    gateway: Gateway
    period: BillingPeriod
    layout: SlotLayout


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base: Path = tmp_path_factory.mktemp("gateway")
    ids = IdentityStore(base / "pki")
    identity = ids.identity("gw-0001", Role.GATEWAY)
    keys = CustomerKeyPair.generate(P, [])
    enc = Encryptor(P, keys.context, keys.public_key)
    gw = Gateway("gw-0001", identity, readings_per_transmission=PER_TX)
    taf1 = Taf1(P, {"price_mct_per_kwh": 32_000})
    gw.attach(Meter(MeterConfig("m-0001", seed=1, error_probability=0.05)), "c-0001", enc, taf1)
    gw.attach(Meter(MeterConfig("m-0002", seed=2, profile="commercial")), "c-0002", enc, taf1)
    start = BillingPeriod.days(FIRST_DAY, 1).start
    period = BillingPeriod(start, start + 2 * PER_TX + 16)  # chunks of 32, 32, 16
    layout = SlotLayout.for_intervals(P, PER_TX)
    yield World(keys, enc, identity, ids.trust_anchor, gw, period, layout)


def test_transmissions_are_two_encryptions_of_the_packed_intervals(world: World) -> None:
    chunks = world.period.chunks(PER_TX)
    assert [count for _, count in chunks] == [32, 32, 16]
    p = world.period
    assert any(iv.error for iv in world.gateway.intervals("m-0001", p.start, p.intervals))
    for seq, (first, count) in enumerate(chunks):
        tx = world.gateway.transmission("m-0001", world.period, seq)
        assert (tx.seq, tx.first_index, tx.count) == (seq, first, count)
        assert (tx.gateway, tx.meter, tx.customer) == ("gw-0001", "m-0001", "c-0001")
        assert (tx.period_start, tx.period_end) == (world.period.start, world.period.end)
        assert tx.period_id == world.period.period_id
        assert tx.block == world.layout.block == PER_TX
        assert tx.parameters_id == P.parameters_id
        assert tx.key_tag == world.keys.key_tag
        assert tx.c != tx.c_dup  # fresh randomness each time
        intervals = world.gateway.intervals("m-0001", first, count)
        assert [iv.index for iv in intervals] == list(range(first, first + count))
        expected = world.layout.pack("m-0001", intervals)
        assert len(tx.c) == len(tx.c_dup) == 1  # TAF 1: one ciphertext per copy
        for blob in (*tx.c, *tx.c_dup):
            ct = deserialize_ciphertext(blob, P, world.keys.key_tag)
            assert world.keys.decrypt(ct, world.layout.used_slots) == expected


def test_period_intervals_come_from_the_meter(world: World) -> None:
    meter = world.gateway.meters["m-0002"].meter
    p = world.period
    ivs = world.gateway.intervals("m-0002", p.start, p.intervals)
    assert [iv.energy_wh for iv in ivs] == [meter.interval_energy(i) for i in range(p.start, p.end)]
    assert not any(iv.error for iv in ivs)


def test_period_close(world: World) -> None:
    close = world.gateway.period_close("m-0002", world.period)
    assert close.transmissions == len(world.period.chunks(PER_TX)) == 3
    assert (close.gateway, close.meter, close.customer) == ("gw-0001", "m-0002", "c-0002")
    assert close.block == PER_TX
    assert close.period_id == world.period.period_id


def test_period_close_of_a_month_of_days(world: World) -> None:
    gw = Gateway("gw-0001", world.identity)  # default: a day per transmission
    gw.attach(
        Meter(MeterConfig("m-0003", seed=3)),
        "c-0003",
        world.enc,
        Taf1(P, {"price_mct_per_kwh": 32_000}),
    )
    month = BillingPeriod.days(FIRST_DAY, 31)
    close = gw.period_close("m-0003", month)
    assert close.transmissions == 31
    assert close.block == 128
    assert gw.per_transmission == READINGS_PER_DAY


def test_uploads_are_signed_envelopes(world: World) -> None:
    uploads = list(world.gateway.uploads("m-0001", world.period))
    n = len(world.period.chunks(PER_TX))
    assert len(uploads) == n + 1
    kinds = []
    for raw in uploads:
        env = Envelope.decode(raw)
        cert = verify_certificate(env.certificate, world.anchor, expected_role=Role.GATEWAY)
        verify_signature(cert, env.body, env.signature)  # raises if it does not hold
        kinds.append(env.body_kind())
    assert kinds == ["transmission"] * n + ["period-close"]
    txs = [Transmission.decode(Envelope.decode(raw).body) for raw in uploads[:-1]]
    assert [tx.seq for tx in txs] == list(range(n))
    assert [tx.first_index for tx in txs] == [f for f, _ in world.period.chunks(PER_TX)]
    close = PeriodClose.decode(Envelope.decode(uploads[-1]).body)
    assert close.transmissions == n
    # Each upload decrypts to the same slots as a direct transmission.
    first, count = world.period.chunks(PER_TX)[1]
    expected = world.layout.pack("m-0001", world.gateway.intervals("m-0001", first, count))
    ct = deserialize_ciphertext(txs[1].c_dup[0], P, world.keys.key_tag)
    assert world.keys.decrypt(ct, world.layout.used_slots) == expected


def test_a_signature_does_not_cover_another_body(world: World) -> None:
    a = Envelope.decode(seal(world.identity, world.gateway.period_close("m-0001", world.period)))
    b = Envelope.decode(seal(world.identity, world.gateway.period_close("m-0002", world.period)))
    cert = verify_certificate(a.certificate, world.anchor)
    with pytest.raises(Rejected) as exc:
        verify_signature(cert, b.body, a.signature)
    assert exc.value.reason == "bad-signature"


def test_subject(world: World) -> None:
    assert world.gateway.subject == "ingress.upload.gw-0001"


def test_unknown_meter(world: World) -> None:
    with pytest.raises(KeyError):
        world.gateway.transmission("m-9999", world.period, 0)
