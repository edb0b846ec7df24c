"""One ecosystem under test: the cloud, a gateway with its meters and radio, customers.

:class:`Testbed` is what the test controller (:mod:`metrocloud.testbed.controller`) drives.
:meth:`Testbed.start` establishes a defined start state: a fresh data folder, the
embedded cloud running, the operator's records, every customer's keys registered, the
meters configured in the smart meter gateway. From there, scenarios call atomic actions:

- the field: let the meters send (:meth:`measure`), set a register, change a meter's key
  (with or without telling the gateway), interrupt or resume a meter, inject a crafted
  frame on the air;
- the cloud: seal and send the billing period and verify every bill (:meth:`bill`),
  revoke a certificate, push a software update, stop, start or kill a service;
- and read what happened: the logbook, the gateway's three logs, the channel.

Every action returns plain JSON-able data.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography import x509

from metrocloud.cloud.cluster import Cluster
from metrocloud.core.events import EventKind
from metrocloud.core.http import open_http
from metrocloud.field.channel import ChannelConfig
from metrocloud.field.network import FieldNetwork
from metrocloud.field.sensors import Sensor
from metrocloud.field.smgw import AUDIENCES, Audience
from metrocloud.pki import Role
from metrocloud.pki.client import PkiClient
from metrocloud.testbed.observe import logbook_entries
from metrocloud.testbed.pipeline import MeterOutcome, Pipeline, PipelineConfig

ChannelName = Literal["ideal", "realistic"]


class TestbedError(Exception):
    """An action that does not fit the testbed's state (not started, unknown meter...)."""


@dataclass(frozen=True)
class TestbedConfig:
    meters: int = 2
    days: int = 1
    tariff: str = "taf1"
    seed: int = 2026
    channel: ChannelName = "ideal"
    crl_refresh_s: float = 2.0

    def pipeline(self) -> PipelineConfig:
        channel = ChannelConfig.realistic() if self.channel == "realistic" else None
        return PipelineConfig(
            meters=self.meters,
            days=self.days,
            tariff=self.tariff,
            seed=self.seed,
            radio=True,
            channel=channel,
            error_probability=0.0,
        )


def outcome_dict(o: MeterOutcome) -> dict[str, Any]:
    return {
        "meter": o.meter_id,
        "customer": o.customer_id,
        "verified": o.verdict.verified,
        "reason": o.verdict.reason,
        "bill_matches": o.bill_matches,
        "ok": o.ok,
    }


