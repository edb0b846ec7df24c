"""Auditing the logbook over its API without trusting the operator.

:class:`LogbookClient` speaks the read API (:mod:`metrocloud.logbook.api`), signing entry
reads with the reader's identity. :class:`LogAuditor` decides what to believe:

- **heads** — a head counts only with the log's signature and a quorum of cosignatures from
  the configured witnesses (:func:`~metrocloud.logbook.witness.verify_cosigned`). The auditor
  remembers the last head it accepted (a small JSON state file) and refuses a later one that
  is smaller (``rollback``), has another root at the same size (``fork``), or that the
  log cannot prove consistent with it (``inconsistent``);
- **entries** — the client hashes each entry's bytes itself and checks the inclusion proof
  against an accepted head (``not-included`` names the entry);
- **the whole log** — every leaf is fetched, hashed, and the tree rebuilt; if its root is not
  the head's, each leaf's own proof names the first entry that is not what was logged.

Every refusal is a ``Rejected`` whose detail names the size or the entry at fault.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509

from metrocloud.core.errors import MetrocloudError, Rejected
from metrocloud.core.events import LogEvent
from metrocloud.core.http import open_http
from metrocloud.core.messages import Signer
from metrocloud.logbook.checkpoint import Checkpoint, open_checkpoint, unb64
from metrocloud.logbook.merkle import (
    HASH_SIZE,
    leaf_hash,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)
from metrocloud.logbook.readers import HEADER, request_target, sign_read
from metrocloud.logbook.witness import verify_cosigned
from metrocloud.pki.pem import write_atomically
from metrocloud.pki.validate import TrustStore

PAGE = 1000


class LogbookUnreachable(MetrocloudError):
    """The logbook's API did not answer (network, TLS or server error)."""


@dataclass(frozen=True)
class RemoteEntry:
    """An entry as the API served it: its bytes (which the client hashes) and its proof."""

    seq: int
    leaf: bytes
    proof: tuple[bytes, ...] = ()

    @property
    def event(self) -> LogEvent:
        """The event the entry holds; ``Rejected("malformed-entry")`` if it holds none."""
        try:
            return LogEvent.from_json(self.leaf)
        except (ValueError, KeyError, TypeError) as exc:
            raise Rejected("malformed-entry", f"entry {self.seq} is not an event: {exc}") from None


def _hashes(values: object, what: str) -> list[bytes]:
    if not isinstance(values, list):
        raise Rejected("malformed-answer", f"{what} is not a list")
    try:
        hashes = [bytes.fromhex(str(v)) for v in values]
    except ValueError:
        raise Rejected("malformed-answer", f"{what} holds something other than hex") from None
    if any(len(h) != HASH_SIZE for h in hashes):
        raise Rejected("malformed-answer", f"{what} holds a hash that is not {HASH_SIZE} bytes")
    return hashes


