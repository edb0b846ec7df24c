"""Faults injected into a running embedded cloud, for anomaly detection to find.

=================  ===========================================  ==========================
fault              what happens                                 default target
=================  ===========================================  ==========================
``cpu-hog``        a thread in the process burns one core       ``legal``
``memory-leak``    the process holds 16 MiB more every second   ``legal``
``stall``          its consumers stop handling what they fetch  ``storage``
``slow-storage``   every store call waits 0.3 s                 ``storage``
``flood``          junk messages at ingress, ``rate`` per s     ``communication``
``crash``          ``kill -9`` of the process                   ``legal``
=================  ===========================================  ==========================

The first four need the process started through :mod:`metrocloud.testbed.faulty`
(:func:`fault_taking`); the fault lasts ``seconds`` or until :func:`clear`. A crashed
process stays down until it is started again.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field

from metrocloud.bus.connect import connect
from metrocloud.bus.subjects import ANOMALY
from metrocloud.cloud.cluster import Cluster
from metrocloud.testbed.faulty import ENTRY as FAULTY
from metrocloud.testbed.faulty import IN_PROCESS, fault_file_name

FAULTS = (*IN_PROCESS, "flood", "crash")
DEFAULT_TARGET = {
    "cpu-hog": "legal",
    "memory-leak": "legal",
    "stall": "storage",
    "slow-storage": "storage",
    "flood": "communication",
    "crash": "legal",
}
FLOOD_SUBJECT = "ingress.upload.flood"
"""Where the flood goes: a gateway's upload subject, with messages that are no uploads."""


def fault_taking(cluster: Cluster) -> None:
    """Start every service of ``cluster`` (but anomaly detection) through the fault-taking
    entry point; call before :meth:`Cluster.start`."""
    for process in cluster.services:
        if cluster.service_of(process) != ANOMALY:
            cluster.entries.setdefault(process, FAULTY)


@dataclass
class Flood:
    """Messages of random bytes published as the gateway, ``rate`` per second."""

    cluster: Cluster
    rate: float
    seconds: float
    sent: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    async def _run(self) -> None:
        nc = await connect(
            self.cluster.bus_url,
            self.cluster.data.credentials("gateway"),
            name="testbed-flood",
            role="gateway",
        )
        js = nc.jetstream(timeout=10.0)
        try:
            started = time.monotonic()
            while not self._stop.is_set() and time.monotonic() - started < self.seconds:
                await js.publish(FLOOD_SUBJECT, os.urandom(512))
                self.sent += 1
                ahead = self.sent / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        finally:
            await nc.drain()


@dataclass
class Disturbances:
    """The faults injected into one cluster (floods run in threads)."""

    cluster: Cluster
    floods: dict[str, Flood] = field(default_factory=dict)

    def inject(
        self, fault: str, service: str | None = None, seconds: float = 60.0, rate: float = 200.0
    ) -> dict[str, object]:
        """Start ``fault`` in ``service`` (its default target when None)."""
        if fault not in FAULTS:
            raise ValueError(f"no fault {fault!r}; one of {', '.join(FAULTS)}")
        target = service or DEFAULT_TARGET[fault]
        if target not in self.cluster.processes:
            raise LookupError(f"no service {target}")
        if fault == "crash":
            self.cluster.kill(target, signal.SIGKILL)
        elif fault == "flood":
            if target != "communication":
                raise ValueError("a flood arrives at ingress: its target is communication")
            self.stop_flood(target)
            self.floods[target] = flood = Flood(self.cluster, rate, seconds)
            flood.start()
        else:
            if self.cluster.entries.get(target) != FAULTY:
                raise ValueError(
                    f"{target} does not take injected faults: start the cloud with the "
                    "fault-taking services (testbed: faults=true)"
                )
            order = {"fault": fault, "until": time.time() + seconds}
            path = self.cluster.data.run / fault_file_name(target)
            path.write_text(json.dumps(order))
        return {"fault": fault, "service": target, "seconds": seconds}

    def clear(self, service: str) -> None:
        """End any fault in ``service`` (a crashed one is started again elsewhere)."""
        (self.cluster.data.run / fault_file_name(service)).unlink(missing_ok=True)
        self.stop_flood(service)

    def stop_flood(self, service: str) -> None:
        flood = self.floods.pop(service, None)
        if flood is not None:
            flood.stop()

    def clear_all(self) -> None:
        for service in list(self.cluster.processes):
            self.clear(service)
