"""Signed tree heads of the logbook as C2SP checkpoints (``tlog-checkpoint``, ``signed-note``).

A checkpoint's body is three lines: the log's *origin*, the tree *size* in decimal and the
base64 *root hash*::

    metrocloud.example/logbook
    20852163
    CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=

A signed note is the body, an empty line, and one line per signature, ``— <key name>
<base64(4-byte key id || signature)>``. Readers ignore lines from keys they do not know, so
witnesses add their cosignatures (:mod:`metrocloud.logbook.witness`) to the same note.

Signatures here are ECDSA over SHA-256, DER-encoded, by a metrocloud
:class:`~metrocloud.pki.keys.SigningKey` (P-256 or brainpoolP256r1). The signed-note type
``0x02`` (transparency-dev ECDSA) allows NIST curves only and derives its key id from the key
alone, so metrocloud uses the escape byte ``0xff`` that the spec reserves for other types,
followed by a longer identifier, and the spec's recommended derivation::

    key id = SHA-256(key name || 0x0A || 0xff || "metrocloud/note-ecdsa-sha256" || 0x0A
                     || DER SubjectPublicKeyInfo of the public key)[:4]

The key name and key id together tell a reader which key a line is from; the certificate
it was configured with decides whether the line counts.

Stricter than C2SP, since metrocloud writes every checkpoint it reads: no extension lines,
the origin follows the key-name rules (non-empty, no spaces, no ``+``), the base64 must be
canonical, and a tree of size 0 has the empty root.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from metrocloud.core.errors import Rejected
from metrocloud.logbook.merkle import EMPTY_ROOT, HASH_SIZE
from metrocloud.pki.keys import PublicKey, SigningKey
from metrocloud.pki.roles import Role
from metrocloud.pki.validate import TrustStore, certificate_der, verify_signature

LOG_ORIGIN = "metrocloud.local/logbook"
"""The origin (and key name) of the cloud logbook's checkpoints."""

NOTE_SIGNATURE_TYPE = b"\xffmetrocloud/note-ecdsa-sha256\n"
"""The signature type in a log signature's key id: ``0xff`` plus metrocloud's identifier."""

KEY_ID_SIZE = 4
MAX_SIZE = 2**63 - 1
"""The largest tree size a checkpoint may state."""
MAX_SIGNATURES = 64
"""The most signature lines a note may carry (C2SP asks readers to accept at least 16)."""
MAX_NOTE_CHARS = 64 * 1024

DASH = "\u2014"  # em dash, the start of every signature line
_SIZE = re.compile(r"0|[1-9][0-9]*")


def valid_key_name(name: str) -> bool:
    """Whether ``name`` may name a key (or a log origin): non-empty, no spaces, no ``+``."""
    return bool(name) and "+" not in name and not any(c.isspace() or c < " " for c in name)


def public_key_der(public_key: PublicKey) -> bytes:
    """The DER SubjectPublicKeyInfo of ``public_key`` (it names the curve too)."""
    return public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def key_id(name: str, signature_type: bytes, public_key: PublicKey) -> bytes:
    """The 4-byte signed-note key id of ``public_key`` under ``name`` for ``signature_type``."""
    if not valid_key_name(name):
        raise ValueError(f"{name!r} is not a valid key name")
    material = name.encode() + b"\n" + signature_type + public_key_der(public_key)
    return hashlib.sha256(material).digest()[:KEY_ID_SIZE]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    """Strict, canonical base64; ``ValueError`` otherwise."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise ValueError(f"not base64: {exc}") from None
    if b64(data) != text:
        raise ValueError("not canonical base64")
    return data


@dataclass(frozen=True)
class SignatureLine:
    """One signature line of a note: key name, key id and the signature bytes after it."""

    name: str
    key_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if not valid_key_name(self.name):
            raise ValueError(f"{self.name!r} is not a valid key name")
        if len(self.key_id) != KEY_ID_SIZE:
            raise ValueError(f"a key id has {KEY_ID_SIZE} bytes, not {len(self.key_id)}")

    def line(self) -> str:
        """The line as it stands in a note, newline included."""
        return f"{DASH} {self.name} {b64(self.key_id + self.signature)}\n"

    @classmethod
    def parse(cls, line: str) -> SignatureLine:
        """Read one line (without its newline); ``ValueError`` if it is malformed."""
        prefix = DASH + " "
        if not line.startswith(prefix):
            raise ValueError("a signature line starts with an em dash and a space")
        parts = line[len(prefix) :].split(" ")
        if len(parts) != 2:
            raise ValueError("a signature line is a key name and a signature")
        raw = unb64(parts[1])
        if len(raw) <= KEY_ID_SIZE:
            raise ValueError("a signature is a key id and at least one byte")
        return cls(parts[0], raw[:KEY_ID_SIZE], raw[KEY_ID_SIZE:])


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: origin, size and RFC 9162 root hash."""

    origin: str
    size: int
    root: bytes

    def __post_init__(self) -> None:
        if not valid_key_name(self.origin):
            raise ValueError(f"origin {self.origin!r} is empty or has spaces, '+' or controls")
        if not 0 <= self.size <= MAX_SIZE:
            raise ValueError(f"tree size {self.size} is out of range")
        if len(self.root) != HASH_SIZE:
            raise ValueError(f"a root hash has {HASH_SIZE} bytes, not {len(self.root)}")
        if self.size == 0 and self.root != EMPTY_ROOT:
            raise ValueError("the empty tree has the root SHA-256('')")

    def body(self) -> bytes:
        """The note text: ``<origin>\\n<size>\\n<base64 root>\\n``, the bytes that are signed."""
        return f"{self.origin}\n{self.size}\n{b64(self.root)}\n".encode()

    @classmethod
    def parse(cls, note: str) -> tuple[Checkpoint, list[SignatureLine]]:
        """Read a signed note; ``Rejected("malformed-checkpoint")`` unless it is well formed.

        Checks the form only: no signature is verified here (:func:`open_checkpoint` does).
        """
        try:
            return _parse(note)
        except ValueError as exc:
            raise Rejected("malformed-checkpoint", str(exc)) from None


