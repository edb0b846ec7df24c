"""The bus in mutual-TLS mode: certificates of metrocloud's PKI mapped to the zone users."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import stat
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from bus_helpers import collect, open_bus, settle
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from metrocloud.bus.connect import (
    BusConnectError,
    client_tls_context,
    connect,
    tls_credentials,
)
from metrocloud.bus.server import (
    SERVER_IDENTITY,
    Credentials,
    EmbeddedNatsServer,
    ServerTls,
    TlsFiles,
    bus_identity_name,
    issue_server_tls,
    render_config,
    subject_dn,
)
from metrocloud.bus.streams import fetch, pull
from metrocloud.bus.subjects import ROLES
from metrocloud.cloud.cluster import require_p256_bus_cas
from metrocloud.core.errors import ConfigurationError
from metrocloud.pki import Curve, FileKeyStore, IdentityStore, Pki, Role, SubCa


def _key(ids: IdentityStore, name: str) -> Path:
    """The key file of identity ``name`` (the test PKIs keep keys in files)."""
    assert isinstance(ids.keys, FileKeyStore)
    return ids.keys.path(name)


@dataclass
class TlsBus:
    """A server in TLS mode with a throw-away PKI (key files in clear, or encrypted with
    ``password``)."""

    ids: IdentityStore
    server: EmbeddedNatsServer
    password: bytes | None = None

    @property
    def root_pem(self) -> Path:
        return self.ids.directory.parent / "pki" / "root.pem"

    def credentials(self, role: str, identity: str | None = None) -> Credentials:
        """``role``'s credentials with the certificate of ``identity`` (its own by default)."""
        name = identity or bus_identity_name(role)
        key = _key(self.ids, name)
        return tls_credentials(role, self.root_pem, self.ids.chain_path(name), key, self.password)


@pytest.fixture
def tls_bus(tmp_path: Path) -> Iterator[TlsBus]:
    ids = IdentityStore.open_local(tmp_path / "ca")
    server = EmbeddedNatsServer(tmp_path / "data", tls=issue_server_tls(ids))
    server.start()
    try:
        yield TlsBus(ids, server)
    finally:
        server.stop()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        data = json.loads(resp.read())
    assert isinstance(data, dict)
    return data


async def _refused(url: str, credentials: Credentials, role: str) -> BusConnectError:
    """Connect, expecting a fast refusal (well before the first-connect timeout)."""
    with pytest.raises(BusConnectError) as info:
        await asyncio.wait_for(
            connect(url, credentials, name="t", role=role, first_connect_timeout_s=30),
            timeout=10,
        )
    return info.value


def test_subject_dn_is_what_nats_server_matches(tls_bus: TlsBus) -> None:
    """Go's pkix.Name.String(): RFC 2253 order, most specific first, no spaces."""
    identity = tls_bus.ids.identity(bus_identity_name("legal"), Role.SERVICE)
    assert subject_dn(identity.certificate) == "CN=bus-legal,OU=service,O=metrocloud"
    assert tls_bus.server.tls is not None
    assert tls_bus.server.tls.users == {
        role: f"CN=bus-{role},OU=service,O=metrocloud" for role in ROLES
    }


def test_tls_mode_files_and_configuration(tls_bus: TlsBus) -> None:
    server, pki = tls_bus.server, tls_bus.ids.pki
    assert pki is not None
    assert server.url == f"tls://127.0.0.1:{server.port}"
    assert _mode(server.tls_dir) == 0o700
    key = server.tls_dir / "server.key"
    assert _mode(key) == 0o600
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # Go: no encrypted PKCS#8
    chain = x509.load_pem_x509_certificates((server.tls_dir / "server.pem").read_bytes())
    assert [c.subject for c in chain] == [
        tls_bus.ids.identity(SERVER_IDENTITY, Role.SERVICE).certificate.subject,
        pki.sub_cas[SubCa.SERVICES].subject,
    ]
    names = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    cas = x509.load_pem_x509_certificates((server.tls_dir / "ca.pem").read_bytes())
    assert cas == [pki.root, pki.sub_cas[SubCa.SERVICES]]

    config = server.config_path.read_text()
    assert _mode(server.config_path) == 0o600
    assert "verify_and_map: true" in config
    assert "password" not in config
    for role in ROLES:
        assert f'{{ user: "CN=bus-{role},OU=service,O=metrocloud"' in config
    assert not server.users_path.exists()
    with pytest.raises(ConfigurationError, match="mutual TLS"):
        server.credentials("legal")

    varz = _get_json(server.monitor_url + "/varz")  # monitoring stays plain HTTP on loopback
    assert varz["tls_required"] is True
    assert varz["tls_verify"] is True


