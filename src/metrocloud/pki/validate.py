"""Validation of metrocloud certificates, chains, CRLs and signatures.

A :class:`TrustStore` holds the root certificate (the trust anchor), the sub-CA certificates
and the newest CRL of every CA. :meth:`TrustStore.verify` checks an end-entity certificate
against all of it and raises :class:`~metrocloud.core.errors.Rejected` with a reason a log
reader can act on:

``malformed-certificate``, ``self-signed-certificate``, ``untrusted-issuer``,
``bad-certificate-signature``, ``issuer-expired``, ``issuer-revoked``,
``issuer-not-yet-valid``, ``certificate-not-yet-valid``, ``certificate-expired``,
``not-an-end-entity``,
``wrong-key-usage``, ``crl-missing``, ``crl-expired``, ``certificate-revoked``,
``wrong-role``, ``wrong-curve``.

CRLs replace older ones only (``crl-rollback`` otherwise) and must be signed by their CA.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from metrocloud.core.errors import Rejected
from metrocloud.pki.keys import Curve
from metrocloud.pki.roles import PROFILES, ROLE_OID, Role, SubCa


def common_name(name: x509.Name) -> str:
    """The CN of ``name``, or ``"<no CN>"``; for messages, never for decisions."""
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else "<no CN>"


def subject_common_name(certificate: x509.Certificate) -> str:
    """The subject CN, or ``"<no CN>"``; for messages, never for decisions."""
    return common_name(certificate.subject)


def certificate_role(certificate: x509.Certificate) -> Role:
    """The role in the subject OU; ``Rejected("wrong-role")`` if missing, unknown or several."""
    cn = subject_common_name(certificate)
    values = [str(a.value) for a in certificate.subject.get_attributes_for_oid(ROLE_OID)]
    if len(values) != 1:
        raise Rejected("wrong-role", f"certificate {cn} carries {len(values)} roles, not one")
    try:
        return Role(values[0])
    except ValueError:
        raise Rejected("wrong-role", f"certificate {cn} has unknown role {values[0]!r}") from None


def sub_ca_of(certificate: x509.Certificate) -> SubCa | None:
    """Which sub-CA a CA certificate is (by its subject OU), or None for the root."""
    values = [str(a.value) for a in certificate.subject.get_attributes_for_oid(ROLE_OID)]
    try:
        return SubCa(values[0]) if len(values) == 1 else None
    except ValueError:
        return None


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _is_ca(cert: x509.Certificate) -> bool:
    constraints = _extension(cert, x509.BasicConstraints)
    usage = _extension(cert, x509.KeyUsage)
    return bool(
        (isinstance(constraints, x509.BasicConstraints) and constraints.ca)
        or (isinstance(usage, x509.KeyUsage) and usage.key_cert_sign)
    )


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _when(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


@dataclass(frozen=True)
class _Ca:
    certificate: x509.Certificate
    sub_ca: SubCa | None  # None: the root


class TrustStore:
    """Root, sub-CAs and CRLs: everything needed to validate a metrocloud certificate.

    ``require_crls`` (the default) refuses a certificate whose issuer has no current CRL,
    so revocation cannot be dodged by withholding the CRL.
    """

    def __init__(
        self,
        root: x509.Certificate,
        sub_cas: Iterable[x509.Certificate] = (),
        crls: Iterable[x509.CertificateRevocationList] = (),
        *,
        require_crls: bool = True,
    ) -> None:
        if root.issuer != root.subject or not _signed_by(root, root) or not _is_ca(root):
            raise ValueError("the trust anchor must be a self-signed CA certificate")
        self.root = root
        self.require_crls = require_crls
        self._cas: dict[x509.Name, _Ca] = {root.subject: _Ca(root, None)}
        for cert in sub_cas:
            self.add_sub_ca(cert)
        self._crls: dict[x509.Name, x509.CertificateRevocationList] = {}
        self._lock = threading.Lock()
        for crl in crls:
            self.update_crl(crl)

    # -- building ---------------------------------------------------------------------
    def add_sub_ca(self, cert: x509.Certificate) -> None:
        """Admit a sub-CA certificate: issued by the root, a CA, naming a known sub-CA."""
        cn = subject_common_name(cert)
        sub_ca = sub_ca_of(cert)
        if cert.issuer != self.root.subject or not _signed_by(cert, self.root):
            raise Rejected("untrusted-issuer", f"sub-CA {cn} is not issued by the root")
        if sub_ca is None or not _is_ca(cert):
            raise Rejected("wrong-role", f"{cn} is no metrocloud sub-CA certificate")
        self._cas[cert.subject] = _Ca(cert, sub_ca)

    @classmethod
    def from_directory(cls, directory: Path, *, require_crls: bool = True) -> TrustStore:
        """Load ``root.pem``, ``ca/*.pem`` and ``crl/*.crl`` (DER) as a PKI directory has them."""
        root = x509.load_pem_x509_certificate((directory / "root.pem").read_bytes())
        subs = [
            x509.load_pem_x509_certificate(p.read_bytes())
            for p in sorted((directory / "ca").glob("*.pem"))
        ]
        crls = [
            x509.load_der_x509_crl(p.read_bytes())
            for p in sorted((directory / "crl").glob("*.crl"))
        ]
        return cls(root, subs, crls, require_crls=require_crls)

    @property
    def sub_cas(self) -> dict[SubCa, x509.Certificate]:
        return {ca.sub_ca: ca.certificate for ca in self._cas.values() if ca.sub_ca is not None}

    def crl(self, issuer: x509.Name) -> x509.CertificateRevocationList | None:
        return self._crls.get(issuer)

    def update_crl(self, crl: x509.CertificateRevocationList) -> bool:
        """Take ``crl`` if it is signed by its CA and not older than the one held.

        Returns whether it replaced the held CRL (False for the same CRL number again).
        """
        ca = self._cas.get(crl.issuer)
        if ca is None:
            raise Rejected("untrusted-issuer", f"CRL of unknown CA {crl.issuer.rfc4514_string()}")
        name = subject_common_name(ca.certificate)
        if not crl.is_signature_valid(
            ca.certificate.public_key()  # type: ignore[arg-type]
        ) or not canonical_signature(crl.public_bytes(Encoding.DER), crl.signature):
            raise Rejected("bad-crl-signature", f"CRL of {name} is not signed by that CA")
        if crl.next_update_utc is None:
            raise Rejected("malformed-crl", f"CRL of {name} has no next update")
        number = _crl_number(crl)
        with self._lock:
            held = self._crls.get(crl.issuer)
            if held is not None:
                held_number = _crl_number(held)
                if number < held_number:
                    raise Rejected(
                        "crl-rollback", f"CRL {number} of {name} is older than {held_number}"
                    )
                if number == held_number:
                    return False
            self._crls[crl.issuer] = crl
        return True

    # -- checking ---------------------------------------------------------------------
    def verify(
        self,
        cert_der: bytes,
        *,
        expected_role: Role | None = None,
        at: datetime | None = None,
    ) -> x509.Certificate:
        """Parse and check an end-entity certificate; return it or raise :class:`Rejected`.

        In order: parsing (DER signature encoding included); not self-signed; no CA; issued
        by a known sub-CA whose signature holds; the sub-CA valid and not revoked by the
        root's CRL; the certificate valid at ``at`` (default now, timezone-aware); the
        digitalSignature usage; not revoked by its sub-CA's current CRL; its role consistent
        in subject, extended key usage and issuer, on an allowed curve, and ``expected_role``
        if given.
        """
        if at is None:
            at = datetime.now(timezone.utc)
        elif at.tzinfo is None:
            raise ValueError("'at' must be timezone-aware")
        try:
            with warnings.catch_warnings():  # what cryptography only warns about is refused
                warnings.simplefilter("error", UserWarning)  # its deprecations included
                cert = x509.load_der_x509_certificate(cert_der)
                cn = subject_common_name(cert)
                self_signed = cert.issuer == cert.subject  # e.g. a country name of 22 letters
                cert.extensions  # noqa: B018 - parses every extension now
        except PARSE_ERRORS as exc:
            raise Rejected("malformed-certificate", f"cannot parse certificate: {exc}") from None
        if not canonical_signature(cert_der, cert.signature):
            raise Rejected("malformed-certificate", f"certificate {cn}: signature bits left over")
        if self_signed:
            raise Rejected("self-signed-certificate", f"certificate {cn} is self-signed")
        if _is_ca(cert):
            raise Rejected("not-an-end-entity", f"certificate {cn} is a CA certificate")
        issuer = self._issuer(cert, cn)
        assert issuer.sub_ca is not None
        issuer_name = subject_common_name(issuer.certificate)
        self._check_validity(
            issuer.certificate,
            at,
            "issuer-expired",
            f"issuer {issuer_name}",
            not_yet_valid="issuer-not-yet-valid",
        )
        self._check_not_revoked(issuer.certificate, self.root, at, "issuer-revoked")
        self._check_validity(cert, at, "certificate-expired", f"certificate {cn}")
        usage = _extension(cert, x509.KeyUsage)
        if not isinstance(usage, x509.KeyUsage) or not usage.digital_signature:
            raise Rejected("wrong-key-usage", f"certificate {cn} may not sign")
        self._check_not_revoked(cert, issuer.certificate, at, "certificate-revoked")
        self._check_role(cert, cn, issuer.sub_ca, expected_role)
        return cert

    def _issuer(self, cert: x509.Certificate, cn: str) -> _Ca:
        issuer = self._cas.get(cert.issuer)
        if issuer is None or issuer.sub_ca is None:
            name = cert.issuer.rfc4514_string()
            raise Rejected("untrusted-issuer", f"certificate {cn} is issued by unknown {name}")
        if not _signed_by(cert, issuer.certificate):
            name = subject_common_name(issuer.certificate)
            raise Rejected("bad-certificate-signature", f"certificate {cn} is not signed by {name}")
        return issuer

    @staticmethod
    def _check_validity(
        cert: x509.Certificate,
        at: datetime,
        expired: str,
        what: str,
        *,
        not_yet_valid: str = "certificate-not-yet-valid",
    ) -> None:
        if at < cert.not_valid_before_utc:
            raise Rejected(
                not_yet_valid,
                f"{what} is valid from {_when(cert.not_valid_before_utc)}",
            )
        if at > cert.not_valid_after_utc:
            raise Rejected(expired, f"{what} expired at {_when(cert.not_valid_after_utc)}")

    def _check_not_revoked(
        self, cert: x509.Certificate, issuer: x509.Certificate, at: datetime, reason: str
    ) -> None:
        cn = subject_common_name(cert)
        crl = self._crls.get(issuer.subject)
        if crl is None:
            if self.require_crls:
                raise Rejected(
                    "crl-missing", f"no CRL of {subject_common_name(issuer)} to check {cn}"
                )
            return
        assert crl.next_update_utc is not None
        if at > crl.next_update_utc:
            raise Rejected(
                "crl-expired",
                f"the CRL of {subject_common_name(issuer)} was due at {_when(crl.next_update_utc)}",
            )
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None and entry.revocation_date_utc <= at:
            raise Rejected(reason, f"{cn} was revoked at {_when(entry.revocation_date_utc)}")

    @staticmethod
    def _check_role(cert: x509.Certificate, cn: str, issuer: SubCa, expected: Role | None) -> None:
        role = certificate_role(cert)
        profile = PROFILES[role]
        if profile.issuer is not issuer:
            raise Rejected(
                "wrong-role",
                f"certificate {cn} claims role {role.value}, but the {issuer.value} CA "
                "does not issue it",
            )
        usages = _extension(cert, x509.ExtendedKeyUsage)
        if not isinstance(usages, x509.ExtendedKeyUsage) or role.oid not in usages:
            raise Rejected("wrong-role", f"certificate {cn} lacks the {role.value} usage")
        try:
            curve = Curve.of(cert.public_key())  # type: ignore[arg-type]
        except (ValueError, AttributeError, UnsupportedAlgorithm):
            curve = None
        if curve not in profile.curves:
            raise Rejected("wrong-curve", f"certificate {cn} has a key a {role.value} may not use")
        if expected is not None and role is not Role(expected):
            raise Rejected(
                "wrong-role",
                f"certificate {cn} has role {role.value}, expected {Role(expected).value}",
            )


PARSE_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    UserWarning,  # cryptography's warnings: a non-positive serial (RFC 5280), a bad name
    TypeError,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    UnsupportedAlgorithm,
)
"""What ``cryptography`` raises on bytes that are not a well-formed certificate or CSR."""


def canonical_signature(der: bytes, signature: bytes) -> bool:
    """Whether a signed DER object ends with its signature as a BIT STRING with no unused
    bits, as DER requires; otherwise one object has two encodings (OpenSSL refuses it)."""
    return der.endswith(b"\x00" + signature)


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        raise Rejected("malformed-crl", "CRL without a CRL number") from None


def verify_signature(cert: x509.Certificate, data: bytes, signature: bytes) -> None:
    """Check a DER ECDSA/SHA-256 ``signature`` over ``data`` by ``cert``'s key."""
    cn = subject_common_name(cert)
    try:
        public_key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise Rejected("unsupported-key", f"certificate {cn} has an unknown key type") from None
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        kind = type(public_key).__name__
        raise Rejected("unsupported-key", f"certificate {cn} has a {kind}, not an EC key")
    try:
        public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise Rejected("bad-signature", f"signature does not verify with {cn}'s key") from None


def certificate_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)
