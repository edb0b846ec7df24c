"""A witness over HTTP: the ``add-checkpoint`` call of C2SP ``tlog-witness``, and what an
authority reads back from its witness.

``POST /add-checkpoint`` takes a plain-text body::

    old <size the submitter believes the witness holds>
    <base64 consistency proof hash>      (zero or more lines)

    <signed checkpoint note>

and answers ``200`` with the witness's cosignature line. Refusals follow the protocol's
status codes, with ``{"reason", "detail"}`` as the body except for a stale old size:

====  =====================================================================
400   malformed request or checkpoint; old size larger than the checkpoint's; a rollback
403   the log's signature is missing or does not verify, or its certificate is refused
404   a checkpoint of another origin (the witness knows one log)
409   ``text/x.tlog.size`` with the witness's size: the old size is stale (retry with it)
409   a fork: another root for a size this witness cosigned
422   the consistency proof does not hold
====  =====================================================================

``GET /checkpoint`` returns the latest checkpoint the witness cosigned (the log's note with
the witness's line); ``GET /evidence`` lists the well-signed checkpoints it refused, which
prove the log misbehaved.
"""

from __future__ import annotations

import re
import threading

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from metrocloud.core.errors import Rejected
from metrocloud.logbook.checkpoint import unb64
from metrocloud.logbook.witness import MAX_PROOF_HASHES, Witness

SIZE_MEDIA_TYPE = "text/x.tlog.size"
MAX_BODY_BYTES = 16 * 1024
_OLD = re.compile(r"old (0|[1-9][0-9]{0,18})")
_SIZE = re.compile(r"[0-9]{1,19}")  # ASCII digits only (str.isdigit takes others too)

_STATUS = {
    "malformed-request": 400,
    "malformed-checkpoint": 400,
    "rollback": 400,
    "wrong-origin": 404,
    "fork": 409,
    "inconsistent": 422,
}
"""HTTP status per refusal reason; anything about the log's signature or certificate: 403."""


def parse_add_checkpoint(body: bytes) -> tuple[int, list[bytes], str]:
    """The old size, the proof and the note of an ``add-checkpoint`` body.

    Raises ``Rejected("malformed-request")`` for anything else, including an old size
    larger than the checkpoint's (which the protocol answers with 400).
    """
    if len(body) > MAX_BODY_BYTES:
        raise Rejected("malformed-request", f"{len(body)} bytes, limit {MAX_BODY_BYTES}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected("malformed-request", "the body is not UTF-8") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise Rejected("malformed-request", "no empty line before the checkpoint")
    lines = head.split("\n")
    match = _OLD.fullmatch(lines[0])
    if match is None:
        raise Rejected("malformed-request", f"first line {lines[0][:40]!r} is not 'old <size>'")
    if len(lines) - 1 > MAX_PROOF_HASHES:
        raise Rejected("malformed-request", f"more than {MAX_PROOF_HASHES} proof lines")
    try:
        proof = [unb64(line) for line in lines[1:]]
    except ValueError as exc:
        raise Rejected("malformed-request", f"a proof line is not base64: {exc}") from None
    old = int(match.group(1))
    size_line = note.split("\n")[1] if note.count("\n") >= 2 else ""
    if _SIZE.fullmatch(size_line) and old > int(size_line):
        raise Rejected("malformed-request", f"old size {old} is larger than size {size_line}")
    return old, proof, note


async def _bounded_body(request: Request) -> bytes:
    """The request body, read no further than :data:`MAX_BODY_BYTES` (plus one byte)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise Rejected(
                "malformed-request", f"{len(body)} bytes or more, limit {MAX_BODY_BYTES}"
            )
    return bytes(body)


def create_witness_app(witness: Witness) -> FastAPI:
    """The HTTP face of ``witness`` (requests are handled one at a time)."""
    app = FastAPI(title=f"metrocloud witness {witness.name}", version="1")
    lock = threading.Lock()  # the witness serializes in SQLite too; this keeps 409s exact

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "witness": witness.name}

    @app.post("/add-checkpoint")
    async def add_checkpoint(request: Request) -> Response:
        try:
            body = await _bounded_body(request)
            old, proof, note = parse_add_checkpoint(body)
            with lock:
                line = witness.cosign(note, proof, old_size=old)
        except Rejected as exc:
            if exc.reason == "old-size-mismatch":
                held = witness.head()
                return Response(  # exactly this type: Starlette would add a charset
                    f"{0 if held is None else held.size}\n",
                    409,
                    headers={"Content-Type": SIZE_MEDIA_TYPE},
                )
            return JSONResponse(
                {"reason": exc.reason, "detail": exc.detail},
                status_code=_STATUS.get(exc.reason, 403),
            )
        return PlainTextResponse(line)

    @app.get("/checkpoint")
    def latest() -> Response:
        note = witness.cosigned_note()
        if note is None:
            return JSONResponse(
                {"reason": "no-checkpoint", "detail": "nothing cosigned yet"}, status_code=404
            )
        return PlainTextResponse(note)

    @app.get("/evidence")
    def evidence() -> list[dict[str, object]]:
        return [
            {
                "origin": e.origin,
                "reason": e.reason,
                "at": e.at,
                "note": e.note,
                "proof": [p.hex() for p in e.proof],
            }
            for e in witness.evidence()
        ]

    return app
