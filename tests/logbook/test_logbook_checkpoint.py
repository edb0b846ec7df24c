"""Checkpoints in the C2SP note format: exact bytes, round trips, key ids, and every kind of
tampering, foreign key and wrong certificate refused with its reason."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrocloud.core.errors import Rejected
from metrocloud.logbook.checkpoint import (
    MAX_SIGNATURES,
    Checkpoint,
    SignatureLine,
    add_signature,
    append_lines,
    open_checkpoint,
    sign_checkpoint,
)
from metrocloud.logbook.merkle import EMPTY_ROOT
from metrocloud.pki.identity import Identity, IdentityStore
from metrocloud.pki.roles import Role
from metrocloud.pki.validate import TrustStore

LOG = "metrocloud.example/logbook"
ROOT = bytes(range(32))
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The example of C2SP tlog-checkpoint (an Ed25519 signature, read here for its form only).
SPEC_NOTE = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "\u2014 example.com/behind-the-sofa "
    "Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
)


@dataclass(frozen=True)
class Parties:
    trust: TrustStore
    log: Identity
    rotated: Identity
    authority: Identity
    foreign: Identity


@pytest.fixture(scope="module")
def parties(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parties]:
    ids = IdentityStore.open_local(tmp_path_factory.mktemp("pki"))
    other = IdentityStore.open_local(tmp_path_factory.mktemp("other-pki"))
    yield Parties(
        ids.trust,
        ids.identity("logbook", Role.SERVICE),
        ids.identity("logbook-next", Role.SERVICE),
        ids.identity("inspector", Role.AUTHORITY),
        other.identity("logbook", Role.SERVICE),
    )
    for store in (ids, other):
        assert store.pki is not None
        store.pki.close()


def open_as_log(note: str, parties: Parties, identity: Identity | None = None) -> Checkpoint:
    cert = (identity or parties.log).certificate
    return open_checkpoint(note, cert, parties.trust, log_name=LOG)


def reason(note: str, parties: Parties, identity: Identity | None = None) -> str:
    with pytest.raises(Rejected) as info:
        open_as_log(note, parties, identity)
    return info.value.reason


def replace_line(note: str, old: SignatureLine, new: SignatureLine) -> str:
    assert old.line() in note
    return note.replace(old.line(), new.line())


def expected_key_id(name: str, identity: Identity) -> bytes:
    spki = identity.key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    material = name.encode() + b"\n\xffmetrocloud/note-ecdsa-sha256\n" + spki
    return hashlib.sha256(material).digest()[:4]


# -- the format ---------------------------------------------------------------------------
def test_body_is_exactly_the_three_lines_of_the_spec() -> None:
    root = base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    checkpoint = Checkpoint("example.com/behind-the-sofa", 20852163, root)
    assert checkpoint.body() == (
        b"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )
    assert Checkpoint("o", 0, EMPTY_ROOT).body() == (
        b"o\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    )


def test_the_spec_example_parses_and_its_line_renders_back() -> None:
    checkpoint, lines = Checkpoint.parse(SPEC_NOTE)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert checkpoint.body().decode() + "\n" + lines[0].line() == SPEC_NOTE
    assert lines[0].name == "example.com/behind-the-sofa" and len(lines[0].signature) == 64


def test_signed_note_layout_key_id_and_signature(parties: Parties) -> None:
    checkpoint = Checkpoint(LOG, 5, ROOT)
    note = sign_checkpoint(checkpoint, LOG, parties.log.key)
    body = checkpoint.body().decode()
    assert note.startswith(body + "\n\u2014 " + LOG + " ") and note.endswith("\n")
    assert note.count("\n") == 5
    raw = base64.b64decode(note.rstrip("\n").rsplit(" ", 1)[1], validate=True)
    assert raw[:4] == expected_key_id(LOG, parties.log)
    # The rest is a plain DER ECDSA/SHA-256 signature over the body bytes.
    parties.log.key.public_key().verify(raw[4:], body.encode(), ec.ECDSA(hashes.SHA256()))


origins = st.from_regex(r"[a-z0-9.]{1,20}(/[A-Za-z0-9_\-]{1,12}){0,2}", fullmatch=True)


@PROPERTY
@given(origin=origins, size=st.integers(0, 2**63 - 1), root=st.binary(min_size=32, max_size=32))
def test_parse_inverts_sign(parties: Parties, origin: str, size: int, root: bytes) -> None:
    checkpoint = Checkpoint(origin, size, EMPTY_ROOT if size == 0 else root)
    note = sign_checkpoint(checkpoint, origin, parties.log.key)
    parsed, lines = Checkpoint.parse(note)
    assert parsed == checkpoint
    assert [line.name for line in lines] == [origin]
    assert checkpoint.body().decode() + "\n" + lines[0].line() == note
    cert = parties.log.certificate
    assert open_checkpoint(note, cert, parties.trust, log_name=origin) == checkpoint


# -- tampering ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change",
    [
        lambda c: Checkpoint(c.origin, c.size + 1, c.root),
        lambda c: Checkpoint(c.origin, c.size - 1, c.root),
        lambda c: Checkpoint(c.origin, c.size, bytes([c.root[0] ^ 1]) + c.root[1:]),
        lambda c: Checkpoint(c.origin, c.size, c.root[:31] + bytes([c.root[31] ^ 0x80])),
    ],
    ids=["size+1", "size-1", "root-first-bit", "root-last-bit"],
)
def test_changed_body_breaks_the_signature(parties: Parties, change: object) -> None:
    checkpoint = Checkpoint(LOG, 77, ROOT)
    note = sign_checkpoint(checkpoint, LOG, parties.log.key)
    assert open_as_log(note, parties) == checkpoint
    _, lines = Checkpoint.parse(note)
    changed = change(checkpoint)  # type: ignore[operator]
    forged = changed.body().decode() + "\n" + lines[0].line()
    assert reason(forged, parties) == "bad-log-signature"


def test_changed_origin_is_refused(parties: Parties) -> None:
    note = sign_checkpoint(Checkpoint(LOG, 3, ROOT), LOG, parties.log.key)
    forged = note.replace(LOG + "\n", LOG + "2\n", 1)
    assert reason(forged, parties) == "wrong-origin"
    # Even when the reader expects that origin, the log's signature does not cover it.
    cert = parties.log.certificate
    with pytest.raises(Rejected) as info:
        open_checkpoint(forged, cert, parties.trust, log_name=LOG, origin=LOG + "2")
    assert info.value.reason == "bad-log-signature"


@pytest.fixture(scope="module")
def note(parties: Parties) -> str:
    """One signed note for the module (ECDSA signatures differ in length from one to the next,
    and hypothesis needs the same note each time)."""
    return sign_checkpoint(Checkpoint(LOG, 1234, ROOT), LOG, parties.log.key)


@PROPERTY
@given(data=st.data())
def test_any_flipped_signature_bit_is_refused(
    parties: Parties, note: str, data: st.DataObject
) -> None:
    _, (line,) = Checkpoint.parse(note)
    index = data.draw(st.integers(0, len(line.signature) - 1), label="byte")
    bit = data.draw(st.integers(0, 7), label="bit")
    flipped = bytearray(line.signature)
    flipped[index] ^= 1 << bit
    forged = replace_line(note, line, SignatureLine(line.name, line.key_id, bytes(flipped)))
    assert reason(forged, parties) == "bad-log-signature"


@PROPERTY
@given(data=st.data())
def test_any_changed_character_is_refused(parties: Parties, note: str, data: st.DataObject) -> None:
    assert open_as_log(note, parties).size == 1234
    index = data.draw(st.integers(0, len(note) - 1), label="position")
    alphabet = st.sampled_from("aZ09+/= \n\u2014.")
    new = data.draw(alphabet.filter(lambda c: c != note[index]), label="character")
    with pytest.raises(Rejected):
        open_as_log(note[:index] + new + note[index + 1 :], parties)


def test_flipped_key_id_makes_the_line_unknown(parties: Parties) -> None:
    note = sign_checkpoint(Checkpoint(LOG, 8, ROOT), LOG, parties.log.key)
    _, (line,) = Checkpoint.parse(note)
    other_id = bytes([line.key_id[0] ^ 1]) + line.key_id[1:]
    forged = replace_line(note, line, SignatureLine(LOG, other_id, line.signature))
    assert reason(forged, parties) == "missing-log-signature"


# -- keys and certificates ----------------------------------------------------------------
def test_key_of_another_pki_is_refused(parties: Parties) -> None:
    note = sign_checkpoint(Checkpoint(LOG, 8, ROOT), LOG, parties.foreign.key)
    # Its own certificate is not trusted here ...
    # (its sub-CA has the name of ours, but not its key)
    assert reason(note, parties, parties.foreign) == "bad-certificate-signature"
    # ... and against the real log certificate its line is from an unknown key.
    assert reason(note, parties) == "missing-log-signature"
    # Relabelled with the log key's id, the signature itself fails.
    _, (line,) = Checkpoint.parse(note)
    kid = expected_key_id(LOG, parties.log)
    forged = replace_line(note, line, SignatureLine(LOG, kid, line.signature))
    assert reason(forged, parties) == "bad-log-signature"


def test_certificate_of_the_wrong_role_is_refused(parties: Parties) -> None:
    note = sign_checkpoint(Checkpoint(LOG, 8, ROOT), LOG, parties.authority.key)
    assert reason(note, parties, parties.authority) == "wrong-role"


def test_signature_under_another_name_is_missing(parties: Parties) -> None:
    note = sign_checkpoint(Checkpoint(LOG, 8, ROOT), "someone.example/else", parties.log.key)
    assert reason(note, parties) == "missing-log-signature"


def test_added_signature_for_key_rotation(parties: Parties) -> None:
    checkpoint = Checkpoint(LOG, 21, ROOT)
    note = add_signature(
        sign_checkpoint(checkpoint, LOG, parties.log.key), LOG, parties.rotated.key
    )
    _, lines = Checkpoint.parse(note)
    assert [line.name for line in lines] == [LOG, LOG]
    assert lines[0].key_id != lines[1].key_id
    assert open_as_log(note, parties) == checkpoint
    assert open_as_log(note, parties, parties.rotated) == checkpoint


def test_one_bad_line_from_the_log_key_spoils_the_note(parties: Parties) -> None:
    checkpoint = Checkpoint(LOG, 21, ROOT)
    good = sign_checkpoint(checkpoint, LOG, parties.log.key)
    _, (line,) = Checkpoint.parse(good)
    bad = SignatureLine(LOG, line.key_id, line.signature[:-1] + bytes([line.signature[-1] ^ 1]))
    assert reason(append_lines(good, [bad.line()]), parties) == "bad-log-signature"


def test_unknown_lines_are_ignored(parties: Parties) -> None:
    checkpoint = Checkpoint(LOG, 21, ROOT)
    note = sign_checkpoint(checkpoint, LOG, parties.log.key)
    stranger = SignatureLine("witness.example/w9", b"\x00\x01\x02\x03", b"\xff" * 70)
    assert open_as_log(append_lines(note, [stranger.line()]), parties) == checkpoint


# -- malformed notes ----------------------------------------------------------------------
GOOD_ROOT = base64.b64encode(ROOT).decode()
LINE = "\u2014 " + LOG + " " + base64.b64encode(b"\x01\x02\x03\x04" + b"s" * 70).decode() + "\n"


@pytest.mark.parametrize(
    "note",
    [
        f"{LOG}\n5\n{GOOD_ROOT}\n\n{LINE}".rstrip("\n"),  # no final newline
        f"{LOG}\n5\n{GOOD_ROOT}\n{LINE}",  # no empty line
        f"{LOG}\n5\n{GOOD_ROOT}\n\n",  # no signature
        f"{LOG}\n5\n{GOOD_ROOT}\nextension\n\n{LINE}",  # extension line
        f"{LOG}\n5\n\n{LINE}",  # no root
        f"{LOG}\n05\n{GOOD_ROOT}\n\n{LINE}",  # leading zero
        f"{LOG}\n+5\n{GOOD_ROOT}\n\n{LINE}",  # sign
        f"{LOG}\n\u0665\n{GOOD_ROOT}\n\n{LINE}",  # a non-ASCII digit
        f"{LOG}\n{2**63}\n{GOOD_ROOT}\n\n{LINE}",  # too large
        f"{LOG}\n5\n{GOOD_ROOT[:-1]}\n\n{LINE}",  # truncated base64
        f"{LOG}\n5\n{GOOD_ROOT[:-2]}B=\n\n{LINE}",  # non-canonical base64
        f"{LOG}\n5\n{base64.b64encode(ROOT[:31]).decode()}\n\n{LINE}",  # 31-byte root
        f"{LOG}\n0\n{GOOD_ROOT}\n\n{LINE}",  # empty tree with another root
        f"a log\n5\n{GOOD_ROOT}\n\n{LINE}",  # space in origin
        f"\n5\n{GOOD_ROOT}\n\n{LINE}",  # empty origin
        f"{LOG}\t\n5\n{GOOD_ROOT}\n\n{LINE}",  # control character
        f"{LOG}\n5\n{GOOD_ROOT}\n\n- {LOG} AAAAAAA=\n",  # no em dash
        f"{LOG}\n5\n{GOOD_ROOT}\n\n\u2014 {LOG}  AAAAAAA=\n",  # two spaces
        f"{LOG}\n5\n{GOOD_ROOT}\n\n\u2014 {LOG} AAAA\n",  # only a key id
        f"{LOG}\n5\n{GOOD_ROOT}\n\n" + LINE * (MAX_SIGNATURES + 1),  # too many
        f"{LOG}\ud800\n5\n{GOOD_ROOT}\n\n{LINE}",  # not UTF-8
    ],
)
def test_malformed_notes_are_refused(parties: Parties, note: str) -> None:
    assert reason(note, parties) == "malformed-checkpoint"


def test_sixteen_signatures_are_read() -> None:
    note = f"{LOG}\n5\n{GOOD_ROOT}\n\n" + LINE * 16
    assert len(Checkpoint.parse(note)[1]) == 16


@pytest.mark.parametrize(
    ("origin", "size", "root"),
    [("", 1, ROOT), ("a b", 1, ROOT), ("a+b", 1, ROOT), ("o", -1, ROOT), ("o", 1, ROOT[:31])],
)
def test_invalid_checkpoints_cannot_be_made(origin: str, size: int, root: bytes) -> None:
    with pytest.raises(ValueError):
        Checkpoint(origin, size, root)
