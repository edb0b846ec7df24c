"""The embedded default: a NATS server and every service as its own process on one host.

Every bus connection is mutual TLS with certificates of the cluster's PKI: the NATS server
presents its ``nats`` identity and maps each client certificate ``bus-<role>`` to the broker
user of that role (see :mod:`metrocloud.bus.server`); there are no bus passwords.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from metrocloud.bus.connect import connect
from metrocloud.bus.server import (
    LOOPBACK,
    EmbeddedNatsServer,
    ServerTls,
    host_port,
    issue_server_tls,
)
from metrocloud.bus.streams import ensure_streams
from metrocloud.bus.subjects import ANOMALY, SERVICE_ROLES
from metrocloud.cloud.https import LOCAL_HOSTS
from metrocloud.cloud.launcher import Process, start_process
from metrocloud.cloud.runtime import CRL_REFRESH_S, DataDir
from metrocloud.core.errors import ConfigurationError, MetrocloudError
from metrocloud.core.ports import free_port as free_port  # re-exported under its old home
from metrocloud.pki import Pki, Role, SubCa

MAX_PAYLOAD = 32 * 1024 * 1024
HTTPS_SERVICES = frozenset({"pki", "logbook", "download"})
"""The services that answer HTTPS on loopback (and so carry host names in their certificate)."""
# Only legal does heavy FHE work; the others get one OpenMP thread each.
THREADS = {"legal": "2"}


class ClusterError(MetrocloudError):
    pass


def require_p256_bus_cas(pki: Pki) -> None:
    """The NATS server (Go) knows no brainpool: the root and services sub-CA must be P-256."""
    for what, certificate in (
        ("root", pki.root),
        (f"{SubCa.SERVICES.value} sub-CA", pki.sub_cas[SubCa.SERVICES]),
    ):
        key = certificate.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            found = key.curve.name if isinstance(key, ec.EllipticCurvePublicKey) else "non-EC"
            raise ConfigurationError(
                f"the PKI's {what} certificate has a {found} key, not P-256: the NATS server "
                "checks bus certificates with Go's TLS stack, which supports no brainpool "
                "curves; create the PKI with a P-256 root and services sub-CA (the default)"
            )


class Cluster:
    """Starts, watches and stops the embedded deployment under one data folder."""

    def __init__(
        self,
        root: Path,
        *,
        services: tuple[str, ...] = SERVICE_ROLES,
        options: Mapping[str, Mapping[str, str]] | None = None,
        crl_refresh_s: float = CRL_REFRESH_S,
        witnesses: int = 2,
        monitor: bool = True,
    ) -> None:
        self.data = DataDir(root)
        self.services = services
        self.witnesses = tuple(f"witness-{n}" for n in range(1, witnesses + 1))
        self.monitor: tuple[str, ...] = ("monitor",) if monitor else ()
        """The authority's verification monitor (started last, once there is a cloud)."""
        self.options = {k: dict(v) for k, v in (options or {}).items()}
        # Its TLS setup (certificates from the PKI) is given in start(), before it runs.
        self.server = EmbeddedNatsServer(root, max_payload=MAX_PAYLOAD)
        self.processes: dict[str, Process] = {}
        self.crl_refresh_s = crl_refresh_s
        self.ports: dict[str, int] = {}
        self.instances: dict[str, str] = {}
        """Process name -> service, for processes not named after their service."""
        self.threads = dict(THREADS)
        """OpenMP threads per service (the FHE library's)."""
        self.hosts: dict[str, str] = {}
        """Process -> the address it listens on (HTTPS, metrics), for processes not on
        127.0.0.1: the distributed layout gives each process an address of its own."""
        self.bus_url = ""
        self.entries: dict[str, str] = {}
        """Process -> the module it runs instead of the certified boot (the testbed's
        manipulated legal, :mod:`metrocloud.testbed.insider`)."""

    def service_of(self, process: str) -> str:
        """The service a process runs (several processes may run one service: ``legal-2``)."""
        return self.instances.get(process, process)

    # -- lifecycle ------------------------------------------------------------------
    def start(self, timeout_s: float = 60.0) -> None:
        for folder in (self.data.root, self.data.logs, self.data.run):
            folder.mkdir(parents=True, exist_ok=True)
        pki = self.data.open_pki()
        try:
            require_p256_bus_cas(pki)
            ids = self.data.identities_store(pki)
            for name in dict.fromkeys(self.service_of(p) for p in self.services):
                https = name in HTTPS_SERVICES
                ids.identity(name, Role.SERVICE, hosts=self.names_of(name) if https else ())
            for name in (*self.witnesses, *self.monitor):  # the authority's nodes
                ids.identity(name, Role.AUTHORITY, hosts=self.names_of(name))
            # The bus: the server's identity and one client identity per role (mTLS only).
            tls = issue_server_tls(ids, hosts=self.broker_hosts())
            self.prepare_hosts()
        finally:
            pki.close()
        try:
            self.bus_url = self.start_broker(tls)
            asyncio.run(self._prepare_bus())
            self.publish_description(self.describe())
            # The PKI first: the others fetch its CRLs as they start. Then the authority's
            # witnesses, so the logbook finds them for its first head. Anomaly detection once
            # the services it watches answer; the monitor last: it checks the others.
            first = tuple(n for n in self.services if n == "pki")
            watching = tuple(n for n in self.services if n == ANOMALY)
            rest = tuple(n for n in self.services if n not in (*first, *watching))
            for group in (first, self.witnesses, rest, watching, self.monitor):
                for name in group:
                    self.spawn(name)
                self.wait_ready(group, timeout_s)
        except BaseException:  # a start that fails leaves nothing running behind
            self.stop()
            raise

    def host_of(self, process: str) -> str:
        """The address process ``process`` listens on."""
        return self.hosts.get(process, LOOPBACK)

    def names_of(self, service: str) -> tuple[str, ...]:
        """What the certificate of an HTTPS ``service`` names: 127.0.0.1 and localhost, and
        the address of each process that runs it."""
        own = (self.host_of(p) for p in (*self.services, *self.witnesses, *self.monitor)
               if self.service_of(p) == service)  # fmt: skip
        return tuple(dict.fromkeys((*LOCAL_HOSTS, *own)))

    def broker_hosts(self) -> tuple[str, ...]:
        """The broker's addresses beyond 127.0.0.1 (its certificate names them)."""
        return ()

    def prepare_hosts(self) -> None:
        """Anything the processes' hosts need before they start (nothing on one host)."""

    def start_broker(self, tls: ServerTls) -> str:
        """Start the broker with ``tls``; the URL (or comma-separated URLs) clients use."""
        self.server.tls = tls
        self.server.start()
        return self.server.url

    def publish_description(self, described: dict[str, object]) -> None:
        """Tell the processes where everything is: ``cluster.json`` in the data folder."""
        self.data.cluster_file.write_text(json.dumps(described))

    def describe(self) -> dict[str, object]:
        """Where everything answers (``cluster.json``); assigns the HTTPS ports."""
        described: dict[str, object] = {
            "nats_url": self.bus_url,
            "crl_refresh_s": self.crl_refresh_s,
        }
        served = (*(n for n in self.services if n in HTTPS_SERVICES), *self.witnesses)
        for name in (*served, *self.monitor):
            self.ports.setdefault(name, free_port())
            self.options.setdefault(name, {})["port"] = str(self.ports[name])
        for name in self.witnesses:
            self.options[name]["name"] = name
        if "pki" in self.services:
            described["pki_url"] = self.pki_url
        if "logbook" in self.services:
            described["logbook_url"] = self.url("logbook")
        if "download" in self.services:
            described["download_url"] = self.url("download")
        described["witnesses"] = {name: self.url(name) for name in self.witnesses}
        described["metrics"] = {name: self.metrics_url(name) for name in self.services}
        if self.monitor:
            described["monitor_url"] = self.url("monitor")
        return described

    def metrics_url(self, name: str) -> str:
        """Where cloud process ``name`` serves its metrics (``GET /metrics``, plain HTTP on
        its address); the port is chosen on first call and given to the process as an option."""
        options = self.options.setdefault(name, {})
        if "metrics_port" not in options:
            options["metrics_port"] = str(free_port())
        return f"http://{host_port(self.host_of(name), int(options['metrics_port']))}/metrics"

    def url(self, name: str) -> str:
        """Where HTTPS service ``name`` answers (its certificate chains to ``pki/root.pem``)."""
        return f"https://{host_port(self.host_of(name), self.ports[name])}"

    @property
    def pki_url(self) -> str:
        return self.url("pki")

    async def _prepare_bus(self) -> None:
        nc = await connect(
            self.bus_url, self.data.credentials("admin"), name="supervisor", role="admin"
        )
        try:
            await ensure_streams(nc.jetstream())
        finally:
            await nc.close()

    def command(self, name: str) -> list[str]:
        """How process ``name`` is started: ``python -m`` its entry point (the certified
        :mod:`metrocloud.cloud.boot` unless :attr:`entries` names another)."""
        service = self.service_of(name)
        cmd = [
            sys.executable,
            "-m",
            self.entries.get(name, "metrocloud.cloud.boot"),
            service,
            "--data",
            str(self.data.root),
        ]
        options = dict(self.options.get(name, {}))
        if name in self.hosts:
            options["host"] = self.hosts[name]
        for key, value in options.items():
            cmd += ["--option", f"{key}={value}"]
        return cmd

    def spawn(self, name: str) -> None:
        (self.data.run / f"{name}.ready").unlink(missing_ok=True)
        cmd = self.command(name)
        env = dict(os.environ, OMP_NUM_THREADS=self.threads.get(self.service_of(name), "1"))
        self.processes[name] = start_process(cmd, env, self.data.logs / f"{name}.log")

    def wait_ready(self, names: tuple[str, ...], timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        for name in names:
            while not (self.data.run / f"{name}.ready").exists():
                proc = self.processes[name]
                if proc.poll() is not None:
                    raise ClusterError(f"service {name} exited: {self.log_tail(name)}")
                if time.monotonic() > deadline:
                    raise ClusterError(f"service {name} not ready: {self.log_tail(name)}")
                time.sleep(0.05)

    def log_tail(self, name: str, chars: int = 2000) -> str:
        path = self.data.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill one service process (``kill -9`` by default), as a crash would."""
        proc = self.processes[name]
        proc.send_signal(sig)
        proc.wait(timeout=30)

    def restart(self, name: str, timeout_s: float = 60.0) -> None:
        if self.processes[name].poll() is None:
            self.kill(name, signal.SIGTERM)
        self.spawn(name)
        self.wait_ready((name,), timeout_s)

    def dead(self) -> list[str]:
        return [n for n, p in self.processes.items() if p.poll() is not None]

    def stop(self, timeout_s: float = 15.0) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.stop_broker()

    def stop_broker(self) -> None:
        self.server.stop()

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
