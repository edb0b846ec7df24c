"""A NATS JetStream cluster of embedded servers: several nodes, one broker.

Each node is an :class:`~metrocloud.bus.server.EmbeddedNatsServer` with its own data
folder (``<folder>/node-<i>``), client port, route port and ``server_name``
(``<name>-<i>``), and the same zone users and permissions as a single server: the
configuration is rendered by the same code, plus a ``cluster`` block
(:class:`~metrocloud.bus.server.ClusterRoutes`). Each node listens on its own address
(``hosts``; 127.0.0.1 for all unless given) and routes are authenticated: with TLS, both
ends present the ``nats`` server certificate and a route is accepted only from that
certificate's subject (a client certificate of the same CA cannot join); in password mode
by a route password.

Streams created with ``replicas=3`` (:func:`~metrocloud.bus.streams.ensure_streams`) keep
every message on three nodes and take a write once two have it, so the cluster goes on
accepting and delivering while any one node is down; a node that comes back catches up
from the others. Clients get every node's URL (:attr:`NatsCluster.url`) and reconnect to
another node when theirs goes away.

Files under ``folder``:

``users.json``     password mode: ``{role: password}``, shared by every node (mode 0600)
``route.json``     password mode: the route password, shared by every node (mode 0600)
``node-<i>/nats/`` each node's files, as described in :mod:`metrocloud.bus.server`
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from metrocloud.bus.server import (
    DEFAULT_MAX_PAYLOAD,
    LOOPBACK,
    ROUTE_USER,
    ClusterRoutes,
    Credentials,
    EmbeddedNatsServer,
    NatsServerError,
    ServerTls,
    subject_dn,
)
from metrocloud.bus.subjects import ROLES, Role
from metrocloud.core.errors import ConfigurationError
from metrocloud.core.ports import free_port

__all__ = ["CLUSTER_NAME", "NatsCluster"]

CLUSTER_NAME = "metrocloud"


def _free_ports(count: int, taken: tuple[int, ...] = ()) -> tuple[int, ...]:
    """``count`` distinct free ports (:func:`free_port`), none of them in ``taken``."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports and port not in taken:
            ports.append(port)
    return tuple(ports)


