"""The logbook's read API over HTTP: entries, proofs and signed heads (FastAPI).

Appending stays internal (the logbook service, from the bus); everything here only reads,
so an auditor can check the log with any RFC 9162 verifier and trust nothing it says::

    GET /checkpoint                           the latest signed head (C2SP note, text)
    GET /entries?start=&limit=&audience=&kind= entries (JSON: seq, leaf hash, event)
    GET /entries/{seq}?size=N                 one entry with its inclusion proof in tree N
    GET /proofs/consistency?old=M&new=N       the consistency proof from size M to N
    GET /roots/{size}                         the root hash of an earlier size

Hashes are hex. A request outside the log answers 404 with ``{"reason", "detail"}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from metrocloud.core.events import EventKind
from metrocloud.logbook.chain import LogEntry
from metrocloud.logbook.transparency import AUDIENCES, MerkleLogbook
from metrocloud.logbook.tree import TreeError

MAX_PAGE = 1000


def _entry(entry: LogEntry) -> dict[str, Any]:
    event = entry.event
    return {
        "seq": entry.seq,
        "leaf_hash": entry.entry_hash.hex(),
        "event": {
            "event_id": event.event_id,
            "time": event.time.isoformat(),
            "actor": event.actor,
            "kind": event.kind.value,
            "subject": event.subject,
            "detail": event.detail,
        },
    }


def _missing(reason: str, detail: str) -> JSONResponse:
    return JSONResponse({"reason": reason, "detail": detail}, status_code=404)


def create_app(open_book: Callable[[], MerkleLogbook], checkpoint: Callable[[], str]) -> FastAPI:
    """The API over the log that ``open_book`` opens (a fresh handle per request, so the
    sizes it reports are current) and the latest signed head that ``checkpoint`` returns."""
    app = FastAPI(title="metrocloud logbook", version="1")

    @app.get("/checkpoint")
    def latest_head() -> Response:
        try:
            return PlainTextResponse(checkpoint())
        except FileNotFoundError:
            return _missing("no-checkpoint", "no head has been signed yet")

    @app.get("/entries")
    def entries(
        start: int = Query(0, ge=0),
        limit: int = Query(100, ge=1, le=MAX_PAGE),
        audience: str = "authority",
        kind: str | None = None,
    ) -> Response:
        if audience not in AUDIENCES:
            return _missing("unknown-audience", f"{audience!r}; one of {sorted(AUDIENCES)}")
        try:
            wanted = EventKind(kind) if kind else None
        except ValueError:
            return _missing("unknown-kind", repr(kind))
        with open_book() as book:
            found = book.entries(start=start, limit=limit, audience=audience, kind=wanted)
            return JSONResponse({"size": book.size, "entries": [_entry(e) for e in found]})

    @app.get("/entries/{seq}")
    def entry(seq: int, size: int | None = None) -> Response:
        with open_book() as book:
            tree_size = book.size if size is None else size
            try:
                proof = book.inclusion_proof(seq, tree_size)
                found = book.get(seq)
                root = book.root(tree_size)
            except (TreeError, IndexError) as exc:
                return _missing("not-in-log", str(exc))
            return JSONResponse(
                {
                    **_entry(found),
                    "tree_size": tree_size,
                    "root": root.hex(),
                    "inclusion_proof": [p.hex() for p in proof],
                }
            )

    @app.get("/proofs/consistency")
    def consistency(old: int, new: int | None = None) -> Response:
        with open_book() as book:
            new_size = book.size if new is None else new
            try:
                proof = book.consistency_proof(old, new_size)
                roots = (book.root(old), book.root(new_size))
            except TreeError as exc:
                return _missing("not-in-log", str(exc))
            return JSONResponse(
                {
                    "old": old,
                    "new": new_size,
                    "old_root": roots[0].hex(),
                    "new_root": roots[1].hex(),
                    "proof": [p.hex() for p in proof],
                }
            )

    @app.get("/roots/{size}")
    def root(size: int) -> Response:
        with open_book() as book:
            try:
                return JSONResponse({"size": size, "root": book.root(size).hex()})
            except TreeError as exc:
                return _missing("not-in-log", str(exc))

    return app