class LogbookClient:
    """The logbook's read API; entry reads are signed by ``signer`` (a reader's identity)."""

    def __init__(self, http: httpx.Client, signer: Signer | None = None) -> None:
        self._http = http
        self.signer = signer

    @classmethod
    def connect(
        cls,
        base_url: str,
        *,
        tls_trust: Path | None = None,
        signer: Signer | None = None,
        timeout_s: float = 30.0,
    ) -> LogbookClient:
        return cls(open_http(base_url, tls_trust=tls_trust, timeout_s=timeout_s), signer)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LogbookClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(
        self, path: str, params: Mapping[str, Any] | None = None, *, sign: bool = False
    ) -> httpx.Response:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        headers = {}
        if sign:
            if self.signer is None:
                raise Rejected("not-authenticated", "reading entries needs a reader's identity")
            headers[HEADER] = sign_read(self.signer, request_target("GET", path, query))
        try:
            response = self._http.get(path, params=query, headers=headers)
        except httpx.HTTPError as exc:
            raise LogbookUnreachable(f"{self._http.base_url}: {exc}") from exc
        if response.status_code >= 500:
            raise LogbookUnreachable(f"{self._http.base_url}: HTTP {response.status_code}")
        if response.status_code != 200:
            try:
                body = response.json()
                raise Rejected(str(body["reason"]), str(body["detail"]))
            except (ValueError, KeyError, TypeError):
                raise Rejected("malformed-answer", f"HTTP {response.status_code}") from None
        return response

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise Rejected("malformed-answer", "the answer is not JSON") from None
        if not isinstance(body, dict):
            raise Rejected("malformed-answer", "the answer is not a JSON object")
        return body

    def checkpoint(self) -> str:
        """The latest head with the cosignatures the log gathered (a signed note)."""
        return self._get("/checkpoint").text

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        body = self._json(self._get("/proofs/consistency", {"old": old, "new": new}))
        return _hashes(body.get("proof"), "the consistency proof")

    def entries(
        self,
        start: int = 0,
        limit: int = 100,
        *,
        audience: str | None = None,
        kind: str | None = None,
    ) -> list[RemoteEntry]:
        """Entries from ``start`` in the reader's view (signed request)."""
        params = {"start": start, "limit": limit, "audience": audience, "kind": kind}
        body = self._json(self._get("/entries", params, sign=True))
        return [self._remote(item) for item in body.get("entries", [])]

    def entry(self, seq: int, size: int) -> RemoteEntry:
        """Entry ``seq`` with its inclusion proof in the tree of ``size`` (signed request)."""
        body = self._json(self._get(f"/entries/{seq}", {"size": size}, sign=True))
        found = self._remote(body)
        proof = _hashes(body.get("inclusion_proof"), "the inclusion proof")
        return RemoteEntry(found.seq, found.leaf, tuple(proof))

    @staticmethod
    def _remote(item: object) -> RemoteEntry:
        if not isinstance(item, dict) or type(item.get("seq")) is not int:
            raise Rejected("malformed-answer", "an entry without a sequence number")
        try:
            return RemoteEntry(int(item["seq"]), unb64(str(item.get("leaf"))))
        except ValueError:
            raise Rejected("malformed-answer", f"entry {item['seq']}: leaf is not base64") from None


@dataclass(frozen=True)
class AuditVerdict:
    """The outcome of :meth:`LogAuditor.audit`: the head and how many entries checked out."""

    head: Checkpoint
    entries: int


