"""Messages between field, cloud and receiver: typed, versioned, serialized once.

Every message travels as a signed :class:`Envelope`: the body is encoded to bytes exactly
once (msgpack), the sender signs those bytes, and every hop passes the same bytes on, so a
signature can be checked anywhere downstream (storage keeps the gateway's signed
transmission; the receiver checks the signature of ``legal`` over its result).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol, TypeVar

import msgpack

from metrocloud.core.errors import Rejected

WIRE_VERSION = 1
MAX_CLOCK_SKEW = timedelta(minutes=10)
"""How far a message's ``sent_at`` may be from the receiving clock."""

M = TypeVar("M", bound="Message")


def _decode(raw: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise Rejected(
            "malformed-message", f"{what} is not valid msgpack: {exc or type(exc).__name__}"
        ) from None


_SCALARS: dict[str, type] = {"str": str, "int": int, "bytes": bytes, "dict[str, Any]": dict}


def _has_type(value: object, annotation: str) -> bool:
    if annotation == "list[bytes]":
        return isinstance(value, list) and all(isinstance(v, bytes) for v in value)
    if annotation == "list[str]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    expected = _SCALARS.get(annotation)
    return expected is None or (isinstance(value, expected) and not isinstance(value, bool))


def _holds_nul(value: object) -> bool:
    """Whether a text of ``value`` (a string, or one in a list or map) holds NUL: no name,
    id or time of the system does, and PostgreSQL's text columns cannot store one."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    return False


@dataclass(frozen=True)
class Message:
    """Base of message bodies; ``kind`` names the type on the wire."""

    kind: ClassVar[str]

    def encode(self) -> bytes:
        return msgpack.packb({"kind": self.kind, **asdict(self)}, use_bin_type=True)

    @classmethod
    def decode(cls: type[M], raw: bytes) -> M:
        data = _decode(raw, f"{cls.kind} body")
        if not isinstance(data, dict) or data.get("kind") != cls.kind:
            raise Rejected("malformed-message", f"expected a {cls.kind} body")
        names = {f.name: f for f in fields(cls)}
        missing = set(names) - set(data)
        if missing:
            raise Rejected("malformed-message", f"{cls.kind} lacks {sorted(missing)}")
        values = {}
        for name, f in names.items():
            value = data[name]
            if not _has_type(value, str(f.type)):
                raise Rejected("malformed-message", f"{cls.kind}.{name} must be {f.type}")
            if _holds_nul(value):
                raise Rejected("malformed-message", f"{cls.kind}.{name} holds a NUL character")
            values[name] = value
        return cls(**values)


@dataclass(frozen=True)
class Transmission(Message):
    """One transmission period of one meter: the integrity protocol's ``c`` and ``c'``.

    ``c`` and ``c_dup`` are two independent encryptions of the same slot vectors (one
    ciphertext for TAF 1 and 2, several for the comparison tariffs).
    ``first_index`` .. ``first_index + count - 1`` are the reading indices inside.
    The billing period is ``[period_start, period_end)`` in reading indices; ``seq`` counts
    transmissions within it from 0.
    """

    kind: ClassVar[str] = "transmission"
    gateway: str
    meter: str
    customer: str
    period_start: int
    period_end: int
    seq: int
    first_index: int
    count: int
    block: int
    parameters_id: str
    key_tag: str
    sent_at: str
    c: list[bytes]
    c_dup: list[bytes]

    @property
    def period_id(self) -> str:
        return f"{self.period_start}-{self.period_end}"


@dataclass(frozen=True)
class PeriodClose(Message):
    """The gateway's word that a billing period is complete after ``transmissions``."""

    kind: ClassVar[str] = "period-close"
    gateway: str
    meter: str
    customer: str
    period_start: int
    period_end: int
    transmissions: int
    block: int
    sent_at: str

    @property
    def period_id(self) -> str:
        return f"{self.period_start}-{self.period_end}"


@dataclass(frozen=True)
class KeyRegistration(Message):
    """A receiver registers its public key and the evaluation keys it hands out.

    Evaluation keys can be far larger than one message may be, so a registration travels in
    ``parts`` parts; each carries a slice of the evaluation-key blob and the SHA-256
    ``digest`` of the whole blob; part 0 also carries the public key.
    """

    kind: ClassVar[str] = "key-registration"
    customer: str
    parameters: dict[str, Any]
    key_tag: str
    context: bytes
    public_key: bytes
    evaluation_keys: bytes
    digest: str
    part: int
    parts: int
    sent_at: str


@dataclass(frozen=True)
class VerificationReport(Message):
    """A receiver reports the outcome of checking one result (failures flag the meter)."""

    kind: ClassVar[str] = "verification-report"
    customer: str
    meter: str
    period_id: str
    verified: int
    reason: str
    sent_at: str


@dataclass(frozen=True)
class TariffResult(Message):
    """The encrypted result ``r``, ``r'`` of one meter's billing period, signed by legal."""

    kind: ClassVar[str] = "tariff-result"
    meter: str
    customer: str
    period_start: int
    period_end: int
    transmissions: int
    tariff: dict[str, Any]
    tariff_config_digest: str
    registers: int
    block: int
    parameters_id: str
    r: list[bytes]
    r_dup: list[bytes]
    computed_at: str

    @property
    def period_id(self) -> str:
        return f"{self.period_start}-{self.period_end}"


@dataclass(frozen=True)
class DisplayRequest(Message):
    """A receiver asks the display for a result; signed with the customer's certificate."""

    kind: ClassVar[str] = "display-request"
    customer: str
    meter: str
    period_id: str
    sent_at: str


@dataclass(frozen=True)
class ReadingsRequest(Message):
    """A receiver asks the display for transmission ``seq`` of a billing period: the
    gateway's signed encrypted readings, to recompute the bill from."""

    kind: ClassVar[str] = "readings-request"
    customer: str
    meter: str
    period_id: str
    seq: int
    sent_at: str


@dataclass(frozen=True)
class PeriodsRequest(Message):
    """A receiver asks the display which billing periods of a meter have a result."""

    kind: ClassVar[str] = "periods-request"
    customer: str
    meter: str
    sent_at: str


@dataclass(frozen=True)
class CertificateRequest(Message):
    """A requester asks the PKI to certify the key in ``csr`` (DER) for ``role``."""

    kind: ClassVar[str] = "certificate-request"
    csr: bytes
    role: str
    validity_days: int
    sent_at: str


@dataclass(frozen=True)
class RevocationRequest(Message):
    """A requester asks the PKI to revoke the certificate with ``serial`` (hex)."""

    kind: ClassVar[str] = "revocation-request"
    serial: str
    reason: str
    sent_at: str


@dataclass(frozen=True)
class LogRead(Message):
    """A reader asks the logbook's API for ``target`` (method, path and sorted query)."""

    kind: ClassVar[str] = "log-read"
    target: str
    sent_at: str


@dataclass(frozen=True)
class SoftwareReport(Message):
    """A component's software identification, signed by the component's service identity.

    ``changed`` names the legally relevant modules whose file on disk no longer matches what
    the component loaded (empty when the code that runs is the code on disk).
    """

    kind: ClassVar[str] = "software-report"
    component: str
    instance_id: str
    name: str
    version: str
    checksum: str
    changed: list[str]
    sent_at: str


BODY_TYPES: dict[str, type[Message]] = {
    t.kind: t
    for t in (
        Transmission,
        PeriodClose,
        KeyRegistration,
        VerificationReport,
        TariffResult,
        DisplayRequest,
        CertificateRequest,
        RevocationRequest,
        LogRead,
        SoftwareReport,
    )
}


@dataclass(frozen=True)
class Envelope:
    """``body`` bytes as signed by the holder of ``certificate`` (DER)."""

    body: bytes
    certificate: bytes
    signature: bytes

    def encode(self) -> bytes:
        return msgpack.packb(
            {"v": WIRE_VERSION, "body": self.body, "cert": self.certificate, "sig": self.signature},
            use_bin_type=True,
        )

    @classmethod
    def decode(cls, raw: bytes) -> Envelope:
        data = _decode(raw, "envelope")
        if not isinstance(data, dict):
            raise Rejected("malformed-message", "envelope is not a map")
        version = data.get("v")
        if type(version) is not int or version != WIRE_VERSION:
            raise Rejected("unsupported-version", f"wire version {version!r}")
        parts = [data.get(k) for k in ("body", "cert", "sig")]
        if not all(isinstance(p, bytes) for p in parts):
            raise Rejected("malformed-message", "envelope needs byte strings body, cert, sig")
        body, cert, sig = parts
        assert isinstance(body, bytes) and isinstance(cert, bytes) and isinstance(sig, bytes)
        return cls(body, cert, sig)

    def body_kind(self) -> str:
        data = _decode(self.body, "body")
        if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
            raise Rejected("malformed-message", "body has no kind")
        kind = data["kind"]
        assert isinstance(kind, str)
        if kind not in BODY_TYPES:
            raise Rejected("malformed-message", f"unknown body kind {kind!r}")
        return kind


class Signer(Protocol):
    """Whoever seals a message: a key that signs and the certificate that vouches for it."""

    @property
    def certificate_der(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...


def seal(signer: Signer, body: Message) -> bytes:
    """Encode ``body`` once, sign those bytes, and wrap them in an envelope."""
    raw = body.encode()
    return Envelope(raw, signer.certificate_der, signer.sign(raw)).encode()


def check_fresh(sent_at: str, now: datetime) -> None:
    """``Rejected`` unless ``sent_at`` is an aware ISO timestamp within the clock skew."""
    try:
        sent = datetime.fromisoformat(sent_at)
    except ValueError:
        raise Rejected("malformed-message", f"sent_at {sent_at!r} is not a timestamp") from None
    if sent.tzinfo is None:
        raise Rejected("malformed-message", "sent_at lacks a time zone")
    if abs(now - sent) > MAX_CLOCK_SKEW:
        raise Rejected("stale-message", f"sent at {sent_at}, now {now.isoformat()}")
