"""A 3-node NATS JetStream cluster on loopback: replicated streams, the zone permissions of
a single server, authenticated routes, and no acknowledged message lost when a node dies."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import nats.errors
import pytest
from bus_helpers import BusTarget, open_bus, settle
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext
from nats.js.errors import APIError
from test_bus_permissions import (
    REFUSED_PUBLISH,
    REFUSED_SUBSCRIBE,
    check_cannot_pull_another_services_consumer,
    check_refused_publish,
    check_refused_subscribe,
    check_thirdparty_stays_in_services,
    check_zone_flow,
)
from test_bus_tls import TlsBus, _key

from metrocloud.bus.cluster import NatsCluster
from metrocloud.bus.connect import BusErrors, client_tls_context, connect, server_urls
from metrocloud.bus.server import (
    SERVER_IDENTITY,
    Credentials,
    EmbeddedNatsServer,
    bus_identity_name,
    issue_server_tls,
    render_config,
)
from metrocloud.bus.streams import ensure_streams, fetch, pull
from metrocloud.bus.subjects import CONSUMERS, ROLES, STREAMS
from metrocloud.core.errors import ConfigurationError
from metrocloud.pki import IdentityStore

# Each role on a node of its own choosing, so that every hop of the zone flow crosses
# nodes: the gateway publishes on node 0, communication pulls on node 1, legal on node 2...
NODE_OF = {
    "gateway": 0,
    "receiver": 1,
    "communication": 1,
    "legal": 2,
    "storage": 0,
    "logbook": 1,
    "display": 2,
    "thirdparty": 2,
}


def interest(cluster: NatsCluster) -> Callable[[str], Awaitable[None]]:
    """Waits until all nodes but (at most) the subscriber's own have heard of a
    subscription from a route (``/routez?subs=1``)."""

    def known(subscription: str) -> int:
        count = 0
        for i in cluster.running:
            routes = cluster.nodes[i].monitor("/routez?subs=1")["routes"] or []
            if any(subscription in (r.get("subscriptions_list") or []) for r in routes):
                count += 1
        return count

    async def wait(subscription: str) -> None:
        deadline = time.monotonic() + 5
        while await asyncio.to_thread(known, subscription) < len(cluster.running) - 1:
            assert time.monotonic() < deadline, f"{subscription} did not reach the other nodes"
            await asyncio.sleep(0.01)

    return wait


def spread(
    cluster: NatsCluster, credentials: Callable[[str], Credentials] | None = None
) -> BusTarget:
    """Every role on its node of :data:`NODE_OF` (the admin with every URL); streams with
    three replicas."""

    def url(role: str) -> str:
        return cluster.url if role == "admin" else cluster.nodes[NODE_OF.get(role, 1)].url

    return BusTarget(
        cluster, urls=url, credentials=credentials, replicas=3, interest=interest(cluster)
    )


def on_node(
    cluster: NatsCluster, node: int, credentials: Callable[[str], Credentials] | None = None
) -> BusTarget:
    """The admin (observer) on node 0, every other role on ``node``."""

    def url(role: str) -> str:
        return cluster.nodes[0 if role == "admin" else node].url

    return BusTarget(
        cluster, urls=url, credentials=credentials, replicas=3, interest=interest(cluster)
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """One password-mode cluster for the module's permission tests."""
    with NatsCluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


def _authorization(config: str) -> str:
    """The ``authorization { users = [...] }`` block of a nats.conf (the zone users)."""
    return config[config.index("\nauthorization {") :]


def test_cluster_forms_with_authenticated_routes(cluster: NatsCluster) -> None:
    assert cluster.running == (0, 1, 2)
    assert cluster.problems() == []
    assert len(set(cluster.urls)) == 3
    assert all(re.fullmatch(r"nats://127\.0\.0\.1:\d+", url) for url in cluster.urls)
    assert cluster.url == ",".join(cluster.urls)
    names = cluster.server_names
    assert names == ("metrocloud-0", "metrocloud-1", "metrocloud-2")
    leader = cluster.meta_leader()
    assert leader in names
    for i, node in enumerate(cluster.nodes):
        routes = node.monitor("/routez")["routes"]
        assert {r["remote_name"] for r in routes} == set(names) - {names[i]}
        meta = node.monitor("/jsz")["meta_cluster"]
        assert (meta["name"], meta["leader"], meta["cluster_size"]) == ("metrocloud", leader, 3)
        varz = node.monitor("/varz")
        assert varz["server_name"] == names[i]
        assert varz["cluster"]["addr"] == "127.0.0.1"
        assert varz["cluster"]["cluster_port"] == cluster.route_ports[i]
        config = node.config_path.read_text()
        assert f'listen: "127.0.0.1:{cluster.route_ports[i]}"' in config
        assert "authorization { user: " in config.split("jetstream {")[0]

    # the zone users of every node: exactly those a single server renders from ROLES
    passwords = {role: cluster.credentials(role).password or "" for role in ROLES}
    single = render_config(
        port=None, store_dir=Path("x"), ports_file_dir=Path("x"), max_payload=1, passwords=passwords
    )
    for node in cluster.nodes:
        assert _authorization(node.config_path.read_text()) == _authorization(single)


