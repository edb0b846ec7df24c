"""Enrolling a customer's secure display: what the operator hands a new customer.

The operator of an embedded cloud writes a key folder (:mod:`metrocloud.receiver.keyfolder`)
for a customer: the enrolment (customer id, the bus address, the meters and their
contracts), the customer's receiver certificate and key, the receivers' bus credentials
and the PKI's public trust material (root, sub-CAs, CRLs). Both private keys are
re-encrypted with the customer's passphrase. The FHE keys are not here: the display makes
them at its first start, so the secret key is never anywhere but on the customer's machine.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from metrocloud.bus.server import bus_identity_name
from metrocloud.cloud.cluster import Cluster
from metrocloud.fhe.context import CustomerKeyPair
from metrocloud.pki import Role
from metrocloud.pki.keys import SoftwareKey, load_private_key, private_key_pem
from metrocloud.receiver.keyfolder import Enrolment, KeyFolder, MeterContract, write_enrolment
from metrocloud.receiver.session import CustomerDisplay
from metrocloud.tariffs import TariffProgram


def trust_files(pki_dir: Path) -> dict[str, bytes]:
    """The public part of a PKI directory: ``root.pem``, ``ca/*.pem``, ``crl/*.crl``."""
    files = {"root.pem": (pki_dir / "root.pem").read_bytes()}
    for pattern in ("ca/*.pem", "crl/*.crl"):
        for path in sorted(pki_dir.glob(pattern)):
            files[str(path.relative_to(pki_dir))] = path.read_bytes()
    return files


def enrol_customer(
    cluster: Cluster,
    customer_id: str,
    contracts: dict[str, TariffProgram],
    folder: Path,
    passphrase: bytes,
) -> KeyFolder:
    """Write ``folder`` for ``customer_id`` with its meters' ``contracts``."""
    data = cluster.data
    pki = data.open_pki()
    try:
        identity = data.identities_store(pki).identity(customer_id, Role.RECEIVER)
    finally:
        pki.close()
    if not isinstance(identity.key, SoftwareKey):
        raise ValueError(f"the key of {customer_id} is in a token and cannot be handed out")
    bus_name = bus_identity_name("receiver")
    bus_key = load_private_key(data.identities / f"{bus_name}.key", data.passphrase())
    key_folder = KeyFolder(folder)
    enrolment = Enrolment(
        customer_id,
        cluster.bus_url,
        tuple(MeterContract(m, p.name, dict(p.config)) for m, p in contracts.items()),
        cluster.pki_url if "pki" in cluster.services else "",
    )
    write_enrolment(
        key_folder,
        enrolment,
        identity_chain_pem=b"".join(
            c.public_bytes(Encoding.PEM) for c in (identity.certificate, *identity.chain)
        ),
        identity_key_pem=private_key_pem(identity.key.private_key, passphrase),
        bus_chain_pem=(data.identities / f"{bus_name}.pem").read_bytes(),
        bus_key_pem=private_key_pem(bus_key, passphrase),
        trust_files=trust_files(data.pki),
    )
    return key_folder


class OwnDisplays:
    """Customers with a secure display of their own, for :attr:`Pipeline.display_keys`:
    each is enrolled into ``root/<customer>`` when the pipeline provisions its meter, and
    its display makes the FHE keys (sealed with ``passphrase``) the gateway encrypts under.
    :meth:`register` then lets every display hand its keys to the cloud itself."""

    def __init__(
        self, cluster: Cluster, root: Path, passphrase: bytes, customers: Iterable[str]
    ) -> None:
        self.cluster = cluster
        self.root = Path(root)
        self.passphrase = passphrase
        self.customers = set(customers)
        self.displays: dict[str, CustomerDisplay] = {}

    def __call__(
        self, customer_id: str, meter_id: str, program: TariffProgram
    ) -> CustomerKeyPair | None:
        if customer_id not in self.customers:
            return None
        if customer_id in self.displays:
            raise ValueError(f"{customer_id} has a display for one meter already")
        folder = enrol_customer(
            self.cluster, customer_id, {meter_id: program}, self.root / customer_id, self.passphrase
        )
        display = self.displays[customer_id] = CustomerDisplay.open(folder, self.passphrase)
        return display.keys

    async def register(self) -> None:
        for display in self.displays.values():
            nc = await display.connect()
            try:
                await display.register_once(nc)
            finally:
                await nc.drain()
