"""Micro benchmark of the simulated radio channel (``metrocloud.field.channel``).

Puts ``--frames`` transmissions (default 200,000 frames of 20-60 bytes from 10,000 meters,
random start times at ~5 % channel load in mode T, so collisions happen) through a channel
and reports frames per second on one core: send plus deliver, with all impairments off and
with all on at their defaults, delivering in batches of 1,000 sends and after every send.
Transmissions are built before the timing; building them is reported separately.

Usage: ``python bench/channel.py [--frames N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import random
import time
from functools import partial

from benchlib import machine, timed
from metrocloud.field.channel import (
    MODE_T,
    Channel,
    ChannelConfig,
    ChannelStats,
    Transmission,
)

LOAD = 0.05  # share of the time the air is busy


def traffic(count: int, seed: int = 2026) -> list[Transmission]:
    """Frames of 20-60 bytes at random times such that the air is busy ``LOAD`` of the time."""
    rng = random.Random(seed)
    frames = [rng.randbytes(rng.randrange(20, 61)) for _ in range(4096)]
    mean_air = sum(MODE_T.airtime_s(len(f)) for f in frames) / len(frames)
    span = count * mean_air / LOAD
    starts = sorted(rng.uniform(0.0, span) for _ in range(count))
    return [
        Transmission(f"m{rng.randrange(10_000):05d}", frames[i & 4095], t)
        for i, t in enumerate(starts)
    ]


def run(config: ChannelConfig, txs: list[Transmission], batch: int) -> ChannelStats:
    channel = Channel(config, seed=1)
    send = channel.send
    deliver = channel.deliver
    for offset in range(0, len(txs), batch):
        chunk = txs[offset : offset + batch]
        for tx in chunk:
            send(tx)
        # everything that started before the next batch may be delivered
        nxt = offset + batch
        deliver(txs[nxt].start_s if nxt < len(txs) else chunk[-1].start_s)
    channel.flush()
    return channel.stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    t0 = time.perf_counter()
    txs = traffic(args.frames)
    build_rate = args.frames / (time.perf_counter() - t0)
    rows = []
    for name, config in (("all off", ChannelConfig()), ("all on", ChannelConfig.realistic())):
        for batch in (1_000, 1):
            count = args.frames if batch > 1 else args.frames // 4
            part = txs[:count]
            seconds, stats = timed(partial(run, config, part, batch), args.repeat)
            rows.append((name, batch, count, count / seconds, stats))
            print(f"- {name}, batches of {batch}: done", flush=True)

    print(f"\nmachine: {machine()}\n")
    print(f"Mode T, frames of 20-60 bytes, 10,000 senders, air busy {LOAD:.0%} of the time;")
    print(f"building the Transmission tuples: {build_rate:,.0f} per second (not timed below).\n")
    print("| impairments | deliver every | frames | frames/s | delivered | lost | corrupted |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, batch, count, rate, s in rows:
        every = f"{batch:,} sends" if batch > 1 else "1 send"
        print(
            f"| {name} | {every} | {count:,} | {rate:,.0f} | {s.delivered:,} "
            f"| {s.lost:,} | {s.corrupted:,} |"
        )
    on = next(s for name, _, _, _, s in rows if name == "all on")
    causes = ", ".join(f"{k} {v:,}" for k, v in on.lost_by_cause().items() if v)
    print(f"\nall on, lost by cause: {causes}; echoes {on.duplicated:,}")


if __name__ == "__main__":
    main()
