"""A PostgreSQL server of its own under one folder, on 127.0.0.1: for the tests and for the
one-machine distributed layout.

``LocalPostgres(folder)`` keeps everything in ``folder``::

    data/            the cluster (initdb on the first start)
    run/             the server's unix socket (when the path is short enough for one)
    postgres.log     the server's log
    metrocloud.conf  (inside data/) the settings it was last started with

The server listens on ``127.0.0.1`` only, with ``trust`` authentication for connections from
there and from the socket (anyone on the machine may connect as ``postgres``: a server for
one machine's services and tests, not for a network), ``fsync`` on unless the caller's
``settings`` say otherwise. The binaries come from ``$METROCLOUD_PG_BINDIR``,
``pg_config --bindir``, ``/usr/lib/postgresql/<version>/bin`` (newest first) or ``PATH``.

PostgreSQL refuses to run as root. As root, ``initdb`` and the server run as an
unprivileged user (``nobody``, or ``$METROCLOUD_PG_USER``), which owns the folder; a parent
folder that user cannot enter (such as ``/root`` or pytest's ``/tmp/pytest-of-root``) is
given search permission for others (``o+x``: entering, not listing), with a warning.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import psycopg

from metrocloud.core.errors import ConfigurationError, MetrocloudError
from metrocloud.core.ports import free_port

_log = logging.getLogger(__name__)

BINDIR_ENV = "METROCLOUD_PG_BINDIR"
USER_ENV = "METROCLOUD_PG_USER"
SUPERUSER = "postgres"
HOST = "127.0.0.1"
START_TIMEOUT_S = 60
SOCKET_PATH_MAX = 100
"""A unix socket's path must fit in ``sun_path`` (108 bytes), ``.s.PGSQL.<port>`` included."""
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_NEEDED = ("initdb", "pg_ctl", "postgres")
_STILL_THERE = ('lock file "postmaster.pid" already exists', "pre-existing shared memory block")
"""What the log says when a killed server's processes are not all gone yet."""


class PostgresError(MetrocloudError):
    """The local PostgreSQL server could not be set up, started or stopped."""


def _complete(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in _NEEDED)


def _version_key(path: Path) -> tuple[int, ...]:
    digits = re.findall(r"\d+", path.parent.name)
    return tuple(int(d) for d in digits)