def _route_login(port: int, connect_json: bytes, context: ssl.SSLContext | None = None) -> bytes:
    """Log in on a route port as a would-be cluster node; what the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        conn = raw if context is None else context.wrap_socket(raw, server_hostname="127.0.0.1")
        with conn:
            conn.sendall(b"CONNECT " + connect_json + b"\r\nPING\r\n")
            answer = b""
            while b"PONG" not in answer and b"-ERR" not in answer:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                answer += chunk
            return answer


def test_route_port_refuses_a_wrong_password(cluster: NatsCluster) -> None:
    base = b'"verbose":false,"pedantic":false,"name":"ROGUE","cluster":"metrocloud"'
    port = cluster.route_ports[1]
    assert b"Authorization Violation" in _route_login(port, b"{" + base + b"}")
    forged = b"{" + base + b',"user":"route","pass":"guessed"}'
    assert b"Authorization Violation" in _route_login(port, forged)
    assert cluster.problems() == []


def test_replicated_streams_and_consumers(cluster: NatsCluster) -> None:
    async def main() -> None:
        async with open_bus(cluster, replicas=3) as bus:
            js = bus.clients[0].jetstream()
            for spec in STREAMS:
                info = await js.stream_info(spec.name)
                assert info.config.num_replicas == 3
                assert info.cluster is not None
                assert info.cluster.leader in cluster.server_names
                assert len(info.cluster.replicas or []) == 2
            for cspec in CONSUMERS:
                cinfo = await js.consumer_info(cspec.stream, cspec.durable)
                assert cinfo.config.num_replicas == 3
                assert cinfo.cluster is not None
                assert len(cinfo.cluster.replicas or []) == 2
            snapshot = [(await js.stream_info(s.name)).created for s in STREAMS]
            await ensure_streams(js, replicas=3)  # again: nothing changes
            assert [(await js.stream_info(s.name)).created for s in STREAMS] == snapshot
            with pytest.raises(ConfigurationError, match="4 replicas"):
                await ensure_streams(js, replicas=4)  # more replicas than nodes

    asyncio.run(main())


def test_zone_flow_across_the_nodes(cluster: NatsCluster) -> None:
    """The single server's zone flow, each hop connected to another node than the last."""
    asyncio.run(check_zone_flow(spread(cluster)))


@pytest.mark.parametrize(("role", "subject"), REFUSED_PUBLISH)
def test_node_refuses_publish(cluster: NatsCluster, role: str, subject: str) -> None:
    """Refused on node 1, and nothing of it reaches the admin on node 0 nor a stream."""
    asyncio.run(check_refused_publish(on_node(cluster, 1), role, subject))


@pytest.mark.parametrize(("role", "subject"), REFUSED_SUBSCRIBE)
def test_node_refuses_subscribe(cluster: NatsCluster, role: str, subject: str) -> None:
    """Refused on node 1 what is published on node 0."""
    asyncio.run(check_refused_subscribe(on_node(cluster, 1), role, subject))


def test_thirdparty_on_node_2_hears_storage_on_node_0(cluster: NatsCluster) -> None:
    asyncio.run(check_thirdparty_stays_in_services(spread(cluster)))


def test_service_cannot_pull_another_services_consumer(cluster: NatsCluster) -> None:
    asyncio.run(check_cannot_pull_another_services_consumer(spread(cluster)))


def test_a_single_server_refuses_three_replicas(server: EmbeddedNatsServer) -> None:
    async def main() -> None:
        async with open_bus(server, streams=False) as bus:
            admin = await bus.connect("admin")
            with pytest.raises(ConfigurationError, match="3 replicas"):
                await ensure_streams(admin.jetstream(), replicas=3)

    asyncio.run(main())


