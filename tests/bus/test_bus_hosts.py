"""Broker nodes on hosts of their own: each node on its own address (127.0.2.x stands for
three machines), each started as an operator starts it (``metrocloud serve nats
--config FILE``) from a folder that holds only the ``nats`` identity and the trust
anchors, and clients checking each node's certificate against the address they dial."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from bus_helpers import settle
from cryptography import x509
from test_bus_cluster import _consume, _publish_acked, spread
from test_bus_permissions import check_refused_publish, check_zone_flow
from test_bus_tls import TlsBus

from metrocloud.bus.cluster import NatsCluster
from metrocloud.bus.connect import connect
from metrocloud.bus.server import (
    LOOPBACK,
    SERVER_IDENTITY,
    ClusterRoutes,
    issue_server_tls,
    render_config,
)
from metrocloud.bus.streams import ensure_streams, pull
from metrocloud.cloud.config import load_config
from metrocloud.core.errors import ConfigurationError
from metrocloud.deploy.broker import broker_node, host_folder, launch_as_operator
from metrocloud.deploy.configfile import render_toml
from metrocloud.pki.identity import IdentityStore
from metrocloud.pki.roles import Role as PkiRole

HOSTS = ("127.0.2.1", "127.0.2.2", "127.0.2.3")


@contextlib.contextmanager
def socket_forward(host: str, port: int, to_host: str, to_port: int) -> Iterator[str]:
    """Forward TCP connections from ``host:port`` to ``to_host:to_port``; yields the URL."""
    listener = socket.create_server((host, port))
    listener.settimeout(0.2)
    stop = threading.Event()

    def pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection((to_host, to_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"tls://{host}:{port}"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def _ip_names(certificate: x509.Certificate) -> set[str]:
    alt = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(ip) for ip in alt.get_values_for_type(x509.IPAddress)}


PASSPHRASE = b"the operator's key passphrase"


def issuing_folder(folder: Path) -> IdentityStore:
    """The PKI's folder, as the operator keeps it: encrypted key files and the passphrase
    file a host's folder gets a copy of (:func:`host_folder`)."""
    (folder / "secrets").mkdir(parents=True)
    (folder / "secrets" / "key-passphrase").write_bytes(PASSPHRASE)
    return IdentityStore.open_local(folder, PASSPHRASE)


@pytest.fixture(scope="module")
def hosts_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TlsBus, NatsCluster]]:
    folder = tmp_path_factory.mktemp("hosts")
    ids = issuing_folder(folder / "ca")
    first = issue_server_tls(ids)  # a one-machine certificate first: it must be reissued
    assert HOSTS[0] not in _ip_names(first.chain[0])
    tls = issue_server_tls(ids, hosts=HOSTS)
    cluster = NatsCluster(folder / "nodes", tls=tls, hosts=HOSTS)
    launch_as_operator(cluster, folder / "ca", folder / "config")
    with cluster:
        yield TlsBus(ids, cluster.nodes[0], PASSPHRASE), cluster


def test_the_certificate_names_every_node_and_is_reissued_for_new_addresses(
    hosts_cluster: tuple[TlsBus, NatsCluster],
) -> None:
    tls_bus, _ = hosts_cluster
    certificate = tls_bus.ids.identity(SERVER_IDENTITY, PkiRole.SERVICE).certificate
    assert set(HOSTS) | {LOOPBACK} <= _ip_names(certificate)
    assert certificate.public_key() == tls_bus.ids.keys.load(SERVER_IDENTITY).public_key()


def test_each_node_listens_on_its_own_address_from_its_own_folder(
    hosts_cluster: tuple[TlsBus, NatsCluster],
) -> None:
    _, cluster = hosts_cluster
    assert cluster.urls == tuple(
        f"tls://{host}:{node.port}" for host, node in zip(HOSTS, cluster.nodes, strict=True)
    )
    for i, node in enumerate(cluster.nodes):
        conf = node.config_path.read_text()
        assert f'listen: "{HOSTS[i]}:{node.port}"' in conf
        assert f'listen: "{HOSTS[i]}:{cluster.route_ports[i]}"' in conf  # its route port
        for j, other in enumerate(HOSTS):
            assert (f"nats-route://{other}:{cluster.route_ports[j]}" in conf) == (i != j)
        # started by the operator's command, which became nats-server (same process)
        command = Path(f"/proc/{node.pid}/cmdline").read_bytes().split(b"\0")
        assert command[0].endswith(b"nats-server"), command
        # its folder: its own identity and the trust anchors, no client's key, no CA key
        keys = sorted(p.name for p in node.data_dir.rglob("*.key"))
        assert keys == ["nats.key", "server.key"], keys
        assert not (node.data_dir / "pki" / "private").exists()
        assert (node.data_dir / "pki" / "root.pem").exists()
        config = load_config(node.data_dir.parent.parent / "config" / f"{node.server_name}.toml")
        assert (config.service, config.host, config.port) == ("nats", HOSTS[i], node.port)
        varz = node.monitor("/varz")
        assert (varz["host"], varz["cluster"]["addr"]) == (HOSTS[i], HOSTS[i])


def test_the_zone_flow_across_nodes_on_three_addresses(
    hosts_cluster: tuple[TlsBus, NatsCluster],
) -> None:
    tls_bus, cluster = hosts_cluster
    asyncio.run(check_zone_flow(spread(cluster, tls_bus.credentials)))
    target = spread(cluster, tls_bus.credentials)
    asyncio.run(check_refused_publish(target, "thirdparty", "legal.in.reading.x"))


