"""The :class:`~metrocloud.store.base.Store` in SQL, once for SQLite and PostgreSQL.

Every insert is ``INSERT ... ON CONFLICT DO NOTHING`` on the row's natural key, in its own
(autocommit) statement, and reports whether it added the row: of several processes
inserting the same key at once, exactly one gets ``True`` (SQLite serializes writers on the
file; PostgreSQL makes the others wait for the first one's commit, then skip).
Replacements (a meter's tariff, a customer's key) are ``ON CONFLICT (...) DO UPDATE``.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from metrocloud.store.base import CustomerKeyRecord, Flag, MeterRecord, Store
from metrocloud.store.db import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS gateways (gateway_id {text} PRIMARY KEY, registered_at {text} NOT NULL);
CREATE TABLE IF NOT EXISTS meters (
    meter_id {text} PRIMARY KEY, gateway_id {text} NOT NULL,
    customer_id {text} NOT NULL, tariff {text} NOT NULL, tariff_config {text} NOT NULL);
CREATE TABLE IF NOT EXISTS ingress_customer_keys (
    customer_id {text} PRIMARY KEY, key_tag {text} NOT NULL, parameters {text} NOT NULL);
CREATE TABLE IF NOT EXISTS ingress_accepted (
    meter_id {text} NOT NULL, message_key {text} NOT NULL, digest {blob} NOT NULL,
    accepted_at {text} NOT NULL, PRIMARY KEY (meter_id, message_key));
CREATE TABLE IF NOT EXISTS flags (
    meter_id {text} NOT NULL, period_id {text} NOT NULL, reason {text} NOT NULL,
    at {text} NOT NULL);
CREATE TABLE IF NOT EXISTS legal_partials (
    meter_id {text} NOT NULL, period_id {text} NOT NULL, seq {bigint} NOT NULL,
    partial {blob} NOT NULL, partial_dup {blob} NOT NULL, PRIMARY KEY (meter_id, period_id, seq));
CREATE TABLE IF NOT EXISTS legal_results (
    meter_id {text} NOT NULL, period_id {text} NOT NULL, digest {blob} NOT NULL,
    PRIMARY KEY (meter_id, period_id));
CREATE TABLE IF NOT EXISTS ingress_key_parts (
    customer_id {text} NOT NULL, key_tag {text} NOT NULL, part {bigint} NOT NULL,
    envelope {blob} NOT NULL, PRIMARY KEY (customer_id, key_tag, part));
CREATE TABLE IF NOT EXISTS key_registrations (
    customer_id {text} NOT NULL, key_tag {text} NOT NULL, part {bigint} NOT NULL,
    envelope {blob} NOT NULL, stored_at {text} NOT NULL, PRIMARY KEY (customer_id, key_tag, part));
CREATE TABLE IF NOT EXISTS readings (
    meter_id {text} NOT NULL, period_id {text} NOT NULL, seq {bigint} NOT NULL,
    first_index {bigint} NOT NULL, envelope {blob} NOT NULL, stored_at {text} NOT NULL,
    PRIMARY KEY (meter_id, first_index));
CREATE TABLE IF NOT EXISTS results (
    meter_id {text} NOT NULL, period_id {text} NOT NULL, envelope {blob} NOT NULL,
    stored_at {text} NOT NULL, PRIMARY KEY (meter_id, period_id));
"""
"""The tables, with the column types of :meth:`~metrocloud.store.db.Database.schema`."""

