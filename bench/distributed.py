"""Benchmark of the distributed layout (issue: distributed mode) on one machine.

1. **Throughput with 1 and 2 legal workers** (the default): the distributed layout
   (3 NATS nodes with R=3 streams, PostgreSQL, every process from its configuration file)
   with ``--workers`` competing legal processes, one FHE thread each. The gateway's
   messages for ``--meters`` meters x ``--days`` days of TAF 3 (load-dependent, bit-sliced,
   the expensive tariff) are made first; timed is everything from sending them until legal
   has read out every meter's result. The gateways send as they would: each day's
   transmission from every meter, the closings at the period's end. Periods in a row: in
   the first the workers load each customer's evaluation keys as they meet them; more
   follow until every worker has met every customer (so holds all keys); the next
   ``--measured`` (3) are measured, the steady state. Readings per second = meters x days
   x 96 / the median of their times: on a shared 2-core machine one period's time varies
   by some 10 % from run to run.
   The issue's bar: 2 workers reach at least 1.6 times the 1-worker throughput.
2. **The fault drill** (``--drill``): a month of TAF 1 readings for 3 meters while each
   service type, a broker node and PostgreSQL fail in turn (:mod:`metrocloud.deploy.faults`);
   per fault, how long until the part served again and until the backlog was handled.

3. **Broker nodes killed again and again** (``--node-kills 24``): the drill with only
   ``kill -9`` of a NATS node, each node in turn, one slice of the month per kill.
4. **Two FHE processes on two cores** (``--pair``): the machine's own ceiling for two
   single-threaded workers.

With each throughput run the CPU seconds of every process during the measured period are
printed: what the workers share their cores with.

Usage: ``python bench/distributed.py [--meters 6] [--days 7] [--workers 1 2] [--measured 3]``,
``python bench/distributed.py --drill``, ``--node-kills 24``, ``--pair``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
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


class ReadOutWatch:
    """Counts legal's read-outs in the logbook as they come, on one connection kept open
    and reading only the entries it has not seen: the bench's polling (every 0.25 s) must
    cost the machine next to nothing, for the workers share it. (A fresh connection and a
    read of every entry per poll cost PostgreSQL a backend process each time.)"""

    def __init__(self, cluster: DistributedCluster) -> None:
        self._book = open_logbook(cluster.logbook_url, read_only=True)
        self._next = 0
        self.count = 0

    def poll(self) -> int:
        """The number of read-outs logged so far."""
        for entry in self._book.entries(kind=EventKind.PROCESSING, start=self._next):
            self._next = entry.seq + 1
            self.count += entry.event.detail.get("step") == "read-out"
        return self.count

    def close(self) -> None:
        self._book.close()


def workers_used(cluster: DistributedCluster) -> dict[str, int]:
    found: dict[str, int] = {}
    with open_logbook(cluster.logbook_url) as book:
        for e in book.entries(kind=EventKind.PROCESSING):
            worker = str(e.event.detail.get("worker"))
            found[worker] = found.get(worker, 0) + 1
    return found


def cpu_seconds(root: Path) -> dict[str, float]:
    """CPU seconds (user + system) so far per kind of process of the layout under ``root``:
    each metrocloud process by its configuration's name (with the helper processes it
    started, such as communication's ciphertext inspector), the NATS nodes together,
    PostgreSQL together. Other processes on the machine are not counted."""
    tick = os.sysconf("SC_CLK_TCK")
    kinds: dict[str, str] = {}
    parents: dict[str, str] = {}
    spent: dict[str, float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parents[pid], spent[pid] = stat[1], (int(stat[11]) + int(stat[12])) / tick
        if str(root) not in command:
            continue
        if "nats-server" in command:
            kinds[pid] = "NATS nodes"
        elif "postgres" in command:
            kinds[pid] = "PostgreSQL"
        elif "--config" in command:
            kinds[pid] = Path(command.split("--config")[-1].split()[0]).stem
    found: dict[str, float] = {}
    for pid, seconds in spent.items():
        kind = kinds.get(pid) or kinds.get(parents[pid])  # PostgreSQL's backends too
        if kind is not None:
            found[kind] = found.get(kind, 0.0) + seconds
    return found


def timeline(cluster: DistributedCluster, path: Path) -> None:
    """Every arrival, evaluation and read-out in the logbook, one line each (time, actor,
    step, meter, transmission): where the workers waited."""
    with open_logbook(cluster.logbook_url) as book, path.open("w") as out:
        for e in book.entries():
            ev = e.event
            step = ev.detail.get("step") or ev.detail.get("what") or ""
            if ev.kind in (EventKind.ARRIVAL, EventKind.PROCESSING):
                worker = ev.detail.get("worker", ev.actor)
                out.write(f"{ev.time.isoformat()} {worker} {step} {ev.subject} "
                          f"{ev.detail.get('seq', '')}\n")  # fmt: skip


def bill_period(
    cluster: DistributedCluster, pipeline: Pipeline, done_before: int, cpu: dict[str, float]
) -> float:
    """Seconds from sending the period's messages until every meter is read out. The CPU
    seconds of every process over that time go into ``cpu`` (this process, which plays
    the gateways sending, as ``gateways``)."""
    meters = len(pipeline.meter_ids)
    # As the gateways send them: each day's transmission from every meter, the period's
    # closings at its end.
    per_meter = [pipeline.uploads(meter) for meter in pipeline.meter_ids]
    messages = [m for day in zip(*per_meter, strict=True) for m in day]
    before, own = cpu_seconds(cluster.data.root), os.times()
    started = time.perf_counter()
    asyncio.run(pipeline.send(messages))
    watch = ReadOutWatch(cluster)
    try:
        while watch.poll() < done_before + meters:
            time.sleep(0.25)
    finally:
        watch.close()
    elapsed = time.perf_counter() - started
    after, own_after = cpu_seconds(cluster.data.root), os.times()
    cpu.update({k: v - before.get(k, 0.0) for k, v in after.items()})
    cpu["gateways"] = own_after.user + own_after.system - own.user - own.system
    outcomes = asyncio.run(pipeline.collect(timeout_s=300))
    assert len(outcomes) == meters and all(o.ok for o in outcomes), "a bill did not verify"
    return elapsed


def warm(cluster: DistributedCluster, meters: list[str]) -> bool:
    """Whether every legal worker has handled every meter, so holds every customer's
    evaluation keys (a worker loads them when it first meets the customer)."""
    met: dict[str, set[str]] = {
        name: set() for name in cluster.processes if name.startswith("legal")
    }
    with open_logbook(cluster.logbook_url) as book:
        for e in book.entries(kind=EventKind.PROCESSING):
            met.setdefault(str(e.event.detail.get("worker")), set()).add(e.event.subject)
    return all(set(meters) <= seen for seen in met.values())


WARM_UP_PERIODS = 6


def throughput(
    workers: int,
    meters: int,
    days: int,
    tariff: str,
    measured: int = 3,
    timeline_to: str | None = None,
) -> tuple[float, int, list[float], float, dict[str, int]]:
    """A first period (the workers load the customers' evaluation keys as they meet them),
    more periods until every worker holds every customer's keys, then ``measured`` periods
    in the steady state. Returns the first period's time, the number of periods before the
    measured ones, their times, the readings/s of their median, and the work per worker in
    them."""
    tmp = Path(tempfile.mkdtemp(prefix="mc-bench-dist-"))
    cluster = DistributedCluster(tmp / "cloud", legal_workers=workers, monitor=False)
    try:
        cluster.start()
        config = PipelineConfig(meters=meters, days=days, tariff=tariff)
        pipeline = Pipeline(cluster, config)
        pipeline.provision()
        asyncio.run(pipeline.register_keys())

        def period(n: int) -> Pipeline:
            start = config.first_day + timedelta(days=days * n)
            return replace(pipeline, config=replace(config, first_day=start))

        cold = bill_period(cluster, pipeline, 0, {})
        done = 1
        while not warm(cluster, pipeline.meter_ids) and done < WARM_UP_PERIODS:
            bill_period(cluster, period(done), meters * done, {})
            done += 1
        before = workers_used(cluster)
        times: list[float] = []
        for n in range(done, done + measured):
            spent: dict[str, float] = {}
            times.append(bill_period(cluster, period(n), meters * n, spent))
            busy = sum(spent.values()) / times[-1]
            print(f"  {workers} worker(s), CPU seconds in the {times[-1]:.1f} s of measured "
                  f"period {n - done + 1} ({busy:.2f} of {os.cpu_count()} cores busy): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in sorted(spent.items(),
                              key=lambda kv: -kv[1]) if v >= 0.1), flush=True)  # fmt: skip
        share = {k: v - before.get(k, 0) for k, v in workers_used(cluster).items()}
        if timeline_to:
            timeline(cluster, Path(f"{timeline_to}-{workers}.txt"))
        return cold, done, times, meters * days * 96 / statistics.median(times), share
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
    parser.add_argument(
        "--measured", type=int, default=3, help="steady periods measured (their median counts)"
    )
    parser.add_argument("--drill", action="store_true", help="run the fault drill instead")
    parser.add_argument("--pair", action="store_true", help="two FHE processes on two cores")
    parser.add_argument("--node-kills", type=int, metavar="N", help="a drill of N node kills")
    parser.add_argument(
        "--timeline", metavar="PREFIX", help="write each run's logbook timeline to PREFIX-N.txt"
    )
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
    if args.measured < 1:
        parser.error("--measured: at least one period")
    print(f"{args.meters} meters x {args.days} days of {args.tariff}, one FHE thread per worker")
    rows = []
    base = None
    for workers in args.workers:
        cold, done, times, rate, used = throughput(
            workers, args.meters, args.days, args.tariff, args.measured, args.timeline
        )
        base = base or rate
        shares = ", ".join(f"{k}: {v}" for k, v in sorted(used.items()))
        rows.append(f"| {workers} | {cold:.1f} | {done} | {' / '.join(f'{t:.1f}' for t in times)} "
                    f"| {rate:,.0f} | {rate / base:.2f} | {shares} |")  # fmt: skip
    print("| legal workers | first period, s | periods before | measured periods, s "
          "| readings/s (median) | speed-up | work per worker (events) |")  # fmt: skip
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
