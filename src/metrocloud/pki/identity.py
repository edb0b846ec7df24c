"""Identities (signing key plus certificate chain) of gateways, services and customers.

An :class:`IdentityStore` keeps each identity's key in a :class:`KeyStore` and its
certificate chain (end entity, then its sub-CA) as ``<directory>/<common name>.pem``. Given
a :class:`~metrocloud.pki.authority.Pki` it issues what is missing or no longer valid;
without one (a service process) it only loads.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from metrocloud.core.errors import ConfigurationError, Rejected
from metrocloud.pki.authority import Pki, split_hosts
from metrocloud.pki.keys import FileKeyStore, KeyStore, SigningKey
from metrocloud.pki.pem import write_atomically
from metrocloud.pki.roles import PROFILES, Role
from metrocloud.pki.validate import TrustStore

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Identity:
    """Who signs: a common name with its role, signing key and certificate chain."""

    common_name: str
    role: Role
    key: SigningKey = field(repr=False)
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()
    """The CA certificates above ``certificate`` (its sub-CA), for TLS peers."""

    def __post_init__(self) -> None:
        if self.certificate.public_key() != self.key.public_key():
            raise ValueError(f"certificate of {self.common_name} does not match its key")

    def sign(self, data: bytes) -> bytes:
        """ECDSA/SHA-256 signature over ``data``, DER-encoded."""
        return self.key.sign(data)

    @property
    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(Encoding.DER)


class IdentityStore:
    """Loads identities by common name; issues them when given a :class:`Pki`."""

    def __init__(
        self,
        directory: Path,
        keys: KeyStore,
        trust: TrustStore,
        *,
        pki: Pki | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.keys = keys
        self.trust = trust
        self.pki = pki

    @classmethod
    def open_local(cls, directory: Path, passphrase: bytes | None = None) -> IdentityStore:
        """A PKI and an issuing identity store under ``directory``, made at first use.

        CA under ``directory/pki`` (keys in ``pki/private``), identities under
        ``directory/identities``: the layout of the embedded cloud's data folder, for the
        testbed and tests. Key files are encrypted when ``passphrase`` is given.
        """
        directory = Path(directory)
        ca_keys = FileKeyStore(directory / "pki" / "private", passphrase)
        if (directory / "pki" / "pki.json").exists():
            pki = Pki(directory / "pki", ca_keys)
        else:
            pki = Pki.init(directory / "pki", ca_keys)
        keys = FileKeyStore(directory / "identities", passphrase)
        return cls(directory / "identities", keys, pki.trust_store(), pki=pki)

    def chain_path(self, common_name: str) -> Path:
        return self.directory / f"{common_name}.pem"

    def identity(self, common_name: str, role: Role, *, hosts: tuple[str, ...] = ()) -> Identity:
        """The identity ``common_name`` of ``role``, issued first if needed and possible.

        A stored certificate must carry ``role`` (else ``Rejected("wrong-role")``) and
        match the key; an expired, revoked or otherwise unusable one is reissued for the
        stored key when this store has a PKI, else ``ConfigurationError``. ``hosts`` (IP
        addresses or DNS names) go into a new certificate for a TLS server; a stored one
        that lacks one of them is unusable too (a server moved to another address).
        """
        if not _NAME.fullmatch(common_name):
            raise Rejected("bad-common-name", f"{common_name!r} is not a valid identity name")
        role = Role(role)
        if self.keys.exists(common_name):
            key = self.keys.load(common_name)
        elif self.pki is not None:
            key = self.keys.generate(common_name, PROFILES[role].default_curve)
        else:
            raise ConfigurationError(f"no key for identity {common_name}")
        chain = self._stored_chain(common_name, role, key)
        if chain is not None and not _names(chain[0], hosts):
            chain = None
        if chain is None:
            if self.pki is None:
                raise ConfigurationError(f"no usable certificate for identity {common_name}")
            dns_names, ip_addresses = split_hosts(hosts)
            certificate = self.pki.issue(
                role,
                common_name,
                key.public_key(),
                dns_names=dns_names,
                ip_addresses=ip_addresses,
            )
            chain = [certificate, *self.pki.chain(role)[:-1]]
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomically(
                self.chain_path(common_name),
                b"".join(c.public_bytes(Encoding.PEM) for c in chain),
                0o644,
            )
        return Identity(common_name, role, key, chain[0], tuple(chain[1:]))

    def _stored_chain(
        self, common_name: str, role: Role, key: SigningKey
    ) -> list[x509.Certificate] | None:
        path = self.chain_path(common_name)
        if not path.exists():
            return None
        chain = x509.load_pem_x509_certificates(path.read_bytes())
        if chain[0].public_key() != key.public_key():
            return None
        # The PKI's own current view when there is one: a certificate it revoked is reissued.
        trust = self.pki.trust_store() if self.pki is not None else self.trust
        try:
            trust.verify(chain[0].public_bytes(Encoding.DER), expected_role=role)
        except Rejected as exc:
            if exc.reason == "wrong-role":
                raise
            return None
        return chain


def _names(certificate: x509.Certificate, hosts: tuple[str, ...]) -> bool:
    """Whether ``certificate`` names every one of ``hosts`` (DNS names or IP addresses)."""
    if not hosts:
        return True
    try:
        alt = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    dns_names, ip_addresses = split_hosts(hosts)
    has_dns = {name.lower() for name in alt.get_values_for_type(x509.DNSName)}
    has_ip = {str(ip) for ip in alt.get_values_for_type(x509.IPAddress)}
    return {n.lower() for n in dns_names} <= has_dns and {
        str(ipaddress.ip_address(a)) for a in ip_addresses
    } <= has_ip
