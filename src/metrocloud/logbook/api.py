"""The logbook's read API over HTTP: entries, proofs and signed heads (FastAPI).

Appending stays internal (the logbook service, from the bus); everything here only reads,
so an auditor can check the log with any RFC 9162 verifier and trust nothing it says::

    GET /checkpoint                           the latest head with its cosignatures (text)
    GET /entries?start=&limit=&audience=&kind= entries (JSON: seq, leaf, leaf hash, event)
    GET /entries/{seq}?size=N                 one entry with its inclusion proof in tree N
    GET /proofs/consistency?old=M&new=N       the consistency proof from size M to N
    GET /roots/{size}                         the root hash of an earlier size

Hashes are hex; ``leaf`` is the entry's bytes in base64, which a client hashes itself.
Entries are read with a signed request header and show the reader's view only
(:mod:`metrocloud.logbook.readers`); heads, proofs and roots are public. A request outside
the log answers 404, one outside the reader's view 403, an unauthenticated one 401, each
with ``{"reason", "detail"}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from metrocloud.core.errors import Rejected
from metrocloud.core.events import EventKind, LogEvent
from metrocloud.logbook.checkpoint import b64
from metrocloud.logbook.readers import HEADER, ReaderPolicy, View, request_target
from metrocloud.logbook.transparency import AUDIENCES, MerkleLogbook
from metrocloud.logbook.tree import TreeError

MAX_PAGE = 1000
_STATUS = {"not-authorized": 403, "not-in-view": 403, "stale-message": 401}


def _entry(book: MerkleLogbook, seq: int) -> dict[str, Any]:
    """Entry ``seq`` as served: its bytes and hash, and the event they hold if they parse
    (a stored entry changed into something unreadable is still served, for auditors to see)."""
    leaf = book.entry(seq)
    found: dict[str, Any] = {"seq": seq, "leaf": b64(leaf), "leaf_hash": book.leaf_hash(seq).hex()}
    try:
        event = LogEvent.from_json(leaf)
    except (ValueError, KeyError, TypeError) as exc:
        return {**found, "event": None, "error": f"the entry does not parse: {exc}"}
    return {
        **found,
        "event": {
            "event_id": event.event_id,
            "time": event.time.isoformat(),
            "actor": event.actor,
            "kind": event.kind.value,
            "subject": event.subject,
            "detail": event.detail,
        },
    }


def _listed(book: MerkleLogbook, seqs: list[int]) -> list[dict[str, Any]]:
    """The entries at ``seqs``; one whose stored leaf is gone is left out, so the gap shows
    (an auditor names the missing entry) instead of failing the whole page."""
    listed = []
    for seq in seqs:
        try:
            listed.append(_entry(book, seq))
        except TreeError:
            continue
    return listed


def _missing(reason: str, detail: str) -> JSONResponse:
    return JSONResponse({"reason": reason, "detail": detail}, status_code=404)


def _refused(exc: Rejected) -> JSONResponse:
    status = _STATUS.get(exc.reason, 401)  # anything else is about the reader's credentials
    return JSONResponse({"reason": exc.reason, "detail": exc.detail}, status_code=status)


def create_app(
    open_book: Callable[[], MerkleLogbook],
    checkpoint: Callable[[], str],
    *,
    readers: ReaderPolicy,
) -> FastAPI:
    """The API over the log that ``open_book`` opens (a fresh handle per request, so the
    sizes it reports are current), the latest head that ``checkpoint`` returns, and entries
    for the readers ``readers`` admits."""
    app = FastAPI(title="metrocloud logbook", version="1")

    def view_of(request: Request, audience: str | None) -> View:
        target = request_target("GET", request.url.path, dict(request.query_params))
        return readers.view(request.headers.get(HEADER), target, audience)

    @app.get("/checkpoint")
    def latest_head() -> Response:
        try:
            return PlainTextResponse(checkpoint())
        except FileNotFoundError:
            return _missing("no-checkpoint", "no head has been signed yet")

    @app.get("/entries")
    def entries(
        request: Request,
        start: int = Query(0, ge=0),
        limit: int = Query(100, ge=1, le=MAX_PAGE),
        audience: str | None = None,
        kind: str | None = None,
    ) -> Response:
        if audience is not None and audience not in AUDIENCES:
            return _missing("unknown-audience", f"{audience!r}; one of {sorted(AUDIENCES)}")
        try:
            wanted = EventKind(kind) if kind else None
        except ValueError:
            return _missing("unknown-kind", repr(kind))
        try:
            view = view_of(request, audience)
        except Rejected as exc:
            return _refused(exc)
        with open_book() as book:
            found = book.positions(
                start=start, limit=limit, audience=view.audience, kind=wanted,
                subjects=view.subjects,
            )  # fmt: skip
            return JSONResponse(
                {
                    "size": book.size,
                    "view": {"reader": view.reader, "audience": view.audience},
                    "entries": _listed(book, found),
                }
            )

    @app.get("/entries/{seq}")
    def entry(request: Request, seq: int, size: int | None = None) -> Response:
        try:
            view = view_of(request, None)
        except Rejected as exc:
            return _refused(exc)
        with open_book() as book:
            tree_size = book.size if size is None else size
            try:
                proof = book.inclusion_proof(seq, tree_size)
                root = book.root(tree_size)
            except TreeError as exc:
                return _missing("not-in-log", str(exc))
            visible = book.positions(
                start=seq, limit=1, audience=view.audience, subjects=view.subjects
            )
            if visible != [seq]:
                return _refused(
                    Rejected("not-in-view", f"entry {seq} is not in {view.reader}'s view")
                )
            return JSONResponse(
                {
                    **_entry(book, seq),
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
