"""Benchmark of the Merkle-tree logbook storage (``metrocloud.logbook.tree``).

Appends realistic logbook events (the canonical JSON of a ``LogEvent``, about 250 bytes)
to an SQLite Merkle tree on disk, in batches, until it holds ``--entries`` (default 10^6);
reports appends per second per batch size, then the time of inclusion and consistency
proofs at the final size (median and 99th percentile over random indices and sizes, each
proof also verified, outside the timing), and of the root of an earlier size.

Usage: ``python bench/logbook.py [--entries N] [--proofs P]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from benchlib import machine
from metrocloud.core.events import EventKind, LogEvent
from metrocloud.logbook.merkle import verify_consistency, verify_inclusion
from metrocloud.logbook.tree import MerkleTree


def events(count: int, start: int) -> list[bytes]:
    return [
        LogEvent(
            actor="communication",
            kind=EventKind.ARRIVAL,
            subject=f"m-{(start + i) % 5000:04d}",
            detail={"what": "transmission", "seq": start + i, "gateway": "gw-0001"},
        ).to_json()
        for i in range(count)
    ]


def append_rate(tree: MerkleTree, total: int, batch: int) -> float:
    """Entries per second appending ``total`` entries in batches of ``batch``."""
    payloads = events(total, tree.size)
    start = time.perf_counter()
    for offset in range(0, total, batch):
        tree.append_many(payloads[offset : offset + batch])
    return total / (time.perf_counter() - start)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=200)
    args = parser.parse_args()
    rng = random.Random(2026)
    rows = []
    with tempfile.TemporaryDirectory(prefix="metrocloud-bench-logbook-") as tmp:
        tree = MerkleTree(Path(tmp) / "tree.sqlite")
        for batch, count in ((1, 2_000), (100, 50_000), (1_000, 200_000)):
            rows.append((batch, count, append_rate(tree, count, batch)))
            print(f"- batches of {batch}: done", flush=True)
        fill = max(0, args.entries - tree.size)
        build_start = time.perf_counter()
        payloads_at = 0
        while payloads_at < fill:
            step = min(100_000, fill - payloads_at)
            tree.append_many(events(step, tree.size))
            payloads_at += step
        build_s = time.perf_counter() - build_start
        size = tree.size
        root = tree.root()
        print(f"- filled to {size:,} entries in {build_s:.1f} s", flush=True)

        inclusion, consistency, earlier_root = [], [], []
        for _ in range(args.proofs):
            index = rng.randrange(size)
            t0 = time.perf_counter()
            path = tree.inclusion_proof(index)
            inclusion.append(time.perf_counter() - t0)
            assert verify_inclusion(tree.leaf_hash(index), index, size, path, root)

            old = rng.randrange(1, size)
            t0 = time.perf_counter()
            proof = tree.consistency_proof(old)
            consistency.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            old_root = tree.root(old)
            earlier_root.append(time.perf_counter() - t0)
            assert verify_consistency(old, size, old_root, root, proof)
        tree.close()

    print(f"\nmachine: {machine()}\n")
    print("## Appends (SQLite, WAL, synchronous=FULL: one fsynced transaction per batch)\n")
    print("| batch | entries | appends/s |")
    print("| ---: | ---: | ---: |")
    for batch, count, rate in rows:
        print(f"| {batch:,} | {count:,} | {rate:,.0f} |")
    print(f"\n## Proofs at {size:,} entries ({args.proofs} random each, verified)\n")
    print("| operation | median | p99 |")
    print("| --- | ---: | ---: |")
    for name, values in (
        ("inclusion proof", inclusion),
        ("consistency proof", consistency),
        ("root of an earlier size", earlier_root),
    ):
        print(
            f"| {name} | {statistics.median(values) * 1e3:.2f} ms | "
            f"{percentile(values, 0.99) * 1e3:.2f} ms |"
        )


if __name__ == "__main__":
    main()
