"""What an attacker does in the testbed's scenarios, made from the attacker's position.

Each function builds what an outsider or an insider could build with what they hold, and
nothing more: a look-alike certificate under their own key (no CA key), a message changed
after it was signed, a package signed by someone the authority never approved, a bus
connection with another zone's credentials, a write into the logbook's database file.
What the system makes of it is for the scenarios (:mod:`metrocloud.testbed.scenarios`) to
observe.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from metrocloud.bus.connect import BusErrors, connect
from metrocloud.cloud.runtime import DataDir
from metrocloud.core.messages import Envelope
from metrocloud.download.build import build_update
from metrocloud.download.package import pack, unpack
from metrocloud.pki import Role


@dataclass(frozen=True)
class LookAlike:
    """A signer whose certificate copies a genuine one's names and extensions, but whose key
    and certificate signature are the attacker's own: what one can forge without a CA key."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    @classmethod
    def of(cls, genuine: x509.Certificate) -> LookAlike:
        public = genuine.public_key()
        curve = public.curve if isinstance(public, ec.EllipticCurvePublicKey) else ec.SECP256R1()
        key = ec.generate_private_key(curve)
        builder = (
            x509.CertificateBuilder()
            .subject_name(genuine.subject)
            .issuer_name(genuine.issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(genuine.not_valid_before_utc)
            .not_valid_after(genuine.not_valid_after_utc)
        )
        for extension in genuine.extensions:
            if not isinstance(
                extension.value, x509.SubjectKeyIdentifier | x509.AuthorityKeyIdentifier
            ):
                builder = builder.add_extension(extension.value, extension.critical)
        return cls(builder.sign(key, hashes.SHA256()), key)

    @property
    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(Encoding.DER)

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data, ec.ECDSA(hashes.SHA256()))

    def reseal(self, sealed: bytes) -> bytes:
        """The body of a genuine sealed message, signed under this look-alike."""
        body = Envelope.decode(sealed).body
        return Envelope(body, self.certificate_der, self.sign(body)).encode()


def altered_in_transit(sealed: bytes) -> bytes:
    """A sealed message whose body had 16 bytes in its middle inverted after signing (the
    middle of a transmission is ciphertext); certificate and signature left as they were."""
    envelope = Envelope.decode(sealed)
    body, middle = envelope.body, len(envelope.body) // 2
    changed = body[:middle] + bytes(b ^ 0xFF for b in body[middle : middle + 16])
    changed += body[middle + 16 :]
    return Envelope(changed, envelope.certificate, envelope.signature).encode()


UPDATE_ATTACKS = ("unapproved", "foreign-signer", "altered-file")
"""Malicious update packages :func:`malicious_update` builds."""

TAF1_MODULE = "metrocloud.tariffs.taf1"


def manipulated_taf1(version: str) -> bytes:
    """TAF 1's module as installed, with a manipulation: every price one tenth higher."""
    source = Path(__import__(TAF1_MODULE, fromlist=["Taf1"]).__file__ or "").read_text()
    marker = 'return int(self.config["price_mct_per_kwh"])'
    if marker not in source or 'version = "' not in source:
        raise RuntimeError("the TAF 1 module no longer reads as this attack expects")
    source = source.replace(marker, marker.removesuffix(")") + " * 11 // 10)")
    start = source.index('version = "') + len('version = "')
    end = source.index('"', start)
    return (source[:start] + version + source[end:]).encode()


def malicious_update(data: DataDir, kind: str, sequence: int) -> bytes:
    """A package that puts manipulated TAF 1 code into legal, as ``kind``:

    - ``unapproved``: signed by a genuine manufacturer, but the authority never approved
      its identification;
    - ``foreign-signer``: signed under a look-alike of the manufacturer's certificate;
    - ``altered-file``: a genuinely signed package whose module was swapped afterwards.
    """
    if kind not in UPDATE_ATTACKS:
        raise ValueError(f"unknown update attack {kind!r}; one of {', '.join(UPDATE_ATTACKS)}")
    maker = data.issue_identity("acme-meters", Role.MANUFACTURER)
    version = f"9.{sequence}.0"
    files = {TAF1_MODULE: manipulated_taf1(version)}
    if kind == "unapproved":
        return build_update(maker, "tariff-taf1", version, sequence, files)
    if kind == "foreign-signer":
        forger = LookAlike.of(maker.certificate)
        return build_update(forger, "tariff-taf1", version, sequence, files)
    honest = dict(files)
    # What was signed: the honest module, the manipulation blanked out (the same length,
    # so that only the digest tells the swapped file apart).
    honest[TAF1_MODULE] = manipulated_taf1(version).replace(b"* 11 // 10", b" " * 10, 1)
    metadata, _ = unpack(build_update(maker, "tariff-taf1", version, sequence, honest))
    return pack(metadata, files)


@dataclass(frozen=True)
class BusAttempt:
    role: str
    subject: str
    refused: bool
    violation: str


async def publish_as(
    url: str, data: DataDir, role: str, subject: str, payload: bytes
) -> BusAttempt:
    """Publish ``payload`` on ``subject`` of the broker at ``url`` with bus role ``role``'s
    credentials; whether the broker refused it (a permissions violation within 2 s)."""
    errors = BusErrors()
    nc = await connect(
        url, data.credentials(role), name=f"attacker-{role}", role=role, errors=errors
    )
    try:
        await nc.publish(subject, payload)
        await nc.flush()
        try:
            violation = await errors.wait_for_violation(subject, timeout_s=2.0)
        except asyncio.TimeoutError:
            violation = ""
    finally:
        await nc.close()
    return BusAttempt(role, subject, bool(violation), violation)


def alter_logbook_entry(logbook: Path, index: int) -> None:
    """Rewrite entry ``index`` in the logbook's database file, as an operator with access to
    the host could: the actor of the event gets a prefix."""
    with sqlite3.connect(logbook) as db:
        row = db.execute("SELECT entry FROM leaves WHERE idx = ?", (index,)).fetchone()
        if row is None:
            raise LookupError(f"the logbook has no entry {index}")
        changed = bytes(row[0]).replace(b'"actor":"', b'"actor":"not-', 1)
        db.execute("UPDATE leaves SET entry = ? WHERE idx = ?", (changed, index))