class Testbed:
    """The ecosystem in ``root`` (a new data folder per :meth:`start`)."""

    __test__ = False  # not a pytest class

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.config: TestbedConfig | None = None
        self.cluster: Cluster | None = None
        self.pipeline: Pipeline | None = None
        self.next_index = 0
        self.runs = 0
        self._lock = threading.RLock()

    # -- start state ----------------------------------------------------------------------
    def start(self, config: TestbedConfig) -> dict[str, Any]:
        """Stop what runs, then bring up a fresh ecosystem in a new data folder."""
        with self._lock:
            self.stop()
            self.runs += 1
            data = self.root / f"run-{self.runs}"
            cluster = Cluster(data, crl_refresh_s=config.crl_refresh_s)
            cluster.start()
            try:
                pipeline = Pipeline(cluster, config.pipeline())
                pipeline.provision()
                asyncio.run(pipeline.register_keys())
            except BaseException:
                cluster.stop()
                raise
            self.config, self.cluster, self.pipeline = config, cluster, pipeline
            self.next_index = pipeline.config.period.start - 1
            return self.state()

    def stop(self) -> None:
        with self._lock:
            if self.cluster is not None:
                self.cluster.stop()
            self.cluster = self.pipeline = self.config = None

    def state(self) -> dict[str, Any]:
        if self.cluster is None or self.pipeline is None or self.config is None:
            return {"running": False}
        period = self.pipeline.config.period
        return {
            "running": True,
            "data": str(self.cluster.data.root),
            "config": asdict(self.config),
            "meters": self.pipeline.meter_ids,
            "period": {"start": period.start, "end": period.end, "id": period.period_id},
            "next_index": self.next_index,
            "services": {
                name: proc.poll() is None for name, proc in self.cluster.processes.items()
            },
            "urls": {name: self.cluster.url(name) for name in self.cluster.ports},
        }

    def _running(self) -> tuple[Cluster, Pipeline, FieldNetwork]:
        if self.cluster is None or self.pipeline is None or self.pipeline.network is None:
            raise TestbedError("the testbed is not started")
        return self.cluster, self.pipeline, self.pipeline.network

    def _sensor_of(self, meter_id: str) -> Sensor:
        _, _, network = self._running()
        try:
            return network.sensors[meter_id]
        except KeyError:
            raise TestbedError(f"no meter {meter_id}") from None

    # -- the field ------------------------------------------------------------------------
    def measure(self, quarters: int | None = None) -> dict[str, Any]:
        """The meters send ``quarters`` more readings (default: the rest of the period)."""
        with self._lock:
            _, pipeline, network = self._running()
            end = pipeline.config.period.end
            count = end - self.next_index if quarters is None else quarters
            if count < 0 or self.next_index + count > end:
                raise TestbedError(f"the period ends at reading {end}")
            network.run(self.next_index, count, flush=self.next_index + count >= end)
            self.next_index += count
            return self.field()

    def field(self) -> dict[str, Any]:
        _, _, network = self._running()
        return {
            "next_index": self.next_index,
            "sent": network.stats.sent,
            "received": network.stats.received,
            "outcomes": dict(network.stats.outcomes),
            "channel": asdict(network.channel.stats),
        }

    def set_register(self, meter_id: str, value: int) -> dict[str, Any]:
        self._sensor_of(meter_id).set_register(self.next_index, value)
        return {"meter": meter_id, "register": value, "from_index": self.next_index}

    def change_meter_key(self, meter_id: str, key: bytes, *, tell_gateway: bool) -> dict[str, Any]:
        """The meter encrypts with ``key`` from now on; the administrator tells the gateway
        too if ``tell_gateway`` (a legitimate key change), else it is an attack."""
        _, _, network = self._running()
        self._sensor_of(meter_id).change_key(key)
        if tell_gateway:
            network.gateway.change_key(meter_id, key)
        return {"meter": meter_id, "gateway_told": tell_gateway}

    def interrupt_meter(self, meter_id: str, *, resume: bool = False) -> dict[str, Any]:
        sensor = self._sensor_of(meter_id)
        if resume:
            sensor.resume()
        else:
            sensor.interrupt()
        return {"meter": meter_id, "sending": sensor.state.sending}

    def inject(self, frame: bytes) -> dict[str, Any]:
        """A crafted frame on the air during the next quarter hour to be measured."""
        _, _, network = self._running()
        network.inject(frame, self.next_index)
        return {"injected": len(frame), "at_index": self.next_index}

    def captured(self, meter_id: str) -> bytes:
        """The last frame ``meter_id`` sent that the gateway received (for a replay)."""
        _, _, network = self._running()
        for frame, sender in reversed(network.heard):
            if sender == meter_id:
                return frame
        raise TestbedError(f"nothing heard from {meter_id} yet")

    # -- the cloud ------------------------------------------------------------------------
    def bill(self, timeout_s: float = 120.0) -> list[dict[str, Any]]:
        """The gateway seals and sends the period; every bill is fetched and verified. A
        meter without a result after ``timeout_s`` is reported with reason ``no-result``."""
        with self._lock:
            _, pipeline, _ = self._running()
            if self.next_index < pipeline.config.period.end:
                self.measure()
            messages = [m for meter in pipeline.meter_ids for m in pipeline.uploads(meter)]
            asyncio.run(pipeline.send(messages))
            outcomes = asyncio.run(pipeline.collect(timeout_s=timeout_s, missing_ok=True))
            found = {o.meter_id: outcome_dict(o) for o in outcomes}
            return [
                found.get(meter)
                or {"meter": meter, "customer": pipeline.owner[meter], "verified": False,
                    "reason": "no-result", "bill_matches": False, "ok": False}
                for meter in pipeline.meter_ids
            ]  # fmt: skip

    def revoke(self, name: str) -> dict[str, Any]:
        """Revoke the certificate of identity ``name`` (the gateway's, a customer's, ...)
        through the PKI service, as the authority."""
        cluster, _, _ = self._running()
        authority = cluster.data.issue_identity("notified-body", Role.AUTHORITY)
        certificate = x509.load_pem_x509_certificate(
            (cluster.data.identities / f"{name}.pem").read_bytes()
        )
        with PkiClient.connect(cluster.pki_url, tls_trust=cluster.data.pki / "root.pem") as c:
            c.revoke(authority, certificate.serial_number, x509.ReasonFlags.key_compromise)
        return {"revoked": name, "serial": certificate.serial_number}

    def push_update(self, package: bytes) -> dict[str, Any]:
        cluster, _, _ = self._running()
        with open_http(
            cluster.url("download"), tls_trust=cluster.data.pki / "root.pem", timeout_s=300
        ) as client:
            answer: dict[str, Any] = client.post("/v1/packages", content=package).json()
        return answer

    def service(self, name: str, action: Literal["stop", "start", "kill"]) -> dict[str, Any]:
        cluster, _, _ = self._running()
        if name not in cluster.processes:
            raise TestbedError(f"no service {name}")
        if action == "kill":
            cluster.kill(name, signal.SIGKILL)
        elif action == "stop":
            cluster.kill(name, signal.SIGTERM)
        else:
            cluster.restart(name)
        return {"service": name, "running": cluster.processes[name].poll() is None}

    # -- what happened --------------------------------------------------------------------
    def logbook(self, kind: str | None = None) -> list[dict[str, Any]]:
        cluster, _, _ = self._running()
        wanted = None if kind is None else EventKind(kind)
        return [
            {"actor": e.event.actor, "kind": e.event.kind.value, "subject": e.event.subject,
             "detail": e.event.detail}
            for e in logbook_entries(cluster.data, wanted)
        ]  # fmt: skip

    def gateway_log(self, audience: Audience) -> list[dict[str, Any]]:
        if audience not in AUDIENCES:
            raise TestbedError(f"no {audience} log; one of {', '.join(AUDIENCES)}")
        _, _, network = self._running()
        return [asdict(e) for e in network.gateway.logs[audience].entries]