def test_replicas_of_an_existing_stream_are_scaled_up(tmp_path: Path) -> None:
    """A stream and its consumers made with one replica get three when asked, and keep
    their messages. (One stream only: NATS takes some 10 s to scale a work-queue stream
    that has a consumer, which the test can do without.)"""
    legal = tuple(s for s in STREAMS if s.name == "LEGAL")
    legal_consumers = tuple(c for c in CONSUMERS if c.stream == "LEGAL")

    async def main(cluster: NatsCluster) -> None:
        async with open_bus(cluster, streams=False) as bus:
            js = (await bus.connect("admin")).jetstream()
            await ensure_streams(js, legal, legal_consumers)
            assert (await js.stream_info("LEGAL")).config.num_replicas == 1
            # a new stream's subjects reach the other nodes a moment later (No Responders)
            await _publish_acked(js, "c1", subject="legal.keys.c1")
            await ensure_streams(js, legal, legal_consumers, replicas=3)
            info = await js.stream_info("LEGAL")
            assert (info.config.num_replicas, info.state.messages) == (3, 1)
            assert info.cluster is not None
            assert len(info.cluster.replicas or []) == 2
            for spec in legal_consumers:
                cinfo = await js.consumer_info("LEGAL", spec.durable)
                assert cinfo.config.num_replicas == 3
            cinfo = await js.consumer_info("LEGAL", "storage-keys")
            assert cinfo.num_pending == 1

    with NatsCluster(tmp_path) as cluster:
        asyncio.run(main(cluster))


# -- a node dies -----------------------------------------------------------------------

N_BEFORE, N_DOWN, N_AFTER = 20, 20, 10
TRANSIENT = (nats.errors.Error, APIError, asyncio.TimeoutError)


