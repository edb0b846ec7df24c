"""The customer's key folder: everything a secure display needs, on the customer's machine.

::

    DIR/enrolment.json        who the customer is, where the cloud is, the meters and their
                              contracts (tariff program and configuration); the operator
                              writes it at enrolment (:func:`write_enrolment`)
    DIR/identity.pem          the customer's receiver certificate (then its sub-CA)
    DIR/identity.key          its signing key, PKCS#8, encrypted with the passphrase
    DIR/bus.pem, bus.key      the bus's TLS client credentials for receivers (key encrypted)
    DIR/trust/                root.pem, ca/*.pem, crl/*.crl: what results are checked with
                              (the CRLs renewed from the PKI service at every pull)
    DIR/keys/fhe.json         parameter set, key tag, which evaluation keys were made
    DIR/keys/context.bin      the OpenFHE crypto context
    DIR/keys/public.bin       the public key (the gateway encrypts under it)
    DIR/keys/evaluation.bin   the evaluation keys handed to the cloud
    DIR/keys/secret.sealed    the secret key, sealed with the passphrase (below)
    DIR/keys/registered.json  when the public and evaluation keys went to the cloud

The secret key never leaves this folder unsealed: it is encrypted with AES-256-GCM under a
key derived from the passphrase with scrypt (``cryptography``'s implementations), with the
key tag and the KDF settings as associated data, so a wrong passphrase and a changed file
are both refused. Files are written 0600 in a 0700 folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgpack
import openfhe as ofhe
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from metrocloud.core.errors import MetrocloudError
from metrocloud.fhe.context import (
    CustomerKeyPair,
    deserialize_context,
    deserialize_public_key,
    serialize,
)
from metrocloud.fhe.params import FheParameters
from metrocloud.pki.keys import KeyFileError, SoftwareKey, load_private_key
from metrocloud.pki.pem import write_atomically
from metrocloud.tariffs import PROGRAMS, TariffProgram, load_program
from metrocloud.tariffs.base import TariffConfigError

SEAL_FORMAT = "metrocloud-sealed-secret-key/1"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
"""scrypt's cost: about 0.1 s and 32 MiB per opening, as RFC 7914 suggests for interactive use."""


class DisplayError(MetrocloudError):
    """Something a customer can act on, said in plain words (the display shows no traces)."""


class WrongPassphrase(DisplayError):
    """The passphrase does not open the key folder."""


@dataclass(frozen=True)
class MeterContract:
    """One of the customer's meters and the tariff program (and configuration) it is on."""

    meter_id: str
    tariff: str
    config: dict[str, Any]

    def program(self) -> TariffProgram:
        if self.tariff not in PROGRAMS:
            raise DisplayError(f"meter {self.meter_id}: unknown tariff program {self.tariff!r}")
        try:
            return load_program(self.tariff, PROGRAMS[self.tariff].parameters, self.config)
        except TariffConfigError as exc:
            raise DisplayError(f"meter {self.meter_id}: {exc}") from None


