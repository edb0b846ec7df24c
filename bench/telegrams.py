"""Benchmark of the meter telegram codec (``metrocloud.field.telegrams``) on one core.

A population of ``--meters`` electricity meters (own address and AES key each) sends one
telegram per interval: wireless M-Bus frame format A with CRCs, security mode 5, four
records (energy import and export in Wh, power in W, meter date-time), new values and a new
access number every interval. Measured, single-threaded, best of ``--repeat`` runs over
``--intervals`` intervals:

* encode: ``Telegram`` → frame bytes (mode 5 encryption and CRCs included);
* decode: frame bytes → ``Telegram`` (CRC checks, key lookup, decryption, records);
* encode + decode: both, one after the other, per telegram;
* build + encode + decode: also build the ``Telegram`` and its records from a reading;

then the same for unencrypted (mode 0) telegrams and for ECDSA-signed mode 5 telegrams
(metrocloud's extension: P-256 signing at the meter, verification at the gateway).

Usage: ``python bench/telegrams.py [--meters N] [--intervals K] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric import ec

from benchlib import machine
from metrocloud.field.telegrams import (
    ApplicationHeader,
    Coding,
    DeviceType,
    MeterAddress,
    Quantity,
    Record,
    Telegram,
    decode_wmbus,
    encode_wmbus,
)

START = datetime(2026, 3, 1)


def reading(meter: MeterAddress, interval: int, import_wh: int, mode: int) -> Telegram:
    """A typical electricity meter telegram: four records."""
    return Telegram(
        address=meter,
        header=ApplicationHeader(access_number=interval & 0xFF, security_mode=mode),
        records=(
            Record(quantity=Quantity.ENERGY, value=import_wh, unit="Wh", coding=Coding.INT48),
            Record(
                quantity=Quantity.ENERGY,
                value=import_wh // 7,
                unit="Wh",
                coding=Coding.INT48,
                vife=(0x3C,),  # backward flow: energy exported
            ),
            Record(quantity=Quantity.POWER, value=import_wh % 4000, unit="W", coding=Coding.INT32),
            Record(
                quantity=Quantity.DATE_TIME,
                value=START + timedelta(minutes=15 * interval),
                coding=Coding.INT32,
            ),
        ),
    )


def best_rate(run: Callable[[], int], repeat: int) -> float:
    """Telegrams per second of the fastest of ``repeat`` runs (each returns its count)."""
    best = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        count = run()
        best = max(best, count / (time.perf_counter() - t0))
    return best


def measure(
    meters: list[MeterAddress],
    keys: dict[MeterAddress, bytes],
    intervals: int,
    repeat: int,
    mode: int,
    signers: dict[MeterAddress, ec.EllipticCurvePrivateKey] | None,
) -> tuple[float, float, float, float, int]:
    rng = random.Random(1)
    registers = {meter: rng.randrange(10**6, 10**8) for meter in meters}
    telegrams = [
        reading(meter, interval, registers[meter] + 250 * interval, mode)
        for interval in range(intervals)
        for meter in meters
    ]
    key_for = keys.get if mode == 5 else (lambda meter: None)
    public = {meter: signer.public_key() for meter, signer in (signers or {}).items()}
    verify_key_for = public.get if signers else None

    def key(meter: MeterAddress) -> bytes | None:
        return keys[meter] if mode == 5 else None

    def signer(meter: MeterAddress) -> ec.EllipticCurvePrivateKey | None:
        return signers[meter] if signers else None

    frames = [encode_wmbus(t, key(t.address), signer=signer(t.address)) for t in telegrams]
    for frame, telegram in zip(frames[: len(meters)], telegrams, strict=False):
        decoded = decode_wmbus(frame, key_for, verify_key_for=verify_key_for)
        assert decoded.records == telegram.records

    def encode_all() -> int:
        for telegram in telegrams:
            encode_wmbus(telegram, key(telegram.address), signer=signer(telegram.address))
        return len(telegrams)

    def decode_all() -> int:
        for frame in frames:
            decode_wmbus(frame, key_for, verify_key_for=verify_key_for)
        return len(frames)

    def round_trip() -> int:
        for telegram in telegrams:
            frame = encode_wmbus(telegram, key(telegram.address), signer=signer(telegram.address))
            decode_wmbus(frame, key_for, verify_key_for=verify_key_for)
        return len(telegrams)

    def together() -> int:
        for interval in range(intervals):
            for meter in meters:
                telegram = reading(meter, interval, registers[meter] + 250 * interval, mode)
                frame = encode_wmbus(telegram, key(meter), signer=signer(meter))
                decode_wmbus(frame, key_for, verify_key_for=verify_key_for)
        return intervals * len(meters)

    return (
        best_rate(encode_all, repeat),
        best_rate(decode_all, repeat),
        best_rate(round_trip, repeat),
        best_rate(together, repeat),
        len(frames[0]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--intervals", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(2026)
    meters = [
        MeterAddress("MCL", f"{n:08d}", 1, DeviceType.ELECTRICITY) for n in range(args.meters)
    ]
    keys = {meter: rng.randbytes(16) for meter in meters}
    few = meters[: max(1, args.meters // 10)]
    signers = {meter: ec.generate_private_key(ec.SECP256R1()) for meter in few}
    rows = [
        ("mode 5 (AES-128-CBC)", *measure(meters, keys, args.intervals, args.repeat, 5, None)),
        ("mode 0 (unencrypted)", *measure(meters, keys, args.intervals, args.repeat, 0, None)),
        (
            "mode 5 + ECDSA P-256 signature",
            *measure(few, keys, args.intervals, max(1, args.repeat // 2), 5, signers),
        ),
    ]
    print(f"\nmachine: {machine()}\n")
    print(
        f"{args.meters:,} meters × {args.intervals} intervals, 4 records per telegram, "
        f"best of {args.repeat} runs, one core\n"
    )
    print(
        "| telegram | bytes | encode/s | decode/s | encode + decode/s | build + encode + decode/s |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, encode_rate, decode_rate, both_rate, together_rate, size in rows:
        print(
            f"| {name} | {size} | {encode_rate:,.0f} | {decode_rate:,.0f} | "
            f"{both_rate:,.0f} | {together_rate:,.0f} |"
        )


if __name__ == "__main__":
    main()
