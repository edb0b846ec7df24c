"""What only PostgreSQL has: several processes racing for one key, a server that restarts
or crashes between two calls, a server that is not there, and the server launcher."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from metrocloud.core.errors import ConfigurationError
from metrocloud.deploy import postgres as launcher
from metrocloud.deploy.postgres import (
    LocalPostgres,
    PostgresError,
    find_postgres_bindir,
    free_port,
)
from metrocloud.store import DatabaseUnavailable, MeterRecord, PostgresStore, Store, open_store

PERIOD = "100-200"
KEYS = 50


@pytest.fixture
def url(postgres: LocalPostgres) -> Iterator[str]:
    name = f"pg_only_{free_port()}"
    yield postgres.create_database(name)
    postgres.drop_database(name)


def _race(stores: list[Store], insert: Callable[[Store, int], bool]) -> list[list[int]]:
    """Each store inserts keys 0..KEYS-1 at once (threads released together); the keys each
    one won."""
    start = threading.Barrier(len(stores))
    won: list[list[int]] = [[] for _ in stores]

    def work(slot: int) -> None:
        start.wait()
        won[slot] = [k for k in range(KEYS) if insert(stores[slot], k)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won


@pytest.mark.parametrize(
    "insert",
    [
        lambda s, k: s.insert_partial("m-1", PERIOD, k, b"p%d" % k, b"q"),
        lambda s, k: s.mark_result_computed(f"m-{k}", PERIOD, b"d"),
        lambda s, k: s.accept("m-1", f"reading:{k}", b"d"),
        lambda s, k: s.insert_reading("m-1", PERIOD, k, k, b"tx"),
    ],
    ids=["insert_partial", "mark_result_computed", "accept", "insert_reading"],
)
def test_connections_racing_for_a_key_win_it_once(
    url: str, insert: Callable[[Store, int], bool]
) -> None:
    stores: list[Store] = [PostgresStore(url) for _ in range(4)]
    try:
        won = _race(stores, insert)
    finally:
        for s in stores:
            s.close()
    assert sorted(k for keys in won for k in keys) == list(range(KEYS))  # each key once


WORKER = textwrap.dedent(
    """
    import sys
    from metrocloud.store import PostgresStore

    store = PostgresStore(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()  # go
    won = [k for k in range(int(sys.argv[2]))
           if store.insert_partial("m-1", "p", k, b"x", b"y")
           and store.mark_result_computed("m-1", f"p{k}", b"d")]
    print(" ".join(map(str, won)), flush=True)
    """
)


def test_two_legal_processes_racing_for_the_same_partials(url: str) -> None:
    """Two worker processes, as two ``legal`` workers on one work queue: every partial and
    every result is taken by exactly one of them."""
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, str(KEYS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for w in workers:
            assert w.stdout is not None and w.stdout.readline().strip() == "ready"
        for w in workers:
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        won = [w.communicate(timeout=60)[0].split() for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    assert all(w.returncode == 0 for w in workers)
    assert sorted(int(k) for keys in won for k in keys) == list(range(KEYS))


def test_a_restart_between_two_calls_is_survived(url: str, postgres: LocalPostgres) -> None:
    from metrocloud.cloud.runtime import TRANSIENT

    store = PostgresStore(url)
    try:
        assert store.insert_result("m-1", PERIOD, b"r1") is True
        postgres.restart()
        # A read finds the connection lost and is repeated once on a new one.
        assert store.result("m-1", PERIOD) == b"r1"
        postgres.restart()
        # A write is never repeated (it may have been done): the call that finds the
        # connection lost fails with a transient error, the next one connects again.
        try:
            first: bool | None = store.insert_result("m-2", PERIOD, b"r2")
        except psycopg.OperationalError as exc:
            assert isinstance(exc, TRANSIENT)
            first = None
        assert store.insert_result("m-3", PERIOD, b"r3") is True
        if first is None:
            assert store.insert_result("m-2", PERIOD, b"r2") is True
        assert store.insert_result("m-2", PERIOD, b"again") is False
        assert [store.result(f"m-{i}", PERIOD) for i in (1, 2, 3)] == [b"r1", b"r2", b"r3"]
    finally:
        store.close()


def test_a_crash_of_the_server_is_survived(url: str, postgres: LocalPostgres) -> None:
    """The postmaster is killed (SIGKILL): while it is down calls fail as unreachable; once
    it is started again (crash recovery), the store carries on with every committed row."""
    store = PostgresStore(url)
    try:
        for seq in range(5):
            assert store.insert_partial("m-1", PERIOD, seq, b"p", b"q")
        postgres.kill()
        with pytest.raises(psycopg.OperationalError):
            store.insert_partial("m-1", PERIOD, 5, b"p", b"q")
        with pytest.raises(DatabaseUnavailable, match="unreachable"):
            store.partials("m-1", PERIOD)
        postgres.start()
        assert store.insert_partial("m-1", PERIOD, 5, b"p", b"q") is True
        assert [s for s, _, _ in store.partials("m-1", PERIOD)] == list(range(6))
    finally:
        store.close()


def test_an_unreachable_server_is_a_clear_transient_error() -> None:
    from metrocloud.cloud.runtime import TRANSIENT

    port = free_port()  # nothing listens there
    location = f"postgresql://metrocloud:s3cret@127.0.0.1:{port}/metrocloud"
    with pytest.raises(DatabaseUnavailable) as caught:
        open_store(location)
    message = str(caught.value)
    assert "unreachable" in message and f"127.0.0.1:{port}/metrocloud" in message
    assert "s3cret" not in message  # the password is not repeated
    assert isinstance(caught.value, psycopg.OperationalError)
    assert isinstance(caught.value, TRANSIENT)


def test_tables_are_created_once_by_concurrent_openers(url: str) -> None:
    """Services starting together each create the missing tables: no catalog collision."""
    errors: list[BaseException] = []
    opened: list[Store] = []
    start = threading.Barrier(6)

    def work() -> None:
        start.wait()
        try:
            opened.append(PostgresStore(url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in opened:
        s.close()
    assert errors == [] and len(opened) == 6


def test_blobs_are_bytea_and_text_orders_by_bytes(url: str) -> None:
    """Whatever the database's collation, meter ids order as in SQLite: by their bytes."""
    ids = ["m-b", "M-a", "m-a", "m-ä", "m-A", "m-10", "m-9"]
    store = PostgresStore(url)
    try:
        for meter in ids:
            store.register_meter(MeterRecord(meter, "gw-1", "c-1", "taf1", {}))
        assert [m.meter_id for m in store.meters()] == sorted(ids)
    finally:
        store.close()
    with psycopg.connect(url) as conn:
        kinds = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'legal_partials'"
            ).fetchall()
        )
    assert kinds["partial"] == "bytea" and kinds["partial_dup"] == "bytea"