def test_each_role_gets_exactly_its_permissions(tls_bus: TlsBus) -> None:
    """A message through the zones, every hop with its own certificate, nothing more."""

    async def main() -> None:
        async with open_bus(tls_bus.server, credentials=tls_bus.credentials) as bus:
            admin = bus.clients[0]
            gateway = await bus.connect("gateway")
            communication = await bus.connect("communication")
            legal = await bus.connect("legal")
            thirdparty = await bus.connect("thirdparty")
            assert communication.new_inbox().startswith("_INBOX_communication.")

            ack = await gateway.jetstream().publish("ingress.upload.gw1", b"transmission")
            assert (ack.stream, ack.seq) == ("INGRESS", 1)
            cjs = communication.jetstream()
            [m] = await fetch(await pull(cjs, "communication"), timeout_s=2.0)
            await m.ack_sync()
            assert (await cjs.publish("legal.in.reading.m1", b"reading")).stream == "LEGAL"
            ljs = legal.jetstream()
            [m] = await fetch(await pull(ljs, "legal"), timeout_s=2.0)
            assert m.data == b"reading"
            await m.ack_sync()
            assert (await ljs.publish("legal.results.m1", b"r")).stream == "LEGAL"
            await settle(*bus.clients)
            assert bus.violations() == {}

            # what the broker refuses: the same allow-lists as in password mode
            seen = await collect(admin, "legal.>")
            await gateway.publish("legal.in.x", b"forged")
            await legal.publish("egress.results.m1.p1", b"leak")
            await thirdparty.publish("legal.in.reading.x", b"forged")
            await collect(thirdparty, "legal.>")
            await bus.errors["gateway"].wait_for_violation('publish to "legal.in.x"')
            await bus.errors["legal"].wait_for_violation("egress.results.m1.p1")
            await bus.errors["thirdparty"].wait_for_violation("legal.in.reading.x")
            await bus.errors["thirdparty"].wait_for_violation('subscription to "legal.>"')
            await settle(*bus.clients)
            assert seen == []
            assert gateway.is_connected  # a violation is reported, not fatal

    asyncio.run(main())


def test_admin_certificate_may_do_everything(tls_bus: TlsBus) -> None:
    async def main() -> None:
        async with open_bus(tls_bus.server, credentials=tls_bus.credentials) as bus:
            admin = bus.clients[0]
            seen = await collect(admin, "legal.>")
            await admin.publish("legal.in.x", b"ok")
            await settle(admin)
            assert [m.subject for m in seen] == ["legal.in.x"]
            assert bus.violations() == {}

    asyncio.run(main())


def test_the_certificate_decides_the_role(tls_bus: TlsBus) -> None:
    """Credentials claiming "legal" with the gateway's certificate get the gateway's rights."""
    claimed = tls_bus.credentials("legal", bus_identity_name("gateway"))

    async def main() -> None:
        async with open_bus(tls_bus.server, streams=False, credentials=lambda _: claimed) as bus:
            nc = await bus.connect("legal")
            await nc.publish("legal.results.m1", b"forged")
            await bus.errors["legal"].wait_for_violation('publish to "legal.results.m1"')

    asyncio.run(main())


def test_certificate_from_another_pki_is_refused(tls_bus: TlsBus, tmp_path: Path) -> None:
    """Same subject DN, but issued by a self-made CA: the handshake fails."""
    other = IdentityStore.open_local(tmp_path / "other-ca")
    name = bus_identity_name("legal")
    other.identity(name, Role.SERVICE)
    forged = tls_credentials("legal", tls_bus.root_pem, other.chain_path(name), _key(other, name))

    async def main() -> None:
        error = await _refused(tls_bus.server.url, forged, "legal")
        assert "refused the credentials" in str(error)

    asyncio.run(main())
    assert "certificate" in tls_bus.server.log_tail().lower()


def test_certificate_of_this_pki_without_bus_user_is_refused(tls_bus: TlsBus) -> None:
    """A valid service certificate (not a bus identity) maps to no user."""
    tls_bus.ids.identity("legal", Role.SERVICE)
    tls_bus.ids.identity("bus-mallory", Role.SERVICE)

    async def main() -> None:
        for identity in ("legal", "bus-mallory", SERVER_IDENTITY):
            error = await _refused(
                tls_bus.server.url, tls_bus.credentials("legal", identity), "legal"
            )
            assert "authorization violation" in str(error).lower()

    asyncio.run(main())


def test_client_without_certificate_is_refused(tls_bus: TlsBus) -> None:
    context = ssl.create_default_context(cafile=str(tls_bus.root_pem))

    async def main() -> None:
        error = await _refused(tls_bus.server.url, Credentials("legal", tls=context), "legal")
        assert "refused the credentials" in str(error)

    asyncio.run(main())


