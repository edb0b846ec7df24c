"""Benchmark of the distributed layout (issue: distributed mode) on one machine.

1. **Throughput with 1 and 2 legal workers** (the default): the distributed layout
   (3 NATS nodes with R=3 streams, PostgreSQL, every process from its configuration file)
   with ``--workers`` competing legal processes, one FHE thread each. The gateway's
   messages for ``--meters`` meters x ``--days`` days of TAF 3 (load-dependent, bit-sliced,
   the expensive tariff) are made first; timed is everything from sending them until legal
   has read out every meter's result. Two periods in a row: in the first the workers load
   each customer's evaluation keys as they meet them; the second is the steady state.
   Readings per second = meters x days x 96 / the second period's time.
   The issue's bar: 2 workers reach at least 1.6 times the 1-worker throughput.
2. **The fault drill** (``--drill``): a month of TAF 1 readings for 3 meters while each
   service type, a broker node and PostgreSQL fail in turn (:mod:`metrocloud.deploy.faults`);
   per fault, how long until the part served again and until the backlog was handled.

3. **Broker nodes killed again and again** (``--node-kills 24``): the drill with only
   ``kill -9`` of a NATS node, each node in turn, one slice of the month per kill.
4. **Two FHE processes on two cores** (``--pair``): the machine's own ceiling for two
   single-threaded workers.

With each throughput run the CPU seconds of every process during the second period are
printed: what the workers share their cores with.

Usage: ``python bench/distributed.py [--meters 6] [--days 7] [--workers 1 2]``,
``python bench/distributed.py --drill``, ``--node-kills 24``, ``--pair``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from benchlib import machine
from metrocloud.core.events import EventKind
from metrocloud.deploy.faults import FAULTS, run_drill
from metrocloud.deploy.layout import DistributedCluster
from metrocloud.logbook.transparency import open_logbook
from metrocloud.testbed.pipeline import Pipeline, PipelineConfig


def read_outs(cluster: DistributedCluster) -> int:
    with open_logbook(cluster.logbook_url) as book:
        return sum(
            1
            for e in book.entries(kind=EventKind.PROCESSING)
            if e.event.detail.get("step") == "read-out"
        )


def workers_used(cluster: DistributedCluster) -> dict[str, int]:
    found: dict[str, int] = {}
    with open_logbook(cluster.logbook_url) as book:
        for e in book.entries(kind=EventKind.PROCESSING):
            worker = str(e.event.detail.get("worker"))
            found[worker] = found.get(worker, 0) + 1
    return found


def cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) so far per kind of process: each metrocloud process by
    its configuration's name, the NATS nodes together, PostgreSQL together."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[str, float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "nats-server" in command:
            kind = "NATS nodes"
        elif "postgres" in command:
            kind = "PostgreSQL"
        elif "--config" in command:
            kind = Path(command.split("--config")[-1].split()[0]).stem
        else:
            continue
        found[kind] = found.get(kind, 0.0) + (int(stat[11]) + int(stat[12])) / tick
    return found


def bill_period(cluster: DistributedCluster, pipeline: Pipeline, done_before: int) -> float:
    """Seconds from sending the period's messages until every meter is read out."""
    meters = len(pipeline.meter_ids)
    messages = [m for meter in pipeline.meter_ids for m in pipeline.uploads(meter)]
    started = time.perf_counter()
    asyncio.run(pipeline.send(messages))
    while read_outs(cluster) < done_before + meters:
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    outcomes = asyncio.run(pipeline.collect(timeout_s=300))
    assert len(outcomes) == meters and all(o.ok for o in outcomes), "a bill did not verify"
    return elapsed


