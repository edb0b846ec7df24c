"""The logbook service: appends every event of the LOGBOOK stream to the Merkle-tree log,
signs a tree head (a C2SP checkpoint) after every batch, has the witnesses cosign it, and
serves the log's read API over HTTPS.

- Every head it signs is kept, in order, in ``<data>/checkpoints.jsonl`` (one JSON object per
  line: size and note), so auditors can check that each one extends the last.
- A cosigner sends the newest head to every witness named in ``cluster.json`` (C2SP
  ``tlog-witness``, with a consistency proof from the size each witness holds) and publishes
  the note with the cosignatures it gathered as ``<data>/checkpoint`` (rewritten
  atomically), which ``GET /checkpoint`` serves. Heads signed while a round runs are
  coalesced: the next round takes the newest. A round that missed a witness is retried
  after a pause even when no new head comes.
- The read API (:mod:`metrocloud.logbook.api`) answers on ``127.0.0.1:<port>`` with the
  logbook's certificate. Proofs, roots and heads are public (they are hashes); entries are
  read with signed requests, each reader seeing its own view.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging

from metrocloud.bus.streams import fetch, pull
from metrocloud.cloud.https import HttpsServer
from metrocloud.cloud.runtime import DataDir, Service
from metrocloud.core.events import EventKind, LogEvent
from metrocloud.logbook.api import create_app
from metrocloud.logbook.checkpoint import LOG_ORIGIN, Checkpoint, sign_checkpoint
from metrocloud.logbook.readers import ReaderPolicy
from metrocloud.logbook.transparency import MerkleLogbook, open_logbook
from metrocloud.logbook.witness_client import CosigningRound, WitnessClient, gather_cosignatures
from metrocloud.pki.pem import write_atomically

COSIGN_RETRY_S = (1.0, 30.0)
"""First and longest pause before a cosigning round that missed a witness is tried again."""

_log = logging.getLogger(__name__)


class Logbook(Service):
    name = "logbook"
    role = "logbook"
    checks_certificates = True  # readers of the API sign their requests

    def __init__(self, data: DataDir, options: dict[str, str] | None = None) -> None:
        super().__init__(data, options)
        self._server: HttpsServer | None = None
        self._newest: str | None = None
        self._new_head = asyncio.Event()
        self._own: list[LogEvent] = []

    @property
    def ready(self) -> bool:
        if "port" in self.options and (self._server is None or not self._server.started):
            return False
        return super().ready

    @property
    def published(self) -> str:
        """The latest head with its cosignatures, as ``GET /checkpoint`` serves it."""
        return (self.data.root / "checkpoint").read_text(encoding="utf-8")

    async def serve(self) -> None:
        book = open_logbook(self.data.logbook_location)
        assert self.js is not None
        sub = await pull(self.js, "logbook")
        tasks = [asyncio.ensure_future(self._cosign_heads())]
        if "port" in self.options:
            app = create_app(
                lambda: open_logbook(self.data.logbook_location),
                lambda: self.published,
                readers=ReaderPolicy(self.trust, self._customer_subjects),
            )
            self._server = HttpsServer(
                app, self.data, self.name, int(self.options["port"]), self.listen_host
            )
            tasks.append(asyncio.ensure_future(self._server.serve_until(self._stop)))
        try:
            if book.size:
                self.publish_head(book)  # a head for what is there after a restart
            while not self.stopping:
                msgs = await fetch(sub, batch=256, timeout_s=1.0)
                pending = msgs[-1].metadata.num_pending if msgs else 0
                self.metrics.pending.labels("logbook").set(pending)
                own, self._own = self._own, []
                if not msgs and not own:
                    continue
                for m in msgs:
                    self.metrics.received(m.subject)
                with self.metrics.step("logbook:append"):
                    events = [*own, *(self._event(m.data, m.subject) for m in msgs)]
                    book.append_positions(events)
                    self.publish_head(book)
                for m in msgs:
                    await m.ack()
        finally:
            self._stop.set()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            book.close()

    def _event(self, raw: bytes, subject: str) -> LogEvent:
        """The event in a LOGBOOK message; one that is not a valid event is logged as a
        rejection in its place (with a digest of what came), never dropped unseen."""
        try:
            return LogEvent.from_json(raw)
        except (ValueError, KeyError, TypeError) as exc:
            _log.error("malformed event on %s: %s", subject, exc)
            digest = hashlib.sha256(raw).hexdigest()
            return LogEvent(
                actor=self.name,
                kind=EventKind.REJECTION,
                subject=subject,
                detail={"reason": "malformed-event", "detail": str(exc)[:500], "sha256": digest},
                event_id=f"malformed-{digest}",
            )

    def publish_head(self, book: MerkleLogbook) -> str:
        """Sign the current tree head with the logbook's key and queue it for cosigning."""
        note = sign_checkpoint(
            Checkpoint(LOG_ORIGIN, book.size, book.head()), LOG_ORIGIN, self.identity.key
        )
        with (self.data.root / "checkpoints.jsonl").open("a", encoding="utf-8") as history:
            history.write(json.dumps({"size": book.size, "note": note}) + "\n")
        self._newest = note
        self._new_head.set()
        return note

    def _witnesses(self) -> list[WitnessClient]:
        configured = self.data.cluster().get("witnesses", {})
        return [
            WitnessClient.connect(name, str(url), tls_trust=self.data.pki / "root.pem")
            for name, url in sorted(configured.items())
        ]

    async def _cosign_heads(self) -> None:
        """Have the witnesses cosign the newest head, for as long as the service runs."""
        witnesses = self._witnesses()
        known: dict[str, int] = {}
        pause = COSIGN_RETRY_S[0]
        missing: frozenset[str] = frozenset()
        try:
            while not self.stopping:
                stop = asyncio.ensure_future(self._stop.wait())
                head = asyncio.ensure_future(self._new_head.wait())
                timeout = pause if missing else None
                await asyncio.wait({stop, head}, timeout=timeout, return_when="FIRST_COMPLETED")
                stop.cancel()
                head.cancel()
                if self.stopping or self._newest is None:
                    continue
                self._new_head.clear()
                try:
                    round_ = await asyncio.to_thread(self._cosign, self._newest, witnesses, known)
                except Exception:  # a round that breaks must not end the log's service
                    _log.exception("cosigning round failed; trying again")
                    round_ = CosigningRound(self._newest, failures={"*": "round failed"})
                self._publish(round_)
                now_missing = frozenset(round_.failures)
                if now_missing != missing:
                    for name, why in sorted(round_.failures.items()):
                        _log.warning("witness %s did not cosign: %s", name, why)
                missing = now_missing
                pause = min(pause * 2, COSIGN_RETRY_S[1]) if missing else COSIGN_RETRY_S[0]
        finally:
            for witness in witnesses:
                witness.close()

    def _cosign(
        self, note: str, witnesses: list[WitnessClient], known: dict[str, int]
    ) -> CosigningRound:
        """One round (in a worker thread, with its own handle on the log for the proofs)."""
        with open_logbook(self.data.logbook_location) as book:
            return gather_cosignatures(note, witnesses, known, book.consistency_proof)

    def _publish(self, round_: CosigningRound) -> None:
        write_atomically(self.data.root / "checkpoint", round_.note.encode(), 0o644)

    def _customer_subjects(self, customer: str) -> set[str]:
        """What a customer's view of the log holds: the customer's name and meters."""
        store = self.data.open_store()  # per request: requests run in worker threads
        try:
            return {customer, *(m.meter_id for m in store.meters() if m.customer_id == customer)}
        finally:
            store.close()

    async def log_event(self, event: LogEvent) -> None:
        """The logbook's own events (its start, a refused CRL) go straight into the log with
        the next batch, not through the bus."""
        self._own.append(event)
