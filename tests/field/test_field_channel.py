"""The simulated radio channel: air time, each impairment, the hooks, reproducibility.

Statistical checks use fixed seeds and 4-sigma bounds of the binomial or Poisson law they
test, so a correct channel fails them with a probability below 1e-4 for any seed.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrocloud.field.channel import (
    MODE_C,
    MODE_S,
    MODE_S_LONG,
    MODE_T,
    BitErrors,
    Channel,
    ChannelConfig,
    Collisions,
    Delay,
    Echo,
    Interference,
    Loss,
    PathLoss,
    Reception,
    Transmission,
)

HEADER_T = MODE_T.header_s
BYTE_T = MODE_T.byte_s


def payloads(count: int, size: int = 30, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(size) for _ in range(count)]


def spaced(count: int, size: int = 30, gap_s: float = 0.05, meters: int = 50) -> list[Transmission]:
    """Frames that never overlap (air time of 30 bytes in mode T: 4.1 ms)."""
    return [
        Transmission(f"m{i % meters:03d}", frame, 1.0 + i * gap_s)
        for i, frame in enumerate(payloads(count, size))
    ]


def run(
    config: ChannelConfig, txs: list[Transmission], seed: int = 7
) -> tuple[Channel, list[Reception]]:
    channel = Channel(config, seed)
    channel.send_many(txs)
    return channel, channel.flush()


def within(observed: float, mean: float, var: float, sigmas: float = 4.0) -> bool:
    return abs(observed - mean) <= sigmas * math.sqrt(var)


def bit_diff(a: bytes, b: bytes) -> int:
    return sum(bin(x ^ y).count("1") for x, y in zip(a, b, strict=True))


# -- radio modes ------------------------------------------------------------------------


def test_mode_rates_and_air_time() -> None:
    assert MODE_T.bit_rate_bps == pytest.approx(100_000 / 1.5)
    assert MODE_C.bit_rate_bps == pytest.approx(100_000)
    assert MODE_S.bit_rate_bps == pytest.approx(16_384)
    # mode T: 38 preamble + 10 sync + 2 postamble chips + 12 chips per byte at 100 kcps
    assert MODE_T.airtime_s(20) == pytest.approx((38 + 10 + 2 + 240) / 100_000)
    assert MODE_S_LONG.airtime_s(20) > MODE_S.airtime_s(20) > MODE_T.airtime_s(20)
    assert Channel(ChannelConfig(mode=MODE_C)).airtime_s(20) == pytest.approx(MODE_C.airtime_s(20))


# -- the ideal channel ------------------------------------------------------------------


def test_ideal_channel_delivers_each_frame_once_unchanged() -> None:
    txs = spaced(200)
    channel, out = run(ChannelConfig(), txs)
    assert [r.frame for r in out] == [tx.frame for tx in txs]
    assert [r.seq for r in out] == list(range(200))
    for r, tx in zip(out, txs, strict=True):
        assert r.start_s == tx.start_s
        assert r.end_s == pytest.approx(tx.start_s + MODE_T.airtime_s(len(tx.frame)))
        assert r.at_s == r.end_s
        assert r.rssi_dbm == -60.0
        assert not (r.corrupted or r.echo or r.injected)
    s = channel.stats
    assert (s.sent, s.delivered, s.lost, s.pending, s.corrupted) == (200, 200, 0, 0, 0)


def test_deliver_hands_out_only_what_has_arrived() -> None:
    channel = Channel(ChannelConfig(), seed=1)
    channel.send(Transmission("a", b"x" * 10, 1.0))
    channel.send(Transmission("b", b"y" * 10, 2.0))
    assert channel.deliver(1.0) == []
    assert channel.stats.pending == 2
    first = channel.deliver(1.5)
    assert [r.sender for r in first] == ["a"]
    assert channel.stats.pending == 1
    assert [r.sender for r in channel.deliver(3.0)] == ["b"]
    assert channel.deliver(10.0) == []


def test_causality_is_enforced() -> None:
    channel = Channel(ChannelConfig(), seed=1)
    channel.deliver(5.0)
    with pytest.raises(ValueError):
        channel.send(Transmission("a", b"x", 4.9))
    with pytest.raises(ValueError):
        channel.send(Transmission("a", b"x", math.nan))
    with pytest.raises(ValueError):
        channel.deliver(4.0)
    channel.send(Transmission("a", b"x", 5.0))


# -- loss -------------------------------------------------------------------------------


def test_loss_rate_within_binomial_bound() -> None:
    n, p = 20_000, 0.05
    channel, out = run(ChannelConfig(loss=Loss(p)), spaced(n, size=8, gap_s=0.01))
    s = channel.stats
    assert within(s.lost_loss, n * p, n * p * (1 - p))
    assert s.delivered == len(out) == n - s.lost_loss
    assert s.lost == s.lost_loss


# -- bit errors -------------------------------------------------------------------------


def test_bit_errors_flip_the_expected_number_of_bits_and_keep_lengths() -> None:
    n, size, ber = 4_000, 50, 1e-3
    txs = spaced(n, size=size, gap_s=0.02)
    channel, out = run(ChannelConfig(bit_errors=BitErrors(ber)), txs)
    assert len(out) == n
    flipped = 0
    corrupted = 0
    for r in out:
        sent = txs[r.seq].frame
        assert len(r.frame) == len(sent)
        d = bit_diff(r.frame, sent)
        flipped += d
        corrupted += d > 0
        assert r.corrupted == (d > 0)
    bits = n * size * 8
    assert within(flipped, bits * ber, bits * ber * (1 - ber))
    assert channel.stats.flipped_bits == flipped
    assert channel.stats.corrupted == corrupted
    p_frame = 1 - (1 - ber) ** (size * 8)
    assert within(corrupted, n * p_frame, n * p_frame * (1 - p_frame))


def test_bit_error_rate_one_inverts_every_bit() -> None:
    _, out = run(ChannelConfig(bit_errors=BitErrors(1.0)), [Transmission("a", b"\x00\xf0", 0.0)])
    assert out[0].frame == b"\xff\x0f"


# -- echoes -----------------------------------------------------------------------------


def test_echoes_are_delayed_weaker_copies() -> None:
    n, p = 10_000, 0.1
    lo, hi = 0.002, 0.01
    echo = Echo(probability=p, delay_s=(lo, hi), attenuation_db=6.0)
    channel, out = run(ChannelConfig(echo=echo), spaced(n, size=10, gap_s=0.02))
    firsts = {r.seq: r for r in out if not r.echo}
    copies = [r for r in out if r.echo]
    assert len(firsts) == n
    assert within(len(copies), n * p, n * p * (1 - p))
    assert channel.stats.duplicated == len(copies)
    assert channel.stats.receptions == len(out)
    for c in copies:
        orig = firsts[c.seq]
        lag = c.start_s - orig.start_s
        assert lo <= lag <= hi
        assert c.at_s - orig.at_s == pytest.approx(lag)
        assert c.frame == orig.frame
        assert c.rssi_dbm == pytest.approx(orig.rssi_dbm - 6.0)


# -- delay ------------------------------------------------------------------------------


def test_delay_jitter_reorders_but_deliveries_stay_time_ordered() -> None:
    base, jitter = 0.01, 0.05
    # frames every 5 ms (air time 4.1 ms): jitter of up to 50 ms reorders them
    txs = spaced(2_000, gap_s=0.005)
    _, out = run(ChannelConfig(delay=Delay(base, jitter)), txs)
    assert len(out) == 2_000
    assert all(a.at_s <= b.at_s for a, b in pairwise(out))
    for r in out:
        assert base <= r.at_s - r.end_s < base + jitter + 1e-12
    seqs = [r.seq for r in out]
    assert seqs != sorted(seqs)  # jitter did reorder


# -- interference -----------------------------------------------------------------------


def test_interference_bursts_are_a_poisson_process() -> None:
    rate, span = 5.0, 2_000.0
    inter = Interference(rate_hz=rate, duration_s=(0.001, 0.05), power_dbm=(-90.0, -70.0))
    channel = Channel(ChannelConfig(interference=inter), seed=3)
    bursts = [b for b in channel.bursts(0.0, span) if b.start_s >= 0.0]
    assert within(len(bursts), rate * span, rate * span)
    assert all(0.001 <= b.end_s - b.start_s <= 0.05 for b in bursts)
    assert all(-90.0 <= b.power_dbm <= -70.0 for b in bursts)
    assert all(a.start_s <= b.start_s for a, b in pairwise(bursts))
    # the process depends on time only: split queries and a second channel agree
    again = Channel(ChannelConfig(interference=inter), seed=3)
    halves = again.bursts(1000.0, span) + again.bursts(0.0, 1000.0)
    assert sorted(b for b in halves if b.start_s >= 0.0) == bursts
    gaps = [b.start_s - a.start_s for a, b in pairwise(bursts)]
    assert sum(gaps) / len(gaps) == pytest.approx(1 / rate, rel=0.05)


def _strong_burst(channel: Channel) -> tuple[float, float]:
    """A burst with no other burst within a second of it."""
    bursts = channel.bursts(0.0, 1_000.0)
    for prev, b, nxt in zip(bursts, bursts[1:], bursts[2:], strict=False):
        if b.start_s - prev.end_s > 1.0 and nxt.start_s - b.end_s > 1.0:
            return b.start_s, b.end_s
    raise AssertionError("no isolated burst")


def interference_config(power: float) -> ChannelConfig:
    return ChannelConfig(
        interference=Interference(
            rate_hz=0.2, duration_s=(0.1, 0.1), law="uniform", power_dbm=(power, power)
        )
    )


def test_burst_over_the_header_loses_the_frame() -> None:
    channel = Channel(interference_config(-40.0), seed=5)
    start, _ = _strong_burst(channel)
    channel.send(Transmission("m1", b"\x55" * 30, start - HEADER_T / 2))
    assert channel.flush() == []
    assert channel.stats.lost_interference == 1


def test_burst_over_the_data_garbles_exactly_the_overlapped_bytes() -> None:
    channel = Channel(interference_config(-40.0), seed=5)
    start, _ = _strong_burst(channel)
    frame = bytes(range(30))
    # the burst begins in the middle of data byte 5 and outlasts the frame
    channel.send(Transmission("m1", frame, start - HEADER_T - 5.5 * BYTE_T))
    (r,) = channel.flush()
    assert r.corrupted and len(r.frame) == 30
    assert r.frame[:5] == frame[:5]
    assert all(a != b for a, b in zip(r.frame[5:], frame[5:], strict=True))
    assert channel.stats.corrupted == 1


def test_weak_burst_is_captured() -> None:
    channel = Channel(interference_config(-67.0), seed=5)  # frame at -60: 7 dB above
    start, _ = _strong_burst(channel)
    channel.send(Transmission("m1", b"\x55" * 30, start - HEADER_T / 2))
    (r,) = channel.flush()
    assert r.frame == b"\x55" * 30 and not r.corrupted


def test_interference_loses_a_share_of_frames() -> None:
    config = ChannelConfig.realistic(
        loss=None, bit_errors=None, echo=None, collisions=None, delay=None, path_loss=None
    )
    channel, _ = run(config, spaced(20_000, gap_s=0.05))
    s = channel.stats
    assert s.lost_interference > 0 and s.corrupted > 0
    assert s.delivered + s.lost == 20_000


# -- collisions -------------------------------------------------------------------------


def test_equal_collision_loses_both() -> None:
    config = ChannelConfig(collisions=Collisions(capture_db=6.0))
    channel, out = run(
        config, [Transmission("a", b"A" * 20, 1.0), Transmission("b", b"B" * 20, 1.0)]
    )
    assert out == []
    assert channel.stats.lost_collision == 2


def test_without_the_collision_model_overlapping_frames_both_arrive() -> None:
    txs = [Transmission("a", b"A" * 20, 1.0), Transmission("b", b"B" * 20, 1.0)]
    _, out = run(ChannelConfig(), txs)
    assert sorted(r.frame for r in out) == [b"A" * 20, b"B" * 20]


@pytest.mark.parametrize(("margin", "captured"), [(7.0, True), (6.0, True), (5.9, False)])
def test_capture_needs_the_threshold(margin: float, captured: bool) -> None:
    channel = Channel(ChannelConfig(collisions=Collisions(capture_db=6.0)), seed=1)
    channel.send(Transmission("meter", b"M" * 20, 1.0))  # nominal -60 dBm
    channel.inject(b"X" * 20, 1.0001, rssi_dbm=-60.0 + margin)
    out = channel.flush()
    if captured:
        assert [(r.frame, r.injected) for r in out] == [(b"X" * 20, True)]
        assert channel.stats.lost_collision == 1
    else:
        assert out == []
        assert channel.stats.lost_collision == 2


def test_capture_by_distance() -> None:
    pl = PathLoss(shadowing_db=0.0, positions={"near": (5.0, 0.0), "far": (300.0, 0.0)})
    config = ChannelConfig(collisions=Collisions(), path_loss=pl)
    channel = Channel(config, seed=2)
    assert channel.link_rssi_dbm("near") - channel.link_rssi_dbm("far") > 6.0
    channel.send(Transmission("far", b"F" * 20, 1.0))
    channel.send(Transmission("near", b"N" * 20, 1.0002))  # within far's header
    (r,) = channel.flush()
    assert (r.sender, r.frame) == ("near", b"N" * 20)


def test_late_collision_garbles_the_first_and_loses_the_second() -> None:
    channel = Channel(ChannelConfig(collisions=Collisions()), seed=1)
    first = bytes(range(40))
    channel.send(Transmission("a", first, 1.0))
    # b starts in the middle of a's data byte 10, after a's receiver locked on
    channel.send(Transmission("b", b"B" * 40, 1.0 + HEADER_T + 10.5 * BYTE_T))
    (r,) = channel.flush()
    assert r.sender == "a" and r.corrupted
    assert r.frame[:10] == first[:10]
    assert all(x != y for x, y in zip(r.frame[10:], first[10:], strict=True))
    s = channel.stats
    assert (s.delivered, s.corrupted, s.lost_collision) == (1, 1, 1)


def test_force_collision_moves_the_second_sender() -> None:
    channel = Channel(ChannelConfig(collisions=Collisions()), seed=1)
    channel.force_collision("a", "b", offset_s=0.0002)
    channel.send(Transmission("c", b"C" * 20, 1.0))
    channel.send(Transmission("b", b"B" * 20, 2.0))
    channel.send(Transmission("a", b"A" * 20, 7.0))  # moved to 2.0002
    channel.send(Transmission("a", b"A" * 20, 9.0))  # the hook fired once
    out = channel.flush()
    assert [(r.sender, r.start_s) for r in out] == [("c", 1.0), ("a", 9.0)]
    assert channel.stats.lost_collision == 2
    with pytest.raises(ValueError):
        Channel(ChannelConfig()).force_collision("a", "b")


# -- path loss --------------------------------------------------------------------------


def test_path_loss_orders_links_by_distance_and_fixes_shadowing_per_link() -> None:
    pl = PathLoss(positions={f"m{i}": (10.0 * (i + 1), 0.0) for i in range(50)})
    config = ChannelConfig(path_loss=pl)
    ch1, ch2, other = Channel(config, 1), Channel(config, 1), Channel(config, 2)
    rssi = [ch1.link_rssi_dbm(f"m{i}") for i in range(50)]
    assert rssi == [ch2.link_rssi_dbm(f"m{i}") for i in reversed(range(50))][::-1]
    assert rssi != [other.link_rssi_dbm(f"m{i}") for i in range(50)]
    # shadowing is N(0, 8 dB) around the mean loss
    residual = [pl.tx_power_dbm - pl.mean_loss_db(10.0 * (i + 1)) - r for i, r in enumerate(rssi)]
    assert 4.0 < math.sqrt(sum(x * x for x in residual) / 50) < 12.0
    no_shadow = Channel(ChannelConfig(path_loss=PathLoss(shadowing_db=0.0)), 1)
    assert no_shadow.link_rssi_dbm("x") == pytest.approx(14.0 - PathLoss().mean_loss_db(20.0))
    # every frame of a link arrives with the link's power when fading is off
    _, out = run(config, [Transmission("m3", b"z", t) for t in (1.0, 2.0, 3.0)], seed=1)
    assert {r.rssi_dbm for r in out} == {rssi[3]}


def test_free_space_reference_loss() -> None:
    # 20 log10(4 pi f / c) at 1 m and 868.95 MHz
    assert PathLoss().reference_loss_db == pytest.approx(31.22, abs=0.01)


def test_frames_below_sensitivity_are_lost_and_place_moves_a_meter() -> None:
    pl = PathLoss(shadowing_db=0.0, positions={"m": (10.0, 0.0)})
    channel = Channel(ChannelConfig(path_loss=pl), seed=1)
    channel.send(Transmission("m", b"x" * 10, 1.0))
    channel.place("m", 20_000.0, 0.0)
    assert channel.link_rssi_dbm("m") < MODE_T.sensitivity_dbm
    channel.send(Transmission("m", b"x" * 10, 2.0))
    out = channel.flush()
    assert [r.start_s for r in out] == [1.0]
    assert channel.stats.lost_weak == 1


def test_fading_varies_power_per_frame() -> None:
    pl = PathLoss(shadowing_db=0.0, fading_db=3.0)
    _, out = run(ChannelConfig(path_loss=pl), spaced(2_000, gap_s=0.01, meters=1))
    powers = [r.rssi_dbm for r in out]
    mean = sum(powers) / len(powers)
    sd = math.sqrt(sum((p - mean) ** 2 for p in powers) / (len(powers) - 1))
    assert mean == pytest.approx(14.0 - pl.mean_loss_db(20.0), abs=4 * 3.0 / math.sqrt(2_000))
    assert sd == pytest.approx(3.0, rel=0.1)


# -- manipulation hooks -----------------------------------------------------------------


def test_interrupt_silences_one_sender_in_a_window() -> None:
    channel = Channel(ChannelConfig(), seed=1)
    channel.interrupt("m1", 10.0, 20.0)
    for t in range(30):
        channel.send(Transmission("m1", b"1", float(t)))
        channel.send(Transmission("m2", b"2", t + 0.5))
    out = channel.flush()
    m1 = [r.start_s for r in out if r.sender == "m1"]
    assert m1 == [float(t) for t in range(30) if not 10 <= t < 20]
    assert sum(r.sender == "m2" for r in out) == 30
    assert channel.stats.lost_interrupted == 10


def test_jam_interrupts_receiving() -> None:
    channel = Channel(ChannelConfig(), seed=1)
    channel.jam(10.0, 20.0)
    for t in range(30):
        channel.send(Transmission(f"m{t % 3}", b"x" * 20, float(t)))
    channel.send(Transmission("edge", b"x" * 20, 10.0 - MODE_T.airtime_s(20) / 2))
    out = channel.flush()
    assert [r.start_s for r in out] == [float(t) for t in range(30) if not 10 <= t < 20]
    assert channel.stats.lost_jammed == 11


def test_jam_drops_an_echo_that_arrives_in_the_window() -> None:
    channel = Channel(ChannelConfig(echo=Echo(1.0, delay_s=(0.5, 0.5))), seed=1)
    channel.send(Transmission("m", b"x" * 20, 1.0))
    channel.send(Transmission("m", b"y" * 20, 3.0))
    first = channel.deliver(1.1)
    assert [(r.frame, r.echo) for r in first] == [(b"x" * 20, False)]
    channel.jam(1.2, 2.0)  # after the frame, before its echo
    out = channel.flush()
    assert [(r.frame[:1], r.echo) for r in out] == [(b"y", False), (b"y", True)]
    s = channel.stats
    assert (s.delivered, s.duplicated, s.lost_jammed) == (2, 1, 0)


def test_inject_delivers_a_crafted_frame_untouched_by_random_impairments() -> None:
    config = ChannelConfig(loss=Loss(1.0), bit_errors=BitErrors(0.5), delay=Delay(0.0, 0.1))
    channel = Channel(config, seed=1)
    channel.send(Transmission("m1", b"real", 1.0))
    seq = channel.inject(b"\x00forged", 2.0, rssi_dbm=-42.0, sender="mallory")
    (r,) = channel.flush()
    assert (r.frame, r.rssi_dbm, r.sender, r.seq, r.injected) == (
        b"\x00forged",
        -42.0,
        "mallory",
        seq,
        True,
    )
    assert r.at_s == r.end_s
    s = channel.stats
    assert (s.sent, s.injected, s.delivered, s.lost_loss) == (1, 1, 1, 1)
    # with impair=True it goes through loss like any frame
    channel.inject(b"again", 10.0, rssi_dbm=-42.0, impair=True)
    assert channel.flush() == []


def test_reset_replays_identically_and_clears_hooks() -> None:
    config = ChannelConfig.realistic(interference=Interference(rate_hz=20.0))
    txs = dense_traffic(3_000)
    channel = Channel(config, seed=11)
    channel.jam(5.0, 6.0)
    channel.send_many(txs)
    first = channel.flush()
    channel.reset()
    assert channel.stats.sent == 0 and channel.horizon_s == -math.inf
    channel.send_many(txs)
    second = channel.flush()
    channel.reset()
    channel.jam(5.0, 6.0)
    channel.send_many(txs)
    assert channel.flush() == first
    assert second != first


# -- reproducibility --------------------------------------------------------------------


def dense_traffic(count: int, meters: int = 300, span_s: float = 60.0) -> list[Transmission]:
    """Random start times: about 20 % of frames overlap another."""
    rng = random.Random(99)
    txs = [
        Transmission(f"m{rng.randrange(meters):04d}", rng.randbytes(rng.randrange(12, 60)), t)
        for t in sorted(rng.uniform(0.0, span_s) for _ in range(count))
    ]
    return txs


def test_same_seed_same_deliveries_across_instances_and_batch_splits() -> None:
    config = ChannelConfig.realistic(
        interference=Interference(rate_hz=20.0), echo=Echo(probability=0.05)
    )
    txs = dense_traffic(5_000)
    _, whole = run(config, txs, seed=4)
    _, again = run(config, txs, seed=4)
    assert whole == again
    s = Channel(config, 4)
    s.send_many(txs)
    assert s.flush() == whole
    kinds = Counter((r.corrupted, r.echo) for r in whole)
    assert kinds[(True, False)] and kinds[(False, True)]  # the run exercises the paths
    for cuts in ([10.0, 20.0, 30.0], [0.5 * k for k in range(1, 120)], [59.999]):
        channel = Channel(config, 4)
        pieces: list[Reception] = []
        i = 0
        for cut in cuts:
            while i < len(txs) and txs[i].start_s < cut:
                channel.send(txs[i])
                i += 1
            pieces += channel.deliver(cut)
        channel.send_many(txs[i:])
        pieces += channel.flush()
        assert pieces == whole
    _, other = run(config, txs, seed=5)
    assert other != whole


def test_switching_one_impairment_leaves_the_draws_of_the_others() -> None:
    txs = spaced(3_000, gap_s=0.05)
    loss_only = ChannelConfig(loss=Loss(0.1))
    bits_only = ChannelConfig(bit_errors=BitErrors(2e-3))
    both = ChannelConfig(
        loss=Loss(0.1),
        bit_errors=BitErrors(2e-3),
        echo=Echo(0.2),
        delay=Delay(),
        path_loss=PathLoss(),
    )
    _, a = run(loss_only, txs)
    _, b = run(bits_only, txs)
    _, c = run(both, txs)
    assert {r.seq for r in a} == {r.seq for r in c if not r.echo}
    flipped = {r.seq: r.frame for r in b}
    assert all(r.frame == flipped[r.seq] for r in c)


# -- properties -------------------------------------------------------------------------

senders = st.sampled_from(["m1", "m2", "m3", "m4", "other-ism"])
sends = st.lists(
    st.tuples(senders, st.binary(min_size=0, max_size=40), st.floats(0.0, 2.0)),
    max_size=60,
)


@settings(max_examples=80, deadline=None)
@given(sends)
def test_ideal_channel_property(items: list[tuple[str, bytes, float]]) -> None:
    channel = Channel(ChannelConfig(), seed=0)
    for sender, frame, start in items:
        channel.send(Transmission(sender, frame, start))
    out = channel.flush()
    assert Counter((r.sender, r.frame, r.start_s) for r in out) == Counter(items)
    assert sorted(r.seq for r in out) == list(range(len(items)))
    assert all(a.at_s <= b.at_s for a, b in pairwise(out))


configs = st.builds(
    ChannelConfig,
    loss=st.none() | st.builds(Loss, st.floats(0.0, 1.0)),
    bit_errors=st.none() | st.builds(BitErrors, st.sampled_from([0.0, 1e-3, 0.05, 1.0])),
    echo=st.none() | st.builds(Echo, st.floats(0.0, 1.0)),
    interference=st.none() | st.builds(Interference, st.sampled_from([1.0, 20.0, 200.0])),
    collisions=st.none() | st.builds(Collisions, st.sampled_from([0.0, 6.0, 20.0])),
    delay=st.none() | st.builds(Delay, st.floats(0.0, 0.01), st.floats(0.0, 0.05)),
    path_loss=st.none() | st.builds(PathLoss, fading_db=st.sampled_from([0.0, 4.0])),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=configs,
    seed=st.integers(0, 2**64),
    items=sends,
    injects=st.lists(st.tuples(st.binary(max_size=20), st.floats(0.0, 2.0)), max_size=5),
    cuts=st.lists(st.floats(0.0, 2.5), max_size=4),
    jam=st.none() | st.tuples(st.floats(0.0, 2.0), st.floats(0.001, 0.5)),
)
def test_channel_properties(
    config: ChannelConfig,
    seed: int,
    items: list[tuple[str, bytes, float]],
    injects: list[tuple[bytes, float]],
    cuts: list[float],
    jam: tuple[float, float] | None,
) -> None:
    channel = Channel(config, seed)
    if jam is not None:
        channel.jam(jam[0], jam[0] + jam[1])
    # (start, injected?, sender, frame) in time order; injections are sent by "mallory"
    events = sorted(
        [(start, False, sender, frame) for sender, frame, start in items]
        + [(at, True, "mallory", frame) for frame, at in injects],
        key=lambda e: (e[0], e[1]),
    )
    sent: dict[int, bytes] = {}

    def put(start: float, injected: bool, sender: str, frame: bytes) -> None:
        if injected:
            sent[channel.inject(frame, start, rssi_dbm=-50.0, sender=sender)] = frame
        else:
            sent[channel.send(Transmission(sender, frame, start))] = frame

    out: list[Reception] = []
    i = 0
    for cut in sorted(cuts):
        while i < len(events) and events[i][0] < cut:
            put(*events[i])
            i += 1
        out += channel.deliver(max(cut, channel.horizon_s))
        s = channel.stats
        assert s.sent + s.injected == s.delivered + s.lost + s.pending
    for event in events[i:]:
        put(*event)
    out += channel.flush()
    assert channel.deliver(channel.horizon_s + 10.0) == []  # flush left nothing behind
    # time-ordered across calls
    assert all(a.at_s <= b.at_s for a, b in pairwise(out))
    # statistics add up
    s = channel.stats
    assert s.pending == 0
    assert s.sent == len(items) and s.injected == len(injects)
    assert s.sent + s.injected == s.delivered + s.lost
    firsts = [r for r in out if not r.echo]
    assert len(firsts) == s.delivered == len({r.seq for r in firsts})
    assert len(out) - len(firsts) == s.duplicated
    assert sum(r.corrupted for r in firsts) == s.corrupted
    # nothing appears that was never sent or injected; lengths never change
    for r in out:
        assert r.seq in sent
        original = sent[r.seq]
        assert len(r.frame) == len(original)
        assert (r.frame != original) == r.corrupted
        assert r.at_s >= r.end_s > r.start_s
    if (
        all(
            getattr(config, name) is None
            for name in ("loss", "bit_errors", "echo", "interference", "collisions")
        )
        and jam is None
    ):
        assert sorted(r.seq for r in out) == sorted(sent)
        assert all(r.frame == sent[r.seq] for r in out)
