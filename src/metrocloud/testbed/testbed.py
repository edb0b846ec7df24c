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
import ssl
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from cryptography import x509

from metrocloud.authority.commands import approve_installation
from metrocloud.authority.monitor import anomaly_view
from metrocloud.bus.subjects import ANOMALY, ROLES
from metrocloud.cloud.cluster import Cluster
from metrocloud.cloud.software import all_components
from metrocloud.core.errors import Rejected
from metrocloud.core.events import EventKind
from metrocloud.core.http import open_http
from metrocloud.field.channel import ChannelConfig
from metrocloud.field.interfaces import (
    GatewayInterfaces,
    TlsFiles,
    gateway_folder_accounts,
    serve_gateway,
)
from metrocloud.field.network import FieldNetwork
from metrocloud.field.sensors import Medium, Sensor
from metrocloud.field.smgw import AUDIENCES, Audience, SmartMeterGateway
from metrocloud.field.wan import administrator_client, administrator_identity, wan_server_identity
from metrocloud.logbook.commands import embedded_setup, run_audit
from metrocloud.pki import Role
from metrocloud.pki.client import PkiClient
from metrocloud.tariffs import RegisterSet
from metrocloud.testbed.attacks import (
    LookAlike,
    alter_logbook_entry,
    altered_in_transit,
    malicious_update,
    publish_as,
)
from metrocloud.testbed.disturb import Disturbances, fault_taking
from metrocloud.testbed.insider import ENTRY as INSIDER
from metrocloud.testbed.insider import FAULT, FAULT_SYNTAX
from metrocloud.testbed.observe import flags, logbook_entries
from metrocloud.testbed.pipeline import MeterOutcome, Pipeline, PipelineConfig

ChannelName = Literal["ideal", "realistic"]
"""The manipulations legal can be restarted with (:meth:`Testbed.manipulate`)."""
AUTHORITY = "market-surveillance"
ADMINISTRATOR = "gw-admin"
"""The gateway administrator's identity (WAN side)."""
"""The authority that approves the testbed's software at the start."""


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
    media: tuple[str, ...] = ("electricity",)
    """What the meters measure, in turn: electricity, gas, water, heat."""
    faults: bool = False
    """Start the services so that they take injected faults (:mod:`.disturb`)."""
    anomaly_training_s: float | None = None
    """Anomaly detection's training window (its default when None)."""
    anomaly_interval_s: float | None = None
    """Anomaly detection's sampling interval (its default when None)."""
    test_meters: int = 0
    """The authority's test meters among the meters (radio sensors like the others)."""

    def anomaly_options(self) -> dict[str, str]:
        given = {"training_s": self.anomaly_training_s, "interval_s": self.anomaly_interval_s}
        return {k: str(v) for k, v in given.items() if v is not None}

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
            media=tuple(Medium(m) for m in self.media),
            test_meters=self.test_meters,
        )


def outcome_dict(o: MeterOutcome, error_intervals: int) -> dict[str, Any]:
    """A meter's bill as the testbed reports it: the receiver's verdict, whether the bill
    equals the plaintext reference, the registers, and how many of the period's quarter
    hours the gateway booked to the error register."""
    registers = o.verdict.registers
    return {
        "meter": o.meter_id,
        "customer": o.customer_id,
        "verified": o.verdict.verified,
        "reason": o.verdict.reason,
        "bill_matches": o.bill_matches,
        "ok": o.ok,
        "registers": None if registers is None else register_dict(registers),
        "reference": register_dict(o.reference),
        "error_intervals": error_intervals,
    }