def _parse(note: str) -> tuple[Checkpoint, list[SignatureLine]]:
    if not isinstance(note, str):
        raise ValueError("a note is text")
    if len(note) > MAX_NOTE_CHARS:
        raise ValueError(f"a note has at most {MAX_NOTE_CHARS} characters")
    if any(c < " " and c != "\n" for c in note):
        raise ValueError("a note has no control characters other than newline")
    try:
        note.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a note is valid UTF-8") from None
    if not note.endswith("\n"):
        raise ValueError("a note ends with a newline")
    split = note.rfind("\n\n")
    if split < 0:
        raise ValueError("no empty line before the signatures")
    text, signatures = note[: split + 1], note[split + 2 :].split("\n")[:-1]
    if not signatures:
        raise ValueError("a note has at least one signature")
    if len(signatures) > MAX_SIGNATURES:
        raise ValueError(f"a note has at most {MAX_SIGNATURES} signatures")
    lines = text.split("\n")[:-1]
    if len(lines) != 3:
        raise ValueError(f"a checkpoint has 3 lines (no extension lines), not {len(lines)}")
    origin, size, root = lines
    if not _SIZE.fullmatch(size):
        raise ValueError(f"tree size {size!r} is not a decimal without leading zeros")
    checkpoint = Checkpoint(origin, int(size), unb64(root))
    return checkpoint, [SignatureLine.parse(line) for line in signatures]


def append_lines(note: str, lines: Iterable[str]) -> str:
    """``note`` with signature ``lines`` (each ending in a newline) added, checked for form."""
    added = "".join(lines)
    Checkpoint.parse(note + added)
    return note + added


def sign_checkpoint(checkpoint: Checkpoint, name: str, key: SigningKey) -> str:
    """The signed note of ``checkpoint``, signed by ``key`` under key name ``name``."""
    return checkpoint.body().decode() + "\n" + _sign(checkpoint, name, key).line()


def add_signature(note: str, name: str, key: SigningKey) -> str:
    """``note`` with one more signature over its body (a second log key, during rotation).

    Adds a signature whatever the note already carries: check it first if that matters.
    """
    checkpoint, _ = Checkpoint.parse(note)
    return append_lines(note, [_sign(checkpoint, name, key).line()])


def _sign(checkpoint: Checkpoint, name: str, key: SigningKey) -> SignatureLine:
    kid = key_id(name, NOTE_SIGNATURE_TYPE, key.public_key())
    return SignatureLine(name, kid, key.sign(checkpoint.body()))


def open_checkpoint(
    note: str,
    log_certificate: x509.Certificate,
    trust: TrustStore,
    *,
    log_name: str,
    origin: str | None = None,
    at: datetime | None = None,
) -> Checkpoint:
    """The checkpoint of ``note`` once the log's signature on it holds.

    ``log_certificate`` must be a valid service certificate in ``trust`` (at ``at``, default
    now); the PKI's reason is raised otherwise (``untrusted-issuer``, ``wrong-role``,
    ``certificate-revoked``, ...). Lines named ``log_name`` with the key id of that
    certificate's key must all verify. The origin must be ``origin`` (default ``log_name``).
    Raises ``Rejected`` with ``malformed-checkpoint``, ``wrong-origin``,
    ``bad-log-signature`` or ``missing-log-signature``.
    """
    checkpoint, lines = Checkpoint.parse(note)
    expected_origin = log_name if origin is None else origin
    if checkpoint.origin != expected_origin:
        raise Rejected(
            "wrong-origin",
            f"checkpoint of {checkpoint.origin!r}, expected {expected_origin!r}",
        )
    cert = trust.verify(certificate_der(log_certificate), expected_role=Role.SERVICE, at=at)
    kid = key_id(log_name, NOTE_SIGNATURE_TYPE, cert.public_key())  # type: ignore[arg-type]
    ours = [line for line in lines if line.name == log_name and line.key_id == kid]
    if not ours:
        raise Rejected(
            "missing-log-signature",
            f"no signature by {log_name} (key id {kid.hex()}) on size {checkpoint.size}",
        )
    for line in ours:
        try:
            verify_signature(cert, checkpoint.body(), line.signature)
        except Rejected:
            raise Rejected(
                "bad-log-signature",
                f"the signature of {log_name} on size {checkpoint.size} does not verify",
            ) from None
    return checkpoint