# -- the launcher -------------------------------------------------------------------------


def test_the_server_binaries_are_found_or_named(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (find_postgres_bindir() / "postgres").exists()
    monkeypatch.setattr(launcher, "_complete", lambda bindir: False)
    with pytest.raises(ConfigurationError, match="postgresql-15"):
        find_postgres_bindir()
    monkeypatch.setenv(launcher.BINDIR_ENV, "/nonexistent")
    with pytest.raises(ConfigurationError, match=launcher.BINDIR_ENV):
        find_postgres_bindir()


def test_a_second_launcher_on_the_folder_finds_the_running_server(
    postgres: LocalPostgres,
) -> None:
    again = LocalPostgres(postgres.folder)
    assert again.running and again.port == postgres.port and again.url == postgres.url
    assert again.start() is again  # already running: nothing to do
    with psycopg.connect(again.url) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute("SHOW fsync").fetchone() == ("off",)  # the tests' setting


def test_database_names_are_checked(postgres: LocalPostgres) -> None:
    with pytest.raises(ValueError):
        postgres.create_database('x"; DROP DATABASE postgres; --')
    assert Path(postgres.data / "PG_VERSION").exists()


def test_a_taken_port_fails_at_once_with_the_servers_reason(
    postgres: LocalPostgres, tmp_path: Path
) -> None:
    """A new cluster (initdb under pytest's folder) whose port is taken: no waiting."""
    second = LocalPostgres(tmp_path / "second", port=postgres.port)
    began = time.monotonic()
    with pytest.raises(PostgresError, match="already in use"):
        second.start()
    assert time.monotonic() - began < 30
    assert (second.data / "PG_VERSION").exists() and not second.running
    shutil.rmtree(second.folder)  # 40 MB of cluster
