"""Update packages: the manufacturer's signed metadata and the module files it names.

The metadata follows the idea of a TUF *targets* role: a signed, expiring, numbered
statement of which files make up a release and their digests, kept apart from the files.
Body (canonical JSON, :mod:`metrocloud.core.canonical`)::

    {"checksum":"<64 hex: the identification the component will show>",
     "component":"tariff-taf1","expires":"<ISO date-time>",
     "files":[{"length":<int>,"module":"metrocloud.tariffs.taf1","sha256":"<64 hex>"}],
     "issued_at":"<ISO date-time>","kind":"update-package","name":"metrocloud-tariff-taf1",
     "sequence":<int>,"v":1,"version":"2.1.0"}

``sequence`` numbers the manufacturer's metadata for one component (a replayed older
statement is refused); ``version`` is the software version (no downgrade); ``expires``
bounds how long a statement may be held back and replayed (a freeze).

A package is the msgpack map ``{"v": 1, "metadata": <Envelope of the body, signed by a
manufacturer certificate>, "files": {<module>: <source bytes>}}``.

:func:`open_package` checks, in order: size and form, that the metadata is signed at all,
the certificate (manufacturer role, chain, CRLs), the signature, the body, expiry, then each
file against its length and SHA-256. What depends on the installation (component, replay,
downgrade, approval) is the download manager's (:mod:`metrocloud.download.manager`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timezone

import msgpack
from cryptography import x509

from metrocloud.core.canonical import (
    canonical,
    check_moment,
    check_text,
    exact_keys,
    strict_loads,
)
from metrocloud.core.errors import Rejected
from metrocloud.core.messages import Envelope, Signer
from metrocloud.core.software import SoftwareId
from metrocloud.pki.roles import Role
from metrocloud.pki.validate import (
    PARSE_ERRORS,
    TrustStore,
    subject_common_name,
    verify_signature,
)

KIND = "update-package"
FORMAT_VERSION = 1
MAX_PACKAGE_BYTES = 16 * 1024 * 1024
"""Largest package read (TUF's endless-data attack stops here)."""
MAX_FILES = 64
MAX_SEQUENCE = 2**63 - 1

_HEX64 = re.compile(r"[0-9a-f]{64}")
_MODULE = re.compile(r"metrocloud(\.[a-z_][a-z0-9_]*)+")
_BODY_KEYS = frozenset(
    {"kind", "v", "component", "name", "version", "sequence", "issued_at", "expires"}
    | {"checksum", "files"}
)
_FILE_KEYS = frozenset({"module", "sha256", "length"})


def _malformed(detail: str) -> Rejected:
    return Rejected("malformed-package", detail)


@dataclass(frozen=True)
class PackageFile:
    module: str
    sha256: str
    length: int

    def __post_init__(self) -> None:
        if type(self.module) is not str or not _MODULE.fullmatch(self.module):
            raise ValueError(f"module {self.module!r} is no metrocloud module name")
        if type(self.sha256) is not str or not _HEX64.fullmatch(self.sha256):
            raise ValueError(f"sha256 of {self.module} is not 64 lowercase hex digits")
        if type(self.length) is not int or not 0 <= self.length <= MAX_PACKAGE_BYTES:
            raise ValueError(f"length of {self.module} is out of range")

    @classmethod
    def of(cls, module: str, source: bytes) -> PackageFile:
        return cls(module, hashlib.sha256(source).hexdigest(), len(source))

    def to_dict(self) -> dict[str, object]:
        return {"module": self.module, "sha256": self.sha256, "length": self.length}


@dataclass(frozen=True)
class PackageMetadata:
    """What the manufacturer states about one release of one component."""

    component: str
    name: str
    version: str
    sequence: int
    issued_at: str
    expires: str
    checksum: str
    files: tuple[PackageFile, ...]

    def __post_init__(self) -> None:
        for what in ("component", "name", "version"):
            check_text(getattr(self, what), what, longest=80)
        if type(self.sequence) is not int or not 1 <= self.sequence <= MAX_SEQUENCE:
            raise ValueError(f"sequence must be an int from 1 to {MAX_SEQUENCE}")
        check_moment(self.issued_at, "issued_at", date_allowed=False)
        check_moment(self.expires, "expires", date_allowed=False)
        if type(self.checksum) is not str or not _HEX64.fullmatch(self.checksum):
            raise ValueError("checksum is not 64 lowercase hex digits")
        files = tuple(sorted(self.files, key=lambda f: f.module))
        if not files or len(files) > MAX_FILES:
            raise ValueError(f"a package carries 1 to {MAX_FILES} files")
        if len({f.module for f in files}) != len(files):
            raise ValueError("a module is listed twice")
        object.__setattr__(self, "files", files)

    @property
    def software(self) -> SoftwareId:
        """The identification the component shows once this release runs."""
        return SoftwareId(self.name, self.version, self.checksum)

    @property
    def expires_at(self) -> datetime:
        return datetime.fromisoformat(self.expires)

    def encode(self) -> bytes:
        return canonical(
            {
                "kind": KIND,
                "v": FORMAT_VERSION,
                "component": self.component,
                "name": self.name,
                "version": self.version,
                "sequence": self.sequence,
                "issued_at": self.issued_at,
                "expires": self.expires,
                "checksum": self.checksum,
                "files": [f.to_dict() for f in self.files],
            }
        )

    @classmethod
    def decode(cls, body: bytes) -> PackageMetadata:
        """Parse a canonical body strictly; ``Rejected("malformed-package")`` otherwise."""
        try:
            data = strict_loads(body)
        except ValueError as exc:
            raise _malformed(f"the metadata is not strict JSON in UTF-8: {exc}") from None
        top = exact_keys(data, _BODY_KEYS, "the metadata", _malformed)
        if top["kind"] != KIND or top["v"] != FORMAT_VERSION or type(top["v"]) is not int:
            raise _malformed(f"not {KIND} metadata of format {FORMAT_VERSION}")
        if not isinstance(top["files"], list):
            raise _malformed("files is not a list")
        try:
            files = tuple(
                PackageFile(**exact_keys(f, _FILE_KEYS, f"file {n}", _malformed))
                for n, f in enumerate(top["files"])
            )
            fields = {k: v for k, v in top.items() if k not in ("kind", "v", "files")}
            metadata = cls(files=files, **fields)
        except (ValueError, TypeError) as exc:
            raise _malformed(str(exc)) from None
        if metadata.encode() != body:
            raise _malformed("the metadata is not in canonical form")
        return metadata


@dataclass(frozen=True)
class UpdatePackage:
    """A package whose signature, certificate, expiry and files checked out."""

    metadata: PackageMetadata
    files: dict[str, bytes]
    manufacturer: str
    """Common name of the manufacturer certificate that signed the metadata."""


def build_package(signer: Signer, metadata: PackageMetadata, files: dict[str, bytes]) -> bytes:
    """Sign ``metadata`` and pack it with ``files`` (what a manufacturer ships)."""
    body = metadata.encode()
    signed = Envelope(body, signer.certificate_der, signer.sign(body)).encode()
    return pack(signed, files)


def pack(metadata: bytes, files: dict[str, bytes]) -> bytes:
    """The package container around already encoded metadata."""
    return msgpack.packb(
        {"v": FORMAT_VERSION, "metadata": metadata, "files": dict(sorted(files.items()))},
        use_bin_type=True,
    )


def unpack(raw: bytes) -> tuple[bytes, dict[str, bytes]]:
    """The metadata bytes and the files of a package container."""
    if len(raw) > MAX_PACKAGE_BYTES:
        raise _malformed(f"{len(raw)} bytes, more than {MAX_PACKAGE_BYTES}")
    try:
        data = msgpack.unpackb(raw, raw=False, strict_map_key=True, max_bin_len=len(raw))
    except Exception as exc:  # msgpack raises many types on garbage
        raise _malformed(f"not a package: {type(exc).__name__}") from None
    if not isinstance(data, dict) or set(data) != {"v", "metadata", "files"}:
        raise _malformed("a package is a map of v, metadata and files")
    if data["v"] != FORMAT_VERSION or type(data["v"]) is not int:
        raise _malformed(f"unsupported package format {data['v']!r}")
    metadata, files = data["metadata"], data["files"]
    if not isinstance(metadata, bytes) or not isinstance(files, dict):
        raise _malformed("metadata must be bytes and files a map")
    if len(files) > MAX_FILES:
        raise _malformed(f"more than {MAX_FILES} files")
    if not all(isinstance(k, str) and isinstance(v, bytes) for k, v in files.items()):
        raise _malformed("files must map module names to bytes")
    return metadata, files


def claimed(raw: bytes) -> tuple[PackageMetadata | None, str]:
    """What a package claims (metadata, signer's CN) without trusting it: for the logbook
    entry of a refused package. ``(None, "unknown")`` when it cannot even be read."""
    try:
        metadata_raw, _ = unpack(raw)
    except Rejected:
        return None, "unknown"
    by = "unknown"
    body = metadata_raw
    try:
        envelope = Envelope.decode(metadata_raw)
        body = envelope.body
        by = subject_common_name(x509.load_der_x509_certificate(envelope.certificate))
    except PARSE_ERRORS:  # a certificate not even readable
        pass
    except Rejected:
        pass
    try:
        return PackageMetadata.decode(body), by
    except Rejected:
        return None, by


def open_package(raw: bytes, trust: TrustStore, *, at: datetime | None = None) -> UpdatePackage:
    """Check a package's authenticity, freshness and integrity; ``Rejected`` with the first
    thing wrong (reasons: ``malformed-package``, ``unsigned-package``, the PKI's reasons
    such as ``wrong-role``, ``bad-signature``, ``expired-metadata``, ``unlisted-file``,
    ``missing-file``, ``length-mismatch``, ``digest-mismatch``)."""
    now = at or datetime.now(timezone.utc)
    metadata_raw, files = unpack(raw)
    try:
        envelope = Envelope.decode(metadata_raw)
    except Rejected:
        raise Rejected(
            "unsigned-package", "the metadata carries no manufacturer signature"
        ) from None
    if envelope.encode() != metadata_raw:
        raise _malformed("the signed metadata is not in canonical form")
    if not envelope.signature:
        raise Rejected("unsigned-package", "the metadata's signature is empty")
    certificate = trust.verify(envelope.certificate, expected_role=Role.MANUFACTURER, at=now)
    verify_signature(certificate, envelope.body, envelope.signature)
    metadata = PackageMetadata.decode(envelope.body)
    if metadata.expires_at <= now:
        raise Rejected(
            "expired-metadata", f"the metadata expired at {metadata.expires}; ask for a fresh one"
        )
    listed = {f.module: f for f in metadata.files}
    unlisted = sorted(set(files) - set(listed))
    if unlisted:
        raise Rejected("unlisted-file", f"files the metadata does not name: {unlisted}")
    for module, entry in listed.items():
        if module not in files:
            raise Rejected("missing-file", f"{module} is named but not shipped")
        source = files[module]
        if len(source) != entry.length:
            raise Rejected(
                "length-mismatch", f"{module}: {len(source)} bytes, metadata says {entry.length}"
            )
        if hashlib.sha256(source).hexdigest() != entry.sha256:
            raise Rejected("digest-mismatch", f"{module}: SHA-256 differs from the metadata")
    return UpdatePackage(metadata, files, subject_common_name(certificate))