def find_postgres_bindir() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Raises :class:`ConfigurationError` naming the Debian package when there is none.
    """
    tried: list[str] = []
    override = os.environ.get(BINDIR_ENV)
    if override:
        if _complete(Path(override)):
            return Path(override)
        raise ConfigurationError(f"${BINDIR_ENV}={override} does not hold {', '.join(_NEEDED)}")
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out and _complete(Path(out)):
                return Path(out)
            tried.append(f"pg_config --bindir ({out})")
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for bindir in versions:
        if _complete(bindir):
            return bindir
        tried.append(str(bindir))
    initdb = shutil.which("initdb")
    if initdb:
        bindir = Path(initdb).resolve().parent
        if _complete(bindir):
            return bindir
        tried.append(str(bindir))
    raise ConfigurationError(
        "PostgreSQL's server programs (initdb, pg_ctl, postgres) were not found"
        + (f" (looked in {', '.join(tried)})" if tried else "")
        + ". Install the Debian package postgresql-15 (as root: apt-get install postgresql-15, "
        f"or run scripts/ensure-postgres), or name the folder in ${BINDIR_ENV}."
    )


class LocalPostgres:
    """A PostgreSQL server with its cluster in ``folder``, listening on 127.0.0.1:``port``.

    ``port`` None: the port it was last started with, or a free one for a new cluster.
    ``settings``: more ``postgresql.conf`` settings (the tests turn ``fsync`` off).
    """

    def __init__(
        self,
        folder: Path,
        port: int | None = None,
        *,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.folder = Path(folder).absolute()
        self.data = self.folder / "data"
        self.log_file = self.folder / "postgres.log"
        self._port = port
        self.settings = dict(settings or {})
        self._bindir: Path | None = None

    # -- addresses ------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            self._port = self._configured_port() or free_port()
        return self._port

    @property
    def url(self) -> str:
        """The libpq URL of the ``postgres`` database, as the superuser."""
        return self.url_for(SUPERUSER)

    def url_for(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{_checked(database)}"

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> LocalPostgres:
        """Create the cluster if the folder has none, then start the server (if it is not
        running already) and wait until it accepts connections."""
        bindir = self.bindir
        if self.running:
            return self
        self._prepare_folder()
        if not (self.data / "PG_VERSION").exists():
            self._initdb(bindir)
        self._write_settings()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            logged = self.log_file.stat().st_size if self.log_file.exists() else 0
            result = self._run(
                [
                    str(bindir / "pg_ctl"),
                    "start",
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log_file),
                    "-w",
                    "-t",
                    str(START_TIMEOUT_S),
                    "-s",
                ],
                check=False,
            )
            if result.returncode == 0:
                return self
            # After a kill, the old postmaster (until reaped) or its backends may still hold
            # the lock file or the shared memory for a moment: try again until they are gone.
            new = ""
            with contextlib.suppress(OSError), self.log_file.open("rb") as log:
                log.seek(logged)
                new = log.read().decode(errors="replace")
            busy = any(sign in new for sign in _STILL_THERE)
            if not busy or time.monotonic() > deadline:
                raise PostgresError(
                    f"PostgreSQL did not start in {self.folder}: {result.stderr.strip()}\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended); nothing if stopped."""
        if not self.running:
            return
        result = self._run(
            [str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w"],
            check=False,
        )
        if result.returncode != 0 and self.running:
            raise PostgresError(f"PostgreSQL did not stop: {result.stderr.strip()}")

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash, for fault tests); :meth:`start` recovers."""
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    @property
    def pid(self) -> int | None:
        """The postmaster's process id, from its pid file; None when it is not running."""
        try:
            first = (self.data / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first.strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    @property
    def running(self) -> bool:
        """Whether the cluster's postmaster runs (not ``pg_ctl status``, which takes a
        killed server that is not reaped yet for a running one)."""
        return self.pid is not None

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- databases ------------------------------------------------------------------------
    def create_database(self, name: str, *, template: str | None = None) -> str:
        """Create database ``name`` (nothing if it exists); returns its URL."""
        _checked(name)
        with psycopg.connect(self.url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone() is None:
                sql = f'CREATE DATABASE "{name}"'
                if template is not None:
                    sql += f' TEMPLATE "{_checked(template)}"'
                conn.execute(sql.encode())
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` and end its sessions; nothing if there is none."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{_checked(name)}" WITH (FORCE)'.encode())

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- internals ------------------------------------------------------------------------
    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            self._bindir = find_postgres_bindir()
        return self._bindir

    def _owner(self) -> tuple[int, int] | None:
        """The (uid, gid) to run PostgreSQL as; None: as this process."""
        if os.geteuid() != 0:
            return None
        name = os.environ.get(USER_ENV, "nobody")
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            raise ConfigurationError(
                f"running as root, PostgreSQL needs an unprivileged user; {name!r} does not "
                f"exist (set ${USER_ENV})"
            ) from None
        if user.pw_uid == 0:
            raise ConfigurationError(f"${USER_ENV}={name} is root; PostgreSQL refuses root")
        return user.pw_uid, user.pw_gid

    def _prepare_folder(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        owner = self._owner()
        if owner is None:
            return
        uid, gid = owner
        self._let_enter(uid, gid)
        for path in (self.folder, self.folder / "run", self.log_file):
            if path.exists():
                os.chown(path, uid, gid)
        if self.data.exists() and self.data.stat().st_uid != uid:
            _chown_tree(self.data, uid, gid)  # a cluster made as another user

    def _let_enter(self, uid: int, gid: int) -> None:
        """Give ``o+x`` to each parent folder that ``uid`` could not enter."""
        groups = {gid, *(g.gr_gid for g in grp.getgrall() if _user_name(uid) in g.gr_mem)}
        for parent in reversed(self.folder.parents):
            st = parent.stat()
            if st.st_uid == uid:
                ok = bool(st.st_mode & stat.S_IXUSR)
            elif st.st_gid in groups:
                ok = bool(st.st_mode & stat.S_IXGRP)
            else:
                ok = bool(st.st_mode & stat.S_IXOTH)
            if not ok:
                _log.warning("giving %s o+x so that PostgreSQL's user can enter it", parent)
                os.chmod(parent, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)

    def _initdb(self, bindir: Path) -> None:
        if self.data.exists() and any(self.data.iterdir()):
            raise PostgresError(f"{self.data} is neither empty nor a PostgreSQL cluster")
        self.data.mkdir(mode=0o700, exist_ok=True)
        owner = self._owner()
        if owner is not None:
            os.chown(self.data, *owner)
        self._run(
            [
                str(bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ]
        )
        self._write_owned(
            self.data / "pg_hba.conf",
            "# metrocloud: trust on the socket and on 127.0.0.1 only\n"
            "local all all trust\n"
            f"host all all {HOST}/32 trust\n",
        )
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\ninclude_if_exists = 'metrocloud.conf'\n")

    def _configured_port(self) -> int | None:
        try:
            text = (self.data / "metrocloud.conf").read_text(encoding="utf-8")
        except OSError:
            return None
        match = re.search(r"^port = (\d+)$", text, re.MULTILINE)
        return int(match.group(1)) if match else None

    def _write_settings(self) -> None:
        run = self.folder / "run"
        socket_dir = ""
        if len(str(run / f".s.PGSQL.{self.port}")) <= SOCKET_PATH_MAX:
            run.mkdir(mode=0o700, exist_ok=True)
            owner = self._owner()
            if owner is not None:
                os.chown(run, *owner)
            socket_dir = str(run)
        values = {
            "listen_addresses": f"'{HOST}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{socket_dir}'",
            "fsync": "on",
            "max_connections": "200",
            **self.settings,
        }
        text = "# written by metrocloud.deploy.postgres at each start\n" + "".join(
            f"{key} = {value}\n" for key, value in values.items()
        )
        self._write_owned(self.data / "metrocloud.conf", text)

    def _write_owned(self, path: Path, text: str) -> None:
        path.write_text(text, encoding="utf-8")
        owner = self._owner()
        if owner is not None:
            os.chown(path, *owner)

    def _run(self, argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(HOME=str(self.folder), LC_ALL="C")
        owner = self._owner()
        result = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            env=env,
            cwd=self.folder,
            user=None if owner is None else owner[0],
            group=None if owner is None else owner[1],
            extra_groups=None if owner is None else [],
            timeout=START_TIMEOUT_S + 30,
            check=False,
        )
        if check and result.returncode != 0:
            raise PostgresError(
                f"{Path(argv[0]).name} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result


def _checked(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a plain database name: {name!r}")
    return name


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, killed but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return status.rsplit(")", 1)[-1].split()[0] != "Z"
