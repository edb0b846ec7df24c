"""Private key files: PKCS#8 PEM, mode 0600, atomic, optional passphrase."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from metrocloud.core.errors import ConfigurationError
from metrocloud.pki import (
    FileKeyStore,
    KeyFileError,
    generate_private_key,
    load_private_key,
    save_private_key,
)


def same_key(a: ec.EllipticCurvePrivateKey, b: ec.EllipticCurvePrivateKey) -> bool:
    return a.private_numbers() == b.private_numbers()


def test_generated_key_is_p256() -> None:
    assert isinstance(generate_private_key().curve, ec.SECP256R1)


def test_unencrypted_round_trip_mode_0600(tmp_path: Path) -> None:
    key = generate_private_key()
    path = tmp_path / "k.key"
    save_private_key(path, key, None)
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert same_key(load_private_key(path, None), key)
    assert [p.name for p in tmp_path.iterdir()] == ["k.key"]  # no temporary file left


def test_passphrase_round_trip(tmp_path: Path) -> None:
    key = generate_private_key()
    path = tmp_path / "k.key"
    save_private_key(path, key, b"correct horse")
    assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert same_key(load_private_key(path, b"correct horse"), key)


def test_wrong_passphrase_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    save_private_key(path, generate_private_key(), b"correct horse")
    with pytest.raises(KeyFileError, match="wrong passphrase") as info:
        load_private_key(path, b"battery staple")
    assert isinstance(info.value, ConfigurationError)
    with pytest.raises(KeyFileError, match="passphrase is needed"):
        load_private_key(path, None)


def test_passphrase_for_unencrypted_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    save_private_key(path, generate_private_key(), None)
    with pytest.raises(KeyFileError, match="not encrypted"):
        load_private_key(path, b"secret")


def test_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        save_private_key(tmp_path / "k.key", generate_private_key(), b"")


def test_overwrite_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    save_private_key(path, generate_private_key(), None)
    second = generate_private_key()
    save_private_key(path, second, None)
    assert same_key(load_private_key(path), second)
    assert len(list(tmp_path.iterdir())) == 1


def test_damaged_and_non_ec_files_are_refused(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.key"
    damaged.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        load_private_key(damaged)
    other = tmp_path / "ed.key"
    other.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(KeyFileError, match="not an EC private key"):
        load_private_key(other)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_private_key(tmp_path / "absent.key")


def test_file_key_store(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "keys", b"pw")
    assert not store.exists("gw-1")
    key = generate_private_key()
    store.save("gw-1", key)
    assert store.exists("gw-1")
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert same_key(store.load("gw-1"), key)
    with pytest.raises(KeyFileError):
        FileKeyStore(tmp_path / "keys", b"other").load("gw-1")