TABLES = (
    "gateways",
    "meters",
    "ingress_customer_keys",
    "ingress_accepted",
    "flags",
    "legal_partials",
    "legal_results",
    "ingress_key_parts",
    "key_registrations",
    "readings",
    "results",
)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class SqlStore(Store):
    """The store on one :class:`~metrocloud.store.db.Database` connection (threads of one
    process share it; each process opens its own)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        db.create(SCHEMA)

    # -- helpers -------------------------------------------------------------------
    def _write(self, sql: str, args: tuple[object, ...]) -> bool:
        """Run one insert/update in its own transaction; True when a row changed."""
        return self._db.execute(sql, args) > 0

    def _insert(self, table: str, args: tuple[object, ...]) -> bool:
        """Add a row unless its key is taken; True when this call added it."""
        marks = ", ".join("?" * len(args))
        return self._write(f"INSERT INTO {table} VALUES ({marks}) ON CONFLICT DO NOTHING", args)

    def _upsert(self, table: str, columns: tuple[str, ...], args: tuple[object, ...]) -> None:
        """Add the row, or replace the one with the same key (the first column)."""
        marks = ", ".join("?" * len(args))
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
        self._write(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
            f"ON CONFLICT ({columns[0]}) DO UPDATE SET {updates}",
            args,
        )

    def _one(self, sql: str, args: tuple[object, ...]) -> tuple[Any, ...] | None:
        return self._db.fetchone(sql, args)

    def _all(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        return self._db.fetchall(sql, args)

    # -- provisioning ----------------------------------------------------------------
    def register_gateway(self, gateway_id: str) -> None:
        self._insert("gateways", (gateway_id, _now()))

    def gateway_known(self, gateway_id: str) -> bool:
        return self._one("SELECT 1 FROM gateways WHERE gateway_id=?", (gateway_id,)) is not None

    def register_meter(self, meter: MeterRecord) -> None:
        self._upsert(
            "meters",
            ("meter_id", "gateway_id", "customer_id", "tariff", "tariff_config"),
            (
                meter.meter_id,
                meter.gateway_id,
                meter.customer_id,
                meter.tariff,
                json.dumps(meter.tariff_config, sort_keys=True),
            ),
        )

    @staticmethod
    def _meter(row: tuple[Any, ...]) -> MeterRecord:
        return MeterRecord(
            str(row[0]), str(row[1]), str(row[2]), str(row[3]), json.loads(str(row[4]))
        )

    def meter(self, meter_id: str) -> MeterRecord | None:
        row = self._one("SELECT * FROM meters WHERE meter_id=?", (meter_id,))
        return None if row is None else self._meter(row)

    def meters(self) -> list[MeterRecord]:
        return [self._meter(r) for r in self._all("SELECT * FROM meters ORDER BY meter_id")]

    # -- ingress -------------------------------------------------------------------------
    def set_customer_key(self, record: CustomerKeyRecord) -> None:
        self._upsert(
            "ingress_customer_keys",
            ("customer_id", "key_tag", "parameters"),
            (record.customer_id, record.key_tag, json.dumps(record.parameters, sort_keys=True)),
        )

    def customer_key(self, customer_id: str) -> CustomerKeyRecord | None:
        row = self._one("SELECT * FROM ingress_customer_keys WHERE customer_id=?", (customer_id,))
        if row is None:
            return None
        return CustomerKeyRecord(str(row[0]), str(row[1]), json.loads(str(row[2])))

    def accepted_digest(self, meter_id: str, message_key: str) -> bytes | None:
        row = self._one(
            "SELECT digest FROM ingress_accepted WHERE meter_id=? AND message_key=?",
            (meter_id, message_key),
        )
        return None if row is None else bytes(row[0])

    def accept(self, meter_id: str, message_key: str, digest: bytes) -> bool:
        return self._insert("ingress_accepted", (meter_id, message_key, digest, _now()))

    def add_key_part(self, customer_id: str, key_tag: str, part: int, envelope: bytes) -> bool:
        return self._insert("ingress_key_parts", (customer_id, key_tag, part, envelope))

    def key_parts(self, customer_id: str, key_tag: str) -> list[bytes]:
        rows = self._all(
            "SELECT envelope FROM ingress_key_parts WHERE customer_id=? AND key_tag=? "
            "ORDER BY part",
            (customer_id, key_tag),
        )
        return [bytes(r[0]) for r in rows]

    def add_flag(self, flag: Flag) -> None:
        self._write(
            "INSERT INTO flags VALUES (?, ?, ?, ?)",
            (flag.meter_id, flag.period_id, flag.reason, flag.at),
        )

    def flags(self) -> list[Flag]:
        return [Flag(*map(str, r)) for r in self._all("SELECT * FROM flags ORDER BY at")]

    # -- legal -----------------------------------------------------------------------------
    def insert_partial(
        self, meter_id: str, period_id: str, seq: int, partial: bytes, partial_dup: bytes
    ) -> bool:
        return self._insert("legal_partials", (meter_id, period_id, seq, partial, partial_dup))

    def has_partial(self, meter_id: str, period_id: str, seq: int) -> bool:
        return (
            self._one(
                "SELECT 1 FROM legal_partials WHERE meter_id=? AND period_id=? AND seq=?",
                (meter_id, period_id, seq),
            )
            is not None
        )

    def partials(self, meter_id: str, period_id: str) -> list[tuple[int, bytes, bytes]]:
        rows = self._all(
            "SELECT seq, partial, partial_dup FROM legal_partials "
            "WHERE meter_id=? AND period_id=? ORDER BY seq",
            (meter_id, period_id),
        )
        return [(int(str(r[0])), bytes(r[1]), bytes(r[2])) for r in rows]

    def partial_count(self, meter_id: str, period_id: str) -> int:
        row = self._one(
            "SELECT count(*) FROM legal_partials WHERE meter_id=? AND period_id=?",
            (meter_id, period_id),
        )
        return int(str(row[0])) if row is not None else 0

    def drop_partials(self, meter_id: str, period_id: str) -> None:
        self._write(
            "DELETE FROM legal_partials WHERE meter_id=? AND period_id=?", (meter_id, period_id)
        )

    def result_computed(self, meter_id: str, period_id: str) -> bool:
        return (
            self._one(
                "SELECT 1 FROM legal_results WHERE meter_id=? AND period_id=?",
                (meter_id, period_id),
            )
            is not None
        )

    def mark_result_computed(self, meter_id: str, period_id: str, digest: bytes) -> bool:
        return self._insert("legal_results", (meter_id, period_id, digest))

    # -- storage ---------------------------------------------------------------------------
    def insert_key_registration(
        self, customer_id: str, key_tag: str, part: int, envelope: bytes
    ) -> bool:
        return self._insert("key_registrations", (customer_id, key_tag, part, envelope, _now()))

    def key_registration(self, customer_id: str) -> list[bytes]:
        row = self._one(
            "SELECT key_tag FROM key_registrations WHERE customer_id=? "
            "ORDER BY stored_at DESC LIMIT 1",
            (customer_id,),
        )
        if row is None:
            return []
        rows = self._all(
            "SELECT envelope FROM key_registrations WHERE customer_id=? AND key_tag=? "
            "ORDER BY part",
            (customer_id, row[0]),
        )
        return [bytes(r[0]) for r in rows]

    def insert_reading(
        self, meter_id: str, period_id: str, seq: int, first_index: int, envelope: bytes
    ) -> bool:
        return self._insert("readings", (meter_id, period_id, seq, first_index, envelope, _now()))

    def readings(self, meter_id: str, period_id: str) -> list[bytes]:
        rows = self._all(
            "SELECT envelope FROM readings WHERE meter_id=? AND period_id=? ORDER BY first_index",
            (meter_id, period_id),
        )
        return [bytes(r[0]) for r in rows]

    def insert_result(self, meter_id: str, period_id: str, envelope: bytes) -> bool:
        return self._insert("results", (meter_id, period_id, envelope, _now()))

    def result(self, meter_id: str, period_id: str) -> bytes | None:
        row = self._one(
            "SELECT envelope FROM results WHERE meter_id=? AND period_id=?", (meter_id, period_id)
        )
        return None if row is None else bytes(row[0])

    def close(self) -> None:
        self._db.close()
