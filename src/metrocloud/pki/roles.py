"""Roles of metrocloud certificates, carried in the subject OrganizationalUnitName."""

from __future__ import annotations

from enum import Enum

from cryptography.x509.oid import NameOID

ROLE_OID = NameOID.ORGANIZATIONAL_UNIT_NAME
"""The subject attribute that carries the role (exactly one per certificate)."""


class Role(str, Enum):
    """What a certificate's holder is allowed to be."""

    GATEWAY = "gateway"
    SERVICE = "service"
    RECEIVER = "receiver"
    AUTHORITY = "authority"
    MANUFACTURER = "manufacturer"
