"""Update packages: the attacks on a software update (TUF's list) that ``open_package``
refuses by itself, each with its reason code, on a real PKI."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import msgpack
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from download_support import (
    BASE,
    TAF1,
    TAF1_COMPONENT,
    TAF1_NAME,
    identification,
    opened_metadata,
    package,
    source_of,
    taf1_files,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from metrocloud.core.errors import Rejected
from metrocloud.core.messages import Envelope
from metrocloud.core.software import SoftwareId
from metrocloud.download.build import build_update
from metrocloud.download.package import (
    MAX_FILES,
    MAX_PACKAGE_BYTES,
    PackageFile,
    PackageMetadata,
    UpdatePackage,
    claimed,
    open_package,
    pack,
)
from metrocloud.pki import Identity, IdentityStore, Pki, Role, SubCa, TrustStore

VERSION = "2.1.0"
FILES = taf1_files(VERSION)

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

METADATA_PROPERTY = settings(PROPERTY, max_examples=50)


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def software() -> SoftwareId:
    return identification(TAF1_COMPONENT, VERSION, FILES)


@pytest.fixture(scope="module")
def raw(maker: Identity) -> bytes:
    """A correct package, built as a manufacturer builds it."""
    return build_update(maker, TAF1_COMPONENT, VERSION, 7, FILES)


@pytest.fixture(scope="module")
def meta(raw: bytes) -> PackageMetadata:
    return opened_metadata(raw)[1]


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdentityStore]:
    store = IdentityStore.open_local(tmp_path_factory.mktemp("other-pki"))
    yield store
    assert store.pki is not None
    store.pki.close()


def signed(signer: Identity, body: bytes) -> bytes:
    """``body`` in an envelope signed by ``signer``, whatever the body holds."""
    return Envelope(body, signer.certificate_der, signer.sign(body)).encode()


def refused(raw: bytes, trust: TrustStore, reason: str, **options: datetime) -> Rejected:
    with pytest.raises(Rejected) as info:
        open_package(raw, trust, **options)
    assert info.value.reason == reason, info.value
    return info.value


# -- the package as shipped ----------------------------------------------------------------------
def test_a_manufacturers_package_opens(
    raw: bytes, trust: TrustStore, software: SoftwareId, maker: Identity
) -> None:
    opened = open_package(raw, trust)
    assert isinstance(opened, UpdatePackage)
    assert opened.manufacturer == maker.common_name
    assert opened.files == FILES
    meta = opened.metadata
    assert (meta.component, meta.sequence) == (TAF1_COMPONENT, 7)
    assert meta.software == software == SoftwareId(TAF1_NAME, VERSION, software.checksum)
    assert meta.files == (PackageFile.of(TAF1, FILES[TAF1]),)
    assert claimed(raw) == (meta, maker.common_name)


# -- unsigned ----------------------------------------------------------------------------------
def test_bare_metadata_without_an_envelope_is_unsigned(
    meta: PackageMetadata, trust: TrustStore
) -> None:
    bare = pack(meta.encode(), FILES)
    error = refused(bare, trust, "unsigned-package")
    assert "signature" in error.detail
    assert claimed(bare) == (meta, "unknown")  # the logbook still learns what it claimed


def test_an_empty_signature_is_unsigned(
    meta: PackageMetadata, maker: Identity, trust: TrustStore
) -> None:
    body = meta.encode()
    refused(
        pack(Envelope(body, maker.certificate_der, b"").encode(), FILES), trust, "unsigned-package"
    )


def test_an_envelope_without_a_certificate_is_refused(
    meta: PackageMetadata, maker: Identity, trust: TrustStore
) -> None:
    body = meta.encode()
    raw = pack(Envelope(body, b"", maker.sign(body)).encode(), FILES)
    refused(raw, trust, "malformed-certificate")
    assert claimed(raw) == (meta, "unknown")


# -- wrongly signed ------------------------------------------------------------------------------
def test_a_signature_by_another_key_than_the_certificates(
    ids: IdentityStore, meta: PackageMetadata, maker: Identity, trust: TrustStore
) -> None:
    impostor = ids.identity("other-meters", Role.MANUFACTURER)
    body = meta.encode()
    forged = Envelope(body, maker.certificate_der, impostor.sign(body)).encode()
    refused(pack(forged, FILES), trust, "bad-signature")
    open_package(pack(signed(impostor, body), FILES), trust)  # its own certificate: fine


def test_a_signature_over_other_bytes(
    meta: PackageMetadata, maker: Identity, trust: TrustStore
) -> None:
    body = meta.encode()
    later = dataclasses.replace(meta, sequence=meta.sequence + 1).encode()
    reused = Envelope(later, maker.certificate_der, maker.sign(body)).encode()
    refused(pack(reused, FILES), trust, "bad-signature")
    spliced = Envelope(body, maker.certificate_der, maker.sign(body + b" ")).encode()
    refused(pack(spliced, FILES), trust, "bad-signature")


@pytest.mark.parametrize(
    "role", [Role.SERVICE, Role.RECEIVER, Role.AUTHORITY, Role.GATEWAY, Role.MARKET_PARTICIPANT]
)
def test_only_a_manufacturer_may_sign(
    role: Role, ids: IdentityStore, pki: Pki, meta: PackageMetadata
) -> None:
    signer = ids.identity(f"not-a-maker-{role.value}", role)
    raw = pack(signed(signer, meta.encode()), FILES)
    error = refused(raw, pki.trust_store(), "wrong-role")
    assert "manufacturer" in error.detail
    assert claimed(raw) == (meta, signer.common_name)


def test_a_manufacturer_of_another_pki_is_untrusted(
    other_pki: IdentityStore, meta: PackageMetadata, trust: TrustStore
) -> None:
    stranger = other_pki.identity("acme-meters", Role.MANUFACTURER)  # even the same name
    raw = pack(signed(stranger, meta.encode()), FILES)
    # Every metrocloud PKI names its sub-CAs alike: the issuer is found by name, and its
    # signature on the certificate does not hold.
    error = refused(raw, trust, "bad-certificate-signature")
    assert "acme-meters" in error.detail
    assert other_pki.pki is not None
    open_package(raw, other_pki.pki.trust_store())  # good in the PKI it belongs to


def test_a_certificate_from_an_unknown_ca_is_untrusted(
    maker: Identity, meta: PackageMetadata, trust: TrustStore
) -> None:
    """A manufacturer certificate from a CA outside metrocloud's PKI, for the maker's key."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme code signing CA")])
    now = datetime.now(timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(maker.certificate.subject)
        .issuer_name(ca_name)
        .public_key(maker.certificate.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(
            maker.certificate.extensions.get_extension_for_class(x509.KeyUsage).value, critical=True
        )
        .add_extension(
            maker.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value,
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    body = meta.encode()
    der = certificate.public_bytes(Encoding.DER)
    raw = pack(Envelope(body, der, maker.sign(body)).encode(), FILES)
    error = refused(raw, trust, "untrusted-issuer")
    assert "acme code signing CA" in error.detail


def test_a_revoked_manufacturer_is_refused_once_the_crl_says_so(
    ids: IdentityStore, pki: Pki, meta: PackageMetadata
) -> None:
    leaked = ids.identity("leaked-meters", Role.MANUFACTURER)
    raw = pack(signed(leaked, meta.encode()), FILES)
    held = pki.trust_store()
    assert open_package(raw, held).manufacturer == "leaked-meters"
    pki.revoke(leaked.certificate.serial_number)
    assert held.update_crl(pki.crl(SubCa.MARKET_PARTICIPANTS)) is True
    error = refused(raw, held, "certificate-revoked")
    assert "leaked-meters" in error.detail
    refused(raw, pki.trust_store(), "certificate-revoked")


def test_a_certificate_that_expired_is_refused(
    raw: bytes, maker: Identity, trust: TrustStore
) -> None:
    after = maker.certificate.not_valid_after_utc + timedelta(seconds=1)
    with pytest.raises(Rejected) as info:
        open_package(raw, trust, at=after)
    assert info.value.reason in {"certificate-expired", "crl-expired"}


# -- the files -----------------------------------------------------------------------------------
def test_a_flipped_byte_in_a_file_is_a_digest_mismatch(raw: bytes, trust: TrustStore) -> None:
    envelope, _, files = opened_metadata(raw)
    source = bytearray(files[TAF1])
    source[len(source) // 2] ^= 0x01
    error = refused(pack(envelope.encode(), {TAF1: bytes(source)}), trust, "digest-mismatch")
    assert TAF1 in error.detail


@pytest.mark.parametrize("change", [lambda s: s + b"\n", lambda s: s[:-1], lambda s: b""])
def test_a_changed_length_is_a_length_mismatch(
    raw: bytes, trust: TrustStore, change: Callable[[bytes], bytes]
) -> None:
    envelope, _, files = opened_metadata(raw)
    refused(pack(envelope.encode(), {TAF1: change(files[TAF1])}), trust, "length-mismatch")


def test_a_missing_file(meta: PackageMetadata, maker: Identity, trust: TrustStore) -> None:
    refused(pack(signed(maker, meta.encode()), {}), trust, "missing-file")
    two = dataclasses.replace(meta, files=(*meta.files, PackageFile.of(BASE, b"x = 1\n")))
    error = refused(pack(signed(maker, two.encode()), FILES), trust, "missing-file")
    assert BASE in error.detail


def test_an_unlisted_file(raw: bytes, trust: TrustStore) -> None:
    envelope, _, files = opened_metadata(raw)
    smuggled = {**files, BASE: b"PRICE_FACTOR = 0\n"}
    error = refused(pack(envelope.encode(), smuggled), trust, "unlisted-file")
    assert BASE in error.detail


# -- freshness ------------------------------------------------------------------------------------
def test_expired_metadata_is_refused_from_its_expiry_on(
    maker: Identity, trust: TrustStore, software: SoftwareId
) -> None:
    issued = datetime.now(timezone.utc).replace(microsecond=0)
    expires = issued + timedelta(hours=1)
    raw = package(
        maker, software, FILES, 8, issued_at=issued.isoformat(), expires=expires.isoformat()
    )
    open_package(raw, trust, at=expires - timedelta(seconds=1))
    error = refused(raw, trust, "expired-metadata", at=expires)
    assert expires.isoformat() in error.detail
    refused(raw, trust, "expired-metadata", at=expires + timedelta(days=1))


def test_metadata_expired_long_ago_is_refused_now(
    maker: Identity, trust: TrustStore, software: SoftwareId
) -> None:
    """A freeze: a stale, once valid statement is held back and replayed later."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    raw = build_update(
        maker,
        TAF1_COMPONENT,
        VERSION,
        9,
        FILES,
        valid_for=timedelta(hours=1),
        now=now - timedelta(hours=2),
    )
    assert opened_metadata(raw)[1].software == software
    refused(raw, trust, "expired-metadata")


# -- form ------------------------------------------------------------------------------------------
def test_non_canonical_metadata_is_refused_though_validly_signed(
    meta: PackageMetadata, maker: Identity, trust: TrustStore
) -> None:
    document = json.loads(meta.encode())
    spaced = json.dumps(document, sort_keys=True).encode()
    reordered = json.dumps(dict(reversed(document.items())), separators=(",", ":")).encode()
    escaped = (
        json.dumps(document, sort_keys=True, separators=(",", ":"))
        .replace("tariff-taf1", "tariff\\u002dtaf1")
        .encode()
    )
    for body in (spaced, reordered, escaped, meta.encode() + b"\n"):
        assert body != meta.encode() and json.loads(body) == document
        error = refused(pack(signed(maker, body), FILES), trust, "malformed-package")
        assert "canonical" in error.detail or "strict JSON" in error.detail


def test_a_non_canonical_envelope_is_refused(
    meta: PackageMetadata, maker: Identity, trust: TrustStore
) -> None:
    body = meta.encode()
    parts = {"sig": maker.sign(body), "cert": maker.certificate_der, "body": body, "v": 1}
    reordered = msgpack.packb(parts, use_bin_type=True)
    assert Envelope.decode(reordered).body == body
    error = refused(pack(reordered, FILES), trust, "malformed-package")
    assert "canonical" in error.detail


def test_an_oversize_package_is_refused_before_it_is_read(
    maker: Identity, software: SoftwareId, trust: TrustStore
) -> None:
    big = {TAF1: FILES[TAF1] + b"#" * (MAX_PACKAGE_BYTES - len(FILES[TAF1]))}
    raw = package(maker, software, big, 10)  # correctly signed, only too big
    assert len(raw) > MAX_PACKAGE_BYTES
    error = refused(raw, trust, "malformed-package")
    assert str(MAX_PACKAGE_BYTES) in error.detail
    assert claimed(raw) == (None, "unknown")


def test_too_many_files_are_refused(raw: bytes, trust: TrustStore) -> None:
    envelope, _, files = opened_metadata(raw)
    many = {**files, **{f"metrocloud.x{n}": b"" for n in range(MAX_FILES)}}
    refused(pack(envelope.encode(), many), trust, "malformed-package")


GARBAGE = [
    b"",
    b"\x00",
    b"garbage",
    b"\xc1",
    bytes(range(256)),
    msgpack.packb([1, b"metadata", {}]),
    msgpack.packb({"v": 1, "metadata": b"", "files": {}, "more": 1}),
    msgpack.packb({"v": 2, "metadata": b"", "files": {}}),
    msgpack.packb({"v": True, "metadata": b"", "files": {}}),
    msgpack.packb({"v": 1, "metadata": "text", "files": {}}),
    msgpack.packb({"v": 1, "metadata": b"", "files": []}),
    msgpack.packb({"v": 1, "metadata": b"", "files": {"metrocloud.x": "text"}}),
    msgpack.packb({"v": 1, "metadata": b"", "files": {}}) + b"\x00",
]


@pytest.mark.parametrize("raw", GARBAGE)
def test_garbage_is_malformed(raw: bytes, trust: TrustStore) -> None:
    refused(raw, trust, "malformed-package")
    assert claimed(raw) == (None, "unknown")


def test_metadata_that_is_not_package_metadata(
    maker: Identity, meta: PackageMetadata, trust: TrustStore
) -> None:
    document = json.loads(meta.encode())
    one_file = [{"module": "os", "sha256": "0" * 64, "length": 1}]
    bad_documents: list[object] = [
        [],
        {},
        {**document, "kind": "approved-identifications"},
        {**document, "v": 2},
        {**document, "sequence": 0},
        {**document, "sequence": 1.5},
        {**document, "checksum": "AB" * 32},
        {**document, "expires": "2031-01-01T00:00:00"},
        {**document, "files": []},
        {**document, "files": one_file},
        {**document, "extra": 1},
    ]
    for bad in bad_documents:
        compact = json.dumps(bad, sort_keys=True, separators=(",", ":")).encode()
        refused(pack(signed(maker, compact), FILES), trust, "malformed-package")


# -- what a refused package claims ----------------------------------------------------------------
def _flip(data: bytes, at: int, mask: int) -> bytes:
    changed = bytearray(data)
    changed[at] ^= mask
    return bytes(changed)


def test_claimed_reads_a_certificate_that_is_no_x509_version(
    meta: PackageMetadata, maker: Identity, trust: TrustStore
) -> None:
    """Regression: cryptography raises ``InvalidVersion`` (no ValueError) for it."""
    der = maker.certificate_der
    version = der.index(b"\xa0\x03\x02\x01\x02") + 4  # [0] INTEGER 2: X.509 v3
    body = meta.encode()
    raw = pack(Envelope(body, _flip(der, version, 0x01), maker.sign(body)).encode(), FILES)
    assert claimed(raw) == (meta, "unknown")
    refused(raw, trust, "malformed-certificate")


CRYPTOGRAPHY_WARNINGS = pytest.mark.filterwarnings(
    "ignore::cryptography.utils.CryptographyDeprecationWarning"
)


@CRYPTOGRAPHY_WARNINGS
def test_claimed_survives_every_flipped_bit_of_the_certificate(
    meta: PackageMetadata, maker: Identity
) -> None:
    """Regression: a flip in the subject's CN made cryptography raise ``TypeError``."""
    der, body = maker.certificate_der, meta.encode()
    names = set()
    for at in range(len(der)):
        for bit in range(8):
            envelope = Envelope(body, _flip(der, at, 1 << bit), b"")
            found, by = claimed(pack(envelope.encode(), FILES))
            assert found == meta
            names.add(by)
    assert {"unknown", maker.common_name} <= names


# -- properties ------------------------------------------------------------------------------------
def _never_raises_but_rejected(raw: bytes, trust: TrustStore) -> UpdatePackage | None:
    try:
        return open_package(raw, trust)
    except Rejected:
        return None


@PROPERTY
@given(st.binary(max_size=512))
def test_arbitrary_bytes_are_rejected(trust: TrustStore, data: bytes) -> None:
    assert _never_raises_but_rejected(data, trust) is None
    assert claimed(data)[1] == "unknown"


@CRYPTOGRAPHY_WARNINGS
@PROPERTY
@given(data=st.data())
def test_a_flipped_byte_is_never_accepted(
    raw: bytes, trust: TrustStore, data: st.DataObject
) -> None:
    at = data.draw(st.integers(0, len(raw) - 1), label="at")
    mask = data.draw(st.integers(0, 255), label="mask")
    flipped = bytearray(raw)
    flipped[at] ^= mask
    opened = _never_raises_but_rejected(bytes(flipped), trust)
    if opened is not None:
        assert bytes(flipped) == raw  # only the flip that changes nothing
    else:
        assert mask != 0
    metadata, by = claimed(bytes(flipped))
    assert metadata is None or isinstance(metadata, PackageMetadata)
    assert isinstance(by, str)


@CRYPTOGRAPHY_WARNINGS
@PROPERTY
@given(data=st.data())
def test_a_flipped_byte_in_the_metadata_or_a_file_is_refused(
    raw: bytes, trust: TrustStore, data: st.DataObject
) -> None:
    """Flips aimed past the container: inside the body, certificate, signature, file."""
    envelope, _, files = opened_metadata(raw)
    part = data.draw(st.sampled_from(["body", "certificate", "signature", "file"]))
    target = files[TAF1] if part == "file" else getattr(envelope, part)
    at = data.draw(st.integers(0, len(target) - 1))
    mask = data.draw(st.integers(1, 255))
    changed = bytearray(target)
    changed[at] ^= mask
    if part == "file":
        mutated = pack(envelope.encode(), {TAF1: bytes(changed)})
    else:
        parts = {"body": envelope.body, "certificate": envelope.certificate}
        parts["signature"] = envelope.signature
        parts[part] = bytes(changed)
        mutated = pack(Envelope(**parts).encode(), files)
    assert _never_raises_but_rejected(mutated, trust) is None
    claimed(mutated)


_PARTS = st.binary(max_size=300)


@PROPERTY
@given(
    body=_PARTS,
    certificate=_PARTS,
    signature=_PARTS,
    files=st.dictionaries(st.text(max_size=20), st.binary(max_size=20), max_size=3),
)
def test_arbitrary_envelopes_in_a_container_are_rejected(
    trust: TrustStore,
    maker: Identity,
    body: bytes,
    certificate: bytes,
    signature: bytes,
    files: dict[str, bytes],
) -> None:
    for cert in (certificate, maker.certificate_der):
        raw = pack(Envelope(body, cert, signature).encode(), files)
        assert _never_raises_but_rejected(raw, trust) is None
        metadata, by = claimed(raw)
        assert metadata is None or metadata.encode() == body
        if cert == maker.certificate_der:
            assert by == maker.common_name
    raw = pack(body, files)
    assert _never_raises_but_rejected(raw, trust) is None
    claimed(raw)


# Printable by construction (letters, digits, punctuation, symbols, the space), so that the
# filter below rarely discards a draw: hypothesis gives up on tests that filter too much.
_TEXT = st.text(
    st.characters(codec="utf-8", categories=("L", "N", "P", "S"), include_characters=" "),
    min_size=1,
    max_size=80,
).filter(lambda s: s.isprintable() and s == s.strip())
_MODULES = st.from_regex(r"metrocloud(\.[a-z_][a-z0-9_]{0,12}){1,3}", fullmatch=True)
_HEX = st.text("0123456789abcdef", min_size=64, max_size=64)
_MOMENTS = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.builds(
        lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-1439, 1439)
    ),
).map(datetime.isoformat)


@st.composite
def metadatas(draw: st.DrawFn) -> PackageMetadata:
    modules = draw(st.lists(_MODULES, min_size=1, max_size=5, unique=True))
    files = tuple(
        PackageFile(m, draw(_HEX), draw(st.integers(0, MAX_PACKAGE_BYTES))) for m in modules
    )
    return PackageMetadata(
        component=draw(_TEXT),
        name=draw(_TEXT),
        version=draw(_TEXT),
        sequence=draw(st.integers(1, 2**63 - 1)),
        issued_at=draw(_MOMENTS),
        expires=draw(_MOMENTS),
        checksum=draw(_HEX),
        files=files,
    )


@METADATA_PROPERTY
@given(metadatas())
def test_metadata_round_trips(meta: PackageMetadata) -> None:
    body = meta.encode()
    again = PackageMetadata.decode(body)
    assert again == meta
    assert again.encode() == body
    assert [f.module for f in again.files] == sorted(f.module for f in meta.files)


@METADATA_PROPERTY
@given(metadatas(), st.sampled_from(["pretty", "ascii", "reversed"]))
def test_another_encoding_of_the_same_metadata_does_not_decode(
    meta: PackageMetadata, how: str
) -> None:
    document = json.loads(meta.encode())
    if how == "pretty":
        other = json.dumps(document, sort_keys=True, indent=1, ensure_ascii=False)
    elif how == "ascii":
        other = json.dumps(document, sort_keys=True, separators=(",", ":"))
    else:
        other = json.dumps(dict(reversed(document.items())), separators=(",", ":"))
    assume(other.encode() != meta.encode())
    with pytest.raises(Rejected) as info:
        PackageMetadata.decode(other.encode())
    assert info.value.reason == "malformed-package"


@PROPERTY
@given(st.binary(max_size=400))
def test_decoding_arbitrary_metadata_raises_only_rejected(body: bytes) -> None:
    try:
        PackageMetadata.decode(body)
    except Rejected as exc:
        assert exc.reason == "malformed-package"


def test_the_package_tests_ship_real_code() -> None:
    """The source shipped is the installed taf1, changed in its version only."""
    installed = source_of(TAF1)
    assert FILES[TAF1] != installed
    assert FILES[TAF1].replace(b'version = "2.1.0"', b'version = "2.0.0"') == installed