def throughput(
    workers: int, meters: int, days: int, tariff: str
) -> tuple[float, float, float, dict[str, int]]:
    """A first period (the workers load the customers' evaluation keys as they meet them),
    then a second one: the steady state. Returns both times, the second's readings/s and
    the work per worker."""
    tmp = Path(tempfile.mkdtemp(prefix="mc-bench-dist-"))
    cluster = DistributedCluster(tmp / "cloud", legal_workers=workers, monitor=False)
    try:
        cluster.start()
        config = PipelineConfig(meters=meters, days=days, tariff=tariff)
        first = Pipeline(cluster, config)
        first.provision()
        asyncio.run(first.register_keys())
        cold = bill_period(cluster, first, 0)
        later = replace(config, first_day=config.first_day + timedelta(days=days))
        before = cpu_seconds()
        steady = bill_period(cluster, replace(first, config=later), meters)
        after = cpu_seconds()
        spent = {k: v - before.get(k, 0.0) for k, v in after.items()}
        print(f"  {workers} worker(s), CPU seconds in the {steady:.1f} s second period: "
              + ", ".join(f"{k} {v:.1f}" for k, v in sorted(spent.items(), key=lambda kv: -kv[1])
                          if v >= 0.1), flush=True)  # fmt: skip
        return cold, steady, meters * days * 96 / steady, workers_used(cluster)
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def drill(faults: tuple[str, ...] = FAULTS) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="mc-bench-drill-"))
    cluster = DistributedCluster(tmp / "cloud", legal_workers=2)
    try:
        cluster.start()
        pipeline = Pipeline(
            cluster, PipelineConfig(meters=3, days=31, readings_per_transmission=96)
        )
        pipeline.provision()
        asyncio.run(pipeline.register_keys())
        print("| fault | back in service | backlog handled |")
        print("| --- | ---: | ---: |")
        run_drill(
            cluster,
            pipeline,
            faults,
            progress=lambda r: print(
                f"| {r.fault} | {r.back_s:.1f} s | {r.caught_up_s:.1f} s |", flush=True
            ),
        )
        outcomes = asyncio.run(pipeline.collect(timeout_s=300))
        verified = sum(o.ok for o in outcomes)
        print(f"\nbills verified after the drill: {verified} of {len(outcomes)}")
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


PAIR_PROBE = """
import os, sys, time
import openfhe as o
p = o.CCParamsBFVRNS(); p.SetPlaintextModulus(65537); p.SetMultiplicativeDepth(4)
p.SetRingDim(16384)
cc = o.GenCryptoContext(p)
cc.Enable(o.PKESchemeFeature.PKE); cc.Enable(o.PKESchemeFeature.LEVELEDSHE)
k = cc.KeyGen(); cc.EvalMultKeyGen(k.secretKey)
c = cc.Encrypt(k.publicKey, cc.MakePackedPlaintext([1, 2, 3]))
t = time.perf_counter()
for _ in range(60):
    cc.EvalMult(c, c)
print(time.perf_counter() - t)
"""


def pair() -> None:
    """How two single-threaded FHE processes share the two cores: 60 ciphertext products
    (N = 16384) alone, then two such processes at once."""
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", PAIR_PROBE], env=env, text=True,
                                stdout=subprocess.PIPE)  # fmt: skip

    alone = float(start().communicate()[0])
    both = [start(), start()]
    times = [float(p.communicate()[0]) for p in both]
    print(f"60 products: alone {alone:.2f} s; two at once {times[0]:.2f} s and {times[1]:.2f} s"
          f" (throughput x{2 * alone / max(times):.2f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--meters", type=int, default=6)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--tariff", default="taf3")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--drill", action="store_true", help="run the fault drill instead")
    parser.add_argument("--pair", action="store_true", help="two FHE processes on two cores")
    parser.add_argument("--node-kills", type=int, metavar="N", help="a drill of N node kills")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if args.drill:
        drill()
        return
    if args.node_kills:
        if not 1 <= args.node_kills <= 30:
            parser.error("--node-kills: 1 to 30 (a slice of the month per kill)")
        drill(tuple(f"kill broker node {n % 3}" for n in range(args.node_kills)))
        return
    if args.pair:
        pair()
        return
    print(f"{args.meters} meters x {args.days} days of {args.tariff}, one FHE thread per worker")
    print("| legal workers | first period, s | second period, s | readings/s (second) "
          "| speed-up | work per worker (events) |")  # fmt: skip
    print("| ---: | ---: | ---: | ---: | ---: | --- |")
    base = None
    for workers in args.workers:
        cold, steady, rate, used = throughput(workers, args.meters, args.days, args.tariff)
        base = base or rate
        shares = ", ".join(f"{k}: {v}" for k, v in sorted(used.items()))
        print(f"| {workers} | {cold:.1f} | {steady:.1f} | {rate:,.0f} | {rate / base:.2f} "
              f"| {shares} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
