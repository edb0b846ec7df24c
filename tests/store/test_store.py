"""The store on SQLite and on PostgreSQL: idempotent writes on natural keys, ordering, and
several instances (processes) sharing one database."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from metrocloud.core.errors import ConfigurationError
from metrocloud.store import (
    CustomerKeyRecord,
    Flag,
    MeterRecord,
    PostgresStore,
    SQLiteStore,
    Store,
    open_store,
)
from metrocloud.store.sql import TABLES
from postgres_fixture import Location, Locations, raw_execute

PERIOD = "100-200"


@pytest.fixture
def db(locations: Locations) -> Location:
    return locations.new("nested/dir/store.sqlite")


@pytest.fixture
def store(db: Location) -> Iterator[Store]:
    s = open_store(db)
    try:
        yield s
    finally:
        s.close()


def test_is_a_store_and_creates_its_folder_or_tables(
    store: Store, db: Location, backend: str
) -> None:
    assert isinstance(store, Store)
    if backend == "sqlite":
        assert isinstance(store, SQLiteStore) and isinstance(db, Path) and db.exists()
    else:
        assert isinstance(store, PostgresStore)
    for table in TABLES:  # every table is there (and empty)
        raw_execute(db, f"DELETE FROM {table}")


def test_open_store_picks_the_backend_from_the_location(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="mysql"):
        open_store("mysql://user@127.0.0.1/metrocloud")
    for location in (tmp_path / "a.sqlite", str(tmp_path / "b.sqlite"), f"sqlite:///{tmp_path}/c"):
        s = open_store(location)
        try:
            assert isinstance(s, SQLiteStore) and s.path.exists()
        finally:
            s.close()
    assert (tmp_path / "c").exists()  # sqlite:////absolute, as SQLAlchemy writes it


# -- provisioning ---------------------------------------------------------------------------------


def test_gateways(store: Store) -> None:
    assert not store.gateway_known("gw-1")
    store.register_gateway("gw-1")
    store.register_gateway("gw-1")  # idempotent, no error
    assert store.gateway_known("gw-1")
    assert not store.gateway_known("gw-2")


def test_meters_round_trip(store: Store) -> None:
    assert store.meter("m-1") is None
    assert store.meters() == []
    config = {"price_mct_per_kwh": 32_000, "max_interval_wh": 5000, "nested": {"a": [1, 2]}}
    m2 = MeterRecord("m-2", "gw-1", "c-2", "taf1", {"price_mct_per_kwh": 1})
    m1 = MeterRecord("m-1", "gw-1", "c-1", "taf1", config)
    store.register_meter(m2)
    store.register_meter(m1)
    assert store.meter("m-1") == m1
    assert store.meter("m-2") == m2
    assert store.meters() == [m1, m2]  # ordered by meter id
    # Re-registration replaces the record (the operator changed the tariff).
    m1b = MeterRecord("m-1", "gw-1", "c-1", "taf1", {"price_mct_per_kwh": 40_000})
    store.register_meter(m1b)
    assert store.meter("m-1") == m1b
    assert len(store.meters()) == 2


def test_customer_keys(store: Store) -> None:
    assert store.customer_key("c-1") is None
    rec = CustomerKeyRecord("c-1", "tag-1", {"scheme": "BFV", "ring_dimension": 8192})
    store.set_customer_key(rec)
    assert store.customer_key("c-1") == rec
    newer = CustomerKeyRecord("c-1", "tag-2", {"scheme": "BFV", "ring_dimension": 8192})
    store.set_customer_key(newer)
    assert store.customer_key("c-1") == newer


# -- idempotent inserts ------------------------------------------------------------------------


def test_accept_is_idempotent(store: Store) -> None:
    assert store.accepted_digest("m-1", "reading:100") is None
    assert store.accept("m-1", "reading:100", b"digest-1") is True
    assert store.accept("m-1", "reading:100", b"digest-2") is False
    assert store.accepted_digest("m-1", "reading:100") == b"digest-1"
    assert store.accept("m-1", "reading:196", b"digest-3") is True
    assert store.accept("m-1", f"close:{PERIOD}", b"digest-c") is True
    assert store.accept("m-1", f"close:{PERIOD}", b"digest-c2") is False
    assert store.accepted_digest("m-1", f"close:{PERIOD}") == b"digest-c"
    assert store.accept("m-2", "reading:100", b"digest-4") is True
    assert store.accepted_digest("m-2", "reading:100") == b"digest-4"
    assert store.accepted_digest("m-2", "reading:196") is None


def test_insert_partial_is_idempotent_and_ordered_by_seq(store: Store) -> None:
    assert store.partials("m-1", PERIOD) == []
    for seq in (2, 0, 3, 1):
        assert store.insert_partial("m-1", PERIOD, seq, b"p%d" % seq, b"q%d" % seq) is True
    assert store.insert_partial("m-1", PERIOD, 1, b"other", b"other") is False
    assert store.insert_partial("m-1", PERIOD, 10, b"p10", b"q10") is True
    got = store.partials("m-1", PERIOD)
    assert [s for s, _, _ in got] == [0, 1, 2, 3, 10]  # numeric order, not insertion order
    assert got[1] == (1, b"p1", b"q1")  # the first write stays
    assert store.has_partial("m-1", PERIOD, 3)
    assert not store.has_partial("m-1", PERIOD, 4)
    assert not store.has_partial("m-1", "200-300", 3)
    assert not store.has_partial("m-2", PERIOD, 3)
    assert store.partial_count("m-1", PERIOD) == 5  # the refused repeat not counted
    assert store.partial_count("m-1", "200-300") == 0 and store.partial_count("m-2", PERIOD) == 0


def test_drop_partials_only_drops_that_meter_and_period(store: Store) -> None:
    store.insert_partial("m-1", PERIOD, 0, b"a", b"a")
    store.insert_partial("m-1", PERIOD, 1, b"b", b"b")
    store.insert_partial("m-1", "200-300", 0, b"c", b"c")
    store.insert_partial("m-2", PERIOD, 0, b"d", b"d")
    store.drop_partials("m-1", PERIOD)
    assert store.partials("m-1", PERIOD) == [] and store.partial_count("m-1", PERIOD) == 0
    assert store.partials("m-1", "200-300") == [(0, b"c", b"c")]
    assert store.partials("m-2", PERIOD) == [(0, b"d", b"d")]
    store.drop_partials("m-1", PERIOD)  # nothing left: no error
    # After a drop the same seq can be written again (a new read-out round).
    assert store.insert_partial("m-1", PERIOD, 0, b"e", b"e") is True


def test_mark_result_computed_is_idempotent(store: Store) -> None:
    assert not store.result_computed("m-1", PERIOD)
    assert store.mark_result_computed("m-1", PERIOD, b"d1") is True
    assert store.mark_result_computed("m-1", PERIOD, b"d2") is False
    assert store.result_computed("m-1", PERIOD)
    assert not store.result_computed("m-1", "200-300")


def test_key_registration_is_idempotent(store: Store) -> None:
    assert store.key_registration("c-1") == []
    assert store.insert_key_registration("c-1", "tag-1", 1, b"env-1.1") is True
    assert store.insert_key_registration("c-1", "tag-1", 0, b"env-1.0") is True
    assert store.insert_key_registration("c-1", "tag-1", 0, b"env-1b") is False
    assert store.key_registration("c-1") == [b"env-1.0", b"env-1.1"]  # parts in order
    assert store.insert_key_registration("c-1", "tag-2", 0, b"env-2") is True
    assert store.key_registration("c-1") == [b"env-2"]  # the latest key
    assert store.key_registration("c-2") == []


def test_insert_reading_is_idempotent_and_ordered(store: Store) -> None:
    assert store.readings("m-1", PERIOD) == []
    assert store.insert_reading("m-1", PERIOD, 1, 196, b"tx1") is True
    assert store.insert_reading("m-1", PERIOD, 0, 100, b"tx0") is True
    assert store.insert_reading("m-1", PERIOD, 0, 100, b"tx0-again") is False
    assert store.insert_reading("m-1", "200-300", 0, 200, b"next") is True
    assert store.insert_reading("m-2", PERIOD, 0, 100, b"m2") is True
    assert store.readings("m-1", PERIOD) == [b"tx0", b"tx1"]
    assert store.readings("m-2", PERIOD) == [b"m2"]


def test_insert_result_is_idempotent(store: Store) -> None:
    assert store.result("m-1", PERIOD) is None
    assert store.insert_result("m-1", PERIOD, b"r1") is True
    assert store.insert_result("m-1", PERIOD, b"r2") is False
    assert store.result("m-1", PERIOD) == b"r1"
    assert store.result("m-1", "200-300") is None
    assert store.result("m-2", PERIOD) is None


def test_blobs_keep_every_byte(store: Store) -> None:
    blob = bytes(range(256)) * 1000
    assert store.insert_reading("m-1", PERIOD, 0, 100, blob)
    assert store.readings("m-1", PERIOD) == [blob]
    assert store.insert_partial("m-1", PERIOD, 0, blob, blob[::-1])
    assert store.partials("m-1", PERIOD) == [(0, blob, blob[::-1])]


# -- flags -------------------------------------------------------------------------------------


def test_flags(store: Store) -> None:
    assert store.flags() == []
    f2 = Flag("m-1", PERIOD, "index check failed", "2026-02-01T00:00:02+00:00")
    f1 = Flag("m-2", PERIOD, "dec(r) != dec(r')", "2026-02-01T00:00:01+00:00")
    store.add_flag(f2)
    store.add_flag(f1)
    assert store.flags() == [f1, f2]  # ordered by time
    store.add_flag(f1)  # flags are a log: the same flag twice is two entries
    assert store.flags() == [f1, f1, f2]


# -- several instances on one database ---------------------------------------------------------


def test_two_instances_see_each_others_writes(db: Location) -> None:
    a, b = open_store(db), open_store(db)
    try:
        a.register_gateway("gw-1")
        assert b.gateway_known("gw-1")
        meter = MeterRecord("m-1", "gw-1", "c-1", "taf1", {"price_mct_per_kwh": 1})
        b.register_meter(meter)
        assert a.meter("m-1") == meter
        assert a.insert_partial("m-1", PERIOD, 0, b"x", b"y") is True
        assert b.insert_partial("m-1", PERIOD, 0, b"z", b"z") is False
        assert b.partials("m-1", PERIOD) == [(0, b"x", b"y")]
        assert b.accept("m-1", "reading:100", b"d") is True
        assert a.accept("m-1", "reading:100", b"d") is False
        a.add_flag(Flag("m-1", PERIOD, "r", "2026-01-01T00:00:00+00:00"))
        assert len(b.flags()) == 1
        b.drop_partials("m-1", PERIOD)
        assert a.partials("m-1", PERIOD) == []
    finally:
        a.close()
        b.close()


def test_reopen_keeps_the_data(db: Location) -> None:
    a = open_store(db)
    a.insert_result("m-1", PERIOD, b"r")
    a.close()
    b = open_store(db)
    try:
        assert b.result("m-1", PERIOD) == b"r"
        assert b.insert_result("m-1", PERIOD, b"r2") is False
    finally:
        b.close()


def test_concurrent_inserts_of_the_same_key_succeed_once(db: Location) -> None:
    stores = [open_store(db) for _ in range(4)]
    outcomes: list[bool] = []
    lock = threading.Lock()

    def work(s: Store) -> None:
        for seq in range(20):
            ok = s.insert_partial("m-1", PERIOD, seq, b"p", b"q")
            with lock:
                outcomes.append(ok)

    threads = [threading.Thread(target=work, args=(s,)) for s in stores]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcomes.count(True) == 20
        assert [s for s, _, _ in stores[0].partials("m-1", PERIOD)] == list(range(20))
    finally:
        for s in stores:
            s.close()