def test_a_client_refuses_a_node_that_answers_under_another_address(
    hosts_cluster: tuple[TlsBus, NatsCluster], tmp_path: Path
) -> None:
    """The certificate names the three nodes' addresses only: dialling a node through an
    address it does not name (127.0.2.9 forwarded there would be a man in the middle) is
    refused by the client's hostname check."""
    tls_bus, cluster = hosts_cluster
    port = cluster.nodes[0].port
    with socket_forward("127.0.2.9", port, HOSTS[0], port) as url:

        async def main() -> None:
            with pytest.raises(Exception, match=r"(?i)certificate|hostname|IP address"):
                await connect(
                    url,
                    tls_bus.credentials("communication"),
                    name="t",
                    role="communication",
                    first_connect_timeout_s=3,
                )

        asyncio.run(main())


def test_a_node_killed_comes_back_through_the_operators_command(
    hosts_cluster: tuple[TlsBus, NatsCluster],
) -> None:
    tls_bus, cluster = hosts_cluster

    async def main() -> None:
        admin = await connect(cluster.url, tls_bus.credentials("admin"), name="admin", role="admin")
        comm = await connect(
            cluster.url, tls_bus.credentials("communication"), name="c", role="communication"
        )
        legal = await connect(cluster.url, tls_bus.credentials("legal"), name="l", role="legal")
        try:
            await ensure_streams(admin.jetstream(), replicas=3)
            sub = await pull(legal.jetstream(), "legal")
            got: list[str] = []
            for i in range(5):
                await _publish_acked(comm.jetstream(), f"h{i}")
            await asyncio.to_thread(cluster.kill, 1)
            for i in range(5, 10):
                await _publish_acked(comm.jetstream(), f"h{i}")
            await asyncio.to_thread(cluster.start_node, 1)
            pid = cluster.nodes[1].pid
            assert (
                Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"nats-server")
            )
            await _consume(sub, 10, got)
            assert sorted(got) == sorted(f"h{i}" for i in range(10))
        finally:
            await settle(admin, comm, legal)
            for nc in (admin, comm, legal):
                await nc.close()

    asyncio.run(main())


# -- the configuration of a node ---------------------------------------------------------


def _node_file(tmp: Path, **changes: object) -> Path:
    values: dict[str, object] = {
        "service": "nats",
        "instance": "nats-1",
        "data": str(tmp / "node"),
        "host": "127.0.2.1",
        "port": 14222,
        "broker": {"route_port": 16222, "routes": ["127.0.2.2:16222", "127.0.2.3:16222"]},
    }
    values.update(changes)
    path = tmp / "nats-1.toml"
    path.write_text(render_toml(values), encoding="utf-8")
    return path


def _serve_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "metrocloud.cli", "serve", "nats", "--config", str(path), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_nats_check_names_what_is_missing(tmp_path: Path) -> None:
    done = _serve_check(_node_file(tmp_path))
    assert done.returncode == 2
    assert "the PKI's root certificate is missing" in done.stderr
    assert "Traceback" not in done.stderr

    bad = _serve_check(_node_file(tmp_path, broker={"route_port": 16222, "routes": ["x"]}))
    assert bad.returncode == 2
    assert "'x' is no route address (HOST:PORT)" in " ".join(bad.stderr.split())


def test_serve_nats_check_passes_on_a_prepared_folder(tmp_path: Path) -> None:
    ids = issuing_folder(tmp_path / "ca")
    issue_server_tls(ids, hosts=("127.0.2.1",))

    host_folder(tmp_path / "ca", tmp_path / "node", ("nats",))
    path = _node_file(tmp_path)
    done = _serve_check(path)
    assert done.returncode == 0, done.stderr
    node = broker_node(load_config(path))
    assert (node.host, node.port, node.server_name) == ("127.0.2.1", 14222, "nats-1")
    assert node.cluster is not None
    assert node.cluster.peers == (("127.0.2.2", 16222), ("127.0.2.3", 16222))
    # no route port, but routes: refused with a reason
    path = _node_file(tmp_path, broker={"routes": ["127.0.2.2:16222"]})
    done = _serve_check(path)
    assert done.returncode == 2
    assert "[broker] routes need a route_port" in done.stderr


def test_routes_render_each_peers_address_and_ipv6_in_brackets(tmp_path: Path) -> None:
    routes = ClusterRoutes(
        name="metrocloud",
        port=6222,
        peers=(("10.0.0.2", 6222), ("fd00::3", 6222)),
        user="route",
        password="secret",
        host="10.0.0.1",
    )
    conf = render_config(
        port=4222,
        store_dir=tmp_path,
        ports_file_dir=tmp_path,
        max_payload=1024,
        passwords={"admin": "pw"},
        roles={},
        cluster=routes,
        host="10.0.0.1",
    )
    assert 'listen: "10.0.0.1:4222"' in conf
    assert 'listen: "10.0.0.1:6222"' in conf
    assert '"nats-route://route:secret@10.0.0.2:6222"' in conf
    assert '"nats-route://route:secret@[fd00::3]:6222"' in conf
    assert re.search(r'http: "127\.0\.0\.1:-1"', conf)  # monitoring stays on loopback
    with pytest.raises(ConfigurationError, match="its own peer"):
        ClusterRoutes(name="m", port=6222, peers=(("10.0.0.1", 6222),), user="r", host="10.0.0.1")
    with pytest.raises(ConfigurationError, match="no host name"):
        ClusterRoutes(name="m", port=6222, peers=(("a b", 6222),), user="r")
    # the same port on another address is another peer
    ClusterRoutes(name="m", port=6222, peers=(("10.0.0.2", 6222),), user="r", host="10.0.0.1")