class LogAuditor:
    """What an auditor trusts: the log's certificate, the witnesses, the quorum, the PKI.

    ``state`` (optional) keeps the last accepted head across runs, so a rollback or a fork
    is caught between one audit and the next. ``quorum`` 0 accepts a head on the log's
    signature alone (then the witnesses are not asked for and cannot protect from a fork).
    """

    def __init__(
        self,
        log_certificate: x509.Certificate,
        trust: TrustStore,
        *,
        log_name: str,
        witnesses: Mapping[str, x509.Certificate] | None = None,
        quorum: int = 0,
        state: Path | None = None,
    ) -> None:
        self.log_certificate = log_certificate
        self.trust = trust
        self.log_name = log_name
        self.witnesses = dict(witnesses or {})
        self.quorum = quorum
        self.state = state

    # -- heads --------------------------------------------------------------------------------
    def accepted(self) -> Checkpoint | None:
        """The last head accepted (from the state file), if any."""
        if self.state is None or not self.state.exists():
            return None
        data = json.loads(self.state.read_text(encoding="utf-8"))
        return Checkpoint(str(data["origin"]), int(data["size"]), bytes.fromhex(data["root"]))

    def _remember(self, head: Checkpoint, note: str) -> None:
        if self.state is None:
            return
        self.state.parent.mkdir(parents=True, exist_ok=True)
        record = {"origin": head.origin, "size": head.size, "root": head.root.hex(), "note": note}
        write_atomically(self.state, json.dumps(record).encode(), 0o600)

    def check_head(self, note: str) -> Checkpoint:
        """The head of ``note`` once its signatures hold (no memory involved)."""
        if self.quorum:
            return verify_cosigned(
                note, self.log_certificate, self.witnesses, self.quorum, self.trust,
                log_name=self.log_name,
            )  # fmt: skip
        return open_checkpoint(note, self.log_certificate, self.trust, log_name=self.log_name)

    def head(self, client: LogbookClient) -> Checkpoint:
        """The log's latest head, accepted only if it extends the last one accepted."""
        note = client.checkpoint()
        head = self.check_head(note)
        seen = self.accepted()
        if seen is not None:
            self.extends(client, seen, head)
        self._remember(head, note)
        return head

    @staticmethod
    def extends(client: LogbookClient, seen: Checkpoint, head: Checkpoint) -> None:
        """``Rejected`` unless ``head`` extends ``seen``: rollback, fork, inconsistent."""
        if head.size < seen.size:
            raise Rejected(
                "rollback",
                f"the log shows size {head.size}, but size {seen.size} was accepted before: "
                f"entries {head.size} to {seen.size - 1} are gone",
            )
        if seen.size == 0:
            return  # every tree extends the empty one
        if head.size == seen.size:
            if head.root != seen.root:
                raise Rejected(
                    "fork",
                    f"size {head.size} with root {head.root.hex()}, but root {seen.root.hex()} "
                    "was accepted for that size: two versions of the log exist",
                )
            return
        proof = client.consistency_proof(seen.size, head.size)
        if not verify_consistency(seen.size, head.size, seen.root, head.root, proof):
            raise Rejected(
                "inconsistent",
                f"size {head.size} does not extend size {seen.size}: an entry below "
                f"{seen.size} was changed, removed or moved",
            )

    # -- entries ------------------------------------------------------------------------------
    def entry(self, client: LogbookClient, seq: int, head: Checkpoint) -> LogEvent:
        """Entry ``seq``, once its bytes are proven to be in ``head``."""
        if not 0 <= seq < head.size:
            raise Rejected("not-in-log", f"no entry {seq} in a log of {head.size}")
        found = client.entry(seq, head.size)
        if found.seq != seq:
            raise Rejected("malformed-answer", f"asked for entry {seq}, got {found.seq}")
        self._proven(found.leaf, seq, found.proof, head)
        return found.event

    @staticmethod
    def _proven(leaf: bytes, seq: int, proof: tuple[bytes, ...], head: Checkpoint) -> None:
        if not verify_inclusion(leaf_hash(leaf), seq, head.size, list(proof), head.root):
            raise Rejected(
                "not-included",
                f"entry {seq} as served is not in the head of size {head.size}: it was "
                "changed, inserted or moved after that head was signed",
            )

    def leaves(self, client: LogbookClient, size: int) -> Iterator[RemoteEntry]:
        """Every entry below ``size``, in order, as the authority's view serves them."""
        start = 0
        while start < size:
            page = client.entries(start, min(PAGE, size - start), audience="authority")
            if not page:
                raise Rejected("missing-entry", f"entry {start} is missing from the log")
            for found in page:
                if found.seq != start:
                    raise Rejected(
                        "missing-entry", f"entry {start} is missing (the log served {found.seq})"
                    )
                yield found
                start += 1
                if start == size:
                    return

    def audit(self, client: LogbookClient, head: Checkpoint) -> AuditVerdict:
        """Fetch every entry of ``head``, rebuild the tree, and name the first bad entry."""
        leaves = list(self.leaves(client, head.size))
        if tree_hash([leaf_hash(e.leaf) for e in leaves]) == head.root:
            return AuditVerdict(head, head.size)
        for found in leaves:  # name the first entry that its own proof does not carry
            self._proven(found.leaf, found.seq, client.entry(found.seq, head.size).proof, head)
        raise Rejected("inconsistent", f"the entries do not hash to the head of size {head.size}")