@dataclass(frozen=True)
class Enrolment:
    """What the operator hands a customer: identity, cloud address, meters and contracts."""

    customer_id: str
    cloud: str
    meters: tuple[MeterContract, ...]
    pki: str = ""
    """The PKI service's address, where current CRLs are fetched ("" for none)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "customer": self.customer_id,
            "cloud": self.cloud,
            "pki": self.pki,
            "meters": [
                {"meter": m.meter_id, "tariff": m.tariff, "config": m.config} for m in self.meters
            ],
        }

    @classmethod
    def from_dict(cls, data: Any, where: Path) -> Enrolment:
        try:
            meters = tuple(
                MeterContract(str(m["meter"]), str(m["tariff"]), dict(m["config"]))
                for m in data["meters"]
            )
            return cls(str(data["customer"]), str(data["cloud"]), meters, str(data.get("pki", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise DisplayError(f"{where} is not a valid enrolment (missing {exc})") from None


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(path, data, 0o600)


def _kdf(salt: bytes, n: int, r: int, p: int) -> Scrypt:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p)


def seal_secret(secret: bytes, passphrase: bytes, key_tag: str) -> bytes:
    """``secret`` encrypted with AES-256-GCM under scrypt(``passphrase``)."""
    if not passphrase:
        raise DisplayError("the passphrase must not be empty")
    salt, nonce = os.urandom(16), os.urandom(12)
    header = {
        "format": SEAL_FORMAT,
        "key_tag": key_tag,
        "n": SCRYPT_N,
        "r": SCRYPT_R,
        "p": SCRYPT_P,
        "salt": salt,
        "nonce": nonce,
    }
    aad = msgpack.packb(header, use_bin_type=True)
    key = _kdf(salt, SCRYPT_N, SCRYPT_R, SCRYPT_P).derive(passphrase)
    sealed = AESGCM(key).encrypt(nonce, secret, aad)
    return msgpack.packb({"header": aad, "sealed": sealed}, use_bin_type=True)


def open_secret(blob: bytes, passphrase: bytes, where: Path) -> tuple[bytes, str]:
    """The secret and its key tag; :class:`WrongPassphrase` when the passphrase (or the
    file) is not the one it was sealed with."""
    try:
        outer = msgpack.unpackb(blob, raw=False)
        aad = outer["header"]
        header = msgpack.unpackb(aad, raw=False)
        if header["format"] != SEAL_FORMAT:
            raise ValueError(header["format"])
        n, r, p = int(header["n"]), int(header["r"]), int(header["p"])
        if not (2**10 <= n <= 2**20 and 1 <= r <= 32 and 1 <= p <= 16):
            raise ValueError("scrypt settings out of range")
        key = _kdf(header["salt"], n, r, p).derive(passphrase)
        nonce, sealed, key_tag = header["nonce"], outer["sealed"], str(header["key_tag"])
    except (ValueError, KeyError, TypeError, msgpack.ExtraData) as exc:
        raise DisplayError(f"{where} is not a sealed secret key ({exc})") from None
    try:
        return AESGCM(key).decrypt(nonce, sealed, aad), key_tag
    except InvalidTag:
        raise WrongPassphrase(
            f"wrong passphrase: it does not open the secret key in {where} "
            "(or the file was changed)"
        ) from None


class KeyFolder:
    """A customer's key folder (see the module docstring for its files)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- paths -----------------------------------------------------------------------------
    @property
    def enrolment_file(self) -> Path:
        return self.root / "enrolment.json"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def trust_dir(self) -> Path:
        return self.root / "trust"

    @property
    def has_keys(self) -> bool:
        return (self.keys / "secret.sealed").exists()

    @property
    def registered(self) -> dict[str, Any] | None:
        """The record of the keys' registration with the cloud, or None before it."""
        path = self.keys / "registered.json"
        return json.loads(path.read_text()) if path.exists() else None

    # -- enrolment ---------------------------------------------------------------------------
    def enrolment(self) -> Enrolment:
        if not self.enrolment_file.exists():
            raise DisplayError(
                f"{self.root} holds no enrolment.json: it is not a customer's key folder "
                "(your operator writes it when you sign up)"
            )
        try:
            data = json.loads(self.enrolment_file.read_text())
        except (OSError, ValueError) as exc:
            raise DisplayError(f"cannot read {self.enrolment_file}: {exc}") from None
        return Enrolment.from_dict(data, self.enrolment_file)

    def identity_chain(self) -> list[x509.Certificate]:
        """The customer's receiver certificate, then its sub-CA."""
        return x509.load_pem_x509_certificates((self.root / "identity.pem").read_bytes())

    def identity_certificate(self) -> x509.Certificate:
        return self.identity_chain()[0]

    def identity_key(self, passphrase: bytes) -> SoftwareKey:
        path = self.root / "identity.key"
        try:
            return SoftwareKey("identity", load_private_key(path, passphrase))
        except FileNotFoundError:
            raise DisplayError(f"{path} is missing: the key folder is incomplete") from None
        except KeyFileError:
            raise WrongPassphrase(f"wrong passphrase: it does not open {path}") from None

    # -- FHE keys ----------------------------------------------------------------------------
    def create_keys(self, programs: Sequence[TariffProgram], passphrase: bytes) -> CustomerKeyPair:
        """New FHE keys for the customer's contracts, written here (the secret one sealed)."""
        params = {p.params for p in programs}
        if len(params) != 1:
            raise DisplayError(
                "the meters' tariff programs need different FHE parameter sets "
                f"({', '.join(sorted(p.parameters_id for p in params))}): one key pair "
                "serves one set, so such meters need separate customer accounts"
            )
        (chosen,) = params
        keys = CustomerKeyPair.generate(
            chosen,
            set().union(*(p.rotation_steps(1) for p in programs)),
            relinearization=any(p.relinearization for p in programs),
            automorphisms=sorted({a for p in programs for a in p.automorphisms()}),
        )
        self.save_keys(keys, passphrase)
        return keys

    def save_keys(self, keys: CustomerKeyPair, passphrase: bytes) -> None:
        _write(self.keys / "context.bin", serialize(keys.context))
        _write(self.keys / "public.bin", serialize(keys.public_key))
        _write(self.keys / "evaluation.bin", keys.evaluation_keys_bytes())
        _write(
            self.keys / "fhe.json",
            json.dumps(
                {
                    "parameters": keys.params.to_dict(),
                    "key_tag": keys.key_tag,
                    "rotation_steps": list(keys.rotation_steps),
                    "relinearization": keys.relinearization,
                    "automorphisms": list(keys.automorphisms),
                },
                indent=2,
            ).encode(),
        )
        secret = seal_secret(serialize(keys.secret_key), passphrase, keys.key_tag)
        _write(self.keys / "secret.sealed", secret)

    def load_keys(self, passphrase: bytes) -> CustomerKeyPair:
        """The customer's key pair, the secret key opened with ``passphrase``."""
        sealed = self.keys / "secret.sealed"
        secret, key_tag = open_secret(sealed.read_bytes(), passphrase, sealed)
        try:
            info = json.loads((self.keys / "fhe.json").read_text())
            context = deserialize_context((self.keys / "context.bin").read_bytes())
            public = deserialize_public_key((self.keys / "public.bin").read_bytes())
            secret_key = ofhe.DeserializePrivateKeyString(secret, ofhe.BINARY)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise DisplayError(f"the FHE keys in {self.keys} cannot be read: {exc}") from None
        if str(public.GetKeyTag()) != key_tag or info.get("key_tag") != key_tag:
            raise DisplayError(f"the public and secret keys in {self.keys} do not belong together")
        return CustomerKeyPair(
            FheParameters.from_dict(info["parameters"]),
            context,
            public,
            secret_key,
            tuple(info["rotation_steps"]),
            bool(info["relinearization"]),
            tuple(info["automorphisms"]),
        )

    def evaluation_keys(self) -> bytes:
        path = self.keys / "evaluation.bin"
        if not path.exists():
            raise DisplayError(
                f"missing evaluation keys: {path} is gone and the cloud has not received "
                "them yet, so it cannot compute your bills. Restore the file from your "
                "backup of the key folder, or start over with a new folder (new keys)."
            )
        return path.read_bytes()

    def save_crl(self, name: str, der: bytes) -> None:
        """Keep a renewed CRL (``root`` or a sub-CA's) for the next start."""
        _write(self.trust_dir / "crl" / f"{name}.crl", der)

    def mark_registered(self, key_tag: str, digest: str) -> None:
        record = {
            "key_tag": key_tag,
            "digest": digest,
            "at": datetime.now(timezone.utc).isoformat(),
        }
        _write(self.keys / "registered.json", json.dumps(record, indent=2).encode())


def write_enrolment(
    folder: KeyFolder,
    enrolment: Enrolment,
    *,
    identity_chain_pem: bytes,
    identity_key_pem: bytes,
    bus_chain_pem: bytes,
    bus_key_pem: bytes,
    trust_files: dict[str, bytes],
) -> None:
    """What the operator writes into a new customer's key folder (keys already encrypted
    with the customer's passphrase; ``trust_files`` relative to ``trust/``)."""
    folder.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write(folder.enrolment_file, json.dumps(enrolment.to_dict(), indent=2).encode())
    _write(folder.root / "identity.pem", identity_chain_pem)
    _write(folder.root / "identity.key", identity_key_pem)
    _write(folder.root / "bus.pem", bus_chain_pem)
    _write(folder.root / "bus.key", bus_key_pem)
    for name, data in trust_files.items():
        _write(folder.trust_dir / name, data)
