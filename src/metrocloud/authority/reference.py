"""The authority's reference list of approved software identifications (WELMEC 7.2).

Market surveillance compares what a legally relevant component reports (software name,
version, SHA-256 checksum of its legally relevant code) with what the notified body
approved. The authority, not the operator, holds that list and signs it with its authority
certificate from the metrocloud PKI.

Body: canonical JSON, UTF-8, keys sorted, no whitespace (``ensure_ascii`` off)::

    {"entries":[{"approved_at":…,"certificate":…,"checksum":"<64 lowercase hex>",
    "component":…,"name":…,"version":…},…],"issued_at":"<ISO date-time with offset>",
    "kind":"approved-identifications","serial":<int>,"v":1}

Every key is always present; ``approved_at`` (ISO date, or date-time with offset) and
``certificate`` (free text, e.g. the type-examination certificate) are ``null`` when not
given. Entries are sorted by (component, name, version, checksum); two entries with the
same four are refused. A body that is not byte for byte its canonical form is refused, so
one list has exactly one encoding.

Signed form: a :class:`~metrocloud.core.messages.Envelope`, the msgpack map
``{"v": 1, "body": <body>, "cert": <signer certificate, DER>, "sig": <ECDSA/SHA-256 over
body, DER>}`` exactly as :meth:`Envelope.encode` writes it. A JSON body cannot be taken for
a message body (those are msgpack maps) nor the other way round.

Opening checks, in order: the envelope's form, the certificate (authority role, chain,
CRLs), the signature, the body's form, the serial. Every refusal is a
:class:`~metrocloud.core.errors.Rejected` with reason ``malformed-reference``, one of the
PKI's reasons (``wrong-role``, ``certificate-revoked``, ...), ``bad-signature``,
``duplicate-entry`` or ``rolled-back-reference``.

``issuer`` is not in the body: it is the common name of the certificate that signed it.
``serial`` grows with every list an authority issues; a newer list replaces an older one.
"""

from __future__ import annotations

import itertools
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from metrocloud.core.canonical import (
    canonical,
    check_moment,
    check_text,
    exact_keys,
    strict_loads,
)
from metrocloud.core.errors import Rejected
from metrocloud.core.messages import Envelope
from metrocloud.core.software import SoftwareId
from metrocloud.pki.identity import Identity
from metrocloud.pki.pem import write_atomically
from metrocloud.pki.roles import Role
from metrocloud.pki.validate import (
    TrustStore,
    certificate_role,
    subject_common_name,
    verify_signature,
)

KIND = "approved-identifications"
FORMAT_VERSION = 1
MAX_SERIAL = 2**63 - 1
MAX_REFERENCE_BYTES = 8 * 1024 * 1024
"""Largest signed list :func:`open_reference` reads."""

_HEX64 = re.compile(r"[0-9a-f]{64}")
_ENTRY_KEYS = frozenset({"component", "name", "version", "checksum", "approved_at", "certificate"})
_BODY_KEYS = frozenset({"kind", "v", "serial", "issued_at", "entries"})


class DuplicateEntry(ValueError):
    """Two entries with the same component, name, version and checksum."""


