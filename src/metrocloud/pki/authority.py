"""The certification authorities: a root, five sub-CAs, issuance, revocation and CRLs.

One :class:`Pki` is a directory plus a :class:`~metrocloud.pki.keys.KeyStore` for the CA
keys (key files or an HSM through PKCS#11)::

    <directory>/pki.json          settings (curves, CRL validity, where the keys are)
    <directory>/root.pem          the root certificate: the trust anchor
    <directory>/ca/<sub-CA>.pem   the sub-CA certificates
    <directory>/crl/<CA>.crl      the newest CRL of each CA (DER), root included
    <directory>/pki.sqlite        every certificate issued, every revocation, CRL numbers
    <directory>/logbook.sqlite    the PKI's own hash-chained logbook (unless ``audit`` is given)

Every issuance, revocation and refused request is reported to ``audit`` as a
:class:`~metrocloud.core.events.LogEvent`.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtensionOID, NameOID

from metrocloud.core.errors import ConfigurationError, Rejected
from metrocloud.core.events import EventKind, LogEvent
from metrocloud.pki.keys import Curve, KeyStore, SigningKey, open_key_store
from metrocloud.pki.pem import write_atomically
from metrocloud.pki.roles import (
    MAX_VALIDITY_DAYS,
    PROFILES,
    ROLE_OID,
    Role,
    SubCa,
    key_usage,
)
from metrocloud.pki.signing import sign_certificate, sign_crl
from metrocloud.pki.validate import (
    PARSE_ERRORS,
    TrustStore,
    canonical_signature,
    common_name,
    subject_common_name,
)

ORGANIZATION = "metrocloud"
ROOT_KEY = "root"
BACKDATE = timedelta(minutes=5)
ROOT_VALIDITY_DAYS = MAX_VALIDITY_DAYS
SUB_CA_VALIDITY_DAYS = 5 * 365
DEFAULT_CA_CURVES: Mapping[SubCa, Curve] = {
    SubCa.GATEWAYS: Curve.BRAINPOOL_P256R1,
    SubCa.GATEWAY_ADMINISTRATORS: Curve.BRAINPOOL_P256R1,
    SubCa.MARKET_PARTICIPANTS: Curve.BRAINPOOL_P256R1,
    SubCa.SERVICES: Curve.P256,
    SubCa.AUTHORITIES: Curve.P256,
}
CRL_VALIDITY = timedelta(days=7)
ROOT_CRL_VALIDITY = timedelta(days=90)
_COMMON_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ALLOWED_CSR_EXTENSIONS = {ExtensionOID.SUBJECT_ALTERNATIVE_NAME}

Audit = Callable[[LogEvent], None]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY, issuer TEXT NOT NULL, role TEXT, common_name TEXT NOT NULL,
    not_before TEXT NOT NULL, not_after TEXT NOT NULL, issued_at TEXT NOT NULL, der BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS revocations (
    serial TEXT PRIMARY KEY REFERENCES certificates(serial), issuer TEXT NOT NULL,
    revoked_at TEXT NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS crls (
    issuer TEXT PRIMARY KEY, number INTEGER NOT NULL, revocations INTEGER NOT NULL,
    this_update TEXT NOT NULL
);
"""


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def key_name(sub_ca: SubCa | None) -> str:
    """The CA key's name in the key store: ``root`` or ``ca-<sub-CA>``."""
    return ROOT_KEY if sub_ca is None else f"ca-{sub_ca.value}"


def _crl_file(sub_ca: SubCa | None) -> str:
    return "root.crl" if sub_ca is None else f"{sub_ca.value}.crl"


def _days(days: int, limit: int = MAX_VALIDITY_DAYS) -> timedelta:
    if not 1 <= days <= limit:
        raise Rejected("validity-too-long", f"validity of {days} days is outside 1..{limit}")
    return timedelta(days=days)


