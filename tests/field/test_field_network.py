"""The simulated LMN end to end: meters, the radio channel and the gateway stepped per
quarter hour; an ideal and a realistic channel, an attacker's injected frames, an
interrupted meter and receiver, and wired meters that never touch the radio."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from lmn_keys import PUBLIC_DER, SIGNER, aes_key

from metrocloud.core.clock import INTERVAL
from metrocloud.field.channel import BitErrors, ChannelConfig, Echo, Loss
from metrocloud.field.gateway import derive_intervals
from metrocloud.field.lmn import sensor_telegram
from metrocloud.field.meter import DEFAULT_ORIGIN_INDEX, MeterStatus, Reading
from metrocloud.field.network import FieldNetwork
from metrocloud.field.sensors import Interface, Medium, Security, Sensor, SensorConfig
from metrocloud.field.smgw import GatewayLog, MeterRecord, SmartMeterGateway

KEY = aes_key("network")
ORIGIN = DEFAULT_ORIGIN_INDEX + 1

MIX = [
    (Medium.ELECTRICITY, Security.AES, Interface.WIRELESS),
    (Medium.GAS, Security.NONE, Interface.WIRELESS),
    (Medium.WATER, Security.ECDSA, Interface.WIRELESS),
    (Medium.HEAT, Security.AES, Interface.WIRELESS),
    (Medium.ELECTRICITY, Security.NONE, Interface.WIRED),
    (Medium.HEAT, Security.AES, Interface.WIRED),
    (Medium.WATER, Security.ECDSA, Interface.WIRED),
]


def build(
    kinds: list[tuple[Medium, Security, Interface]],
    channel: ChannelConfig | None = None,
    seed: int = 0,
    send_every: int = 1,
) -> FieldNetwork:
    gw = SmartMeterGateway("gw-net")
    sensors = []
    signers = {}
    for n, (medium, security, interface) in enumerate(kinds):
        s = Sensor(
            SensorConfig(
                f"{40000000 + n:08d}",
                medium,
                seed=n,
                security=security,
                key=KEY if security is Security.AES else None,
                interface=interface,
                send_every=send_every,
            )
        )
        sensors.append(s)
        credential = {Security.AES: KEY, Security.ECDSA: PUBLIC_DER}.get(security)
        gw.configure_meter(MeterRecord(s.meter_id, medium, f"c-{n % 3}", security, credential))
        if security is Security.ECDSA:
            signers[s.meter_id] = SIGNER
    return FieldNetwork(gw, sensors, origin=ORIGIN, channel=channel, seed=seed, signers=signers)


def electricity(count: int) -> list[tuple[Medium, Security, Interface]]:
    return [(Medium.ELECTRICITY, Security.AES, Interface.WIRELESS)] * count


def accepted_keys(net: FieldNetwork) -> list[tuple[str, int]]:
    return [
        (o.reading.reading.meter_id, o.reading.reading.index)
        for o in net.outcomes
        if o.accepted and o.reading is not None
    ]


def true(s: Sensor, first: int, count: int) -> list[Reading]:
    return [s.reading(i).reading for i in range(first, first + count)]


# --- an ideal channel ---------------------------------------------------------------------


def test_ideal_channel_every_telegram_is_accepted() -> None:
    net = build(MIX)
    stats = net.run(ORIGIN, 96)
    n = len(MIX)
    assert stats.sent == stats.received == stats.accepted == 96 * n
    assert stats.outcomes == Counter({"accepted": 96 * n})
    wireless = sum(1 for _, _, i in MIX if i is Interface.WIRELESS)
    assert net.channel.stats.sent == net.channel.stats.delivered == 96 * wireless
    for s in net.sensors.values():
        source = net.gateway.source(s.meter_id)
        assert source.readings(ORIGIN, 96) == true(s, ORIGIN, 96)
    # time-stamped with the simulated time: within the quarter hour after the reading
    for o in net.outcomes:
        assert o.reading is not None
        taken = o.reading.reading.time
        assert taken <= o.reading.received_at < taken + INTERVAL
    assert sorted(accepted_keys(net)) == sorted(
        (s.meter_id, i) for s in net.sensors.values() for i in range(ORIGIN, ORIGIN + 96)
    )


def test_runs_continue_where_they_stopped() -> None:
    whole, parts = build(MIX[:4]), build(MIX[:4])
    whole.run(ORIGIN, 20)
    parts.run(ORIGIN, 7)
    parts.run(ORIGIN + 7, 13)
    for meter_id in whole.sensors:
        assert whole.gateway.source(meter_id).readings(ORIGIN, 20) == (
            parts.gateway.source(meter_id).readings(ORIGIN, 20)
        )
    assert whole.stats == parts.stats


# --- a realistic channel ------------------------------------------------------------------


def realistic_run(seed: int) -> FieldNetwork:
    net = build(electricity(20), ChannelConfig.realistic(), seed=seed)
    net.run(ORIGIN, 96)
    return net


def test_realistic_channel_is_reproducible_and_never_accepts_twice() -> None:
    a, b, other = realistic_run(5), realistic_run(5), realistic_run(6)
    assert a.stats == b.stats
    assert a.channel.stats == b.channel.stats
    assert [(o.reason, o.meter_id) for o in a.outcomes] == [
        (o.reason, o.meter_id) for o in b.outcomes
    ]
    assert [(o.reason, o.meter_id) for o in a.outcomes] != [
        (o.reason, o.meter_id) for o in other.outcomes
    ]

    stats, channel = a.stats, a.channel.stats
    assert stats.sent == 20 * 96 == channel.sent
    assert stats.received == channel.delivered + channel.duplicated
    assert set(stats.outcomes) <= {"accepted", "bad-crc", "replayed-access-number"}
    assert stats.outcomes["bad-crc"] >= channel.corrupted > 0
    assert 0 < stats.outcomes["replayed-access-number"] <= channel.duplicated
    assert channel.lost > 0
    assert stats.accepted == channel.delivered - channel.corrupted < stats.sent

    keys = accepted_keys(a)
    assert len(keys) == len(set(keys)) == stats.accepted  # never a reading twice
    for s in a.sensors.values():
        got = a.gateway.source(s.meter_id).readings(ORIGIN, 96)
        mine = {i for meter_id, i in keys if meter_id == s.meter_id}
        for r, t in zip(got, true(s, ORIGIN, 96), strict=True):
            if r.index in mine:
                assert r.register_wh == t.register_wh  # what arrived is what was sent
            else:
                assert r.status is MeterStatus.ERROR


def test_echoes_are_replays() -> None:
    net = build(electricity(10), ChannelConfig(echo=Echo(probability=0.3)), seed=2)
    stats = net.run(ORIGIN, 48)
    duplicated = net.channel.stats.duplicated
    assert duplicated > 50
    assert stats.outcomes == Counter({"accepted": 480, "replayed-access-number": duplicated})
    assert sorted(accepted_keys(net)) == sorted(set(accepted_keys(net)))


def test_corrupted_frames_fail_the_crc() -> None:
    net = build(MIX, ChannelConfig(bit_errors=BitErrors(ber=1e-3)), seed=4)
    stats = net.run(ORIGIN, 48)
    corrupted = net.channel.stats.corrupted
    assert corrupted > 20
    assert stats.outcomes == Counter({"accepted": 48 * len(MIX) - corrupted, "bad-crc": corrupted})
    # the wired meters' frames never met the bit errors
    for s in net.sensors.values():
        if s.config.interface is Interface.WIRED:
            assert net.gateway.source(s.meter_id).readings(ORIGIN, 48) == true(s, ORIGIN, 48)


# --- an attacker ------------------------------------------------------------------------


def test_injected_frames_are_refused_with_their_reason() -> None:
    net = build([*electricity(3), (Medium.GAS, Security.NONE, Interface.WIRELESS)])
    net.run(ORIGIN, 8)
    victim = next(iter(net.sensors.values()))
    # what an eavesdropper recorded: the victim's frame of ORIGIN + 3
    at, captured = next(
        (j, o.reading)
        for j, o in enumerate(net.outcomes)
        if o.reading is not None
        and o.meter_id == victim.meter_id
        and o.reading.reading.index == ORIGIN + 3
    )
    replay, sender = net.heard[at]
    assert sender == victim.meter_id
    assert replay == sensor_telegram(victim, ORIGIN + 3, captured.access_number)
    stranger = Sensor(SensorConfig("66666666", Medium.ELECTRICITY, key=KEY))
    unknown = sensor_telegram(stranger, ORIGIN + 9, 9)
    wrong = Sensor(SensorConfig(victim.config.number, Medium.ELECTRICITY, key=aes_key("attacker")))
    wrong_key = sensor_telegram(wrong, ORIGIN + 9, 123)
    before = len(net.outcomes)
    net.inject(replay, ORIGIN + 9)
    net.inject(unknown, ORIGIN + 9)
    net.inject(wrong_key, ORIGIN + 9)
    net.run(ORIGIN + 8, 4)

    new = net.outcomes[before:]
    refused = Counter((o.reason, o.meter_id) for o in new if not o.accepted)
    assert refused == Counter(
        {
            ("replayed-access-number", victim.meter_id): 1,
            ("unknown-meter", stranger.meter_id): 1,
            ("decryption-check-failed", victim.meter_id): 1,
        }
    )
    assert sum(o.accepted for o in new) == 4 * 4  # the meters' own readings all arrive
    assert net.channel.stats.injected == 3
    metrological = [
        e.detail["reason"]
        for e in net.gateway.logs["metrological"].entries
        if e.kind == "telegram-refused"
    ]
    assert sorted(metrological) == [
        "decryption-check-failed",
        "replayed-access-number",
        "unknown-meter",
    ]
    source = net.gateway.source(victim.meter_id)
    assert source.readings(ORIGIN, 12) == true(victim, ORIGIN, 12)


def test_a_frame_replayed_long_after_is_stale() -> None:
    net = build(electricity(1))
    net.run(ORIGIN, 100)
    victim = next(iter(net.sensors.values()))
    first = next(o.reading for o in net.outcomes if o.reading is not None)
    net.inject(sensor_telegram(victim, ORIGIN, first.access_number), ORIGIN + 100)
    net.run(ORIGIN + 100, 2)
    assert [o.reason for o in net.outcomes[100:]] == ["stale-reading", "accepted", "accepted"]


# --- interruptions and wires --------------------------------------------------------------


def test_an_interrupted_meter_leaves_a_flagged_gap() -> None:
    net = build(MIX)
    victim = net.sensors["MCL-40000003"]  # the wireless heat meter
    net.run(ORIGIN, 10)
    victim.interrupt()
    net.run(ORIGIN + 10, 6)
    victim.resume()
    net.run(ORIGIN + 16, 10)

    assert net.stats.sent == net.stats.accepted == 26 * len(MIX) - 6
    kept = {i for m, i in accepted_keys(net) if m == victim.meter_id}
    assert kept == set(range(ORIGIN, ORIGIN + 26)) - set(range(ORIGIN + 10, ORIGIN + 16))
    got = net.gateway.source(victim.meter_id).readings(ORIGIN, 26)
    t = true(victim, ORIGIN, 26)
    flagged = [r.index - ORIGIN for r in got if r.status is MeterStatus.ERROR]
    assert flagged == [10, 11, 12, 13, 14, 15, 16]
    intervals = derive_intervals(got[0], got[1:], victim.config.medium.max_interval)
    gap = [i for i in intervals if i.error]
    assert [i.index - ORIGIN for i in gap] == flagged
    assert sum(i.energy_wh for i in gap) == t[16].register_wh - t[9].register_wh > 0
    assert sum(i.energy_wh for i in intervals) == t[25].register_wh - t[0].register_wh
    for other in net.sensors.values():  # the others are untouched
        if other is not victim:
            assert net.gateway.source(other.meter_id).readings(ORIGIN, 26) == true(
                other, ORIGIN, 26
            )


def test_an_interrupted_receiver_hears_nothing() -> None:
    net = build(MIX[:3])
    net.run(ORIGIN, 4)
    net.gateway.receiving = False
    net.run(ORIGIN + 4, 3)
    net.gateway.receiving = True
    net.run(ORIGIN + 7, 4)
    assert net.stats.outcomes == Counter({"accepted": 8 * 3, "not-receiving": 3 * 3})
    for s in net.sensors.values():
        got = net.gateway.source(s.meter_id).readings(ORIGIN, 11)
        assert [r.index - ORIGIN for r in got if r.status is MeterStatus.ERROR] == [4, 5, 6, 7]


def test_wired_meters_bypass_the_radio() -> None:
    net = build(MIX, ChannelConfig(loss=Loss(probability=1.0)))
    stats = net.run(ORIGIN, 12)
    wired = [s for s in net.sensors.values() if s.config.interface is Interface.WIRED]
    wireless = [s for s in net.sensors.values() if s.config.interface is Interface.WIRELESS]
    assert stats.sent == 12 * len(MIX)
    assert stats.received == stats.accepted == 12 * len(wired)
    assert net.channel.stats.sent == net.channel.stats.lost == 12 * len(wireless)
    for s in wired:
        assert net.gateway.source(s.meter_id).readings(ORIGIN, 12) == true(s, ORIGIN, 12)
    for s in wireless:
        assert net.gateway.source(s.meter_id).received == {}


@pytest.mark.parametrize("every", [2, 4])
def test_meters_sending_less_often(every: int) -> None:
    net = build(electricity(1), send_every=every)
    net.run(ORIGIN, 24)
    kept = sorted(i - ORIGIN for _, i in accepted_keys(net))
    # the meter's own schedule counts from its installation reading (ORIGIN - 1)
    assert kept == [k for k in range(24) if (k + 1) % every == 0]
    assert net.stats.sent == net.stats.accepted == 24 // every


def test_the_last_run_leaves_the_consumer_log_complete_on_file(tmp_path: Path) -> None:
    """The consumer log's file is written in batches; a run that ends (``flush``) writes
    the rest, so the file holds every reading the gateway kept."""
    gw = SmartMeterGateway("gw-file", folder=tmp_path)
    sensors = [
        Sensor(SensorConfig(f"{50000000 + n:08d}", Medium.WATER, seed=n, key=KEY))
        for n in range(30)
    ]
    for s in sensors:
        gw.configure_meter(MeterRecord(s.meter_id, Medium.WATER, "c-1", Security.AES, KEY))
    net = FieldNetwork(gw, sensors, origin=ORIGIN)
    net.run(ORIGIN, 40, flush=False)  # 1,200 readings: one batch on file
    on_file = (tmp_path / "consumer.jsonl").read_text().splitlines()
    assert len(on_file) == GatewayLog.BATCH
    net.run(ORIGIN + 40, 2)
    lines = (tmp_path / "consumer.jsonl").read_text().splitlines()
    assert len(lines) == net.stats.accepted == 30 * 42
    assert lines == [e.to_json() for e in gw.logs["consumer"].entries]