async def _publish_acked(
    js: JetStreamContext, ident: str, timeout_s: float = 30.0, subject: str | None = None
) -> None:
    """Publish until the stream acknowledges (once: the message id deduplicates retries)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ack = await js.publish(
                subject or f"legal.in.reading.{ident}",
                ident.encode(),
                timeout=1.0,
                headers={"Nats-Msg-Id": ident},
            )
        except TRANSIENT:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
        else:
            assert ack.stream == "LEGAL"
            return


async def _consume(sub: JetStreamContext.PullSubscription, count: int, got: list[str]) -> None:
    """Fetch and ack until ``got`` holds ``count`` payloads (failover errors are retried)."""
    deadline = time.monotonic() + 30
    while len(got) < count and time.monotonic() < deadline:
        try:
            msgs: list[Msg] = await fetch(sub, batch=count - len(got), timeout_s=1.0)
            for m in msgs:
                await m.ack_sync(timeout=2.0)
                got.append(m.data.decode())
        except TRANSIENT:
            await asyncio.sleep(0.1)


def _legal_last_seq(node: EmbeddedNatsServer) -> int:
    jsz = node.monitor("/jsz?streams=true")
    for account in jsz.get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            if stream["name"] == "LEGAL":
                return int(stream["state"]["last_seq"])
    return -1


def test_kill_9_of_a_node_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """The node that leads the stream and serves the publisher is killed; the client goes
    to another node, the two left keep acking and delivering, the node comes back and
    catches up, and every acknowledged message is delivered exactly once."""
    total = N_BEFORE + N_DOWN + N_AFTER

    async def main(cluster: NatsCluster) -> None:
        async with open_bus(cluster, replicas=3) as bus:
            admin_js = bus.clients[0].jetstream()
            leader = (await admin_js.stream_info("LEGAL")).cluster.leader  # type: ignore[union-attr]
            victim = cluster.index(leader)
            others = [i for i in range(3) if i != victim]
            # the publisher starts on the victim and knows every node
            urls = [cluster.nodes[victim].url] + [cluster.nodes[i].url for i in others]
            comm: Client = await connect(
                urls,
                cluster.credentials("communication"),
                name="publisher",
                role="communication",
                errors=BusErrors(),
                dont_randomize=True,
            )
            bus.clients.append(comm)
            assert comm.connected_url is not None
            assert comm.connected_url.port == cluster.nodes[victim].port
            legal = await bus.connect("legal")  # on all nodes, wherever it lands
            cjs, sub = comm.jetstream(), await pull(legal.jetstream(), "legal")
            got: list[str] = []

            for i in range(N_BEFORE):
                await _publish_acked(cjs, f"m{i}")
            await _consume(sub, N_BEFORE // 2, got)

            await asyncio.to_thread(cluster.kill, victim)
            assert cluster.running == tuple(others)
            for i in range(N_BEFORE, N_BEFORE + N_DOWN):
                await _publish_acked(cjs, f"m{i}")  # acked by the two nodes left
            assert comm.stats["reconnects"] >= 1
            assert comm.connected_url is not None
            assert comm.connected_url.port in {cluster.nodes[i].port for i in others}
            await _consume(sub, N_BEFORE, got)  # the durable consumer still delivers
            assert len(got) == N_BEFORE

            await asyncio.to_thread(cluster.start_node, victim)  # waits for /healthz: current
            seqs = {i: _legal_last_seq(cluster.nodes[i]) for i in range(3)}
            assert set(seqs.values()) == {N_BEFORE + N_DOWN}, seqs  # it caught up
            for i in range(N_BEFORE + N_DOWN, total):
                await _publish_acked(cjs, f"m{i}")
            await _consume(sub, total, got)

            assert sorted(got) == sorted(f"m{i}" for i in range(total))  # each exactly once
            assert await fetch(sub, timeout_s=0.3) == []
            info = await admin_js.stream_info("LEGAL")
            assert info.state.messages == total
            await settle(comm, legal)
            assert bus.violations() == {}

    with NatsCluster(tmp_path) as cluster:
        asyncio.run(main(cluster))


# -- TLS -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TlsBus, NatsCluster]]:
    folder = tmp_path_factory.mktemp("tls-cluster")
    ids = IdentityStore.open_local(folder / "ca")
    with NatsCluster(folder / "data", tls=issue_server_tls(ids)) as running:
        yield TlsBus(ids, running.nodes[0]), running


def test_tls_cluster_routes_use_the_server_certificate(
    tls_cluster: tuple[TlsBus, NatsCluster],
) -> None:
    tls_bus, cluster = tls_cluster
    assert all(re.fullmatch(r"tls://127\.0\.0\.1:\d+", url) for url in cluster.urls)
    for node in cluster.nodes:
        varz = node.monitor("/varz")
        assert (varz["tls_required"], varz["tls_verify"]) == (True, True)
        assert (varz["cluster"]["tls_required"], varz["cluster"]["tls_verify"]) == (True, True)
        config = node.config_path.read_text()
        route_part = config[config.index("cluster {") : config.index("jetstream {")]
        assert 'authorization { user: "CN=nats,OU=service,O=metrocloud" }' in route_part
        assert "verify_and_map: true" in route_part
        assert "password" not in config

    def context(identity: str) -> ssl.SSLContext:
        ids = tls_bus.ids
        return client_tls_context(tls_bus.root_pem, ids.chain_path(identity), _key(ids, identity))

    hello = b'{"verbose":false,"pedantic":false,"name":"ROGUE","cluster":"metrocloud"}'
    port = cluster.route_ports[2]
    # a bus client's certificate (same CA) cannot join the cluster as a node...
    answer = _route_login(port, hello, context(bus_identity_name("thirdparty")))
    assert b"Authorization Violation" in answer
    # ...what the nodes present to each other can (the check above refuses for the DN)
    assert b"PONG" in _route_login(port, hello, context(SERVER_IDENTITY))


def test_tls_cluster_zone_flow_and_refusals(tls_cluster: tuple[TlsBus, NatsCluster]) -> None:
    """The zone flow across the nodes with each role's certificate (the admin with all
    three URLs); node 1 refuses a forged publish and a foreign subscription."""
    tls_bus, cluster = tls_cluster
    asyncio.run(check_zone_flow(spread(cluster, tls_bus.credentials)))
    refusals = on_node(cluster, 1, tls_bus.credentials)
    asyncio.run(check_refused_publish(refusals, "thirdparty", "legal.in.reading.x"))
    asyncio.run(check_refused_subscribe(refusals, "communication", "legal.in.>"))


def test_server_urls_take_a_list_or_commas() -> None:
    one, two = "nats://127.0.0.1:4222", "nats://127.0.0.1:4223"
    assert server_urls(one) == [one]
    assert server_urls(f"{one}, {two},") == [one, two]
    assert server_urls((one, two)) == [one, two]
    with pytest.raises(ConfigurationError, match="no bus server URL"):
        server_urls(" , ")
