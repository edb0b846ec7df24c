"""A broker node as a process of its own: ``metrocloud serve nats --config FILE``.

On many hosts each NATS node runs on its own machine, started by the host's process
supervisor like every other part of the cloud. Its configuration file says where it
listens and where the other nodes are::

    service = "nats"
    instance = "nats-1"                  # the node's server name, unique in the cluster
    data = "/srv/metrocloud/nats-1"      # identities/nats.{pem,key}, pki/, nats/ (its store)
    host = "10.0.0.1"                    # its address: clients and routes listen here
    port = 4222                          # the client port

    [broker]
    cluster = "metrocloud"
    route_port = 6222
    routes = ["10.0.0.2:6222", "10.0.0.3:6222"]

The node's folder holds only what a broker needs: the ``nats`` identity (whose certificate
names every node's address, :func:`~metrocloud.bus.server.issue_server_tls`) and the PKI's
trust anchors, never a bus client's key: the users of the zone roles are the subjects the
PKI gives their ``bus-<role>`` certificates (:func:`~metrocloud.bus.server.node_tls`). The
process writes ``nats.conf`` with the same code as the embedded server and then *becomes*
``nats-server`` (``exec``): the supervisor watches and signals the server itself.

:func:`host_folder` makes such a folder (or any process's) from the folder where the PKI
issued the identities: the named identities, the trust anchors, the key passphrase file.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

from metrocloud.bus.cluster import NatsCluster
from metrocloud.bus.server import (
    ClusterRoutes,
    EmbeddedNatsServer,
    host_port,
    node_tls,
    subject_dn,
)
from metrocloud.cloud.config import BrokerSection, ServiceConfig
from metrocloud.core.errors import ConfigurationError
from metrocloud.deploy.configfile import render_toml

BROKER_SERVICE = "nats"
"""What ``service`` names a broker node in its configuration file."""
DEFAULT_MAX_PAYLOAD = 32 * 1024 * 1024
"""The cloud's largest message (``metrocloud.cloud.cluster.MAX_PAYLOAD``)."""


def check_broker_node(config: ServiceConfig) -> None:
    """What a broker node's file cannot say by itself: its folder holds the ``nats``
    identity and the trust anchors. :class:`ConfigurationError` otherwise."""
    if config.port is None:
        raise ConfigurationError(f"{config.process}: a broker node needs its client port (port)")
    broker = config.broker or BrokerSection()
    if broker.routes and broker.route_port is None:
        raise ConfigurationError(f"{config.process}: [broker] routes need a route_port")
    for needed, what in (
        (config.data / "pki" / "root.pem", "the PKI's root certificate"),
        (config.data / "identities" / "nats.pem", "the broker's certificate"),
        (config.data / "identities" / "nats.key", "the broker's key"),
    ):
        if not needed.exists():
            raise ConfigurationError(f"{what} is missing: {needed}")


def broker_node(config: ServiceConfig) -> EmbeddedNatsServer:
    """The node ``config`` describes, with its TLS setup loaded from its folder."""
    from metrocloud.cloud.runtime import DataDir  # the service runtime; not for --help

    check_broker_node(config)
    tls = node_tls(DataDir(config.data, config).identities_store())
    broker = config.broker or BrokerSection()
    host = config.host or "127.0.0.1"
    cluster = None
    if broker.route_port is not None:
        cluster = ClusterRoutes(
            name=broker.cluster,
            port=broker.route_port,
            peers=broker.peers(),
            user=subject_dn(tls.chain[0]),
            host=host,
        )
    return EmbeddedNatsServer(
        config.data,
        port=config.port,
        host=host,
        tls=tls,
        server_name=config.process,
        cluster=cluster,
        max_payload=broker.max_payload or DEFAULT_MAX_PAYLOAD,
    )


def exec_broker_node(config: ServiceConfig) -> NoReturn:
    """Write the node's files and replace this process by ``nats-server``."""
    node = broker_node(config)
    command = node.prepare()
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(node.nats_dir)
    os.execv(command[0], command)


def node_config(node: EmbeddedNatsServer) -> dict[str, object]:
    """The configuration file (as a mapping, :func:`render_toml`) that runs ``node``."""
    if node.port is None:
        raise ConfigurationError(f"{node.server_name}: a broker node needs a fixed client port")
    config: dict[str, object] = {
        "service": BROKER_SERVICE,
        "instance": node.server_name,
        "data": str(node.data_dir),
        "host": node.host,
        "port": node.port,
    }
    broker: dict[str, object] = {"max_payload": node.max_payload}
    if node.cluster is not None:
        broker |= {
            "cluster": node.cluster.name,
            "route_port": node.cluster.port,
            "routes": [host_port(h, p) for h, p in node.cluster.peers],
        }
    config["broker"] = broker
    return config


def launch_as_operator(cluster: NatsCluster, source: Path, configs: Path) -> None:
    """Have every node of ``cluster`` started as an operator starts it on its own host:
    a data folder of its own (:func:`host_folder`: the ``nats`` identity and the trust
    anchors from ``source``), a configuration file ``configs/<node>.toml``, and
    ``metrocloud serve nats --config FILE`` as its command."""
    configs.mkdir(parents=True, exist_ok=True)
    for node in cluster.nodes:
        host_folder(source, node.data_dir, ("nats",))
        path = configs / f"{node.server_name}.toml"
        path.write_text(render_toml(node_config(node)), encoding="utf-8")
        node.launch = (
            sys.executable, "-m", "metrocloud.cli", "serve", BROKER_SERVICE, "--config", str(path),
        )  # fmt: skip


def host_folder(source: Path, target: Path, identities: Iterable[str]) -> Path:
    """Make ``target`` the data folder of a process on another host: the ``identities``
    (their keys and chains) from ``source/identities``, the trust anchors (root, sub-CAs,
    CRLs) from ``source/pki``, and the key passphrase file when ``source`` keeps one. The
    CA's own keys and every other identity stay behind."""
    source, target = Path(source), Path(target)
    (target / "identities").mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in identities:
        for suffix in (".pem", ".key"):
            found = source / "identities" / f"{name}{suffix}"
            if not found.exists():
                raise ConfigurationError(f"no identity {name!r} in {source}: {found} is missing")
            shutil.copy2(found, target / "identities" / found.name)
    pki = target / "pki"
    shutil.rmtree(pki, ignore_errors=True)
    pki.mkdir(parents=True)
    shutil.copy2(source / "pki" / "root.pem", pki / "root.pem")
    for part in ("ca", "crl"):
        if (source / "pki" / part).is_dir():
            shutil.copytree(
                source / "pki" / part, pki / part, ignore=shutil.ignore_patterns("*.key")
            )
    passphrase = source / "secrets" / "key-passphrase"
    if passphrase.exists():
        (target / "secrets").mkdir(mode=0o700, exist_ok=True)
        shutil.copy2(passphrase, target / "secrets" / passphrase.name)
    return target