@dataclass(frozen=True)
class ApprovedIdentification:
    """One approved software identification of one legally relevant component."""

    component: str
    name: str
    version: str
    checksum: str
    """SHA-256 over the legally relevant code: 64 lowercase hex digits."""
    approved_at: str | None = None
    """ISO date, or date-time with offset, of the approval."""
    certificate: str | None = None
    """Free text, e.g. the number of the type-examination certificate."""

    def __post_init__(self) -> None:
        check_text(self.component, "component")
        check_text(self.name, "name")
        check_text(self.version, "version")
        if type(self.checksum) is not str or not _HEX64.fullmatch(self.checksum):
            raise ValueError(f"checksum {self.checksum!r} is not 64 lowercase hex digits")
        if self.approved_at is not None:
            check_moment(self.approved_at, "approved_at", date_allowed=True)
        if self.certificate is not None:
            check_text(self.certificate, "certificate")

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What orders entries and makes two of them duplicates."""
        return (self.component, self.name, self.version, self.checksum)

    @property
    def software(self) -> SoftwareId:
        return SoftwareId(self.name, self.version, self.checksum)

    def to_dict(self) -> dict[str, str | None]:
        return {
            "component": self.component,
            "name": self.name,
            "version": self.version,
            "checksum": self.checksum,
            "approved_at": self.approved_at,
            "certificate": self.certificate,
        }


@dataclass(frozen=True)
class Verdict:
    """Whether a reported identification is approved, with a code and a sentence why.

    ``reason`` is one of ``approved``, ``malformed-checksum``, ``unknown-component``,
    ``unknown-software``, ``unknown-version``, ``other-checksum``, ``other-version``.
    """

    approved: bool
    reason: str
    detail: str
    entry: ApprovedIdentification | None = None
    """The approved entry that matched, if any."""

    def __str__(self) -> str:
        return self.detail


@dataclass(frozen=True)
class ReferenceList:
    """The approved identifications as one authority issued them under one serial.

    ``entries`` are kept sorted by (component, name, version, checksum), whatever order they
    are given in; duplicates raise :class:`DuplicateEntry`.
    """

    issuer: str
    """Common name of the authority certificate that signed (or is to sign) the list."""
    serial: int
    issued_at: str
    """ISO date-time with offset."""
    entries: tuple[ApprovedIdentification, ...] = field(default=())

    def __post_init__(self) -> None:
        if type(self.issuer) is not str:
            raise ValueError("issuer must be a string")
        if type(self.serial) is not int or not 0 <= self.serial <= MAX_SERIAL:
            raise ValueError(f"serial must be an int from 0 to {MAX_SERIAL}")
        check_moment(self.issued_at, "issued_at", date_allowed=False)
        entries = tuple(self.entries)
        if not all(isinstance(e, ApprovedIdentification) for e in entries):
            raise ValueError("entries must be ApprovedIdentification")
        ordered = tuple(sorted(entries, key=lambda e: e.key))
        for before, after in itertools.pairwise(ordered):
            if before.key == after.key:
                raise DuplicateEntry(
                    f"{after.component} {after.name} {after.version} "
                    f"{after.checksum[:12]}… is listed twice"
                )
        object.__setattr__(self, "entries", ordered)

    def approved(self, component: str) -> list[ApprovedIdentification]:
        """Every identification approved for ``component`` (several during an update)."""
        return [e for e in self.entries if e.component == component]

    def verdict(self, component: str, name: str, version: str, checksum: str) -> Verdict:
        """Whether ``component`` may run software ``name`` ``version`` with ``checksum``."""
        if not isinstance(checksum, str) or not _HEX64.fullmatch(checksum.lower()):
            return Verdict(False, "malformed-checksum", f"{checksum!r} is no SHA-256 in hex")
        checksum = checksum.lower()
        candidates = self.approved(component)
        if not candidates:
            return Verdict(False, "unknown-component", f"unknown component {component}")
        for entry in candidates:
            if entry.key == (component, name, version, checksum):
                approval = f"approved as {entry.certificate}" if entry.certificate else "approved"
                return Verdict(True, "approved", approval, entry)
        same = [e for e in candidates if (e.name, e.version) == (name, version)]
        if same:
            return Verdict(
                False,
                "other-checksum",
                f"checksum not approved for {component} {name} {version}: "
                "version approved with another checksum",
            )
        for entry in candidates:
            if entry.checksum == checksum:
                return Verdict(
                    False,
                    "other-version",
                    f"checksum approved for {component} as {entry.name} {entry.version}, "
                    f"not as {name} {version}",
                )
        if any(e.name == name for e in candidates):
            return Verdict(
                False,
                "unknown-version",
                f"version {version} of {name} not approved for {component}",
            )
        return Verdict(False, "unknown-software", f"software {name} not approved for {component}")

    def verdict_of(self, component: str, software: SoftwareId) -> Verdict:
        """:meth:`verdict` for a reported :class:`SoftwareId`."""
        return self.verdict(component, software.name, software.version, software.checksum)


def encode_reference(reference: ReferenceList) -> bytes:
    """The canonical body of ``reference`` (its issuer is not in it)."""
    return canonical(
        {
            "kind": KIND,
            "v": FORMAT_VERSION,
            "serial": reference.serial,
            "issued_at": reference.issued_at,
            "entries": [e.to_dict() for e in reference.entries],
        }
    )


def sign_reference(identity: Identity, reference: ReferenceList) -> bytes:
    """The signed list: an :class:`Envelope` of the canonical body, signed by ``identity``.

    Only an authority signs (``Rejected("wrong-role")`` otherwise); ``reference.issuer``
    must be the signer's common name (``ValueError`` otherwise).
    """
    if identity.role is not Role.AUTHORITY or certificate_role(identity.certificate) is not (
        Role.AUTHORITY
    ):
        raise Rejected(
            "wrong-role", f"{identity.common_name} is no authority and may not sign approvals"
        )
    signer = subject_common_name(identity.certificate)
    if reference.issuer != signer:
        raise ValueError(f"the list names issuer {reference.issuer!r}, the signer is {signer!r}")
    body = encode_reference(reference)
    return Envelope(body, identity.certificate_der, identity.sign(body)).encode()


def _malformed(detail: str) -> Rejected:
    return Rejected("malformed-reference", detail)


def decode_reference(body: bytes, issuer: str) -> ReferenceList:
    """Parse a canonical body strictly; ``Rejected`` on anything else."""
    try:
        data = strict_loads(body)
    except ValueError as exc:
        raise _malformed(f"the body is not strict JSON in UTF-8: {exc}") from None
    top = exact_keys(data, _BODY_KEYS, "the body", _malformed)
    if top["kind"] != KIND:
        raise _malformed(f"the body is a {top['kind']!r}, not {KIND!r}")
    if type(top["v"]) is not int or top["v"] != FORMAT_VERSION:
        raise _malformed(f"unsupported format version {top['v']!r}")
    if not isinstance(top["entries"], list):
        raise _malformed("entries is not a list")
    entries = []
    try:
        for number, raw_entry in enumerate(top["entries"]):
            item = exact_keys(raw_entry, _ENTRY_KEYS, f"entry {number}", _malformed)
            entries.append(ApprovedIdentification(**item))
        reference = ReferenceList(issuer, top["serial"], top["issued_at"], tuple(entries))
    except DuplicateEntry as exc:
        raise Rejected("duplicate-entry", str(exc)) from None
    except ValueError as exc:
        raise _malformed(str(exc)) from None
    if encode_reference(reference) != body:
        raise _malformed("the body is not in canonical form (key or entry order, spacing)")
    return reference


def open_reference(
    raw: bytes,
    trust: TrustStore,
    *,
    at: datetime | None = None,
    not_before_serial: int | None = None,
) -> ReferenceList:
    """Check a signed list and return it; ``Rejected`` with the first thing wrong.

    The certificate must be a valid authority certificate at ``at`` (default now), with
    chain and CRLs checked by ``trust``. With ``not_before_serial`` the list's serial must
    be greater (``rolled-back-reference`` otherwise).
    """
    if len(raw) > MAX_REFERENCE_BYTES:
        raise _malformed(f"{len(raw)} bytes, more than {MAX_REFERENCE_BYTES}")
    try:
        envelope = Envelope.decode(raw)
    except Rejected as exc:
        raise _malformed(f"not a signed list: {exc.detail}") from None
    if envelope.encode() != raw:
        raise _malformed("the envelope is not in canonical form")
    certificate = trust.verify(envelope.certificate, expected_role=Role.AUTHORITY, at=at)
    verify_signature(certificate, envelope.body, envelope.signature)
    reference = decode_reference(envelope.body, subject_common_name(certificate))
    if not_before_serial is not None and reference.serial <= not_before_serial:
        raise Rejected(
            "rolled-back-reference",
            f"list {reference.serial} of {reference.issuer} is not newer than {not_before_serial}",
        )
    return reference


class ReferenceStore:
    """The current signed list in ``folder``, and the highest serial accepted so far.

    ``approved.signed`` holds the signed list as received (mode 0644); ``approved.serial``
    holds its serial in decimal. Both are written atomically, the list first: a crash in
    between leaves a list newer than the serial file, which :meth:`current` accepts.

    One serial sequence per store: a renewed or successor authority certificate continues
    the numbering. The serial file guards against replaying an old, well-signed list
    through :meth:`install` or by copying it over ``approved.signed``; it is no guard
    against someone who may write both files. Keep the folder to the authority's process.
    One process per folder; threads are serialized.
    """

    LIST_FILE = "approved.signed"
    SERIAL_FILE = "approved.serial"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()

    @property
    def list_path(self) -> Path:
        return self.folder / self.LIST_FILE

    @property
    def serial_path(self) -> Path:
        return self.folder / self.SERIAL_FILE

    def serial(self) -> int | None:
        """The highest serial accepted so far, or None before the first list."""
        try:
            text = self.serial_path.read_text(encoding="ascii")
        except FileNotFoundError:
            return None
        except UnicodeDecodeError:
            raise _malformed(f"{self.serial_path} is not a decimal serial") from None
        if not re.fullmatch(r"(0|[1-9][0-9]{0,18})\n", text) or int(text) > MAX_SERIAL:
            raise _malformed(f"{self.serial_path} is not a decimal serial")
        return int(text)

    def install(
        self, raw: bytes, trust: TrustStore, *, at: datetime | None = None
    ) -> ReferenceList:
        """Check ``raw`` (serial above the stored one included), then make it current."""
        with self._lock:
            reference = open_reference(raw, trust, at=at, not_before_serial=self.serial())
            self.folder.mkdir(mode=0o755, parents=True, exist_ok=True)
            write_atomically(self.list_path, raw, 0o644)
            write_atomically(self.serial_path, f"{reference.serial}\n".encode("ascii"), 0o644)
        return reference

    def current(self, trust: TrustStore, *, at: datetime | None = None) -> ReferenceList | None:
        """The stored list, checked again as on install; None if there is none.

        A stored list that no longer verifies (changed on disk, certificate revoked or
        expired) or is older than the stored serial is refused, not trusted.
        """
        with self._lock:
            try:
                raw = self.list_path.read_bytes()
            except FileNotFoundError:
                return None
            stored = self.serial()
        reference = open_reference(raw, trust, at=at)
        if stored is not None and reference.serial < stored:
            raise Rejected(
                "rolled-back-reference",
                f"the stored list {reference.serial} is older than the accepted {stored}",
            )
        return reference
