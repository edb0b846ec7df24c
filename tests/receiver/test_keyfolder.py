"""The customer's key folder: the secret key sealed with the passphrase, and nothing else
readable without it."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import msgpack
import pytest

from metrocloud.fhe.context import Encryptor, deserialize_ciphertext
from metrocloud.receiver.keyfolder import (
    SEAL_FORMAT,
    DisplayError,
    KeyFolder,
    WrongPassphrase,
    open_secret,
    seal_secret,
)
from metrocloud.tariffs import PROGRAMS, load_program
from metrocloud.testbed.pipeline import DEFAULT_TARIFF_CONFIG

PASSPHRASE = b"correct horse battery staple"
TAF1 = load_program("taf1", PROGRAMS["taf1"].parameters, DEFAULT_TARIFF_CONFIG["taf1"])
TAF3 = load_program("taf3", PROGRAMS["taf3"].parameters, DEFAULT_TARIFF_CONFIG["taf3"])


def test_a_sealed_secret_opens_with_its_passphrase_only(tmp_path: Path) -> None:
    blob = seal_secret(b"the secret key", PASSPHRASE, "tag-1")
    assert b"the secret key" not in blob
    assert open_secret(blob, PASSPHRASE, tmp_path) == (b"the secret key", "tag-1")
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        open_secret(blob, b"Correct horse battery staple", tmp_path)


def test_two_seals_of_one_secret_differ(tmp_path: Path) -> None:
    """A fresh salt and nonce each time: nothing to link or replay across seals."""
    assert seal_secret(b"x", PASSPHRASE, "t") != seal_secret(b"x", PASSPHRASE, "t")


def test_an_empty_passphrase_is_refused() -> None:
    with pytest.raises(DisplayError, match="must not be empty"):
        seal_secret(b"x", b"", "t")


def reheadered(blob: bytes, **changes: object) -> bytes:
    outer = msgpack.unpackb(blob, raw=False)
    header = msgpack.unpackb(outer["header"], raw=False)
    header.update(changes)
    outer["header"] = msgpack.packb(header, use_bin_type=True)
    return msgpack.packb(outer, use_bin_type=True)


def test_a_changed_seal_is_refused(tmp_path: Path) -> None:
    blob = seal_secret(b"the secret key", PASSPHRASE, "tag-1")
    outer = msgpack.unpackb(blob, raw=False)
    sealed = outer["sealed"]
    outer["sealed"] = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(WrongPassphrase, match="or the file was changed"):
        open_secret(msgpack.packb(outer, use_bin_type=True), PASSPHRASE, tmp_path)
    # the key tag is bound to the seal: another key's tag does not go unnoticed
    with pytest.raises(WrongPassphrase):
        open_secret(reheadered(blob, key_tag="tag-2"), PASSPHRASE, tmp_path)
    # nor do weaker scrypt settings, or a format it does not know
    with pytest.raises(DisplayError, match="out of range"):
        open_secret(reheadered(blob, n=2), PASSPHRASE, tmp_path)
    with pytest.raises(DisplayError, match="not a sealed secret key"):
        open_secret(reheadered(blob, format="something-else"), PASSPHRASE, tmp_path)
    with pytest.raises(DisplayError, match="not a sealed secret key"):
        open_secret(b"\x00garbage", PASSPHRASE, tmp_path)
    assert SEAL_FORMAT.startswith("metrocloud-")


def test_keys_made_in_a_folder_decrypt_after_loading(tmp_path: Path) -> None:
    folder = KeyFolder(tmp_path / "keys-of-c-0001")
    made = folder.create_keys([TAF1], PASSPHRASE)
    assert folder.has_keys
    slots = [5, 4, 3, 2, 1]
    ct = Encryptor(made.params, made.context, made.public_key).encrypt(slots)
    loaded = folder.load_keys(PASSPHRASE)
    assert loaded.key_tag == made.key_tag
    assert loaded.params == made.params
    decrypted = loaded.decrypt(deserialize_ciphertext(ct, loaded.params, loaded.key_tag), 5)
    assert decrypted == slots
    with pytest.raises(WrongPassphrase):
        folder.load_keys(b"not the passphrase")


def test_key_files_are_private(tmp_path: Path) -> None:
    folder = KeyFolder(tmp_path / "folder")
    folder.create_keys([TAF1], PASSPHRASE)
    assert stat.S_IMODE(folder.keys.stat().st_mode) == 0o700
    for path in folder.keys.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    info = json.loads((folder.keys / "fhe.json").read_text())
    assert info["parameters"]["plaintext_modulus"] == TAF1.params.plaintext_modulus
    assert "secret" not in json.dumps(info)  # what the secret key is: nowhere in clear


def test_the_evaluation_keys_are_there_until_registered(tmp_path: Path) -> None:
    folder = KeyFolder(tmp_path / "folder")
    keys = folder.create_keys([TAF1], PASSPHRASE)
    assert folder.evaluation_keys() == keys.evaluation_keys_bytes()
    (folder.keys / "evaluation.bin").unlink()
    with pytest.raises(DisplayError, match="missing evaluation keys") as caught:
        folder.evaluation_keys()
    assert "backup" in str(caught.value)
    assert folder.registered is None
    folder.mark_registered(keys.key_tag, "digest")
    assert folder.registered is not None and folder.registered["key_tag"] == keys.key_tag


def test_contracts_on_different_parameter_sets_need_two_accounts(tmp_path: Path) -> None:
    with pytest.raises(DisplayError, match="different FHE parameter sets"):
        KeyFolder(tmp_path / "folder").create_keys([TAF1, TAF3], PASSPHRASE)


def test_a_folder_without_enrolment_says_what_it_is_not(tmp_path: Path) -> None:
    with pytest.raises(DisplayError, match="not a customer's key folder"):
        KeyFolder(tmp_path).enrolment()
    (tmp_path / "enrolment.json").write_text('{"customer": "c-0001"}')
    with pytest.raises(DisplayError, match="not a valid enrolment"):
        KeyFolder(tmp_path).enrolment()
