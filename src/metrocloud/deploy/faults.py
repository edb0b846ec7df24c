"""The fault drill of the distributed layout: a month of readings while the parts fail.

:func:`run_drill` sends a billing period of readings, a day per transmission, through a
:class:`~metrocloud.deploy.layout.DistributedCluster` in as many slices as there are
faults. Between two slices one fault begins; the next slice is sent while it lasts; then
it ends the way an operator's supervisor ends it (the process started again, the node
started again, the database back) and the drill waits until everything sent so far has
been evaluated and stored. It reports, per fault, how long the part took to come back
(:attr:`Recovery.back_s`) and how long until the cloud had caught up with the readings
sent meanwhile (:attr:`Recovery.caught_up_s`).

The faults (:data:`FAULTS`): ``kill -9`` of each service type in turn (one of the legal
workers: the other goes on), of one broker node of three, and a PostgreSQL restart.
``kill broker node N`` names the node (0, 1 or 2; plain ``kill broker node`` is node 1).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from metrocloud.core.errors import MetrocloudError
from metrocloud.core.events import EventKind
from metrocloud.core.messages import Envelope, Transmission
from metrocloud.deploy.layout import DistributedCluster
from metrocloud.logbook.transparency import open_logbook
from metrocloud.store import open_store
from metrocloud.testbed.pipeline import Pipeline

FAULTS: tuple[str, ...] = (
    "kill communication",
    "kill legal-1",
    "kill storage",
    "kill logbook",
    "kill display",
    "kill download",
    "kill pki",
    "kill broker node",
    "restart database",
)
CATCH_UP_TIMEOUT_S = 180.0
_NODE = "kill broker node"


class DrillError(MetrocloudError):
    """The cloud did not come back, or did not catch up, in time."""


@dataclass(frozen=True)
class Recovery:
    fault: str
    back_s: float
    """From the end of the fault (restart begun) until the part serves again."""
    caught_up_s: float
    """From the end of the fault until every transmission sent so far was evaluated by
    legal and stored by storage."""


def handled(cluster: DistributedCluster) -> set[tuple[str, object]]:
    """(meter, transmission) pairs both evaluated by legal and stored by storage, from
    the logbook."""
    with open_logbook(cluster.logbook_url) as book:
        evaluated = {
            (e.event.subject, e.event.detail.get("seq"))
            for e in book.entries(kind=EventKind.PROCESSING)
            if e.event.detail.get("step") == "evaluate"
        }
        stored = {
            (e.event.subject, e.event.detail.get("seq"))
            for e in book.entries(kind=EventKind.STORAGE)
            if e.event.detail.get("what") == "transmission"
        }
    return evaluated & stored


def broker_node(fault: str) -> int | None:
    """The node index of a ``kill broker node [N]`` fault; None for another fault."""
    if not fault.startswith(_NODE):
        return None
    index = fault.removeprefix(_NODE).strip()
    return int(index) if index else 1


def begin(cluster: DistributedCluster, fault: str) -> None:
    node = broker_node(fault)
    if node is not None:
        cluster.kill_broker_node(node)
    elif fault.startswith("kill "):
        cluster.kill(fault.removeprefix("kill "), signal.SIGKILL)
    elif fault == "restart database":
        cluster.postgres.stop()
    else:
        raise ValueError(f"no fault {fault!r}")


def end(cluster: DistributedCluster, fault: str, timeout_s: float = 120.0) -> None:
    """Bring the part back; returns once it serves again."""
    node = broker_node(fault)
    if node is not None:
        cluster.start_broker_node(node)  # rejoined and caught up
    elif fault == "restart database":
        cluster.postgres.start()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                store = open_store(cluster.database_url)
                store.gateway_known("probe")
                store.close()
                return
            except Exception:  # not accepting connections yet
                if time.monotonic() > deadline:
                    raise DrillError("PostgreSQL did not come back") from None
                time.sleep(0.1)
    else:
        name = fault.removeprefix("kill ")
        cluster.spawn(name)
        cluster.wait_ready((name,), timeout_s)


def wait_handled(
    cluster: DistributedCluster, sent: set[tuple[str, object]], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while not sent <= handled(cluster):
        if time.monotonic() > deadline:
            missing = sorted(sent - handled(cluster), key=str)[:5]
            raise DrillError(f"not evaluated and stored within {timeout_s} s: {missing} ...")
        time.sleep(0.25)


def transmissions(messages: list[bytes]) -> list[tuple[str, int]]:
    """(meter, seq) of the transmissions among sealed gateway messages."""
    found = []
    for raw in messages:
        envelope = Envelope.decode(raw)
        if envelope.body_kind() == Transmission.kind:
            tx = Transmission.decode(envelope.body)
            found.append((tx.meter, tx.seq))
    return found


def run_drill(
    cluster: DistributedCluster,
    pipeline: Pipeline,
    faults: tuple[str, ...] = FAULTS,
    progress: Callable[[Recovery], None] | None = None,
) -> list[Recovery]:
    """Send ``pipeline``'s period through ``cluster`` with ``faults`` in between (see the
    module's notes); the period's closings last. Returns one :class:`Recovery` per fault."""
    per_meter = {meter: pipeline.uploads(meter) for meter in pipeline.meter_ids}
    days = max(len(m) for m in per_meter.values()) - 1  # the closing is last
    slices = len(faults) + 1
    bounds = [round(days * k / slices) for k in range(slices + 1)]
    chunks = [
        [m for meter in pipeline.meter_ids for m in per_meter[meter][bounds[k] : bounds[k + 1]]]
        for k in range(slices)
    ]
    closings = [per_meter[meter][-1] for meter in pipeline.meter_ids]
    sent: set[tuple[str, object]] = set()
    recoveries = []
    asyncio.run(pipeline.send(chunks[0]))
    sent |= set(transmissions(chunks[0]))
    for fault, chunk in zip(faults, chunks[1:], strict=True):
        begin(cluster, fault)
        asyncio.run(pipeline.send(chunk))  # while the fault lasts
        sent |= set(transmissions(chunk))
        started = time.monotonic()
        end(cluster, fault)
        back = time.monotonic() - started
        wait_handled(cluster, sent, CATCH_UP_TIMEOUT_S)
        recoveries.append(Recovery(fault, back, time.monotonic() - started))
        if progress:
            progress(recoveries[-1])
    asyncio.run(pipeline.send(closings))
    return recoveries
