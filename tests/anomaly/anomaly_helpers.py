"""A watched cloud for the anomaly scenarios: the embedded cloud with fault-taking services,
a steady workload, and anomaly detection on a short training window."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from metrocloud.cloud.cluster import Cluster
from metrocloud.core.events import EventKind
from metrocloud.logbook import LogEntry
from metrocloud.testbed.disturb import Disturbances, fault_taking
from metrocloud.testbed.observe import logbook_entries
from metrocloud.testbed.pipeline import Pipeline, PipelineConfig
from metrocloud.testbed.workload import SteadyWorkload

RULES = """
[detector]
interval_s = 0.5
training_s = 12.0
stall_s = 8.0
"""
"""Faster than the defaults (2 s rounds, 120 s training, 15 s stall), so the suite stays
short; bench/anomaly.py measures the bars with the defaults."""
DETECTION_BAR_S = 30.0
"""The issue's bar: every fault yellow or red within this."""


@dataclass
class Watched:
    cluster: Cluster
    workload: SteadyWorkload
    disturbances: Disturbances

    def anomaly_events(self) -> list[LogEntry]:
        return logbook_entries(self.cluster.data, EventKind.ANOMALY)

    def state_of(self, component: str) -> str:
        """The component's latest state in the logbook (green before any event)."""
        states = [
            str(e.event.detail["state_to"])
            for e in self.anomaly_events()
            if e.event.detail["component"] == component
        ]
        return states[-1] if states else "green"

    def wait_state(self, component: str, states: set[str], timeout_s: float) -> float:
        """Seconds until ``component`` is in one of ``states``; TimeoutError otherwise."""
        started = time.monotonic()
        while self.state_of(component) not in states:
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(
                    f"{component} still {self.state_of(component)} after {timeout_s} s; "
                    f"events: {[e.event.detail for e in self.anomaly_events()][-6:]}"
                )
            time.sleep(0.2)
        return time.monotonic() - started

    def wait_trained(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(e.event.detail["rule"] == "baseline-learned" for e in self.anomaly_events()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no baseline after {timeout_s} s")
            time.sleep(0.5)


@contextmanager
def watched_cloud(root: Path, meters: int = 3, pace_s: float = 2.0) -> Iterator[Watched]:
    rules = root.parent / "rules.toml"
    rules.write_text(RULES)
    cluster = Cluster(root, options={"anomaly": {"rules": str(rules)}})
    fault_taking(cluster)
    cluster.start()
    workload: SteadyWorkload | None = None
    try:
        pipeline = Pipeline(cluster, PipelineConfig(meters=meters, days=7, tariff="taf1"))
        pipeline.provision()
        asyncio.run(pipeline.register_keys())
        workload = SteadyWorkload(pipeline, pace_s=pace_s, result_timeout_s=15.0)
        workload.start()
        watched = Watched(cluster, workload, Disturbances(cluster))
        watched.wait_trained()
        yield watched
        watched.disturbances.clear_all()
        stats = workload.stop()
        assert stats.periods > 0 and stats.verified > 0, stats
    finally:
        if workload is not None and workload.running:
            workload.stop()
        cluster.stop()


def detect(watched: Watched, fault: str, target: str, *, red: bool) -> float:
    """Inject ``fault`` into ``target`` (green first) and return the seconds until the logbook
    records ``target`` yellow or red; with ``red``, red must follow within the bar too."""
    watched.wait_state(target, {"green"}, timeout_s=120.0)
    started = time.monotonic()
    watched.disturbances.inject(fault, target, seconds=120.0)
    try:
        took = watched.wait_state(target, {"yellow", "red"}, DETECTION_BAR_S)
        if red:
            left = DETECTION_BAR_S - (time.monotonic() - started)
            watched.wait_state(target, {"red"}, max(0.0, left))
    finally:
        watched.disturbances.clear(target)
        if fault == "crash":
            watched.cluster.restart(target)
    return took
