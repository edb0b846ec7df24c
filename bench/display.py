"""What the customer's secure display costs (issue #11, docs/display.md).

For each tariff: an embedded cloud bills one meter for a month; the customer's display
made the keys (first start) and registered them. Then, on the customer's side:

* first start: making the FHE keys in the key folder (sealed with the passphrase);
* opening the key folder (scrypt, the secret key unsealed, context and keys loaded);
* one pull of the month: periods, result and transmissions over the bus, every check,
  decryption and the recomputation (median of ``--repeat``, a fresh display each time so
  nothing is cached);
* of that, checking the result alone and recomputing from the readings alone.

Prints a Markdown table. Usage: ``python bench/display.py [--tariffs taf1,taf2,taf3,taf4]
[--days 30] [--repeat 3]``. A month of TAF 3/4 takes a minute or two of cloud time.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import machine, timed
from metrocloud.cloud.cluster import Cluster
from metrocloud.receiver.keyfolder import KeyFolder
from metrocloud.receiver.recompute import recompute
from metrocloud.receiver.session import CustomerDisplay
from metrocloud.receiver.verify import check_result
from metrocloud.testbed.enrolment import OwnDisplays
from metrocloud.testbed.pipeline import Pipeline, PipelineConfig

PASSPHRASE = b"benchmark passphrase"


async def pulled(display: CustomerDisplay) -> tuple[bytes, list[bytes], Any]:
    nc = await display.connect()
    try:
        statements = await display.refresh(nc)
        (period,) = await display.receiver.fetch_periods(nc, "m-0001")
        raw = await display.receiver.fetch(nc, "m-0001", period)
        assert raw is not None
        verdict = statements[0].verdict
        assert verdict is not None and verdict.result is not None
        txs = [
            await display.receiver.fetch_transmission(nc, "m-0001", period, seq)
            for seq in range(verdict.result.transmissions)
        ]
        return raw, [t for t in txs if t is not None], statements[0]
    finally:
        await nc.drain()


async def refresh_once(folder: KeyFolder) -> float:
    display = CustomerDisplay.open(folder, PASSPHRASE)
    nc = await display.connect()
    try:
        t0 = time.perf_counter()
        (statement,) = await display.refresh(nc)
        elapsed = time.perf_counter() - t0
    finally:
        await nc.drain()
    assert statement.verified, statement.reason
    return elapsed


def measure(tariff: str, days: int, repeat: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"bench-display-{tariff}-"))
    cluster = Cluster(root / "cloud")
    cluster.start()
    try:
        own = OwnDisplays(cluster, root, PASSPHRASE, ["c-0001"])
        pipeline = Pipeline(
            cluster, PipelineConfig(meters=1, days=days, tariff=tariff), display_keys=own
        )

        async def month() -> None:
            pipeline.provision()
            await own.register()
            await pipeline.send(pipeline.uploads("m-0001"))
            outcomes = await pipeline.collect(timeout_s=900)
            assert outcomes[0].ok, outcomes[0].verdict.reason

        asyncio.run(month())
        folder = KeyFolder(root / "c-0001")
        program = pipeline.contracts["m-0001"]
        scratch = KeyFolder(root / "scratch")
        keygen_s, _ = timed(lambda: scratch.create_keys([program], PASSPHRASE), 1)
        open_s, display = timed(lambda: CustomerDisplay.open(folder, PASSPHRASE), repeat)
        raw, txs, statement = asyncio.run(pulled(display))
        period = statement.period
        check_s, verdict = timed(
            lambda: check_result(
                raw, display.keys, display.receiver.trust, meter_id="m-0001", period=period,
                contract=program,
            ),
            repeat,
        )  # fmt: skip
        recompute_s, outcome = timed(
            lambda: recompute(
                txs, display.keys, display.receiver.trust, meter_id="m-0001",
                customer_id="c-0001", period=period, contract=program, cloud=verdict.registers,
            ),
            repeat,
        )  # fmt: skip
        assert outcome.matches, outcome.reason
        pulls = [asyncio.run(refresh_once(folder)) for _ in range(repeat)]
        return {
            "tariff": tariff,
            "days": days,
            "result": len(raw) / 1e6,
            "readings": sum(len(t) for t in txs) / 1e6,
            "keygen": keygen_s,
            "open": open_s,
            "pull": sorted(pulls)[len(pulls) // 2],
            "check": check_s,
            "recompute": recompute_s,
        }
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tariffs", default="taf1,taf2,taf3,taf4")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = [measure(t, args.days, args.repeat) for t in args.tariffs.split(",")]
    print(f"Machine: {machine()}\n")
    print(
        "| tariff | days | result (MB) | readings (MB) | first start: make keys (s) "
        "| open the key folder (s) | pull, check, recompute (s) | of which: check the result (s) "
        "| recompute from the readings (s) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['tariff']} | {r['days']} | {r['result']:.2f} | {r['readings']:.2f} "
            f"| {r['keygen']:.2f} | {r['open']:.2f} | {r['pull']:.2f} | {r['check']:.2f} "
            f"| {r['recompute']:.2f} |"
        )


if __name__ == "__main__":
    main()