def subject_name(common_name: str, unit: str) -> x509.Name:
    """The subject metrocloud's CAs give a certificate: O=metrocloud, OU=the role, CN=the name."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(ROLE_OID, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


class Pki:
    """The CA side of metrocloud's PKI (see the module docstring for the files)."""

    def __init__(self, directory: Path, keys: KeyStore, audit: Audit | None = None) -> None:
        self.directory = Path(directory)
        if not (self.directory / "pki.json").is_file():
            raise ConfigurationError(f"{self.directory} holds no PKI; run `metrocloud pki init`")
        self.settings: dict[str, Any] = json.loads((self.directory / "pki.json").read_text())
        self.keys = keys
        self._audit = audit
        self._own_logbook: Any = None
        self._lock = threading.RLock()
        self.root = x509.load_pem_x509_certificate((self.directory / "root.pem").read_bytes())
        self.sub_cas = {
            sub: x509.load_pem_x509_certificate(
                (self.directory / "ca" / f"{sub.value}.pem").read_bytes()
            )
            for sub in SubCa
        }
        self._signers: dict[SubCa | None, SigningKey] = {}
        self._owns_keys = False  # Pki.open made the key store: close it with the PKI

    @classmethod
    def open(
        cls, directory: Path, *, passphrase: bytes | None = None, audit: Audit | None = None
    ) -> Pki:
        """Open the PKI in ``directory`` with the key store its ``pki.json`` names."""
        directory = Path(directory)
        settings_file = directory / "pki.json"
        if not settings_file.is_file():
            raise ConfigurationError(f"{directory} holds no PKI; run `metrocloud pki init`")
        settings = json.loads(settings_file.read_text())
        keys = open_key_store(settings["key_store"], directory / "private", passphrase=passphrase)
        pki = cls(directory, keys, audit)
        pki._owns_keys = True
        return pki

    # -- creating ---------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        directory: Path,
        keys: KeyStore,
        *,
        root_curve: Curve = Curve.P256,
        ca_curves: Mapping[SubCa, Curve] | None = None,
        root_validity_days: int = ROOT_VALIDITY_DAYS,
        sub_ca_validity_days: int = SUB_CA_VALIDITY_DAYS,
        key_store: Mapping[str, Any] | None = None,
        audit: Audit | None = None,
    ) -> Pki:
        """Create the root and the five sub-CAs with their keys in ``keys``, and first CRLs.

        ``key_store`` describes where the keys are (kept in ``pki.json`` for later opens);
        refuses to touch a directory that already holds a PKI.
        """
        directory = Path(directory)
        if (directory / "pki.json").exists() or (directory / "root.pem").exists():
            raise FileExistsError(f"a PKI already exists in {directory}")
        curves = {sub: Curve(c) for sub, c in {**DEFAULT_CA_CURVES, **(ca_curves or {})}.items()}
        root_lifetime = _days(root_validity_days)  # checked before any key is made
        sub_ca_lifetime = _days(sub_ca_validity_days)
        root_curve = Curve(root_curve)
        not_before = datetime.now(timezone.utc) - BACKDATE
        root_key = keys.generate(ROOT_KEY, root_curve)
        root_name = subject_name("metrocloud root CA", "root")
        root = sign_certificate(
            x509.CertificateBuilder()
            .subject_name(root_name)
            .issuer_name(root_name)
            .public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_before + root_lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(key_usage(cert_sign=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False
            ),
            root_key,
        )
        (directory / "ca").mkdir(parents=True, exist_ok=True)
        (directory / "crl").mkdir(exist_ok=True)
        write_atomically(directory / "root.pem", root.public_bytes(Encoding.PEM), 0o644)
        for sub in SubCa:
            sub_key = keys.generate(key_name(sub), curves[sub])
            cert = sign_certificate(
                x509.CertificateBuilder()
                .subject_name(subject_name(sub.common_name, sub.value))
                .issuer_name(root_name)
                .public_key(sub_key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(not_before)
                .not_valid_after(min(not_before + sub_ca_lifetime, root.not_valid_after_utc))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(key_usage(cert_sign=True), critical=True)
                .add_extension(
                    x509.SubjectKeyIdentifier.from_public_key(sub_key.public_key()),
                    critical=False,
                )
                .add_extension(_authority_key_id(root), critical=False),
                root_key,
            )
            cert.verify_directly_issued_by(root)
            write_atomically(
                directory / "ca" / f"{sub.value}.pem", cert.public_bytes(Encoding.PEM), 0o644
            )
        settings = {
            "version": 1,
            "root_curve": root_curve.value,
            "ca_curves": {sub.value: curves[sub].value for sub in SubCa},
            "crl_validity_s": int(CRL_VALIDITY.total_seconds()),
            "root_crl_validity_s": int(ROOT_CRL_VALIDITY.total_seconds()),
            "key_store": dict(key_store or {"kind": "file"}),
        }
        write_atomically(
            directory / "pki.json", json.dumps(settings, indent=2).encode() + b"\n", 0o644
        )
        pki = cls(directory, keys, audit)
        with pki._db() as db:
            db.executescript(_SCHEMA)
        for sub in (None, *SubCa):
            pki.crl(sub)
        pki._report(
            EventKind.SERVICE,
            "pki",
            {"event": "pki-created", "root": serial_hex(root.serial_number)},
        )
        return pki

    # -- reading ----------------------------------------------------------------------
    def trust_store(self) -> TrustStore:
        """Root, sub-CAs and the current CRLs, as a verifier needs them."""
        return TrustStore(
            self.root, self.sub_cas.values(), [self.crl(sub) for sub in (None, *SubCa)]
        )

    def chain(self, role: Role) -> list[x509.Certificate]:
        """The CA certificates above an end entity of ``role``: its sub-CA, then the root."""
        return [self.sub_cas[PROFILES[Role(role)].issuer], self.root]

    def certificate(self, serial: int) -> x509.Certificate:
        with self._db() as db:
            row = db.execute(
                "SELECT der FROM certificates WHERE serial = ?", (serial_hex(serial),)
            ).fetchone()
        if row is None:
            raise KeyError(f"no certificate with serial {serial_hex(serial)} was issued here")
        return x509.load_der_x509_certificate(bytes(row[0]))

    def issued(self) -> list[dict[str, Any]]:
        """Every certificate issued, oldest first, with its revocation if any."""
        with self._db() as db:
            rows = db.execute(
                "SELECT c.serial, c.issuer, c.role, c.common_name, c.not_after, r.revoked_at, "
                "r.reason FROM certificates c LEFT JOIN revocations r USING (serial) "
                "ORDER BY c.issued_at, c.serial"
            ).fetchall()
        keys = ("serial", "issuer", "role", "common_name", "not_after", "revoked_at", "reason")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    # -- issuing ----------------------------------------------------------------------
    def issue(
        self,
        role: Role,
        common_name: str,
        public_key: ec.EllipticCurvePublicKey,
        *,
        validity_days: int | None = None,
        dns_names: Iterable[str] = (),
        ip_addresses: Iterable[str] = (),
        requested_by: str = "operator",
    ) -> x509.Certificate:
        """Issue an end-entity certificate of ``role`` for ``public_key``.

        Refuses (``Rejected``, reported to the logbook) a bad common name, a key on a curve
        the role may not use, names for a role without TLS, a validity outside 1 day to 7
        years, or a revoked sub-CA; the validity is capped at the sub-CA's own expiry.
        """
        try:
            return self._issue(
                Role(role),
                common_name,
                public_key,
                validity_days,
                tuple(dns_names),
                tuple(ip_addresses),
                requested_by,
            )
        except Rejected as exc:
            self.refused("certificate-request", common_name, exc, requested_by)
            raise

    def _issue(
        self,
        role: Role,
        common_name: str,
        public_key: Any,
        validity_days: int | None,
        dns_names: tuple[str, ...],
        ip_addresses: tuple[str, ...],
        requested_by: str,
    ) -> x509.Certificate:
        profile = PROFILES[role]
        if not _COMMON_NAME.fullmatch(common_name):
            raise Rejected("bad-common-name", f"{common_name!r} is not a valid identity name")
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise Rejected("wrong-curve", f"{common_name}: only EC keys are certified")
        try:
            curve = Curve.of(public_key)
        except ValueError as exc:
            raise Rejected("wrong-curve", f"{common_name}: {exc}") from None
        if curve not in profile.curves:
            allowed = ", ".join(sorted(c.value for c in profile.curves))
            raise Rejected(
                "wrong-curve",
                f"{common_name}: a {role.value} key must be on {allowed}, not {curve.value}",
            )
        if (dns_names or ip_addresses) and not profile.subject_alternative_names:
            raise Rejected(
                "forbidden-extension", f"{common_name}: a {role.value} gets no host names"
            )
        days = _days(profile.default_validity_days if validity_days is None else validity_days)
        issuer_cert = self.sub_cas[profile.issuer]
        self._check_issuer_usable(profile.issuer)
        now = datetime.now(timezone.utc)
        not_after = min(now - BACKDATE + days, issuer_cert.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject_name(common_name, role.value))
            .issuer_name(issuer_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(profile.key_usage, critical=True)
            .add_extension(profile.usages, critical=False)
            .add_extension(_authority_key_id(issuer_cert), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )
        names = _alternative_names(common_name, dns_names, ip_addresses)
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = sign_certificate(builder, self._signer(profile.issuer))
        try:
            certificate.verify_directly_issued_by(issuer_cert)
        except (InvalidSignature, ValueError, TypeError) as exc:
            raise ConfigurationError(
                f"the {profile.issuer.value} CA key does not match its certificate"
            ) from exc
        with self._db() as db:
            db.execute(
                "INSERT INTO certificates VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    serial_hex(certificate.serial_number),
                    profile.issuer.value,
                    role.value,
                    common_name,
                    certificate.not_valid_before_utc.isoformat(),
                    certificate.not_valid_after_utc.isoformat(),
                    now.isoformat(),
                    certificate.public_bytes(Encoding.DER),
                ),
            )
        self._report(
            EventKind.CERTIFICATE_ISSUED,
            common_name,
            {
                "serial": serial_hex(certificate.serial_number),
                "role": role.value,
                "issuer": profile.issuer.value,
                "curve": curve.value,
                "not_after": certificate.not_valid_after_utc.isoformat(),
                "requested_by": requested_by,
            },
        )
        return certificate

    def issue_from_csr(
        self,
        csr: x509.CertificateSigningRequest | bytes,
        role: Role,
        *,
        validity_days: int | None = None,
        requested_by: str = "operator",
    ) -> x509.Certificate:
        """Issue from a CSR (PEM or DER bytes, or parsed): only its CN, key and SANs count.

        Refused: an unparseable CSR, a bad self-signature (no proof of possession), a
        curve the role may not use, and any requested extension but subject alternative
        names (and those only for TLS roles) - each with a clear reason and a log entry.
        """
        cn = "<unparsed CSR>"
        try:
            request = _load_csr(csr)
            cn = common_name(request.subject)
            der = request.public_bytes(Encoding.DER)
            if not request.is_signature_valid or not canonical_signature(der, request.signature):
                raise Rejected("bad-csr-signature", f"the CSR of {cn} is not self-signed")
            dns_names: list[str] = []
            ip_addresses: list[str] = []
            for extension in request.extensions:
                if extension.oid not in _ALLOWED_CSR_EXTENSIONS:
                    name = extension.oid._name or extension.oid.dotted_string
                    raise Rejected(
                        "forbidden-extension", f"the CSR of {cn} asks for extension {name}"
                    )
                assert isinstance(extension.value, x509.SubjectAlternativeName)
                dns_names += extension.value.get_values_for_type(x509.DNSName)
                ip_addresses += [
                    str(a) for a in extension.value.get_values_for_type(x509.IPAddress)
                ]
            public_key = request.public_key()
        except Rejected as exc:
            self.refused("certificate-request", cn, exc, requested_by)
            raise
        except UnsupportedAlgorithm as exc:
            error = Rejected("wrong-curve", f"the CSR of {cn} has a key of unknown kind: {exc}")
            self.refused("certificate-request", cn, error, requested_by)
            raise error from None
        except PARSE_ERRORS as exc:
            error = Rejected("malformed-csr", f"the CSR of {cn} cannot be parsed: {exc}")
            self.refused("certificate-request", cn, error, requested_by)
            raise error from None
        return self.issue(
            role,
            cn,
            public_key,  # type: ignore[arg-type]
            validity_days=validity_days,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            requested_by=requested_by,
        )

    # -- revoking ---------------------------------------------------------------------
    def revoke(
        self,
        serial: int,
        reason: x509.ReasonFlags = x509.ReasonFlags.unspecified,
        *,
        requested_by: str = "operator",
    ) -> x509.Certificate:
        """Revoke a certificate issued here (end entity or sub-CA) and publish new CRLs."""
        with self._lock:
            try:
                certificate = self._any_certificate(serial)
            except KeyError as exc:
                error = Rejected("unknown-certificate", str(exc.args[0]))
                self.refused("revocation", serial_hex(serial), error, requested_by)
                raise error from None
            issuer = self._issuer_of(certificate)
            now = datetime.now(timezone.utc).replace(microsecond=0)
            with self._db() as db:
                done = db.execute(
                    "SELECT revoked_at FROM revocations WHERE serial = ?", (serial_hex(serial),)
                ).fetchone()
                if done is not None:
                    error = Rejected(
                        "already-revoked", f"{serial_hex(serial)} was revoked at {done[0]}"
                    )
                    self.refused("revocation", serial_hex(serial), error, requested_by)
                    raise error
                if issuer is None:  # a sub-CA: keep the record with the others
                    db.execute(
                        "INSERT OR IGNORE INTO certificates VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            serial_hex(serial),
                            "root",
                            None,
                            subject_common_name(certificate),
                            certificate.not_valid_before_utc.isoformat(),
                            certificate.not_valid_after_utc.isoformat(),
                            now.isoformat(),
                            certificate.public_bytes(Encoding.DER),
                        ),
                    )
                db.execute(
                    "INSERT INTO revocations VALUES (?, ?, ?, ?)",
                    (
                        serial_hex(serial),
                        "root" if issuer is None else issuer.value,
                        now.isoformat(),
                        reason.value,
                    ),
                )
            self._report(
                EventKind.CERTIFICATE_REVOKED,
                subject_common_name(certificate),
                {
                    "serial": serial_hex(serial),
                    "reason": reason.value,
                    "issuer": "root" if issuer is None else issuer.value,
                    "requested_by": requested_by,
                },
            )
            self.crl(issuer)
        return certificate

    def crl(self, sub_ca: SubCa | None) -> x509.CertificateRevocationList:
        """The current CRL of the root (``None``) or a sub-CA, re-signed when needed.

        A new CRL (next number) is made when a revocation happened since the last one or
        the last one is past half its validity; otherwise the published file is returned.
        """
        issuer = "root" if sub_ca is None else sub_ca.value
        validity = timedelta(
            seconds=self.settings["root_crl_validity_s" if sub_ca is None else "crl_validity_s"]
        )
        path = self.directory / "crl" / _crl_file(sub_ca)
        now = datetime.now(timezone.utc).replace(microsecond=0)
        with self._lock, self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            revoked = db.execute(
                "SELECT serial, revoked_at, reason FROM revocations WHERE issuer = ? "
                "ORDER BY serial",
                (issuer,),
            ).fetchall()
            state = db.execute(
                "SELECT number, revocations, this_update FROM crls WHERE issuer = ?", (issuer,)
            ).fetchone()
            if state is not None and state[1] == len(revoked) and path.is_file():
                published = x509.load_der_x509_crl(path.read_bytes())
                due = published.next_update_utc
                if due is not None and now < due - (due - published.last_update_utc) / 2:
                    return published
            number = 1 if state is None else int(state[0]) + 1
            ca_cert = self.root if sub_ca is None else self.sub_cas[sub_ca]
            builder = (
                x509.CertificateRevocationListBuilder()
                .issuer_name(ca_cert.subject)
                .last_update(now)
                .next_update(now + validity)
                .add_extension(x509.CRLNumber(number), critical=False)
                .add_extension(_authority_key_id(ca_cert), critical=False)
            )
            for serial, revoked_at, reason in revoked:
                entry = (
                    x509.RevokedCertificateBuilder()
                    .serial_number(int(serial, 16))
                    .revocation_date(datetime.fromisoformat(revoked_at))
                )
                if reason != x509.ReasonFlags.unspecified.value:
                    entry = entry.add_extension(
                        x509.CRLReason(x509.ReasonFlags(reason)), critical=False
                    )
                builder = builder.add_revoked_certificate(entry.build())
            crl = sign_crl(builder, self._signer(sub_ca))
            if not crl.is_signature_valid(ca_cert.public_key()):  # type: ignore[arg-type]
                raise ConfigurationError(f"the {issuer} CA key does not match its certificate")
            write_atomically(path, crl.public_bytes(Encoding.DER), 0o644)
            db.execute(
                "INSERT OR REPLACE INTO crls VALUES (?, ?, ?, ?)",
                (issuer, number, len(revoked), now.isoformat()),
            )
            db.execute("COMMIT")
        return crl

    # -- internals --------------------------------------------------------------------
    def _signer(self, sub_ca: SubCa | None) -> SigningKey:
        if sub_ca not in self._signers:
            self._signers[sub_ca] = self.keys.load(key_name(sub_ca))
        return self._signers[sub_ca]

    def _check_issuer_usable(self, sub_ca: SubCa) -> None:
        """Refuse to issue under a sub-CA the root has revoked (verifiers would refuse it)."""
        serial = serial_hex(self.sub_cas[sub_ca].serial_number)
        with self._db() as db:
            revoked = db.execute("SELECT 1 FROM revocations WHERE serial = ?", (serial,))
            if revoked.fetchone() is not None:
                raise Rejected("issuer-revoked", f"the {sub_ca.value} CA is revoked")

    def _any_certificate(self, serial: int) -> x509.Certificate:
        for cert in self.sub_cas.values():
            if cert.serial_number == serial:
                return cert
        return self.certificate(serial)

    def _issuer_of(self, certificate: x509.Certificate) -> SubCa | None:
        if certificate.issuer == self.root.subject:
            return None
        for sub, cert in self.sub_cas.items():
            if cert.subject == certificate.issuer:
                return sub
        raise KeyError(f"{subject_common_name(certificate)} is not from this PKI")

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode; an open transaction is rolled back at exit."""
        conn = sqlite3.connect(self.directory / "pki.sqlite", timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()

    def _report(self, kind: EventKind, subject: str, detail: dict[str, Any]) -> None:
        event = LogEvent(actor="pki", kind=kind, subject=subject, detail=detail)
        if self._audit is not None:
            self._audit(event)
            return
        if self._own_logbook is None:
            from metrocloud.logbook.chain import HashChainLogbook

            self._own_logbook = HashChainLogbook(self.directory / "logbook.sqlite")
        self._own_logbook.append(event)

    def refused(self, what: str, subject: str, exc: Rejected, requested_by: str) -> None:
        self._report(
            EventKind.REJECTION,
            subject,
            {
                "what": what,
                "reason": exc.reason,
                "detail": exc.detail,
                "requested_by": requested_by,
            },
        )

    def close(self) -> None:
        closer = getattr(self.keys, "close", None)
        if self._owns_keys and callable(closer):
            closer()
            self._owns_keys = False
        if self._own_logbook is not None:
            self._own_logbook.close()
            self._own_logbook = None


def _load_csr(csr: x509.CertificateSigningRequest | bytes) -> x509.CertificateSigningRequest:
    if isinstance(csr, x509.CertificateSigningRequest):
        return csr
    if csr.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_csr(csr)
    return x509.load_der_x509_csr(csr)


def _authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _alternative_names(
    common_name: str, dns_names: Iterable[str], ip_addresses: Iterable[str]
) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    try:
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    except ValueError as exc:
        raise Rejected("bad-subject-name", f"{common_name}: {exc}") from None
    return names


def split_hosts(hosts: Iterable[str]) -> tuple[list[str], list[str]]:
    """TLS host names as (DNS names, IP addresses)."""
    dns_names: list[str] = []
    ip_addresses: list[str] = []
    for host in hosts:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            dns_names.append(host)
        else:
            ip_addresses.append(host)
    return dns_names, ip_addresses
