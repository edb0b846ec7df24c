"""The distributed layout, brought up on one machine: what docs/deployment.md describes.

:class:`DistributedCluster` runs the cloud the way an operator runs it on many hosts, with
loopback addresses standing for the hosts: a NATS JetStream cluster of ``broker_nodes``
nodes with replicated streams, each node on an address of its own (127.0.2.x) and started
from a folder of its own that holds only its identity and the trust anchors; PostgreSQL
for the store and the logbook; ``legal_workers`` competing ``legal`` processes; and every
process on an address of its own (127.0.1.x), started as an operator starts it, with its
own configuration file: ``metrocloud serve SERVICE --config <root>/config/<process>.toml``.
Clients reach each of them by that address, which its certificate names.

The cloud's processes share one folder for their keys, certificates and trust anchors (on
many hosts each gets a copy of its own, :func:`~metrocloud.deploy.broker.host_folder`). It
is a
:class:`~metrocloud.cloud.cluster.Cluster`, so tests and the testbed drive it alike:
:meth:`kill` and :meth:`restart` a process by name (``legal-2``), and
:meth:`kill_broker_node`, :meth:`restart_database` for the infrastructure.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from metrocloud.bus.cluster import NatsCluster
from metrocloud.bus.connect import connect
from metrocloud.bus.server import ServerTls
from metrocloud.bus.streams import ensure_streams
from metrocloud.bus.subjects import ANOMALY, SERVICE_ROLES
from metrocloud.cloud.cluster import MAX_PAYLOAD, Cluster
from metrocloud.cloud.config import load_config
from metrocloud.cloud.runtime import CRL_REFRESH_S, DataDir
from metrocloud.deploy.broker import launch_as_operator
from metrocloud.deploy.configfile import render_toml
from metrocloud.deploy.postgres import LocalPostgres

REPLICAS = 3
"""Replicas of every stream (at most the number of broker nodes)."""
PROCESS_HOSTS = "127.0.1.{}"
"""The address of the n-th cloud process (n from 1): one "host" each."""
BROKER_HOSTS = "127.0.2.{}"
"""The address of the n-th broker node."""


def legal_process(n: int) -> str:
    return f"legal-{n}"


class DistributedCluster(Cluster):
    """The distributed layout on 127.0.0.1 under ``root`` (see the module's notes)."""

    def __init__(
        self,
        root: Path,
        *,
        legal_workers: int = 2,
        broker_nodes: int = 3,
        options: Mapping[str, Mapping[str, str]] | None = None,
        crl_refresh_s: float = CRL_REFRESH_S,
        witnesses: int = 2,
        monitor: bool = True,
        database_folder: Path | None = None,
    ) -> None:
        """``database_folder``: PostgreSQL's cluster (default ``root/postgres``); when run
        as root, PostgreSQL runs as an unprivileged user that must be able to reach it."""
        if legal_workers < 1:
            raise ValueError("at least one legal worker")
        workers = tuple(legal_process(n) for n in range(1, legal_workers + 1))
        services = tuple(
            p for s in SERVICE_ROLES for p in (workers if s == "legal" else (s,))
        )  # fmt: skip
        super().__init__(
            root, services=services, options=options, crl_refresh_s=crl_refresh_s,
            witnesses=witnesses, monitor=monitor,
        )  # fmt: skip
        self.instances = {w: "legal" for w in workers}
        processes = (*self.services, *self.witnesses, *self.monitor)
        self.hosts = {p: PROCESS_HOSTS.format(n) for n, p in enumerate(processes, 1)}
        self.threads["legal"] = "1"  # one FHE thread per worker: the workers are the scale
        self.legal_workers = workers
        self.broker_nodes = broker_nodes
        self.postgres = LocalPostgres(database_folder or self.data.root / "postgres")
        self.broker: NatsCluster | None = None
        self.database_url = ""
        self.logbook_url = ""
        self.described: dict[str, object] = {}

    @property
    def configs(self) -> Path:
        return self.data.root / "config"

    # -- infrastructure -----------------------------------------------------------------
    def start(self, timeout_s: float = 120.0) -> None:
        self.postgres.start()
        try:
            self.database_url = self.postgres.create_database("metrocloud")
            self.logbook_url = self.postgres.create_database("logbook")
        except BaseException:
            self.postgres.stop()
            raise
        super().start(timeout_s)  # stops everything, PostgreSQL included, if it fails

    def broker_hosts(self) -> tuple[str, ...]:
        return tuple(BROKER_HOSTS.format(n) for n in range(1, self.broker_nodes + 1))

    def start_broker(self, tls: ServerTls) -> str:
        self.broker = NatsCluster(
            self.data.root / "nats",
            nodes=self.broker_nodes,
            tls=tls,
            max_payload=MAX_PAYLOAD,
            hosts=self.broker_hosts(),
        )
        launch_as_operator(self.broker, self.data.root, self.configs)
        self.broker.start()
        return ",".join(self.broker.urls)

    async def _prepare_bus(self) -> None:
        nc = await connect(
            self.bus_url, self.data.credentials("admin"), name="supervisor", role="admin"
        )
        try:
            await ensure_streams(nc.jetstream(), replicas=min(REPLICAS, self.broker_nodes))
        finally:
            await nc.close()

    def stop_broker(self) -> None:
        if self.broker is not None:
            self.broker.stop()
        self.postgres.stop()

    def publish_description(self, described: dict[str, object]) -> None:
        """No ``cluster.json``: each process gets its own configuration file. The
        supervisor's own view (this object's :attr:`data`) is a configuration as well, with
        the databases, written to ``config/supervisor.toml`` for the operator."""
        self.described = described
        supervisor = self.process_config("supervisor")
        self.configs.mkdir(parents=True, exist_ok=True)
        path = self.configs / "supervisor.toml"
        path.write_text(render_toml(supervisor), encoding="utf-8")
        self.data = DataDir(self.data.root, load_config(path))

    def kill_broker_node(self, index: int) -> None:
        assert self.broker is not None
        self.broker.kill(index)

    def start_broker_node(self, index: int) -> None:
        assert self.broker is not None
        self.broker.start_node(index)

    def restart_database(self) -> None:
        self.postgres.restart()

    # -- the processes, each with its configuration ---------------------------------------
    def process_config(self, name: str) -> dict[str, object]:
        """Process ``name``'s configuration (what ``<root>/config/<name>.toml`` holds)."""
        described = self.described
        options = dict(self.options.get(name, {}))
        port = options.pop("port", None)
        config: dict[str, object] = {
            "service": self.service_of(name),
            "instance": name,
            "data": str(self.data.root),
        }
        if name in self.hosts:
            config["host"] = self.hosts[name]
        if port is not None:
            config["port"] = int(port)
        config["bus"] = {"urls": str(described["nats_url"]).split(",")}
        config["storage"] = {"database": self.database_url, "logbook": self.logbook_url}
        config["cloud"] = cloud = {
            **{k: v for k, v in described.items() if k.endswith("_url") and k != "nats_url"},
            "crl_refresh_s": described["crl_refresh_s"],
            "witnesses": described["witnesses"],
        }
        if self.service_of(name) == ANOMALY:  # the only process that scrapes the others
            cloud["metrics"] = described["metrics"]
        if options:
            config["options"] = options
        return config

    def command(self, name: str) -> list[str]:
        """``metrocloud serve SERVICE --config FILE``, the operator's command."""
        self.configs.mkdir(parents=True, exist_ok=True)
        path = self.configs / f"{name}.toml"
        path.write_text(render_toml(self.process_config(name)), encoding="utf-8")
        return [sys.executable, "-m", "metrocloud.cli", "serve", self.service_of(name),
                "--config", str(path)]  # fmt: skip