class NatsCluster:
    """``nodes`` embedded NATS servers forming one JetStream cluster.

    Use as a context manager or call :meth:`start` / :meth:`stop`. Ports are chosen when
    the object is made (below the ephemeral range, :func:`~metrocloud.core.ports.free_port`)
    unless given, and kept for its lifetime, so a node that is restarted comes back where
    its peers and clients look for it. Nodes are numbered from 0; node ``i`` listens on
    ``hosts[i]`` (every node on 127.0.0.1 unless given: a cluster on one machine; the
    tests give each node an address of its own, 127.0.2.x, as separate hosts would have).
    With ``tls`` every node presents the same server identity, which must name every
    node's address (:func:`~metrocloud.bus.server.issue_server_tls` with ``hosts``), to
    clients and to its peers.
    """

    def __init__(
        self,
        folder: Path,
        *,
        nodes: int = 3,
        tls: ServerTls | None = None,
        name: str = CLUSTER_NAME,
        client_ports: tuple[int, ...] | None = None,
        route_ports: tuple[int, ...] | None = None,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        roles: Mapping[str, Role] = ROLES,
        start_timeout_s: float = 60.0,
        hosts: tuple[str, ...] | None = None,
    ) -> None:
        if nodes < 2:
            raise ConfigurationError(
                f"a cluster needs at least 2 nodes (3 to go on without one), got {nodes}"
            )
        for what, given in (("client_ports", client_ports), ("route_ports", route_ports)):
            if given is not None and len(given) != nodes:
                raise ConfigurationError(f"{what} must name {nodes} ports, got {len(given)}")
        if hosts is not None and len(hosts) != nodes:
            raise ConfigurationError(f"hosts must name {nodes} addresses, got {len(hosts)}")
        self.hosts = hosts or (LOOPBACK,) * nodes
        self.folder = Path(folder)
        self.name = name
        self.tls = tls
        self.start_timeout_s = start_timeout_s
        clients = client_ports or _free_ports(nodes, route_ports or ())
        routes = route_ports or _free_ports(nodes, clients)
        if len({*clients, *routes}) != 2 * nodes:
            raise ConfigurationError("every client and route port of a cluster must differ")
        self._route_password: str | None = None if tls is not None else self._route_secret()
        route_user = subject_dn(tls.chain[0]) if tls is not None else ROUTE_USER
        self.nodes: tuple[EmbeddedNatsServer, ...] = tuple(
            EmbeddedNatsServer(
                self.folder / f"node-{i}",
                port=clients[i],
                max_payload=max_payload,
                roles=roles,
                tls=tls,
                start_timeout_s=start_timeout_s,
                server_name=f"{name}-{i}",
                cluster=ClusterRoutes(
                    name=name,
                    port=routes[i],
                    peers=tuple((self.hosts[j], p) for j, p in enumerate(routes) if j != i),
                    user=route_user,
                    password=self._route_password,
                    host=self.hosts[i],
                ),
                users_path=None if tls is not None else self.folder / "users.json",
            )
            for i in range(nodes)
        )

    # -- addresses and credentials ------------------------------------------------------

    @property
    def urls(self) -> tuple[str, ...]:
        """Every node's client URL (``tls://HOST:PORT`` or ``nats://...``), node order."""
        return tuple(node.url for node in self.nodes)

    @property
    def url(self) -> str:
        """:attr:`urls` as one comma-separated string (what :func:`connect` also takes)."""
        return ",".join(self.urls)

    @property
    def server_names(self) -> tuple[str, ...]:
        return tuple(node.server_name for node in self.nodes)

    @property
    def route_ports(self) -> tuple[int, ...]:
        return tuple(node.cluster.port for node in self.nodes if node.cluster is not None)

    def index(self, server_name: str) -> int:
        """The number of the node called ``server_name`` (as JetStream names leaders)."""
        try:
            return self.server_names.index(server_name)
        except ValueError:
            raise ConfigurationError(f"no node {server_name!r} in cluster {self.name}") from None

    def credentials(self, role: str) -> Credentials:
        """Password mode: ``role``'s user and password, the same on every node."""
        return self.nodes[0].credentials(role)

    def _route_secret(self) -> str:
        """The route password of password mode, generated once and kept in ``route.json``."""
        path = self.folder / "route.json"
        with contextlib.suppress(FileNotFoundError):
            loaded = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict) and isinstance(loaded.get("password"), str):
                os.chmod(path, 0o600)
                return str(loaded["password"])
            raise ConfigurationError(f"{path} holds no route password")
        self.folder.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(32)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"user": ROUTE_USER, "password": password}, f)
        os.replace(tmp, path)
        return password

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def running(self) -> tuple[int, ...]:
        """The numbers of the nodes whose process runs."""
        return tuple(i for i, node in enumerate(self.nodes) if node.running)

    def start(self) -> None:
        """Start every node that is not running, then wait until the cluster has formed."""
        if self.tls is None:
            self.nodes[0].credentials(next(iter(self.nodes[0].roles)))  # users.json, once
        todo = [node for node in self.nodes if not node.running]
        failures: list[BaseException] = []

        def _start(node: EmbeddedNatsServer) -> None:
            try:
                node.start()
            except BaseException as exc:  # reported below, from the calling thread
                failures.append(exc)

        # In parallel: each node's start-up check waits for JetStream, which may wait for
        # its peers.
        threads = [threading.Thread(target=_start, args=(node,), daemon=True) for node in todo]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        try:
            if failures:
                raise failures[0]
            self.wait_formed()
        except BaseException:
            self.stop()
            raise

    def start_node(self, index: int, *, wait: bool = True) -> None:
        """Start node ``index`` again (same ports, same data); with ``wait``, until it has
        rejoined the cluster (:meth:`wait_formed`) and caught up (:meth:`wait_caught_up`)."""
        self.nodes[index].start()
        if wait:
            self.wait_formed()
            self.wait_caught_up(index)

    def stop_node(self, index: int) -> None:
        """Stop node ``index`` cleanly (SIGTERM)."""
        self.nodes[index].stop()

    def kill(self, index: int) -> None:
        """``kill -9`` node ``index`` (a crash: nothing flushed, no goodbye to the peers)."""
        node = self.nodes[index]
        pid = node.pid
        if pid is None or not node.running:
            raise NatsServerError(f"node {index} of cluster {self.name} is not running")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while node.running and time.monotonic() < deadline:
            time.sleep(0.01)
        node.stop()  # reaps the process, closes the log, removes the stale ports file

    def stop(self) -> None:
        """Stop every node. Idempotent."""
        for node in self.nodes:
            node.stop()

    def problems(self) -> list[str]:
        """Why the running nodes are not (yet) one healthy cluster; empty when they are.

        Each running node must have a route to every other running node, know the
        JetStream meta leader, and answer ``/healthz`` with ok (every replica it holds is
        current).
        """
        names = self.server_names
        up = self.running
        found: list[str] = []
        for i in up:
            node = self.nodes[i]
            try:
                routez = node.monitor("/routez")
                jsz = node.monitor("/jsz")
            except NatsServerError as exc:
                found.append(f"{names[i]}: {exc}")
                continue
            peers = {str(r.get("remote_name", "")) for r in routez.get("routes") or []}
            missing = {names[j] for j in up if j != i} - peers
            if missing:
                found.append(f"{names[i]}: no route to {', '.join(sorted(missing))}")
            meta = jsz.get("meta_cluster") or {}
            if not meta.get("leader"):
                found.append(f"{names[i]}: no JetStream meta leader")
            problem = node.health_problem()
            if problem is not None:
                found.append(f"{names[i]}: {problem}")
        return found

    def wait_formed(self, timeout_s: float | None = None) -> None:
        """Wait until :meth:`problems` is empty (``NatsServerError`` after ``timeout_s``)."""
        deadline = time.monotonic() + (self.start_timeout_s if timeout_s is None else timeout_s)
        while True:
            found = self.problems()
            if not found:
                return
            if time.monotonic() > deadline:
                raise NatsServerError(
                    f"cluster {self.name} not formed after {self.start_timeout_s:.0f} s: "
                    + "; ".join(found)
                )
            time.sleep(0.05)

    def _streams(self, index: int) -> dict[tuple[str, str], tuple[int, frozenset[str]]]:
        """``{(account, stream): (last sequence, nodes holding it)}`` as node ``index``
        sees the streams it holds."""
        found: dict[tuple[str, str], tuple[int, frozenset[str]]] = {}
        jsz = self.nodes[index].monitor("/jsz?streams=true")
        for account in jsz.get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                cluster = stream.get("cluster") or {}
                hosts = {str(r.get("name")) for r in cluster.get("replicas") or []}
                hosts.add(str(cluster.get("leader") or self.server_names[index]))
                last_seq = int((stream.get("state") or {}).get("last_seq") or 0)
                found[(str(account.get("name")), str(stream["name"]))] = (
                    last_seq,
                    frozenset(hosts),
                )
        return found

    def wait_caught_up(self, index: int, timeout_s: float | None = None) -> None:
        """Wait until node ``index`` holds every message that the other running nodes held
        when this was called, in every stream it has a replica of.

        ``/healthz`` may answer ok before a node that was down has even learnt that it is
        behind; this compares the streams' last sequence numbers instead.
        """
        name = self.server_names[index]
        target: dict[tuple[str, str], int] = {}
        for j in self.running:
            if j == index:
                continue
            for key, (last_seq, hosts) in self._streams(j).items():
                if name in hosts:
                    target[key] = max(target.get(key, 0), last_seq)
        deadline = time.monotonic() + (self.start_timeout_s if timeout_s is None else timeout_s)
        while True:
            have = {key: seq for key, (seq, _) in self._streams(index).items()}
            behind = {key: seq for key, seq in target.items() if have.get(key, -1) < seq}
            if not behind:
                return
            if time.monotonic() > deadline:
                lag = ", ".join(f"{k[1]} at {have.get(k, 0)} of {s}" for k, s in behind.items())
                raise NatsServerError(f"{name} has not caught up: {lag}")
            time.sleep(0.05)

    def meta_leader(self) -> str | None:
        """The ``server_name`` of the JetStream meta leader, as a running node sees it."""
        for i in self.running:
            with contextlib.suppress(NatsServerError):
                leader = (self.nodes[i].monitor("/jsz").get("meta_cluster") or {}).get("leader")
                if leader:
                    return str(leader)
        return None

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        mode = "tls" if self.tls is not None else "passwords"
        return (
            f"NatsCluster({str(self.folder)!r}, {self.name!r}, nodes={len(self.nodes)}, "
            f"{mode}, running={list(self.running)})"
        )
