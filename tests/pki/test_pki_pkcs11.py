"""The PKCS#11 key store on SoftHSM2: keys made in the token sign, persist and never leave it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.exceptions import AttributeReadOnly, AttributeSensitive, PKCS11Error

from hsm_fixtures import SPARE_TOKEN, USER_PIN, HsmToken, SoftHsm, token_session
from metrocloud.core.errors import ConfigurationError
from metrocloud.pki import pkcs11 as hsm
from metrocloud.pki.keys import Curve, FileKeyStore, SigningKey, SoftwareKey
from metrocloud.pki.pkcs11 import Pkcs11Key, Pkcs11KeyStore, TokenError

ECDSA = ec.ECDSA(hashes.SHA256())
MESSAGE = b"meter 1ESY1161234567, 2026-01-01T00:15Z, 1234 Wh"


def verifies(key: SigningKey, signature: bytes, data: bytes) -> bool:
    try:
        key.public_key().verify(signature, data, ECDSA)
    except InvalidSignature:
        return False
    return True


def private_object(session: Any, label: str) -> Any:
    return session.get_key(object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.EC, label=label)


# -- keys in the token sign ----------------------------------------------------------------------


@pytest.mark.parametrize("curve", list(Curve))
def test_generated_key_signs_on_its_curve(hsm_store: Pkcs11KeyStore, curve: Curve) -> None:
    key = hsm_store.generate("signer", curve)
    assert key.name == "signer"
    assert key.curve is curve
    assert key.public_key().curve.name == curve.ec_curve.name
    signature = key.sign(MESSAGE)
    r, s = decode_dss_signature(signature)  # DER Ecdsa-Sig-Value
    assert r > 0 and s > 0
    assert verifies(key, signature, MESSAGE)
    assert verifies(key, key.sign(b""), b"")


@pytest.mark.parametrize("curve", list(Curve))
def test_signature_does_not_verify_other_data_or_key(
    hsm_store: Pkcs11KeyStore, curve: Curve
) -> None:
    key = hsm_store.generate("signer", curve)
    other = hsm_store.generate("other", curve)
    signature = key.sign(MESSAGE)
    assert not verifies(key, signature, MESSAGE + b"!")
    assert not verifies(key, signature, MESSAGE[:-1])
    assert not verifies(other, signature, MESSAGE)
    r, s = decode_dss_signature(signature)
    assert not verifies(key, encode_dss_signature(r, s ^ 1), MESSAGE)


def test_signature_is_over_sha256_of_the_data(hsm_store: Pkcs11KeyStore) -> None:
    key = hsm_store.generate("signer", Curve.P256)
    signature = key.sign(MESSAGE)
    with pytest.raises(InvalidSignature):
        key.public_key().verify(signature, MESSAGE, ec.ECDSA(hashes.SHA384()))
    key.public_key().verify(signature, MESSAGE, ECDSA)


@pytest.mark.parametrize("curve", list(Curve))
def test_any_data_signed_in_the_token_verifies(hsm_store: Pkcs11KeyStore, curve: Curve) -> None:
    key = hsm_store.generate("prop", curve)

    @settings(max_examples=25, deadline=None)
    @given(st.binary(max_size=4096))
    def check(data: bytes) -> None:
        signature = key.sign(data)
        assert verifies(key, signature, data)
        assert not verifies(key, signature, data + b"\x00")

    check()


# -- the store: persistence, names, errors -------------------------------------------------------


@pytest.mark.parametrize("curve", list(Curve))
def test_load_from_a_new_store_returns_the_same_key(hsm_token: HsmToken, curve: Curve) -> None:
    with hsm_token.open() as store:
        made = store.generate("ca", curve)
        public = made.public_key()
    assert store.closed
    # the last store closed the session (and logged out): this one logs in afresh
    with hsm_token.open() as again:
        loaded = again.load("ca")
        assert loaded.curve is curve
        assert loaded.public_key().public_numbers() == public.public_numbers()
        public.verify(loaded.sign(MESSAGE), MESSAGE, ECDSA)


def test_key_persists_for_another_process(hsm_token: HsmToken) -> None:
    with hsm_token.open() as store:
        public = store.generate("gateway", Curve.BRAINPOOL_P256R1).public_key()
    script = (
        "import json, sys\n"
        "from cryptography.hazmat.primitives import serialization as s\n"
        "from metrocloud.pki.pkcs11 import Pkcs11KeyStore\n"
        "module, label, pin = sys.argv[1:]\n"
        "with Pkcs11KeyStore(module, label, pin) as store:\n"
        "    key = store.load('gateway')\n"
        "    der = key.public_key().public_bytes(s.Encoding.DER, s.PublicFormat.SubjectPublicKeyInfo)\n"  # noqa: E501
        "    print(json.dumps([key.curve.value, der.hex(), key.sign(b'other process').hex()]))\n"
    )
    env = dict(os.environ, SOFTHSM2_CONF=str(hsm_token.conf))
    proc = subprocess.run(
        [sys.executable, "-c", script, str(hsm_token.module), hsm_token.label, USER_PIN],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    curve, der, signature = json.loads(proc.stdout)
    assert curve == Curve.BRAINPOOL_P256R1.value
    assert bytes.fromhex(der) == public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public.verify(bytes.fromhex(signature), b"other process", ECDSA)


def test_exists(hsm_store: Pkcs11KeyStore) -> None:
    assert not hsm_store.exists("meter-ca")
    hsm_store.generate("meter-ca", Curve.P256)
    assert hsm_store.exists("meter-ca")
    assert not hsm_store.exists("meter-c")
    assert not hsm_store.exists("meter-ca2")


def test_generate_refuses_a_taken_name(hsm_store: Pkcs11KeyStore, hsm_token: HsmToken) -> None:
    first = hsm_store.generate("ca", Curve.P256)
    with pytest.raises(FileExistsError, match="'ca'"):
        hsm_store.generate("ca", Curve.BRAINPOOL_P256R1)
    loaded = hsm_store.load("ca")
    assert loaded.curve is Curve.P256
    assert loaded.public_key().public_numbers() == first.public_key().public_numbers()
    with token_session(hsm_token) as session:
        assert len(list(session.get_objects({Attribute.LABEL: "ca"}))) == 2  # one pair


def test_load_of_a_missing_name_raises_key_error(hsm_store: Pkcs11KeyStore) -> None:
    hsm_store.generate("present", Curve.P256)
    with pytest.raises(KeyError, match="'absent'"):
        hsm_store.load("absent")


def test_both_halves_share_label_and_id(hsm_store: Pkcs11KeyStore, hsm_token: HsmToken) -> None:
    hsm_store.generate("pair", Curve.P256)
    with token_session(hsm_token) as session:
        objects = list(session.get_objects({Attribute.LABEL: "pair"}))
        classes = sorted(int(o[Attribute.CLASS]) for o in objects)
        assert classes == sorted([int(ObjectClass.PUBLIC_KEY), int(ObjectClass.PRIVATE_KEY)])
        ids = {bytes(o[Attribute.ID]) for o in objects}
        assert len(ids) == 1 and len(ids.pop()) == 16
        assert all(o[Attribute.TOKEN] for o in objects)


def test_wrong_pin_on_a_fresh_login(softhsm: SoftHsm) -> None:
    spare = softhsm.tokens[SPARE_TOKEN]  # no store is open on it: the token checks the PIN
    with pytest.raises(ConfigurationError, match=f"wrong user PIN for token '{SPARE_TOKEN}'"):
        Pkcs11KeyStore(spare.module, spare.label, "not-the-pin")
    with spare.open() as store:  # the right PIN still works
        assert not store.exists("anything")


def test_wrong_pin_while_another_store_is_logged_in(
    hsm_store: Pkcs11KeyStore, hsm_token: HsmToken
) -> None:
    # the token would not check it (the process is logged in already): the store does
    with pytest.raises(ConfigurationError, match="wrong user PIN"):
        Pkcs11KeyStore(hsm_token.module, hsm_token.label, hsm_token.user_pin + "x")
    with Pkcs11KeyStore(hsm_token.module, hsm_token.label, hsm_token.user_pin) as second:
        assert not second.exists("nothing")


def test_unknown_token_label(softhsm: SoftHsm) -> None:
    with pytest.raises(ConfigurationError) as info:
        Pkcs11KeyStore(softhsm.module, "no-such-token", USER_PIN)
    message = str(info.value)
    assert "no token labelled 'no-such-token'" in message
    assert "softhsm2-util --init-token" in message
    assert "metrocloud-test" in message  # the tokens that do exist


def test_module_that_cannot_be_loaded(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        Pkcs11KeyStore(tmp_path / "missing.so", "t", USER_PIN)
    not_a_library = tmp_path / "fake.so"
    not_a_library.write_bytes(b"not an ELF file")
    with pytest.raises(ConfigurationError, match="cannot load the PKCS#11 module"):
        Pkcs11KeyStore(not_a_library, "t", USER_PIN)


# -- the private key stays in the token ----------------------------------------------------------


@pytest.mark.parametrize("curve", list(Curve))
def test_private_key_is_sensitive_and_not_extractable(
    hsm_store: Pkcs11KeyStore, hsm_token: HsmToken, curve: Curve
) -> None:
    hsm_store.generate("sealed", curve)
    with token_session(hsm_token) as session:
        private = private_object(session, "sealed")
        assert private[Attribute.TOKEN] is True
        assert private[Attribute.PRIVATE] is True
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.EXTRACTABLE] is False
        assert private[Attribute.ALWAYS_SENSITIVE] is True
        assert private[Attribute.NEVER_EXTRACTABLE] is True
        assert private[Attribute.SIGN] is True
        with pytest.raises(AttributeSensitive):
            private[Attribute.VALUE]
        with pytest.raises((AttributeReadOnly, PKCS11Error)):
            private[Attribute.EXTRACTABLE] = True
        assert private[Attribute.EXTRACTABLE] is False


def test_no_method_hands_out_the_private_key(hsm_store: Pkcs11KeyStore) -> None:
    key = hsm_store.generate("sealed", Curve.P256)
    assert not hasattr(key, "private_key")  # which SoftwareKey has, for TLS key files
    public = [n for n in dir(key) if not n.startswith("_")]
    assert sorted(public) == ["curve", "name", "public_key", "sign"]


# -- one interface for file and token keys -------------------------------------------------------


def test_file_and_token_keys_are_interchangeable(hsm_store: Pkcs11KeyStore, tmp_path: Path) -> None:
    files = FileKeyStore(tmp_path / "keys", passphrase=b"secret")
    keys: list[SigningKey] = []
    for curve in Curve:
        keys.append(files.generate(f"file-{curve.value}", curve))
        keys.append(hsm_store.generate(f"hsm-{curve.value}", curve))
    assert {type(k) for k in keys} == {SoftwareKey, Pkcs11Key}
    for key in keys:
        assert isinstance(key, SigningKey)
        assert verifies(key, key.sign(MESSAGE), MESSAGE)
    for signer in keys:
        signature = signer.sign(MESSAGE)
        for checker in keys:
            same_curve = checker.curve is signer.curve
            if checker is not signer and same_curve:
                assert not verifies(checker, signature, MESSAGE)


# -- closing and threads -------------------------------------------------------------------------


def test_keys_stop_working_when_their_store_closes(hsm_token: HsmToken) -> None:
    store = hsm_token.open()
    key = store.generate("short-lived", Curve.P256)
    store.close()
    store.close()  # idempotent
    with pytest.raises(TokenError, match="closed"):
        key.sign(MESSAGE)
    with pytest.raises(TokenError, match="closed"):
        store.load("short-lived")
    with pytest.raises(TokenError, match="closed"):
        store.exists("short-lived")
    assert key.public_key() is not None  # kept from the token


def test_closing_one_store_does_not_log_out_another(hsm_token: HsmToken) -> None:
    with hsm_token.open() as first:
        key = first.generate("shared", Curve.P256)
        with hsm_token.open() as second:
            assert second.exists("shared")
        assert verifies(key, key.sign(MESSAGE), MESSAGE)


def test_concurrent_signing_from_two_stores(hsm_token: HsmToken) -> None:
    with hsm_token.open() as one, hsm_token.open() as two:
        keys = [one.generate("p256", Curve.P256), two.generate("bp", Curve.BRAINPOOL_P256R1)]
        failures: list[str] = []

        def work(n: int) -> None:
            key = keys[n % 2]
            for i in range(40):
                data = f"thread {n} message {i}".encode()
                if not verifies(key, key.sign(data), data):
                    failures.append(f"{key.name}: {data!r}")

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []


# -- finding the module, making tokens -----------------------------------------------------------


def test_find_module_honours_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = tmp_path / "libvendor-pkcs11.so"
    module.write_bytes(b"")
    monkeypatch.setenv(hsm.MODULE_ENV, str(module))
    assert hsm.find_pkcs11_module() == module
    monkeypatch.setenv(hsm.MODULE_ENV, str(tmp_path / "gone.so"))
    with pytest.raises(ConfigurationError, match=r"gone\.so"):
        hsm.find_pkcs11_module()


def test_find_module_falls_back_to_softhsm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(hsm.MODULE_ENV, raising=False)
    assert hsm.find_pkcs11_module() in hsm.SOFTHSM2_MODULE_PATHS  # installed here
    monkeypatch.setattr(hsm, "SOFTHSM2_MODULE_PATHS", (tmp_path / "a.so", tmp_path / "b.so"))
    with pytest.raises(ConfigurationError, match=r"apt-get install softhsm2"):
        hsm.find_pkcs11_module()


def test_init_token_refuses_a_taken_label(softhsm: SoftHsm) -> None:
    with pytest.raises(FileExistsError, match=SPARE_TOKEN):
        hsm.init_softhsm_token(softhsm.conf.parent, SPARE_TOKEN, USER_PIN, "so-pin")


def test_init_token_without_softhsm2_util(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigurationError, match=r"softhsm2-util not found.*apt-get install"):
        hsm.init_softhsm_token(tmp_path / "conf", "t", USER_PIN, "so-pin")


def test_init_token_writes_a_configuration(tmp_path: Path) -> None:
    conf = hsm.init_softhsm_token(tmp_path / "hsm", "demo", USER_PIN, "so-pin-1")
    assert conf == (tmp_path / "hsm" / "softhsm2.conf").resolve()
    text = conf.read_text()
    assert f"directories.tokendir = {(tmp_path / 'hsm' / 'tokens').resolve()}" in text
    assert "objectstore.backend = file" in text
    assert any((tmp_path / "hsm" / "tokens").iterdir())  # the token's directory
