"""SQLite implementation of :class:`~metrocloud.store.base.Store` (WAL, one file)."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from metrocloud.store.base import CustomerKeyRecord, Flag, MeterRecord, Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS gateways (gateway_id TEXT PRIMARY KEY, registered_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meters (
    meter_id TEXT PRIMARY KEY, gateway_id TEXT NOT NULL REFERENCES gateways(gateway_id),
    customer_id TEXT NOT NULL, tariff TEXT NOT NULL, tariff_config TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ingress_customer_keys (
    customer_id TEXT PRIMARY KEY, key_tag TEXT NOT NULL, parameters TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ingress_accepted (
    meter_id TEXT NOT NULL, message_key TEXT NOT NULL, digest BLOB NOT NULL,
    accepted_at TEXT NOT NULL, PRIMARY KEY (meter_id, message_key));
CREATE TABLE IF NOT EXISTS flags (
    meter_id TEXT NOT NULL, period_id TEXT NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS legal_partials (
    meter_id TEXT NOT NULL, period_id TEXT NOT NULL, seq INTEGER NOT NULL,
    partial BLOB NOT NULL, partial_dup BLOB NOT NULL, PRIMARY KEY (meter_id, period_id, seq));
CREATE TABLE IF NOT EXISTS legal_results (
    meter_id TEXT NOT NULL, period_id TEXT NOT NULL, digest BLOB NOT NULL,
    PRIMARY KEY (meter_id, period_id));
CREATE TABLE IF NOT EXISTS ingress_key_parts (
    customer_id TEXT NOT NULL, key_tag TEXT NOT NULL, part INTEGER NOT NULL,
    envelope BLOB NOT NULL, PRIMARY KEY (customer_id, key_tag, part));
CREATE TABLE IF NOT EXISTS key_registrations (
    customer_id TEXT NOT NULL, key_tag TEXT NOT NULL, part INTEGER NOT NULL,
    envelope BLOB NOT NULL, stored_at TEXT NOT NULL, PRIMARY KEY (customer_id, key_tag, part));
CREATE TABLE IF NOT EXISTS readings (
    meter_id TEXT NOT NULL, period_id TEXT NOT NULL, seq INTEGER NOT NULL,
    first_index INTEGER NOT NULL, envelope BLOB NOT NULL, stored_at TEXT NOT NULL,
    PRIMARY KEY (meter_id, first_index));
CREATE TABLE IF NOT EXISTS results (
    meter_id TEXT NOT NULL, period_id TEXT NOT NULL, envelope BLOB NOT NULL,
    stored_at TEXT NOT NULL, PRIMARY KEY (meter_id, period_id));
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class SQLiteStore(Store):
    """Safe for threads of one process and for several processes on one file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            path, timeout=60.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=60000")
        with self._lock:
            self._db.executescript(SCHEMA)

    # -- helpers -------------------------------------------------------------------
    def _write(self, sql: str, args: tuple[object, ...]) -> bool:
        """Run one insert/update in its own transaction; True when a row changed."""
        with self._lock:
            cur = self._db.execute(sql, args)
            return cur.rowcount > 0

    def _one(self, sql: str, args: tuple[object, ...]) -> tuple[Any, ...] | None:
        with self._lock:
            row = self._db.execute(sql, args).fetchone()
        return None if row is None else tuple(row)

    def _all(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return [tuple(r) for r in self._db.execute(sql, args).fetchall()]

    # -- provisioning ----------------------------------------------------------------
    def register_gateway(self, gateway_id: str) -> None:
        self._write(
            "INSERT OR IGNORE INTO gateways VALUES (?, ?)",
            (gateway_id, _now()),
        )

    def gateway_known(self, gateway_id: str) -> bool:
        return self._one("SELECT 1 FROM gateways WHERE gateway_id=?", (gateway_id,)) is not None

    def register_meter(self, meter: MeterRecord) -> None:
        self._write(
            "INSERT OR REPLACE INTO meters VALUES (?, ?, ?, ?, ?)",
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
        self._write(
            "INSERT OR REPLACE INTO ingress_customer_keys VALUES (?, ?, ?)",
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
        return self._write(
            "INSERT OR IGNORE INTO ingress_accepted VALUES (?, ?, ?, ?)",
            (meter_id, message_key, digest, _now()),
        )

    def add_key_part(self, customer_id: str, key_tag: str, part: int, envelope: bytes) -> bool:
        return self._write(
            "INSERT OR IGNORE INTO ingress_key_parts VALUES (?, ?, ?, ?)",
            (customer_id, key_tag, part, envelope),
        )

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
        return self._write(
            "INSERT OR IGNORE INTO legal_partials VALUES (?, ?, ?, ?, ?)",
            (meter_id, period_id, seq, partial, partial_dup),
        )

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
        return self._write(
            "INSERT OR IGNORE INTO legal_results VALUES (?, ?, ?)", (meter_id, period_id, digest)
        )

    # -- storage ---------------------------------------------------------------------------
    def insert_key_registration(
        self, customer_id: str, key_tag: str, part: int, envelope: bytes
    ) -> bool:
        return self._write(
            "INSERT OR IGNORE INTO key_registrations VALUES (?, ?, ?, ?, ?)",
            (customer_id, key_tag, part, envelope, _now()),
        )

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
        return self._write(
            "INSERT OR IGNORE INTO readings VALUES (?, ?, ?, ?, ?, ?)",
            (meter_id, period_id, seq, first_index, envelope, _now()),
        )

    def readings(self, meter_id: str, period_id: str) -> list[bytes]:
        rows = self._all(
            "SELECT envelope FROM readings WHERE meter_id=? AND period_id=? ORDER BY first_index",
            (meter_id, period_id),
        )
        return [bytes(r[0]) for r in rows]

    def insert_result(self, meter_id: str, period_id: str, envelope: bytes) -> bool:
        return self._write(
            "INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?)",
            (meter_id, period_id, envelope, _now()),
        )

    def result(self, meter_id: str, period_id: str) -> bytes | None:
        row = self._one(
            "SELECT envelope FROM results WHERE meter_id=? AND period_id=?", (meter_id, period_id)
        )
        return None if row is None else bytes(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
