"""Witnesses that cosign the logbook's checkpoints, and the clients that count them.

After C2SP ``tlog-witness`` and ``tlog-cosignature``. A :class:`Witness` keeps, per log
origin, the latest checkpoint it cosigned. Given a new signed checkpoint and a consistency
proof from that one, it checks in order: the log's signature; no rollback (a smaller size);
no fork (the same size with another root); the RFC 9162 consistency proof. Then it records
the new head and cosigns it. An honest witness therefore never cosigns two heads of one log
that contradict each other, and a client that requires cosignatures from a quorum of
witnesses (:func:`verify_cosigned`) cannot be shown a split view unless that many witnesses
collude with the log.

First contact: a witness with no head for the origin accepts any well-signed checkpoint
(trust on first use), as ``tlog-witness`` does with an old size of 0. The proof must then be
empty. Start a witness on a log's earliest checkpoint, not on one handed over later.

A cosignature is a note signature line ``— <witness name> base64(key id || timestamp ||
signature)``: the timestamp is the POSIX time of cosigning as a big-endian u64, as in
``tlog-cosignature``; the signature is ECDSA/SHA-256 (DER) by the witness's key over::

    cosignature/v1
    time <timestamp>
    <checkpoint body>

with the key id ``SHA-256(name || 0x0A || 0xff || "metrocloud/cosignature-ecdsa-sha256" ||
0x0A || DER SubjectPublicKeyInfo)[:4]``: the ``0xff`` escape as for log signatures
(:mod:`metrocloud.logbook.checkpoint`), with its own identifier, so a witness's line and a
log's line are never taken for each other.

State lives in SQLite (mode 0600): ``heads`` holds the latest cosigned checkpoint per origin
with its signed note and the witness's line; ``evidence`` keeps each well-signed checkpoint
refused as rollback, fork or inconsistent, with its proof, as proof of the log's
misbehaviour. The check and the
update run in one ``BEGIN IMMEDIATE`` transaction, so two requests (threads or processes)
cannot roll the head back between them; the head is stored before the cosignature is
returned.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import struct
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509

from metrocloud.core.errors import Rejected
from metrocloud.logbook.checkpoint import (
    Checkpoint,
    SignatureLine,
    key_id,
    open_checkpoint,
    public_key_der,
    valid_key_name,
)
from metrocloud.logbook.merkle import HASH_SIZE, verify_consistency
from metrocloud.pki.identity import Identity
from metrocloud.pki.roles import Role
from metrocloud.pki.validate import TrustStore, certificate_der, verify_signature

COSIGNATURE_TYPE = b"\xffmetrocloud/cosignature-ecdsa-sha256\n"
"""The signature type in a cosignature's key id: ``0xff`` plus metrocloud's identifier."""

MAX_PROOF_HASHES = 63
"""The longest consistency proof a witness reads (``tlog-witness`` allows 63 lines)."""
MAX_TIMESTAMP = 2**63 - 1
_TIMESTAMP = struct.Struct(">Q")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS heads (
    origin TEXT PRIMARY KEY, size INTEGER NOT NULL, root BLOB NOT NULL,
    cosigned_at INTEGER NOT NULL, note TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evidence (
    id INTEGER PRIMARY KEY, origin TEXT NOT NULL, reason TEXT NOT NULL, at INTEGER NOT NULL,
    note TEXT NOT NULL, proof TEXT NOT NULL
);
"""


def cosigned_message(checkpoint: Checkpoint, timestamp: int) -> bytes:
    """What a witness signs: ``cosignature/v1``, ``time <timestamp>``, the checkpoint body."""
    return b"cosignature/v1\ntime %d\n" % timestamp + checkpoint.body()


def cosignature_key_id(name: str, certificate: x509.Certificate) -> bytes:
    """The key id of cosignatures by the key of ``certificate`` under key name ``name``."""
    return key_id(name, COSIGNATURE_TYPE, certificate.public_key())  # type: ignore[arg-type]


@dataclass(frozen=True)
class Evidence:
    """A well-signed checkpoint a witness refused, with the proof it came with."""

    origin: str
    reason: str
    at: int
    note: str
    proof: tuple[bytes, ...]