def test_password_client_is_refused(tls_bus: TlsBus) -> None:
    """A password-mode client: nats-py must upgrade to TLS and does not trust the server."""

    async def main() -> None:
        plain_url = tls_bus.server.url.replace("tls://", "nats://")
        error = await _refused(plain_url, Credentials("legal", "a-password"), "legal")
        assert "not trusted" in str(error)

    asyncio.run(main())


def test_plaintext_protocol_is_refused(tls_bus: TlsBus) -> None:
    """Speaking NATS in clear after INFO: the server expects a TLS handshake and hangs up."""
    port = tls_bus.server.port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        info = sock.recv(65536)
        assert info.startswith(b"INFO ")
        assert json.loads(info[5:])["tls_required"] is True
        sock.sendall(b'CONNECT {"verbose":false,"user":"CN=bus-admin"}\r\nPING\r\n')
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        assert b"PONG" not in received


def test_client_verifies_server_certificate(tls_bus: TlsBus, tmp_path: Path) -> None:
    """A client that trusts another root refuses the server, fast."""
    other = IdentityStore.open_local(tmp_path / "other-ca")
    other_root = tmp_path / "other-ca" / "pki" / "root.pem"
    name = bus_identity_name("legal")
    credentials = tls_credentials(
        "legal", other_root, tls_bus.ids.chain_path(name), _key(tls_bus.ids, name)
    )
    assert other.pki is not None

    async def main() -> None:
        error = await _refused(tls_bus.server.url, credentials, "legal")
        assert "not trusted" in str(error)
        assert "certificate verify failed" in str(error)

    asyncio.run(main())


def test_server_name_is_checked(tls_bus: TlsBus) -> None:
    """The server certificate names 127.0.0.1 and localhost, nothing else."""

    async def main() -> None:
        creds = tls_bus.credentials("legal")
        nc = await connect(
            tls_bus.server.url, creds, name="t", role="legal", tls_hostname="localhost"
        )
        await nc.close()
        with pytest.raises(BusConnectError, match="not trusted"):
            await asyncio.wait_for(
                connect(
                    tls_bus.server.url,
                    creds,
                    name="t",
                    role="legal",
                    tls_hostname="nats.example",
                    first_connect_timeout_s=30,
                ),
                timeout=10,
            )

    asyncio.run(main())


def test_tls_mode_replaces_password_mode(tmp_path: Path) -> None:
    """The same data folder, first with passwords, then with TLS: the passwords are gone."""
    data = tmp_path / "data"
    with EmbeddedNatsServer(data) as plain:
        password = plain.credentials("legal")
        assert plain.users_path.exists()
    ids = IdentityStore.open_local(tmp_path / "ca")
    with EmbeddedNatsServer(data, tls=issue_server_tls(ids)) as srv:
        assert not srv.users_path.exists()

        async def main() -> None:
            error = await _refused(srv.url.replace("tls://", "nats://"), password, "legal")
            assert "not trusted" in str(error)

        asyncio.run(main())


def test_client_tls_context_reports_unusable_files(tmp_path: Path) -> None:
    ids = IdentityStore.open_local(tmp_path / "ca", passphrase=b"right")
    name = bus_identity_name("storage")
    ids.identity(name, Role.SERVICE)
    root = tmp_path / "ca" / "pki" / "root.pem"
    context = client_tls_context(root, ids.chain_path(name), _key(ids, name), b"right")
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    with pytest.raises(ConfigurationError, match="cannot make the bus TLS context"):
        client_tls_context(root, ids.chain_path(name), _key(ids, name), b"wrong")
    with pytest.raises(ConfigurationError, match="cannot make the bus TLS context"):
        client_tls_context(root, tmp_path / "missing.pem", _key(ids, name), b"right")
    with pytest.raises(ConfigurationError, match="unknown role"):
        tls_credentials("mallory", root, ids.chain_path(name), _key(ids, name), b"right")


def test_credentials_without_tls_or_password_are_refused() -> None:
    async def main() -> None:
        with pytest.raises(ConfigurationError, match="neither TLS nor a password"):
            await connect("tls://127.0.0.1:1", Credentials("legal"), name="t", role="legal")
        with pytest.raises(TypeError, match="tls"):
            await connect(
                "tls://127.0.0.1:1",
                Credentials("legal", "pw"),
                name="t",
                role="legal",
                tls=ssl.create_default_context(),
            )

    asyncio.run(main())
    context = ssl.create_default_context()
    assert "SSLContext" not in repr(Credentials("legal", tls=context))
    assert "secret" not in repr(Credentials("legal", "secret"))


