"""Benchmark of the embedded pipeline (issue: the measuring pipeline end to end).

Runs the demo workload (default 5 meters x 30 days, TAF 1) against a real embedded cloud and
prints, as a Markdown table: wall time per stage, bytes sent per meter-day, and the FHE cost
per step measured in-process (gateway encryption, legal evaluation and read-out, receiver
decryption and check). Usage: ``python bench/pipeline.py [--meters N] [--days D]``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import machine, timed
from metrocloud.cloud.cluster import Cluster
from metrocloud.fhe.context import CustomerKeyPair, Encryptor, deserialize_ciphertext
from metrocloud.fhe.evaluator import Evaluator
from metrocloud.fhe.packing import Interval
from metrocloud.field.gateway import block_for
from metrocloud.testbed.pipeline import Pipeline, PipelineConfig


def pipeline_run(meters: int, days: int, tariff: str) -> dict[str, float]:
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cluster = Cluster(Path(tmp) / "data")
        cluster.start()
        out["start broker and services"] = time.perf_counter() - t0
        try:

            async def go() -> None:
                p = Pipeline(cluster, PipelineConfig(meters=meters, days=days, tariff=tariff))
                t = time.perf_counter()
                p.provision()
                await p.register_keys()
                out["provision, key generation and registration"] = time.perf_counter() - t
                t = time.perf_counter()
                msgs = [m for meter in p.meter_ids for m in p.uploads(meter)]
                out["gateway: encrypt and sign"] = time.perf_counter() - t
                t = time.perf_counter()
                await p.send(msgs)
                out["gateway → ingress (acknowledged by the broker)"] = time.perf_counter() - t
                t = time.perf_counter()
                outcomes = await p.collect(timeout_s=600)
                out["until every result is verified"] = time.perf_counter() - t
                assert all(o.ok for o in outcomes), "a bill did not verify"
                out["bytes per meter-day"] = p.bytes_sent / (meters * days)

            asyncio.run(go())
        finally:
            t = time.perf_counter()
            cluster.stop()
            out["stop"] = time.perf_counter() - t
        out["total"] = time.perf_counter() - t0
    return out


def fhe_steps(days: int, tariff: str) -> dict[str, float]:
    """One meter's billing period as the pipeline sends it (the program's transmissions)."""
    config = PipelineConfig(meters=1, days=days, tariff=tariff)
    program = config.program()
    params = program.params
    period = config.period
    per_tx = program.transmission_intervals(period.intervals)
    txs = [
        [Interval(i, 1000) for i in range(first, first + count)]
        for first, count in period.chunks(per_tx)
    ]
    block = block_for(per_tx)
    keys = CustomerKeyPair.for_program(program, block)
    enc = Encryptor(params, keys.context, keys.public_key)
    vectors = [program.encode("m-bench", tx, block, period.start) for tx in txs]
    blobs = [[enc.encrypt(v) for v in tx] for tx in vectors]
    ev = Evaluator(keys.context, params.slots)

    def cloud() -> list[Any]:
        cts = [[deserialize_ciphertext(b, params, keys.key_tag) for b in tx] for tx in blobs]
        partials = [
            program.evaluate(ev, c, block, tx[0].index) for c, tx in zip(cts, txs, strict=True)
        ]
        return list(program.read_out(ev, partials, block, period.start))

    r = cloud()
    seconds = {
        "key generation per customer (s)": lambda: CustomerKeyPair.for_program(program, block),
        "gateway: encode + encrypt one meter-period, c and c' (ms)": lambda: [
            enc.encrypt(v) for tx in vectors for v in tx
        ],
        "legal: deserialize, evaluate, read out one meter-period, r and r' (ms)": cloud,
        "receiver: decrypt + decode r and r' (ms)": lambda: program.decode(
            [keys.decrypt(c, params.slots) for c in r], block
        ),
    }
    out = {}
    for name, fn in seconds.items():
        median = timed(fn, 3 if "(s)" in name else 5)[0]
        out[name] = median if "(s)" in name else 2e3 * median  # c and c' (r and r'): twice
    out["evaluation keys per customer (MB)"] = len(keys.evaluation_keys_bytes()) / 1e6
    out["transmissions per meter-period"] = len(txs)
    out["ciphertext size (kB)"] = len(blobs[0][0]) / 1e3
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--meters", type=int, default=5)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument(
        "--tariff", default="taf1", choices=["taf1", "taf2"]
    )  # TAF 3, 4: tariffs.py
    args = parser.parse_args()
    print(f"machine: {machine()}; OMP threads: legal 2, others 1\n")
    print(f"## Pipeline, {args.meters} meters x {args.days} days, {args.tariff}\n")
    print("| stage | seconds |\n| --- | ---: |")
    run = pipeline_run(args.meters, args.days, args.tariff)
    for name, value in run.items():
        if name == "bytes per meter-day":
            continue
        print(f"| {name} | {value:.2f} |")
    print(f"\nbytes sent per meter-day (c and c' included): {run['bytes per meter-day']:,.0f}\n")
    print("## FHE steps (median, in-process)\n")
    print("| step | value |\n| --- | ---: |")
    for name, value in fhe_steps(args.days, args.tariff).items():
        print(f"| {name} | {value:,.2f} |")


if __name__ == "__main__":
    main()