class Witness:
    """Cosigns checkpoints of one log that are consistent with all it cosigned before.

    ``identity`` must hold a valid authority certificate in ``trust``; its common name is
    the witness's key name unless ``name`` is given. ``log_certificate`` (a service
    certificate) and ``log_name`` say whose signature a checkpoint needs; its origin must be
    ``origin`` (default ``log_name``). ``clock`` gives the cosignature time (POSIX seconds).
    """

    def __init__(
        self,
        identity: Identity,
        state_path: Path,
        log_certificate: x509.Certificate,
        trust: TrustStore,
        *,
        log_name: str,
        origin: str | None = None,
        name: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        trust.verify(identity.certificate_der, expected_role=Role.AUTHORITY)
        self.name = identity.common_name if name is None else name
        if not valid_key_name(self.name):
            raise ValueError(f"{self.name!r} is not a valid key name")
        self.identity = identity
        self.state_path = Path(state_path)
        self.log_certificate = log_certificate
        self.trust = trust
        self.log_name = log_name
        self.origin = log_name if origin is None else origin
        self.clock = clock
        self.key_id = cosignature_key_id(self.name, identity.certificate)
        with self._connect() as conn:
            conn.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if not self.state_path.exists():
            self.state_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.state_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        conn = sqlite3.connect(self.state_path, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous = FULL")
            yield conn
        finally:
            conn.close()

    def head(self, origin: str | None = None) -> Checkpoint | None:
        """The latest checkpoint this witness cosigned for ``origin`` (default its log's)."""
        origin = self.origin if origin is None else origin
        with self._connect() as conn:
            row = conn.execute(
                "SELECT size, root FROM heads WHERE origin = ?", (origin,)
            ).fetchone()
        return None if row is None else Checkpoint(origin, row[0], bytes(row[1]))

    def evidence(self) -> list[Evidence]:
        """The well-signed checkpoints refused so far, oldest first."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT origin, reason, at, note, proof FROM evidence ORDER BY id"
            ).fetchall()
        return [
            Evidence(o, r, a, n, tuple(bytes.fromhex(h) for h in p.split()))
            for o, r, a, n, p in rows
        ]

    def cosign(self, note: str, proof: Sequence[bytes], *, old_size: int | None = None) -> str:
        """The cosignature line for the checkpoint in ``note``, once it has passed the checks.

        ``proof`` is the consistency proof from the head this witness holds to the new one
        (empty on first contact or for the same head again). ``old_size``, if given, is the
        size the caller built the proof from: ``Rejected("old-size-mismatch")`` names the
        witness's size when it differs, so the caller can build the right proof.

        Raises ``Rejected``: whatever :func:`open_checkpoint` raises, then ``rollback``,
        ``fork``, ``old-size-mismatch``, ``inconsistent``; nothing is stored for a checkpoint
        whose signature does not hold.
        """
        checkpoint = open_checkpoint(
            note, self.log_certificate, self.trust, log_name=self.log_name, origin=self.origin
        )
        proof = list(proof)
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                refusal = self._check(conn, checkpoint, proof, old_size)
                if refusal is not None:
                    if refusal.reason != "old-size-mismatch":
                        conn.execute(
                            "INSERT INTO evidence (origin, reason, at, note, proof)"
                            " VALUES (?, ?, ?, ?, ?)",
                            (
                                checkpoint.origin,
                                refusal.reason,
                                int(self.clock()),
                                note,
                                " ".join(p.hex() for p in proof),
                            ),
                        )
                    conn.execute("COMMIT")
                    raise refusal
                timestamp = int(self.clock())
                if not 0 <= timestamp <= MAX_TIMESTAMP:
                    raise ValueError(f"clock time {timestamp} is out of range")
                signature = self.identity.sign(cosigned_message(checkpoint, timestamp))
                line = SignatureLine(
                    self.name, self.key_id, _TIMESTAMP.pack(timestamp) + signature
                ).line()
                conn.execute(
                    "INSERT OR REPLACE INTO heads (origin, size, root, cosigned_at, note)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (checkpoint.origin, checkpoint.size, checkpoint.root, timestamp, note + line),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return line

    def cosigned_note(self, origin: str | None = None) -> str | None:
        """The latest checkpoint cosigned for ``origin``: the note as received plus this
        witness's line (what a monitor compares with the heads the log shows others)."""
        origin = self.origin if origin is None else origin
        with self._connect() as conn:
            row = conn.execute("SELECT note FROM heads WHERE origin = ?", (origin,)).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def _check(
        conn: sqlite3.Connection,
        checkpoint: Checkpoint,
        proof: list[bytes],
        old_size: int | None,
    ) -> Rejected | None:
        """Why ``checkpoint`` may not be cosigned after the stored head, or None."""
        row = conn.execute(
            "SELECT size, root FROM heads WHERE origin = ?", (checkpoint.origin,)
        ).fetchone()
        size, root = (0, b"") if row is None else (int(row[0]), bytes(row[1]))
        origin, new = checkpoint.origin, checkpoint.size
        if new < size:
            return Rejected(
                "rollback",
                f"{origin}: size {new} is smaller than size {size}, which this witness "
                "cosigned before",
            )
        if row is not None and new == size and checkpoint.root != root:
            return Rejected(
                "fork",
                f"{origin}: size {size} with root {checkpoint.root.hex()}, but this witness "
                f"cosigned root {root.hex()} for that size",
            )
        if old_size is not None and old_size != size:
            return Rejected(
                "old-size-mismatch",
                f"{origin}: the proof is from size {old_size}, this witness holds size {size}",
            )
        if len(proof) > MAX_PROOF_HASHES or any(len(p) != HASH_SIZE for p in proof):
            return Rejected(
                "inconsistent",
                f"{origin}: the proof from size {size} to {new} is not a list of at most "
                f"{MAX_PROOF_HASHES} hashes of {HASH_SIZE} bytes",
            )
        if size == 0 or new == size:
            consistent = not proof  # anything extends the empty tree; the same head is itself
        else:
            consistent = verify_consistency(size, new, root, checkpoint.root, proof)
        if not consistent:
            return Rejected(
                "inconsistent",
                f"{origin}: the proof does not show size {new} (root {checkpoint.root.hex()}) "
                f"extends size {size} (root {root.hex()})",
            )
        return None


def verify_cosigned(
    note: str,
    log_certificate: x509.Certificate,
    witnesses: Mapping[str, x509.Certificate],
    quorum: int,
    trust: TrustStore,
    *,
    log_name: str,
    origin: str | None = None,
    max_age: float | None = None,
    at: datetime | None = None,
) -> Checkpoint:
    """The checkpoint of ``note`` once the log signed it and ``quorum`` witnesses cosigned it.

    ``witnesses`` maps each configured witness's key name to its certificate, which must be
    a valid authority certificate in ``trust``; a witness whose certificate is not (expired,
    revoked, another role) does not count. Lines from unknown names or keys are ignored. A
    cosignature older than ``max_age`` seconds (if given) does not count either. ``at``
    (default now) is the time certificates and ages are judged at.

    Raises ``Rejected``: what :func:`open_checkpoint` raises; ``bad-cosignature`` if a line
    from a configured witness's key does not verify; ``stale-cosignature`` if the quorum is
    missed because of old cosignatures; ``missing-cosignature`` otherwise, naming the
    witnesses that did not count.
    """
    if not 1 <= quorum <= len(witnesses):
        raise ValueError(f"quorum {quorum} is not between 1 and {len(witnesses)} witnesses")
    keys: dict[bytes, str] = {}
    for name, cert in witnesses.items():
        other = keys.setdefault(public_key_der(cert.public_key()), name)  # type: ignore[arg-type]
        if other != name:
            raise ValueError(f"witnesses {other} and {name} share one key")
    at = datetime.now(timezone.utc) if at is None else at
    checkpoint = open_checkpoint(
        note, log_certificate, trust, log_name=log_name, origin=origin, at=at
    )
    _, lines = Checkpoint.parse(note)
    why_not: dict[str, str] = {}
    usable: dict[str, tuple[x509.Certificate, bytes]] = {}
    for name, cert in witnesses.items():
        try:
            valid = trust.verify(certificate_der(cert), expected_role=Role.AUTHORITY, at=at)
        except Rejected as exc:
            why_not[name] = f"certificate refused ({exc.reason})"
            continue
        usable[name] = (valid, cosignature_key_id(name, valid))
    counted: set[str] = set()
    stale: set[str] = set()
    for line in lines:
        if line.name not in usable or line.key_id != usable[line.name][1]:
            continue  # C2SP: verifiers ignore signatures from unknown keys
        cert = usable[line.name][0]
        if len(line.signature) <= _TIMESTAMP.size:
            raise Rejected("bad-cosignature", f"the cosignature of {line.name} is truncated")
        (timestamp,) = _TIMESTAMP.unpack_from(line.signature)
        if timestamp > MAX_TIMESTAMP:
            raise Rejected("bad-cosignature", f"the cosignature of {line.name} has a bad time")
        try:
            verify_signature(
                cert,
                cosigned_message(checkpoint, timestamp),
                line.signature[_TIMESTAMP.size :],
            )
        except Rejected:
            raise Rejected(
                "bad-cosignature",
                f"the cosignature of {line.name} on size {checkpoint.size} does not verify",
            ) from None
        if max_age is not None and at.timestamp() - timestamp > max_age:
            stale.add(line.name)
        else:
            counted.add(line.name)
    if len(counted) >= quorum:
        return checkpoint
    for name in sorted(stale - counted):
        why_not.setdefault(name, f"cosignature older than {max_age:g} s")
    for name in witnesses:
        if name not in counted:
            why_not.setdefault(name, "no cosignature")
    missing = ", ".join(f"{name} ({why})" for name, why in sorted(why_not.items()))
    reason = "stale-cosignature" if stale - counted else "missing-cosignature"
    raise Rejected(
        reason,
        f"size {checkpoint.size} has {len(counted)} of {quorum} cosignatures needed; "
        f"missing: {missing}",
    )