def test_brainpool_root_is_refused(tmp_path: Path) -> None:
    """Go's TLS stack knows no brainpool curves: the server's CAs must be P-256."""
    pki = Pki.init(
        tmp_path / "pki",
        FileKeyStore(tmp_path / "pki" / "private"),
        root_curve=Curve.BRAINPOOL_P256R1,
    )
    with pytest.raises(ConfigurationError, match="root certificate has a brainpoolP256r1 key"):
        require_p256_bus_cas(pki)
    ids = IdentityStore(
        tmp_path / "identities", FileKeyStore(tmp_path / "identities"), pki.trust_store(), pki=pki
    )
    with pytest.raises(ConfigurationError, match="only P-256"):
        issue_server_tls(ids)
    pki.close()


def test_brainpool_services_ca_is_refused(tmp_path: Path) -> None:
    pki = Pki.init(
        tmp_path / "pki",
        FileKeyStore(tmp_path / "pki" / "private"),
        ca_curves={SubCa.SERVICES: Curve.BRAINPOOL_P256R1},
    )
    with pytest.raises(ConfigurationError, match="services sub-CA certificate has a brainpool"):
        require_p256_bus_cas(pki)
    pki.close()


def _self_signed(
    usages: list[x509.ObjectIdentifier],
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    now = datetime.now(timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def test_extended_key_usage_go_cannot_parse_is_refused() -> None:
    """nats-server (Go) rejects an EKU OID with a component of 2^31 or more, e.g. a UUID arc."""
    uuid_arc = x509.ObjectIdentifier("2.25.229036380427356203727396095914004893591.1.6")
    certificate, key = _self_signed([ExtendedKeyUsageOID.SERVER_AUTH, uuid_arc])
    with pytest.raises(ConfigurationError, match="Go cannot parse"):
        ServerTls((certificate,), key, (certificate,), {})
    small = x509.ObjectIdentifier("1.3.6.1.4.1.2147483647.1")
    certificate, key = _self_signed([ExtendedKeyUsageOID.SERVER_AUTH, small])
    assert ServerTls((certificate,), key, (certificate,), {}).chain == (certificate,)


def test_server_tls_checks_key_and_subjects() -> None:
    certificate, key = _self_signed([ExtendedKeyUsageOID.SERVER_AUTH])
    _, other_key = _self_signed([ExtendedKeyUsageOID.SERVER_AUTH])
    with pytest.raises(ConfigurationError, match="does not match"):
        ServerTls((certificate,), other_key, (certificate,), {})
    with pytest.raises(ConfigurationError, match="share one certificate subject"):
        ServerTls((certificate,), key, (certificate,), {"a": "CN=x", "b": "CN=x"})


def test_rendered_tls_configuration(tmp_path: Path) -> None:
    """No PKI needed: the tls block and one DN-named user per role with its permissions."""
    files = TlsFiles(
        cert_file=tmp_path / "server.pem",
        key_file=tmp_path / "server.key",
        ca_file=tmp_path / "ca.pem",
        users={name: f"CN=bus-{name},OU=service,O=metrocloud" for name in ROLES},
    )

    def render(tls: TlsFiles | None = None, passwords: dict[str, str] | None = None) -> str:
        return render_config(
            port=None,
            store_dir=tmp_path / "js",
            ports_file_dir=tmp_path,
            max_payload=1024,
            tls=tls,
            passwords=passwords,
        )

    text = render(tls=files)
    tls_block = text[text.index("tls {") :].split("}", 1)[0]
    assert f"cert_file: {json.dumps(str(files.cert_file))}" in tls_block
    assert f"key_file: {json.dumps(str(files.key_file))}" in tls_block
    assert f"ca_file: {json.dumps(str(files.ca_file))}" in tls_block
    assert "verify_and_map: true" in tls_block
    assert "timeout: 5" in tls_block
    assert "password" not in text
    for name, role in ROLES.items():
        block = text[text.index(f'user: "CN=bus-{name},') :].split("{ user:", 1)[0]
        if role.zone == "admin":
            assert "permissions" not in block
        else:
            assert f"allow: {json.dumps(list(role.publish))}" in block
            assert f"allow: {json.dumps(list(role.subscribe_all()))}" in block

    with pytest.raises(ConfigurationError, match="either passwords or tls"):
        render()
    with pytest.raises(ConfigurationError, match="either passwords or tls"):
        render(tls=files, passwords={n: "pw" for n in ROLES})
    partial = TlsFiles(files.cert_file, files.key_file, files.ca_file, {"admin": "CN=a"})
    with pytest.raises(ConfigurationError, match="no client certificate subject for role"):
        render(tls=partial)
