"""Keys: curves, software keys, PKCS#8 files (mode 0600, atomic, optional passphrase)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from metrocloud.core.errors import ConfigurationError
from metrocloud.pki import (
    Curve,
    FileKeyStore,
    KeyFileError,
    SigningKey,
    SoftwareKey,
    generate_private_key,
    load_private_key,
    save_private_key,
)
from metrocloud.pki.pem import write_atomically

ECDSA = ec.ECDSA(hashes.SHA256())


def same_key(a: ec.EllipticCurvePrivateKey, b: ec.EllipticCurvePrivateKey) -> bool:
    return a.private_numbers() == b.private_numbers()


def pem(key: object, encryption: serialization.KeySerializationEncryption | None = None) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        encryption or serialization.NoEncryption(),
    )


# -- curves and software keys --------------------------------------------------------------------


def test_curves_and_their_oids() -> None:
    assert isinstance(Curve.P256.ec_curve, ec.SECP256R1)
    assert isinstance(Curve.BRAINPOOL_P256R1.ec_curve, ec.BrainpoolP256R1)
    assert Curve.P256.oid == "1.2.840.10045.3.1.7"
    assert Curve.BRAINPOOL_P256R1.oid == "1.3.36.3.3.2.8.1.1.7"
    assert Curve("brainpoolP256r1") is Curve.BRAINPOOL_P256R1


@pytest.mark.parametrize("curve", list(Curve))
def test_generate_and_identify_curve(curve: Curve) -> None:
    key = generate_private_key(curve)
    assert Curve.of(key) is curve and Curve.of(key.public_key()) is curve


def test_default_curve_is_p256() -> None:
    assert isinstance(generate_private_key().curve, ec.SECP256R1)


@pytest.mark.parametrize("other", [ec.SECP384R1(), ec.SECP256K1(), ec.BrainpoolP384R1()])
def test_other_curves_are_not_allowed(other: ec.EllipticCurve) -> None:
    key = ec.generate_private_key(other)
    with pytest.raises(ValueError, match="not allowed"):
        Curve.of(key)
    with pytest.raises(ValueError):
        SoftwareKey("k", key)


@pytest.mark.parametrize("curve", list(Curve))
def test_software_key_signs_der_ecdsa_sha256(curve: Curve) -> None:
    key = SoftwareKey("gw-1", generate_private_key(curve))
    assert isinstance(key, SigningKey)
    assert key.name == "gw-1" and key.curve is curve
    signature = key.sign(b"reading")
    r, s = decode_dss_signature(signature)
    assert r > 0 and s > 0
    key.public_key().verify(signature, b"reading", ECDSA)
    with pytest.raises(InvalidSignature):
        key.public_key().verify(signature, b"readinG", ECDSA)
    assert "gw-1" in repr(key) and curve.value in repr(key)
    assert "private" not in repr(key).lower()


# -- key files -----------------------------------------------------------------------------------


def test_unencrypted_round_trip_mode_0600(tmp_path: Path) -> None:
    key = generate_private_key(Curve.BRAINPOOL_P256R1)
    path = tmp_path / "k.key"
    save_private_key(path, key, None)
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert same_key(load_private_key(path, None), key)
    assert [p.name for p in tmp_path.iterdir()] == ["k.key"]  # no temporary file left


@pytest.mark.parametrize("curve", list(Curve))
def test_encrypted_pkcs8_round_trip(tmp_path: Path, curve: Curve) -> None:
    key = generate_private_key(curve)
    path = tmp_path / "k.key"
    save_private_key(path, key, b"correct horse")
    data = path.read_bytes()
    assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert same_key(load_private_key(path, b"correct horse"), key)
    # an ordinary PKCS#8 reader opens it with the passphrase, and only with it
    loaded = serialization.load_pem_private_key(data, password=b"correct horse")
    assert isinstance(loaded, ec.EllipticCurvePrivateKey) and same_key(loaded, key)
    with pytest.raises((ValueError, TypeError)):
        serialization.load_pem_private_key(data, password=None)


def test_wrong_or_missing_passphrase_is_a_clear_error(tmp_path: Path) -> None:
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
    assert list(tmp_path.iterdir()) == []


def test_damaged_file_is_refused(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.key"
    damaged.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        load_private_key(damaged)
    good = tmp_path / "enc.key"
    save_private_key(good, generate_private_key(), b"pw")
    truncated = tmp_path / "truncated.key"
    truncated.write_bytes(good.read_bytes()[:200] + b"\n-----END ENCRYPTED PRIVATE KEY-----\n")
    with pytest.raises(KeyFileError, match="wrong passphrase or damaged"):
        load_private_key(truncated, b"pw")


def test_non_ec_key_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "ed.key"
    other.write_bytes(pem(ed25519.Ed25519PrivateKey.generate()))
    with pytest.raises(KeyFileError, match="not an EC private key"):
        load_private_key(other)


def test_ec_key_on_a_foreign_curve_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p384.key"
    path.write_bytes(pem(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(KeyFileError, match="secp384r1"):
        load_private_key(path)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_private_key(tmp_path / "absent.key")


# -- atomic writes -------------------------------------------------------------------------------


def test_overwrite_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    save_private_key(path, generate_private_key(), None)
    first_inode = path.stat().st_ino
    second = generate_private_key()
    save_private_key(path, second, None)
    assert same_key(load_private_key(path), second)
    assert path.stat().st_ino != first_inode  # a new file renamed over the old one
    assert [p.name for p in tmp_path.iterdir()] == ["k.key"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "data.pem"
    write_atomically(path, b"old", 0o644)

    def broken_replace(src: str, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, b"new", 0o644)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["data.pem"]


def test_temporary_file_is_never_readable_by_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modes: list[int] = []  # of each regular file while its data is being synced
    real_fsync = os.fsync

    def spying_fsync(fd: int) -> None:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):
            modes.append(stat.S_IMODE(info.st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spying_fsync)
    save_private_key(tmp_path / "k.key", generate_private_key(), None)
    write_atomically(tmp_path / "c.pem", b"certificate", 0o644)
    assert modes == [0o600, 0o600]
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "c.pem").stat().st_mode) == 0o644


# -- the file key store --------------------------------------------------------------------------


@pytest.mark.parametrize("curve", list(Curve))
def test_file_key_store_generate_and_load(tmp_path: Path, curve: Curve) -> None:
    store = FileKeyStore(tmp_path / "keys", b"pw")
    assert not store.exists("gw-1")
    key = store.generate("gw-1", curve)
    assert isinstance(key, SigningKey) and key.curve is curve and key.name == "gw-1"
    assert store.exists("gw-1")
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert store.path("gw-1").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    loaded = store.load("gw-1")
    assert loaded.public_key() == key.public_key()
    loaded.public_key().verify(key.sign(b"x"), b"x", ECDSA)


def test_file_key_store_refuses_taken_names_and_reports_missing_ones(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "keys")
    store.generate("gw-1", Curve.P256)
    with pytest.raises(FileExistsError):
        store.generate("gw-1", Curve.P256)
    with pytest.raises(KeyError, match="gw-2"):
        store.load("gw-2")


def test_file_key_store_save_and_wrong_passphrase(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "keys", b"pw")
    key = generate_private_key()
    store.save("gw-1", key)
    assert same_key(store.load("gw-1").private_key, key)
    with pytest.raises(KeyFileError):
        FileKeyStore(tmp_path / "keys", b"other").load("gw-1")
    with pytest.raises(KeyFileError):
        FileKeyStore(tmp_path / "keys", None).load("gw-1")
