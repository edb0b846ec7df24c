"""Benchmark of anomaly detection (issue: continuous monitoring, green / yellow / red).

The embedded cloud with fault-taking services (:mod:`metrocloud.testbed.faulty`) runs the
demo workload as a steady stream (:class:`~metrocloud.testbed.workload.SteadyWorkload`:
5 meters, a 30-day TAF 1 period of each every ``--pace-s`` seconds, every bill pulled and
verified). Anomaly detection runs with its defaults (2 s interval, 120 s training) unless
told otherwise.

1. **Normal run** (``--minutes 10``): after the baseline is learned, every ``anomaly`` event
   of the next minutes is counted. The bar: no red, at most one yellow.
2. **Overhead**: the anomaly process's CPU over the normal run, as a share of one core, and
   the CPU every component spends answering its scrapes (measured by scraping each
   ``--probe`` times), at the scrape interval. The bar: under 5 % of one core.
3. **Faults** (each in turn, the target green first): the time from injecting the fault
   until the logbook's ``anomaly`` event shows the target yellow or red, and until red; then
   the fault is cleared (a crashed service started again) and the time back to green.
   The bar: yellow or red within 30 s for every fault; red for a crash and a stall.

Usage: ``python bench/anomaly.py [--minutes 10] [--faults crash stall ...]``;
``--minutes 0`` skips the normal run, ``--faults`` with nothing skips the faults.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from benchlib import machine
from metrocloud.cloud.cluster import Cluster
from metrocloud.core.events import EventKind, LogEvent
from metrocloud.testbed.disturb import DEFAULT_TARGET, FAULTS, Disturbances, fault_taking
from metrocloud.testbed.observe import logbook_entries
from metrocloud.testbed.pipeline import Pipeline, PipelineConfig
from metrocloud.testbed.workload import SteadyWorkload

BAR_S = 30.0
RED_FAULTS = frozenset({"crash", "stall"})


def events(cluster: Cluster) -> list[LogEvent]:
    return [e.event for e in logbook_entries(cluster.data, EventKind.ANOMALY)]


def state_of(cluster: Cluster, component: str) -> str:
    mine = [e for e in events(cluster) if e.detail["component"] == component]
    states = [str(e.detail["state_to"]) for e in mine]
    return states[-1] if states else "green"


def wait_until(probe: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if probe():  # type: ignore[operator]
            return True
        time.sleep(0.25)
    return False


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


@dataclass
class FaultResult:
    fault: str
    target: str
    first_s: float | None
    first_level: str
    red_s: float | None
    rule: str
    back_green_s: float | None


def run_fault(cluster: Cluster, disturbances: Disturbances, fault: str) -> FaultResult:
    target = DEFAULT_TARGET[fault]
    if not wait_until(lambda: state_of(cluster, target) == "green", 240.0):
        print(f"  {target} did not come back to green before {fault}", flush=True)
    seen = len(events(cluster))
    injected = time.time()
    disturbances.inject(fault, target, seconds=120.0)
    first: LogEvent | None = None
    red: LogEvent | None = None
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline and red is None:
        for event in events(cluster)[seen:]:
            if event.detail["component"] != target:
                continue
            if first is None and event.detail["state_to"] in ("yellow", "red"):
                first = event
            if red is None and event.detail["state_to"] == "red":
                red = event
        if first is not None and fault not in RED_FAULTS and time.monotonic() > deadline - 45:
            break  # seen; a red may follow, but 15 s more are enough to tell
        time.sleep(0.25)
    disturbances.clear(target)
    if fault == "crash":
        cluster.restart(target)
    cleared = time.monotonic()
    green = wait_until(lambda: state_of(cluster, target) == "green", 240.0)
    return FaultResult(
        fault,
        target,
        None if first is None else first.time.timestamp() - injected,
        "none" if first is None else str(first.detail["state_to"]),
        None if red is None else red.time.timestamp() - injected,
        "" if first is None else str(first.detail["rule"]),
        time.monotonic() - cleared if green else None,
    )


def scrape_cost(cluster: Cluster, probes: int) -> dict[str, float]:
    """CPU seconds each component spends per answered scrape."""
    targets = {n: cluster.metrics_url(n) for n in cluster.services}
    cost: dict[str, float] = {}
    with httpx.Client(timeout=10) as http:
        for name, url in targets.items():
            pid = cluster.processes[name].pid
            before = cpu_seconds(pid)
            for _ in range(probes):
                http.get(url).raise_for_status()
            cost[name] = (cpu_seconds(pid) - before) / probes
    return cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--faults", nargs="*", default=list(FAULTS), choices=FAULTS)
    parser.add_argument("--meters", type=int, default=5)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--pace-s", type=float, default=5.0)
    parser.add_argument("--training-s", type=float, default=None)
    parser.add_argument("--interval-s", type=float, default=None)
    parser.add_argument("--probe", type=int, default=200)
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    options = {
        k: str(v)
        for k, v in {"training_s": args.training_s, "interval_s": args.interval_s}.items()
        if v is not None
    }
    root = Path(tempfile.mkdtemp(prefix="bench-anomaly-")) / "data"
    cluster = Cluster(root, options={"anomaly": options})
    fault_taking(cluster)
    cluster.start()
    workload: SteadyWorkload | None = None
    try:
        pipeline = Pipeline(cluster, PipelineConfig(meters=args.meters, days=args.days))
        pipeline.provision()
        asyncio.run(pipeline.register_keys())
        workload = SteadyWorkload(pipeline, pace_s=args.pace_s)
        workload.start()
        started = time.monotonic()
        trained = wait_until(
            lambda: any(e.detail["rule"] == "baseline-learned" for e in events(cluster)), 900.0
        )
        if not trained:
            sys.exit("no baseline learned")
        print(f"baseline learned after {time.monotonic() - started:.0f} s", flush=True)
        anomaly_pid = cluster.processes["anomaly"].pid
        if args.minutes > 0:
            seen = len(events(cluster))
            cpu0, wall0 = cpu_seconds(anomaly_pid), time.monotonic()
            periods0 = workload.stats.periods
            time.sleep(args.minutes * 60)
            share = (cpu_seconds(anomaly_pid) - cpu0) / (time.monotonic() - wall0)
            raised = [e.detail for e in events(cluster)[seen:] if e.detail["state_to"] != "green"]
            yellows = sum(d["state_to"] == "yellow" for d in raised)
            reds = sum(d["state_to"] == "red" for d in raised)
            print(
                f"normal run: {args.minutes:g} min, {workload.stats.periods - periods0} periods "
                f"billed ({workload.stats.verified} bills verified, {workload.stats.failed} not "
                f"so far): {yellows} yellow, {reds} red",
                flush=True,
            )
            for d in raised:
                print(f"  {d['component']} {d['state_to']} by {d['rule']}: {d['metrics']}")
            print(f"anomaly process: {100 * share:.2f} % of one core", flush=True)
        cost = scrape_cost(cluster, args.probe)
        interval = float(options.get("interval_s", 2.0))
        per_second = sum(cost.values()) / interval
        print(
            "scrape cost per answer (ms CPU): "
            + ", ".join(f"{n} {1000 * c:.2f}" for n, c in cost.items())
            + f"; all components at one scrape per {interval:g} s: {100 * per_second:.2f} % "
            "of one core",
            flush=True,
        )
        disturbances = Disturbances(cluster)
        results = [run_fault(cluster, disturbances, f) for f in args.faults]
        if results:
            print("| fault | target | first non-green | level | rule | red | back to green |")
            print("| --- | --- | ---: | --- | --- | ---: | ---: |")
        for r in results:
            first = "—" if r.first_s is None else f"{r.first_s:.1f} s"
            red = "—" if r.red_s is None else f"{r.red_s:.1f} s"
            back = "—" if r.back_green_s is None else f"{r.back_green_s:.1f} s"
            cells = (r.fault, r.target, first, r.first_level, r.rule, red, back)
            print("| " + " | ".join(cells) + " |")
        stats = workload.stop()
        workload = None
        print(f"workload: {stats.periods} periods, {stats.verified} verified, {stats.failed} not")
    finally:
        if workload is not None:
            workload.stop()
        cluster.stop()
        shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
