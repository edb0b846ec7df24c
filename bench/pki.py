"""Benchmark of ECDSA signing keys: encrypted PKCS#8 files against a PKCS#11 token (SoftHSM2).

For each of file key P-256, file key brainpoolP256r1, PKCS#11 (SoftHSM2) P-256 and PKCS#11
brainpoolP256r1 it measures, on one thread, signatures per second through the common
``SigningKey.sign`` (ECDSA over SHA-256 of a 256-byte message, DER-encoded) and verifications
per second with ``cryptography``'s public key (the same code for both stores, so the two rows
of a curve differ only by noise). Each figure runs for ``--seconds`` (default 3) over a pool of
random messages; every signature made is verified, and a failure aborts the benchmark.

The PKCS#11 keys live in a throw-away SoftHSM2 token made in a temporary directory
(``SOFTHSM2_CONF`` is set before the module is loaded); the file keys in a temporary
directory, encrypted with a passphrase as metrocloud stores them.

Usage: ``python bench/pki.py [--seconds S]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cryptography
from cryptography import x509
from cryptography.hazmat.backends.openssl import backend
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from benchlib import machine
from metrocloud.pki import Pki, Role, SubCa
from metrocloud.pki.keys import Curve, FileKeyStore, KeyStore, SigningKey, generate_private_key
from metrocloud.pki.pkcs11 import (
    MODULE_ENV,
    Pkcs11KeyStore,
    find_pkcs11_module,
    init_softhsm_token,
)

MESSAGE_BYTES = 256
POOL = 64
TOKEN = "metrocloud-bench"
USER_PIN = "bench-user-pin"
SO_PIN = "bench-so-pin"


def rate(op: Callable[[int], None], seconds: float) -> tuple[float, int]:
    """Operations per second of ``op(i)`` called for i = 0, 1, ... for about ``seconds``."""
    for i in range(min(POOL, 16)):  # warm up
        op(i)
    done, batch = 0, 16
    start = time.perf_counter()
    while True:
        for i in range(done, done + batch):
            op(i)
        done += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed, done


def measure(key: SigningKey, seconds: float) -> dict[str, float]:
    messages = [os.urandom(MESSAGE_BYTES) for _ in range(POOL)]
    signatures = [key.sign(m) for m in messages]
    public = key.public_key()
    ecdsa = ec.ECDSA(hashes.SHA256())

    def sign(i: int) -> None:
        signatures[i % POOL] = key.sign(messages[i % POOL])

    sign_rate, signed = rate(sign, seconds)
    for m, s in zip(messages, signatures, strict=True):  # the last signature of each message
        public.verify(s, m, ecdsa)  # raises InvalidSignature

    def verify(i: int) -> None:
        public.verify(signatures[i % POOL], messages[i % POOL], ecdsa)

    verify_rate, verified = rate(verify, seconds)
    return {"sign": sign_rate, "verify": verify_rate, "signed": signed, "verified": verified}


def measure_pki(directory: Path, keys: KeyStore, seconds: float) -> dict[str, float]:
    """Issuance and CRL signing with the CA keys in ``keys``; chain checks of the results."""
    pki = Pki.init(directory, keys)
    holder = generate_private_key(Curve.BRAINPOOL_P256R1).public_key()
    service = generate_private_key(Curve.P256).public_key()
    issued: list[bytes] = []

    def issue(i: int) -> None:
        cert = pki.issue(Role.GATEWAY, f"gw-{i}", holder)
        issued.append(cert.public_bytes(Encoding.DER))

    issue_rate, _ = rate(issue, seconds)
    for serial in range(3):  # a CRL with a few entries, re-signed each time
        pki.revoke(x509.load_der_x509_certificate(issued[serial]).serial_number)

    def sign_crl(i: int) -> None:
        pki.settings["crl_validity_s"] = 0  # due at once: every call signs a new CRL
        pki.crl(SubCa.GATEWAYS)

    crl_rate, _ = rate(sign_crl, seconds)
    pki.settings["crl_validity_s"] = 7 * 86400
    pki.crl(SubCa.GATEWAYS)
    trust = pki.trust_store()
    gateway = issued[-1]
    service_der = pki.issue(Role.SERVICE, "legal", service).public_bytes(Encoding.DER)
    gateway_rate, _ = rate(lambda i: trust.verify(gateway, expected_role=Role.GATEWAY), seconds)
    service_rate, _ = rate(lambda i: trust.verify(service_der, expected_role=Role.SERVICE), seconds)
    pki.close()
    return {"issue": issue_rate, "crl": crl_rate, "gateway": gateway_rate, "service": service_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per figure (default 3)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="metrocloud-bench-pki-") as tmp:
        os.environ.pop(MODULE_ENV, None)  # always SoftHSM2 here
        module = find_pkcs11_module()
        conf = init_softhsm_token(Path(tmp) / "softhsm", TOKEN, USER_PIN, SO_PIN)
        os.environ["SOFTHSM2_CONF"] = str(conf)  # before the module is loaded
        files = FileKeyStore(Path(tmp) / "keys", passphrase=b"bench passphrase")
        results: list[tuple[str, Curve, dict[str, float]]] = []
        with Pkcs11KeyStore(module, TOKEN, USER_PIN) as token:
            for label, store in (("file (PKCS#8)", files), ("PKCS#11 (SoftHSM2)", token)):
                for curve in Curve:
                    key = store.generate(f"bench-{curve.value}", curve)
                    results.append((label, curve, measure(key, args.seconds)))
                    print(f"- {label}, {curve.value}: done", flush=True)
            operations = []
            for label, ca_keys in (
                ("file (PKCS#8)", FileKeyStore(Path(tmp) / "ca", passphrase=b"bench passphrase")),
                ("PKCS#11 (SoftHSM2)", token),
            ):
                directory = Path(tmp) / f"pki-{len(operations)}"
                operations.append((label, measure_pki(directory, ca_keys, args.seconds)))
                print(f"- PKI operations, CA keys {label}: done", flush=True)
        softhsm = subprocess.run(
            ["softhsm2-util", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()

    print(f"\nmachine: {machine()}")
    print(
        f"SoftHSM {softhsm}, cryptography {cryptography.__version__} "
        f"({backend.openssl_version_text()})\n"
    )
    print(
        f"## Signing keys: ECDSA over SHA-256 of a {MESSAGE_BYTES}-byte message, one thread "
        f"(about {args.seconds:g} s per figure)\n"
    )
    print("| key store | curve | sign ops/s | sign µs/op | verify ops/s | verify µs/op |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for label, curve, r in results:
        print(
            f"| {label} | {curve.value} | {r['sign']:,.0f} | {1e6 / r['sign']:,.1f} | "
            f"{r['verify']:,.0f} | {1e6 / r['verify']:,.1f} |"
        )
    print(
        "\nVerification uses cryptography's public key in both cases; PKCS#11 signing hashes "
        "in Python and has the token sign the digest (raw CKM_ECDSA), under the module lock."
    )
    print(
        "\n## PKI operations, one thread (default curves: gateways CA brainpoolP256r1, "
        "services CA P-256)\n"
    )
    print(
        "| CA keys | issue a gateway certificate /s | sign a gateways CRL /s | "
        "verify a gateway certificate /s | verify a service certificate /s |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, r in operations:
        print(
            f"| {label} | {r['issue']:,.0f} | {r['crl']:,.0f} | {r['gateway']:,.0f} | "
            f"{r['service']:,.0f} |"
        )
    print(
        "\nIssuing includes the SQLite record and the PKI logbook entry (both fsynced); "
        "verifying is TrustStore.verify: chain, validity, CRL lookup and role checks."
    )


if __name__ == "__main__":
    main()
