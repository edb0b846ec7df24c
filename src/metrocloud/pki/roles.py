"""Roles, sub-CAs and the certificate profile of each role.

A certificate's role is stated three times, and verifiers require all three to agree: the
subject OrganizationalUnitName, a metrocloud role OID in the ExtendedKeyUsage, and the sub-CA
that issued it (each sub-CA may issue only the roles of :data:`PROFILES` that name it). A
market participant's certificate therefore cannot act as a gateway, even with a forged OU.

The role OIDs live under IANA's private enterprise number for documentation (RFC 5612,
``1.3.6.1.4.1.32473``). A UUID arc (``2.25.<uuid>``) would need no registration, but Go, and so
the NATS server, cannot parse extended key usages with OID components of 2^31 or more. A
production deployment registers its own enterprise number and changes :data:`METROCLOUD_ARC`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from metrocloud.pki.keys import Curve

ROLE_OID = NameOID.ORGANIZATIONAL_UNIT_NAME
"""The subject attribute that carries the role (exactly one per certificate)."""

METROCLOUD_ARC = "1.3.6.1.4.1.32473.7331"
"""metrocloud's OID arc, under the documentation enterprise number of RFC 5612."""

MAX_VALIDITY_DAYS = 7 * 365 + 2
"""No metrocloud certificate is valid for longer than seven years (leap days included)."""


class Role(str, Enum):
    """What a certificate's holder is allowed to be."""

    GATEWAY = "gateway"
    GATEWAY_ADMINISTRATOR = "gateway-administrator"
    MARKET_PARTICIPANT = "market-participant"
    RECEIVER = "receiver"
    MANUFACTURER = "manufacturer"
    SERVICE = "service"
    AUTHORITY = "authority"

    @property
    def oid(self) -> x509.ObjectIdentifier:
        """The ExtendedKeyUsage purpose that marks this role."""
        return x509.ObjectIdentifier(f"{METROCLOUD_ARC}.1.{_ROLE_NUMBERS[self]}")


_ROLE_NUMBERS = {
    Role.GATEWAY: 1,
    Role.GATEWAY_ADMINISTRATOR: 2,
    Role.MARKET_PARTICIPANT: 3,
    Role.RECEIVER: 4,
    Role.MANUFACTURER: 5,
    Role.SERVICE: 6,
    Role.AUTHORITY: 7,
}


class SubCa(str, Enum):
    """The sub-CAs under the root; each issues the end entities of a few roles."""

    GATEWAYS = "gateways"
    GATEWAY_ADMINISTRATORS = "gateway-administrators"
    MARKET_PARTICIPANTS = "market-participants"
    SERVICES = "services"
    AUTHORITIES = "authorities"

    @property
    def common_name(self) -> str:
        return f"metrocloud {self.value} CA"


@dataclass(frozen=True)
class RoleProfile:
    """How certificates of one role look: issuer, curves, usages, longest validity."""

    role: Role
    issuer: SubCa
    curves: frozenset[Curve]
    default_curve: Curve
    extended_key_usage: tuple[x509.ObjectIdentifier, ...]
    default_validity_days: int
    subject_alternative_names: bool = False
    """Whether a CSR may ask for DNS/IP subject alternative names (TLS server names)."""

    @property
    def key_usage(self) -> x509.KeyUsage:
        return key_usage(digital_signature=True)

    @property
    def usages(self) -> x509.ExtendedKeyUsage:
        return x509.ExtendedKeyUsage([*self.extended_key_usage, self.role.oid])


_BOTH = frozenset(Curve)
_CLIENT = (ExtendedKeyUsageOID.CLIENT_AUTH,)

PROFILES: dict[Role, RoleProfile] = {
    p.role: p
    for p in (
        # The smart-meter PKI of BSI TR-03109-4 uses brainpoolP256r1 in the field.
        RoleProfile(Role.GATEWAY, SubCa.GATEWAYS, _BOTH, Curve.BRAINPOOL_P256R1, (), 3 * 365),
        RoleProfile(
            Role.GATEWAY_ADMINISTRATOR,
            SubCa.GATEWAY_ADMINISTRATORS,
            _BOTH,
            Curve.BRAINPOOL_P256R1,
            _CLIENT,
            2 * 365,
        ),
        RoleProfile(
            Role.MARKET_PARTICIPANT,
            SubCa.MARKET_PARTICIPANTS,
            _BOTH,
            Curve.BRAINPOOL_P256R1,
            _CLIENT,
            2 * 365,
        ),
        RoleProfile(Role.RECEIVER, SubCa.MARKET_PARTICIPANTS, _BOTH, Curve.P256, _CLIENT, 2 * 365),
        RoleProfile(
            Role.MANUFACTURER,
            SubCa.MARKET_PARTICIPANTS,
            _BOTH,
            Curve.BRAINPOOL_P256R1,
            (ExtendedKeyUsageOID.CODE_SIGNING,),
            3 * 365,
        ),
        # Services speak TLS with the NATS server, whose Go TLS stack knows no brainpool.
        RoleProfile(
            Role.SERVICE,
            SubCa.SERVICES,
            frozenset({Curve.P256}),
            Curve.P256,
            (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
            2 * 365,
            subject_alternative_names=True,
        ),
        # Authority nodes (witnesses, the verification monitor) answer HTTPS themselves.
        RoleProfile(
            Role.AUTHORITY,
            SubCa.AUTHORITIES,
            _BOTH,
            Curve.P256,
            (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
            3 * 365,
            subject_alternative_names=True,
        ),
    )
}


def roles_of(sub_ca: SubCa) -> frozenset[Role]:
    """The roles ``sub_ca`` may issue."""
    return frozenset(p.role for p in PROFILES.values() if p.issuer is sub_ca)


def key_usage(*, digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    """KeyUsage with only the given bits: signing for end entities, cert/CRL signing for CAs."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
