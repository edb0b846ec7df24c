"""Reading what the system did: logbook entries and flags, with waiting for them."""

from __future__ import annotations

import time
from collections.abc import Callable

from metrocloud.cloud.runtime import DataDir
from metrocloud.core.events import EventKind
from metrocloud.logbook import LogEntry
from metrocloud.logbook.transparency import MerkleLogbook
from metrocloud.store import Flag


def logbook_entries(data: DataDir, kind: EventKind | None = None) -> list[LogEntry]:
    if not data.logbook.exists():
        return []
    book = MerkleLogbook(data.logbook)
    try:
        return book.entries(kind=kind)
    finally:
        book.close()


def rejections(data: DataDir) -> list[dict[str, object]]:
    """Detail of every rejection the logbook holds (reason, detail, subject, ...)."""
    return [dict(e.event.detail) for e in logbook_entries(data, EventKind.REJECTION)]


def flags(data: DataDir) -> list[Flag]:
    store = data.open_store()
    try:
        return store.flags()
    finally:
        store.close()


def wait_for(
    probe: Callable[[], object], timeout_s: float = 30.0, interval_s: float = 0.1
) -> object:
    """Poll ``probe`` until it returns something truthy; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)