def register_dict(registers: RegisterSet) -> dict[str, Any]:
    return {
        "tariff_wh": list(registers.tariff_registers_wh),
        "error_wh": registers.error_register_wh,
        "total_wh": registers.total_register_wh,
        "bill_microcent": registers.bill_microcent,
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
        self.update_sequence = 100
        self.interfaces: GatewayInterfaces | None = None
        self.disturbances: Disturbances | None = None
        self.started_entries: dict[str, str] = {}
        """The entry points the processes started with (fault-taking ones, say)."""
        self._lock = threading.RLock()

    # -- start state ----------------------------------------------------------------------
    def start(self, config: TestbedConfig) -> dict[str, Any]:
        """Stop what runs, then bring up a fresh ecosystem in a new data folder.
        ``ValueError`` (nothing stopped) for a configuration that cannot run."""
        planned = config.pipeline()  # ValueError for a configuration that cannot run
        with self._lock:
            self.stop()
            self.runs += 1
            data = self.root / f"run-{self.runs}"
            cluster = Cluster(
                data,
                crl_refresh_s=config.crl_refresh_s,
                options={ANOMALY: config.anomaly_options()},
            )
            if config.faults:
                fault_taking(cluster)
            self.started_entries = dict(cluster.entries)
            cluster.start()
            try:
                # The notified body approved the software as installed (the reference list).
                approve_installation(cluster.data.root, AUTHORITY, list(all_components()))
                pipeline = Pipeline(cluster, planned)
                pipeline.provision()
                asyncio.run(pipeline.register_keys())
                assert pipeline.network is not None
                self.interfaces = self._serve_gateway(cluster, pipeline.network.gateway)
            except BaseException:
                cluster.stop()
                raise
            self.config, self.cluster, self.pipeline = config, cluster, pipeline
            self.disturbances = Disturbances(cluster)
            self.next_index = pipeline.config.period.start - 1
            return self.state()

    @staticmethod
    def _serve_gateway(cluster: Cluster, gateway: SmartMeterGateway) -> GatewayInterfaces:
        """The gateway's HAN page and WAN API on 127.0.0.1, with the WAN's server identity
        and the gateway administrator's identity issued by the PKI."""
        pki = cluster.data.open_pki()
        try:
            ids = cluster.data.identities_store(pki)
            wan_server_identity(ids, gateway.gateway_id)
            administrator_identity(ids, ADMINISTRATOR)
        finally:
            pki.close()
        folder = cluster.data.root / "gateways" / gateway.gateway_id
        return serve_gateway(
            gateway,
            trust=cluster.data.trust_store,
            wan_tls=TlsFiles.in_folder(
                cluster.data.identities, f"{gateway.gateway_id}-wan", cluster.data.passphrase()
            ),
            accounts=gateway_folder_accounts(folder),
        )

    def stop(self) -> None:
        with self._lock:
            if self.disturbances is not None:
                self.disturbances.clear_all()
            if self.interfaces is not None:
                self.interfaces.close()
            if self.cluster is not None:
                self.cluster.stop()
            self.cluster = self.pipeline = self.config = self.interfaces = None
            self.disturbances = None

    def state(self) -> dict[str, Any]:
        if self.cluster is None or self.pipeline is None or self.config is None:
            return {"running": False}
        period = self.pipeline.config.period
        return {
            "running": True,
            "data": str(self.cluster.data.root),
            "config": asdict(self.config),
            "meters": self.pipeline.customer_meter_ids,
            "test_meters": len(self.pipeline.meter_ids) - len(self.pipeline.customer_meter_ids),
            "period": {"start": period.start, "end": period.end, "id": period.period_id},
            "next_index": self.next_index,
            "services": {
                name: proc.poll() is None for name, proc in self.cluster.processes.items()
            },
            "urls": {
                **{name: self.cluster.url(name) for name in self.cluster.ports},
                **(
                    {"gateway-han": self.interfaces.han_url, "gateway-wan": self.interfaces.wan_url}
                    if self.interfaces is not None
                    else {}
                ),
            },
            "gateway_administrator": ADMINISTRATOR,
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
            found = {
                o.meter_id: outcome_dict(o, self.error_intervals(o.meter_id)) for o in outcomes
            }
            return [
                found.get(meter)
                or {"meter": meter, "customer": pipeline.owner[meter], "verified": False,
                    "reason": "no-result", "bill_matches": False, "ok": False,
                    "registers": None, "reference": register_dict(pipeline.reference(meter)),
                    "error_intervals": self.error_intervals(meter)}
                for meter in pipeline.customer_meter_ids
            ]  # fmt: skip

    def check(self) -> dict[str, Any]:
        """The authority's round of functionality checks on the period billed last: its
        test meters' results against its secret test vectors, logged per program version.
        The answer is the authority's own view (test meters named)."""
        with self._lock:
            _, pipeline, _ = self._running()
            if pipeline.authority is None:
                raise TestbedError(
                    "started without test meters: start with test_meters of at least 1"
                )
            period = pipeline.config.period
            if not any(p == period.period_id for _, p in pipeline.authority.fetched):
                raise TestbedError("bill first: no test meter result fetched yet")
            check_round = pipeline.check(period)
            assert check_round is not None  # every period is checked here
            asyncio.run(pipeline.log_check(check_round))
            return {
                "round_id": check_round.round_id,
                "passed": check_round.passed,
                "verdicts": [
                    {"program": v.program, "version": v.program_version, "checks": v.checks,
                     "failures": v.failures, "passed": v.passed}
                    for v in check_round.verdicts
                ],
                "checks": [
                    {"meter": o.meter_id, "passed": o.passed, "reason": o.reason,
                     "expected": register_dict(o.expected),
                     "found": None if o.found is None else register_dict(o.found)}
                    for o in check_round.outcomes
                ],
            }  # fmt: skip

    def error_intervals(self, meter_id: str) -> int:
        _, pipeline, _ = self._running()
        assert pipeline.gateway is not None
        period = pipeline.config.period
        return sum(
            i.error for i in pipeline.gateway.intervals(meter_id, period.start, period.intervals)
        )

    def sealed_uploads(self, meter_id: str) -> list[bytes]:
        """What the gateway would send for ``meter_id``'s period now, sealed (for attacks)."""
        _, pipeline, _ = self._running()
        if meter_id not in pipeline.owner:
            raise TestbedError(f"no meter {meter_id}")
        return pipeline.uploads(meter_id)

    def send_uploads(self, messages: list[bytes]) -> dict[str, Any]:
        """Messages on the gateway's upload subject, as they are (forged, altered...)."""
        with self._lock:
            _, pipeline, _ = self._running()
            asyncio.run(pipeline.send(messages))
            return {"sent": len(messages)}

    def forge_gateway(self) -> dict[str, Any]:
        """An attacker's gateway: every meter's period sealed under a look-alike of the
        gateway's certificate (same names and extensions, the attacker's own key), sent."""
        cluster, pipeline, _ = self._running()
        genuine = x509.load_pem_x509_certificate(
            (cluster.data.identities / f"{pipeline.gateway_id}.pem").read_bytes()
        )
        forger = LookAlike.of(genuine)
        forged = [
            forger.reseal(m) for meter in pipeline.meter_ids for m in self.sealed_uploads(meter)
        ]
        return self.send_uploads(forged)

    def alter_upload(self, meter_id: str) -> dict[str, Any]:
        """``meter_id``'s first transmission, with ciphertext bytes changed after signing."""
        first = self.sealed_uploads(meter_id)[0]
        return self.send_uploads([altered_in_transit(first)])

    def manipulate(self, service: str, fault: str) -> dict[str, Any]:
        """Restart ``service`` with ``fault`` (an insider's manipulated code, see
        :mod:`metrocloud.testbed.insider`); an empty ``fault`` restarts it honest."""
        if fault and (service != "legal" or not FAULT.fullmatch(fault)):
            raise ValueError(f"no fault {fault!r} for {service}: legal takes {FAULT_SYNTAX}")
        with self._lock:
            cluster, _, _ = self._running()
            if service not in cluster.processes:
                raise TestbedError(f"no service {service}")
            options = cluster.options.setdefault(service, {})
            if fault:
                options["fault"] = fault
                cluster.entries[service] = INSIDER
            else:
                options.pop("fault", None)
                cluster.entries.pop(service, None)
                if service in self.started_entries:
                    cluster.entries[service] = self.started_entries[service]
            cluster.kill(service, signal.SIGTERM)
            cluster.restart(service)
            return {"service": service, "fault": fault or None}

    def update_attack(self, kind: str) -> dict[str, Any]:
        """Build a malicious package of ``kind`` (:data:`attacks.UPDATE_ATTACKS`) and push it."""
        cluster, _, _ = self._running()
        self.update_sequence += 1
        try:
            package = malicious_update(cluster.data, kind, self.update_sequence)
        except ValueError as exc:
            raise TestbedError(f"no {exc}") from None
        return self.push_update(package)

    def software(self) -> dict[str, Any]:
        """The download manager's view: its identification and every installed release."""
        cluster, _, _ = self._running()
        with open_http(cluster.url("download"), tls_trust=cluster.data.pki / "root.pem") as c:
            found: dict[str, Any] = c.get("/v1/software").json()
        return found

    def publish_as(self, role: str, subject: str, payload: bytes) -> dict[str, Any]:
        """A message on the bus with another party's credentials (a third-party service
        writing into the legal zone...); whether the broker refused it."""
        cluster, _, _ = self._running()
        if role not in ROLES:
            raise TestbedError(f"no bus role {role}")
        attempt = asyncio.run(publish_as(cluster.bus_url, cluster.data, role, subject, payload))
        return asdict(attempt)

    def alter_logbook(self, entry: int) -> dict[str, Any]:
        """Entry ``entry`` rewritten in the logbook's database file, behind the service."""
        cluster, _, _ = self._running()
        try:
            alter_logbook_entry(Path(cluster.data.logbook), entry)
        except LookupError as exc:
            raise TestbedError(f"no {exc}") from None
        return {"altered": entry}

    def audit_logbook(self, wait_s: float = 0.0) -> dict[str, Any]:
        """An auditor's check of the whole log against a head every witness cosigned (as
        ``metrocloud logbook audit``). A refusal is retried for up to ``wait_s`` (the
        witnesses cosign a grown log within seconds), then reported with its reason."""
        cluster, _, _ = self._running()
        setup = embedded_setup(cluster.data.root)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return {"verified": True, "verdict": run_audit(setup)}
            except Rejected as exc:
                if time.monotonic() >= deadline:
                    return {"verified": False, "reason": exc.reason, "detail": exc.detail}
            time.sleep(0.5)

    def gateway_wan(
        self, identity: str, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A request to the gateway's WAN API presenting identity ``identity``'s certificate
        (the administrator's, or anyone else's the PKI issued). A refused handshake is
        reported as ``status`` None with the error."""
        cluster, _, _ = self._running()
        assert self.interfaces is not None
        ids = cluster.data.identities
        if not (ids / f"{identity}.pem").exists():
            raise TestbedError(f"no identity {identity}")
        try:
            client = administrator_client(
                self.interfaces.wan_url,
                ca_file=cluster.data.pki / "root.pem",
                cert_file=ids / f"{identity}.pem",
                key_file=ids / f"{identity}.key",
                password=cluster.data.passphrase(),
            )
        except (ssl.SSLError, ValueError) as exc:
            return {"status": None, "error": f"no TLS client with {identity}'s key: {exc}"}
        try:
            with client:
                response = client.request(method, path, json=body)
        except httpx.TransportError as exc:
            return {"status": None, "error": f"{type(exc).__name__}: {exc}"}
        try:
            answer: Any = response.json()
        except ValueError:
            answer = response.text
        return {"status": response.status_code, "body": answer}

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

    def inject_fault(
        self, fault: str, service: str | None, seconds: float, rate: float
    ) -> dict[str, Any]:
        """Inject ``fault`` (see :mod:`metrocloud.testbed.disturb`) into ``service``."""
        with self._lock:
            self._running()
            assert self.disturbances is not None
            try:
                return self.disturbances.inject(fault, service, seconds, rate)
            except LookupError as exc:
                raise TestbedError(str(exc)) from None

    def clear_fault(self, service: str) -> dict[str, Any]:
        """End the fault injected into ``service``."""
        with self._lock:
            cluster, _, _ = self._running()
            if service not in cluster.processes:
                raise TestbedError(f"no service {service}")
            assert self.disturbances is not None
            self.disturbances.clear(service)
            return {"service": service, "fault": None}

    def anomaly(self) -> dict[str, Any]:
        """The anomaly state as the logbook records it, and each component's latest event."""
        cluster, _, _ = self._running()
        entries = logbook_entries(cluster.data, EventKind.ANOMALY)
        view = anomaly_view(e.event for e in entries)
        latest = {str(e.event.detail["component"]): dict(e.event.detail) for e in entries}
        return {**view.to_dict(), "components": latest, "events": len(entries)}

    # -- what happened --------------------------------------------------------------------
    def logbook(self, kind: str | None = None) -> list[dict[str, Any]]:
        cluster, _, _ = self._running()
        wanted = None if kind is None else EventKind(kind)
        return [
            {"actor": e.event.actor, "kind": e.event.kind.value, "subject": e.event.subject,
             "detail": e.event.detail}
            for e in logbook_entries(cluster.data, wanted)
        ]  # fmt: skip

    def flags(self) -> list[dict[str, Any]]:
        """The measuring system's flags: results a customer's display refused."""
        cluster, _, _ = self._running()
        return [asdict(f) for f in flags(cluster.data)]

    def gateway_log(self, audience: Audience) -> list[dict[str, Any]]:
        if audience not in AUDIENCES:
            raise TestbedError(f"no {audience} log; one of {', '.join(AUDIENCES)}")
        _, _, network = self._running()
        return [asdict(e) for e in network.gateway.logs[audience].entries]
