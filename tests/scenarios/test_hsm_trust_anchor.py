"""The whole PKI with its CA keys in an HSM (SoftHSM2 over PKCS#11), then the cloud on it.

The operator makes the PKI with ``metrocloud pki init --hsm-module … --hsm-token …``: the
root and sub-CA keys are generated in the token and no key file is written. ``openssl verify``
accepts what those keys sign. The embedded cloud then runs on that PKI: its certificates, the
CRLs its services fetch and a revocation are all signed inside the token, and a month of one
meter bills and verifies.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from typer.testing import CliRunner

from hsm_fixtures import CA_TOKEN, SoftHsm
from metrocloud.cli import app
from metrocloud.cloud.cluster import Cluster
from metrocloud.pki import Role, SubCa
from metrocloud.pki.client import PkiClient
from metrocloud.pki.keys import HSM_PIN_ENV, PASSPHRASE_ENV
from metrocloud.pki.pkcs11 import Pkcs11KeyStore
from metrocloud.testbed.pipeline import MeterOutcome, Pipeline, PipelineConfig

PASSPHRASE = "identity files stay encrypted"


@pytest.fixture(scope="module")
def hsm_env(softhsm: SoftHsm) -> Iterator[dict[str, str]]:
    token = softhsm.tokens[CA_TOKEN]
    env = {HSM_PIN_ENV: token.user_pin, PASSPHRASE_ENV: PASSPHRASE}
    with pytest.MonkeyPatch.context() as mp:  # the service processes inherit it
        for name, value in env.items():
            mp.setenv(name, value)
        yield env


@pytest.fixture(scope="module")
def data(
    tmp_path_factory: pytest.TempPathFactory, softhsm: SoftHsm, hsm_env: dict[str, str]
) -> Path:
    data = tmp_path_factory.mktemp("hsm") / "data"
    result = CliRunner().invoke(
        app,
        ["pki", "init", str(data / "pki"), "--hsm-module", str(softhsm.module),
         "--hsm-token", CA_TOKEN],
        env={**hsm_env, "COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return data


def test_ca_keys_are_made_in_the_token_and_nowhere_else(data: Path, softhsm: SoftHsm) -> None:
    assert not (data / "pki" / "private").exists()
    token = softhsm.tokens[CA_TOKEN]
    root = x509.load_pem_x509_certificate((data / "pki" / "root.pem").read_bytes())
    with Pkcs11KeyStore(token.module, token.label, token.user_pin) as store:
        assert store.exists("root")
        assert store.load("root").public_key() == root.public_key()
        for sub in SubCa:
            assert store.exists(f"ca-{sub.value}")


def test_openssl_verifies_what_the_hsm_signed(data: Path, hsm_env: dict[str, str]) -> None:
    out = data.parent / "gw.pem"
    result = CliRunner().invoke(
        app,
        ["pki", "issue", str(data / "pki"), "--role", "gateway", "--name", "gw-0900",
         "--key-out", str(data.parent / "gw.key"), "--out", str(out)],
        env=hsm_env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    leaf, sub_ca = x509.load_pem_x509_certificates(out.read_bytes())
    files = {"leaf.pem": leaf, "sub.pem": sub_ca}
    for name, cert in files.items():
        (data.parent / name).write_bytes(cert.public_bytes(Encoding.PEM))
    crls = []
    for ca in ("root", "gateways"):
        path = data.parent / f"{ca}.crl.pem"
        path.write_bytes(
            x509.load_der_x509_crl((data / "pki" / "crl" / f"{ca}.crl").read_bytes()).public_bytes(
                Encoding.PEM
            )
        )
        crls += ["-CRLfile", str(path)]
    checked = subprocess.run(
        ["openssl", "verify", "-crl_check_all", "-CAfile", str(data / "pki" / "root.pem"),
         "-untrusted", str(data.parent / "sub.pem"), *crls, str(data.parent / "leaf.pem")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def bill(pipeline: Pipeline) -> list[MeterOutcome]:
    await pipeline.register_keys()
    await pipeline.send([m for meter in pipeline.meter_ids for m in pipeline.uploads(meter)])
    return await pipeline.collect(timeout_s=90)


def test_the_cloud_runs_and_revokes_on_the_hsm_pki(data: Path) -> None:
    cluster = Cluster(data, crl_refresh_s=1.0)
    cluster.start()
    try:
        pipeline = Pipeline(cluster, PipelineConfig(meters=1, days=1))
        pipeline.provision()
        outcomes = asyncio.run(bill(pipeline))
        assert [o.ok for o in outcomes] == [True]

        pki = cluster.data.open_pki()
        ids = cluster.data.identities_store(pki)
        authority = ids.identity("notified-body", Role.AUTHORITY)
        victim = ids.identity("gw-0901", Role.GATEWAY)
        pki.close()
        with PkiClient.connect(cluster.pki_url, tls_trust=data / "pki" / "root.pem") as client:
            client.revoke(authority, victim.certificate.serial_number)
            crl = client.crl(SubCa.GATEWAYS.value)
        gateways_ca = x509.load_pem_x509_certificate(
            (data / "pki" / "ca" / "gateways.pem").read_bytes()
        )
        assert crl.is_signature_valid(gateways_ca.public_key())  # type: ignore[arg-type]
        assert crl.get_revoked_certificate_by_serial_number(victim.certificate.serial_number)
    finally:
        cluster.stop()
