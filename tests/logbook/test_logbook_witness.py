"""Witnesses cosign a growing log and refuse rollbacks, forks and inconsistent proofs; clients
count cosignatures from distinct configured witnesses up to a quorum."""

from __future__ import annotations

import random
import stat
import struct
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from logbook_samples import MemoryLog

from metrocloud.core.errors import Rejected
from metrocloud.logbook.checkpoint import (
    Checkpoint,
    SignatureLine,
    append_lines,
)
from metrocloud.logbook.witness import (
    Witness,
    cosignature_key_id,
    cosigned_message,
    verify_cosigned,
)
from metrocloud.pki.identity import Identity, IdentityStore
from metrocloud.pki.keys import Curve
from metrocloud.pki.roles import Role
from metrocloud.pki.validate import TrustStore

LOG = "metrocloud.example/logbook"
T0 = int(time.time())  # the witnesses' clock in most tests
PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Parties:
    trust: TrustStore
    log: Identity
    w1: Identity
    w2: Identity  # on brainpoolP256r1
    w3: Identity  # not configured at the clients
    service: Identity  # a valid certificate of the wrong role for a witness
    foreign_log: Identity  # the log's name in another PKI

    def witnesses(self) -> dict[str, x509.Certificate]:
        return {"w1": self.w1.certificate, "w2": self.w2.certificate}


@pytest.fixture(scope="module")
def parties(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parties]:
    ids = IdentityStore.open_local(tmp_path_factory.mktemp("pki"))
    other = IdentityStore.open_local(tmp_path_factory.mktemp("other-pki"))
    ids.keys.generate("w2", Curve.BRAINPOOL_P256R1)
    yield Parties(
        ids.trust,
        ids.identity("logbook", Role.SERVICE),
        ids.identity("w1", Role.AUTHORITY),
        ids.identity("w2", Role.AUTHORITY),
        ids.identity("w3", Role.AUTHORITY),
        ids.identity("svc", Role.SERVICE),
        other.identity("logbook", Role.SERVICE),
    )
    for store in (ids, other):
        assert store.pki is not None
        store.pki.close()


@dataclass
class Log(MemoryLog):
    origin: str = LOG


def witness(
    parties: Parties, identity: Identity, path: Path, clock: float = T0, **kwargs: object
) -> Witness:
    return Witness(
        identity,
        path,
        parties.log.certificate,
        parties.trust,
        log_name=LOG,
        clock=lambda: clock,
        **kwargs,  # type: ignore[arg-type]
    )


def submit(w: Witness, log: Log, size: int | None = None) -> str:
    """Cosign ``log`` at ``size`` with the proof from the witness's head, as a log would."""
    head = w.head()
    old = 0 if head is None else head.size
    return w.cosign(log.note(size), log.proof(old, size), old_size=old)


def check(
    parties: Parties,
    note: str,
    quorum: int = 2,
    witnesses: dict[str, x509.Certificate] | None = None,
    **kwargs: object,
) -> Checkpoint:
    return verify_cosigned(
        note,
        parties.log.certificate,
        parties.witnesses() if witnesses is None else witnesses,
        quorum,
        parties.trust,
        log_name=LOG,
        **kwargs,  # type: ignore[arg-type]
    )


def refusal(parties: Parties, note: str, **kwargs: object) -> Rejected:
    with pytest.raises(Rejected) as info:
        check(parties, note, **kwargs)
    return info.value


def refused(w: Witness, note: str, proof: list[bytes], **kwargs: object) -> Rejected:
    with pytest.raises(Rejected) as info:
        w.cosign(note, proof, **kwargs)  # type: ignore[arg-type]
    return info.value


@pytest.fixture
def log(parties: Parties) -> Log:
    grown = Log(parties.log)
    grown.grow(10, random.Random(1))
    return grown


@pytest.fixture
def w1(parties: Parties, tmp_path: Path) -> Witness:
    return witness(parties, parties.w1, tmp_path / "w1" / "state.sqlite")


@pytest.fixture
def w2(parties: Parties, tmp_path: Path) -> Witness:
    return witness(parties, parties.w2, tmp_path / "w2" / "state.sqlite")


def tamper(line: str, index: int) -> str:
    parsed = SignatureLine.parse(line.rstrip("\n"))
    signature = bytearray(parsed.signature)
    signature[index] ^= 0x01
    return SignatureLine(parsed.name, parsed.key_id, bytes(signature)).line()


# -- a growing log ------------------------------------------------------------------------
@PROPERTY
@given(steps=st.lists(st.integers(0, 40), min_size=1, max_size=6), seed=st.integers(0, 2**32))
def test_two_witnesses_cosign_a_growing_log(parties: Parties, steps: list[int], seed: int) -> None:
    rng = random.Random(seed)
    log = Log(parties.log)
    with tempfile.TemporaryDirectory() as tmp:
        w1 = witness(parties, parties.w1, Path(tmp) / "w1.sqlite")
        w2 = witness(parties, parties.w2, Path(tmp) / "w2.sqlite")
        for grow in steps:
            log.grow(grow, rng)
            note = log.note()
            lines = [submit(w1, log), submit(w2, log)]
            assert w1.head() == w2.head() == log.checkpoint()
            both = append_lines(note, lines)
            assert check(parties, both) == log.checkpoint()
            only_w2 = append_lines(note, lines[1:])
            assert check(parties, only_w2, quorum=1) == log.checkpoint()
            missing = refusal(parties, only_w2)
            assert missing.reason == "missing-cosignature"
            assert "w1 (no cosignature)" in missing.detail and "w2" not in missing.detail
        assert w1.evidence() == w2.evidence() == []


def test_cosignature_line_format(parties: Parties, w1: Witness, log: Log) -> None:
    note = log.note()
    line = w1.cosign(note, [])
    parsed = SignatureLine.parse(line.rstrip("\n"))
    assert line.startswith("\u2014 w1 ") and line.endswith("\n") and line.count("\n") == 1
    assert parsed.key_id == cosignature_key_id("w1", parties.w1.certificate)
    (timestamp,) = struct.unpack(">Q", parsed.signature[:8])
    assert timestamp == T0
    message = cosigned_message(log.checkpoint(), T0)
    assert message == b"cosignature/v1\ntime %d\n" % T0 + log.checkpoint().body()
    public_key = parties.w1.key.public_key()
    public_key.verify(parsed.signature[8:], message, ec.ECDSA(hashes.SHA256()))


# -- clients ------------------------------------------------------------------------------
def test_quorum_two_needs_both(parties: Parties, w1: Witness, w2: Witness, log: Log) -> None:
    note = log.note()
    l1, l2 = w1.cosign(note, []), w2.cosign(note, [])
    assert check(parties, append_lines(note, [l1, l2])) == log.checkpoint()
    assert check(parties, append_lines(note, [l2, l1])) == log.checkpoint()
    one = refusal(parties, append_lines(note, [l1]))
    assert one.reason == "missing-cosignature"
    assert "1 of 2" in one.detail and "w2 (no cosignature)" in one.detail
    # The same witness twice is one witness.
    twice = refusal(parties, append_lines(note, [l1, w1.cosign(note, [])]))
    assert twice.reason == "missing-cosignature" and "1 of 2" in twice.detail
    none = refusal(parties, note)
    assert none.reason == "missing-cosignature" and "0 of 2" in none.detail


@pytest.mark.parametrize("index", [0, 7, 8, 20, -1], ids=["time", "time-end", "sig", "mid", "end"])
def test_tampered_cosignature_is_refused(
    parties: Parties, w1: Witness, w2: Witness, log: Log, index: int
) -> None:
    note = log.note()
    l1, l2 = w1.cosign(note, []), w2.cosign(note, [])
    bad = refusal(parties, append_lines(note, [l1, tamper(l2, index)]))
    assert bad.reason == "bad-cosignature" and "w2" in bad.detail
    # One bad line spoils the note even when the quorum is reached without it.
    bad = refusal(parties, append_lines(note, [l1, l2, tamper(l1, index)]), quorum=1)
    assert bad.reason == "bad-cosignature" and "w1" in bad.detail


def test_truncated_cosignature_is_refused(parties: Parties, w1: Witness, log: Log) -> None:
    note = log.note()
    line = SignatureLine.parse(w1.cosign(note, []).rstrip("\n"))
    for keep in (1, 8, 9):
        short = SignatureLine("w1", line.key_id, line.signature[:keep]).line()
        bad = refusal(parties, append_lines(note, [short]), quorum=1)
        assert bad.reason == "bad-cosignature" and "w1" in bad.detail


def test_cosignature_of_another_head_does_not_carry_over(
    parties: Parties, w1: Witness, w2: Witness, log: Log
) -> None:
    old_lines = [submit(w1, log, 6), submit(w2, log, 6)]
    moved = refusal(parties, append_lines(log.note(), old_lines))
    assert moved.reason == "bad-cosignature"


def test_unknown_lines_are_ignored(
    parties: Parties, tmp_path: Path, w1: Witness, w2: Witness, log: Log
) -> None:
    note = log.note()
    w3 = witness(parties, parties.w3, tmp_path / "w3.sqlite")
    lines = [w1.cosign(note, []), w2.cosign(note, [])]
    strangers = [
        w3.cosign(note, []),  # a witness the client does not know
        SignatureLine("w9", b"1234", b"\x00" * 80).line(),  # junk from an unknown name
        SignatureLine("w1", b"1234", b"\x00" * 80).line(),  # junk from w1's name, other key id
        tamper(w3.cosign(note, []), 20),  # a bad line from an unknown witness
    ]
    assert check(parties, append_lines(note, strangers + lines)) == log.checkpoint()
    assert refusal(parties, append_lines(note, strangers + lines[:1])).reason == (
        "missing-cosignature"
    )
    # w3 counts for a client that trusts it.
    config = {**parties.witnesses(), "w3": parties.w3.certificate}
    assert check(parties, append_lines(note, [*strangers[:1], *lines[:1]]), witnesses=config)


def test_witness_certificate_of_wrong_role_does_not_count(
    parties: Parties, w1: Witness, log: Log
) -> None:
    note = log.note()
    # A service key makes a cosignature of the right form and key id ...
    timestamp = T0
    sig = parties.service.sign(cosigned_message(log.checkpoint(), timestamp))
    kid = cosignature_key_id("svc", parties.service.certificate)
    forged = SignatureLine("svc", kid, struct.pack(">Q", timestamp) + sig).line()
    config = {"w1": parties.w1.certificate, "svc": parties.service.certificate}
    cosigned = append_lines(note, [w1.cosign(note, []), forged])
    # ... but its certificate is no authority's, so the client does not count it.
    missing = refusal(parties, cosigned, witnesses=config)
    assert missing.reason == "missing-cosignature"
    assert "svc (certificate refused (wrong-role))" in missing.detail
    # Nor can a service identity run a witness.
    with pytest.raises(Rejected) as info:
        witness(parties, parties.service, Path(tempfile.mkdtemp()) / "svc.sqlite")
    assert info.value.reason == "wrong-role"


def test_revoked_witness_does_not_count(tmp_path: Path) -> None:
    ids = IdentityStore.open_local(tmp_path / "pki")
    assert ids.pki is not None
    log_id, a, b = (
        ids.identity("logbook", Role.SERVICE),
        ids.identity("a", Role.AUTHORITY),
        ids.identity("b", Role.AUTHORITY),
    )
    log = Log(log_id)
    log.grow(3, random.Random(3))
    note = log.note()
    lines = [
        Witness(
            i, tmp_path / f"{i.common_name}.sqlite", log_id.certificate, ids.trust, log_name=LOG
        ).cosign(note, [])
        for i in (a, b)
    ]
    config = {"a": a.certificate, "b": b.certificate}
    cosigned = append_lines(note, lines)
    assert verify_cosigned(cosigned, log_id.certificate, config, 2, ids.trust, log_name=LOG)
    ids.pki.revoke(b.certificate.serial_number)
    trust = ids.pki.trust_store()
    with pytest.raises(Rejected) as info:
        verify_cosigned(cosigned, log_id.certificate, config, 2, trust, log_name=LOG)
    assert info.value.reason == "missing-cosignature"
    assert "b (certificate refused (certificate-revoked))" in info.value.detail
    assert verify_cosigned(cosigned, log_id.certificate, config, 1, trust, log_name=LOG)
    ids.pki.close()


def test_stale_cosignatures(parties: Parties, w1: Witness, w2: Witness, log: Log) -> None:
    note = log.note()
    cosigned = append_lines(note, [w1.cosign(note, []), w2.cosign(note, [])])
    hour_later = datetime.fromtimestamp(T0 + 3600, timezone.utc)
    assert check(parties, cosigned, max_age=7200, at=hour_later) == log.checkpoint()
    stale = refusal(parties, cosigned, max_age=600, at=hour_later)
    assert stale.reason == "stale-cosignature"
    assert "w1 (cosignature older than 600 s)" in stale.detail
    assert "w2 (cosignature older than 600 s)" in stale.detail


def test_log_signature_is_required_by_clients(
    parties: Parties, w1: Witness, w2: Witness, log: Log
) -> None:
    note = log.note()
    lines = [w1.cosign(note, []), w2.cosign(note, [])]
    body = log.checkpoint().body().decode()
    unsigned_by_log = body + "\n" + "".join(lines)
    assert refusal(parties, unsigned_by_log).reason == "missing-log-signature"


def test_client_configuration_errors(parties: Parties, log: Log) -> None:
    note = log.note()
    for quorum in (0, 3):
        with pytest.raises(ValueError):
            check(parties, note, quorum=quorum)
    with pytest.raises(ValueError, match="share one key"):
        check(parties, note, witnesses={"a": parties.w1.certificate, "b": parties.w1.certificate})


# -- what witnesses refuse ----------------------------------------------------------------
def test_rollback_is_refused_naming_both_sizes(w1: Witness, log: Log) -> None:
    submit(w1, log)
    before = w1.head()
    rollback = refused(w1, log.note(4), [])
    assert rollback.reason == "rollback"
    assert "size 4" in rollback.detail and "size 10" in rollback.detail
    assert w1.head() == before
    (evidence,) = w1.evidence()
    assert evidence.reason == "rollback" and evidence.origin == LOG
    assert Checkpoint.parse(evidence.note)[0] == log.checkpoint(4)


def test_fork_reaches_no_quorum(parties: Parties, w1: Witness, w2: Witness, log: Log) -> None:
    """Two heads of the same size shown to two clients: each witness cosigns the first it
    sees and refuses the other, so neither head reaches a quorum of two."""
    rng = random.Random(7)
    for w in (w1, w2):
        submit(w, log, 4)  # both witnesses know the common past
    a, b = log, log.fork(4, rng)
    assert a.checkpoint().size == b.checkpoint().size == 10
    assert a.checkpoint().root != b.checkpoint().root
    a_line = submit(w1, a)  # client A's view reaches w1 first
    b_line = submit(w2, b)  # client B's view reaches w2 first
    fork_a = refused(w2, a.note(), [])
    fork_b = refused(w1, b.note(), [])
    for fork, mine, theirs in ((fork_a, a, b), (fork_b, b, a)):
        assert fork.reason == "fork" and "size 10" in fork.detail
        assert mine.checkpoint().root.hex() in fork.detail
        assert theirs.checkpoint().root.hex() in fork.detail
    for view, line in ((a, a_line), (b, b_line)):
        refused_view = refusal(parties, append_lines(view.note(), [line]))
        assert refused_view.reason == "missing-cosignature"
    # With a quorum of one, a split view would pass: that is what the quorum is for.
    assert check(parties, append_lines(a.note(), [a_line]), quorum=1) == a.checkpoint()
    assert check(parties, append_lines(b.note(), [b_line]), quorum=1) == b.checkpoint()
    # Each witness keeps the other head as evidence of the log's equivocation.
    (evidence,) = w1.evidence()
    assert evidence.reason == "fork" and Checkpoint.parse(evidence.note)[0] == b.checkpoint()


def test_fork_after_both_saw_head_a(w1: Witness, w2: Witness, log: Log) -> None:
    for w in (w1, w2):
        submit(w, log)
    other = log.fork(5, random.Random(8))
    for w in (w1, w2):
        assert refused(w, other.note(), []).reason == "fork"
        assert w.head() == log.checkpoint()


def test_inconsistent_proof_is_refused(w1: Witness, log: Log) -> None:
    submit(w1, log, 5)
    rewritten = log.fork(2, random.Random(9))  # same size 10, history changed at leaf 2
    cases = [
        rewritten.proof(5),  # the rewritten log's own proof
        log.proof(5)[:-1],  # truncated
        log.proof(6),  # from the wrong size
        [bytes(32)] * len(log.proof(5)),  # junk
        [h[:31] for h in log.proof(5)],  # short hashes
        [],  # none
    ]
    for proof in cases:
        note = rewritten.note() if proof is cases[0] else log.note()
        inconsistent = refused(w1, note, proof)
        assert inconsistent.reason == "inconsistent" and "size 5" in inconsistent.detail
        assert w1.head() == log.checkpoint(5)
    assert w1.cosign(log.note(), log.proof(5))  # the true proof still works
    assert w1.head() == log.checkpoint()


def test_same_head_again_is_cosigned_but_takes_no_proof(w1: Witness, log: Log) -> None:
    submit(w1, log)
    assert w1.cosign(log.note(), [])
    assert refused(w1, log.note(), log.proof(5)).reason == "inconsistent"


def test_first_contact_trusts_any_signed_head(w1: Witness, log: Log) -> None:
    assert w1.head() is None
    assert refused(w1, log.note(7), log.proof(3, 7)).reason == "inconsistent"
    assert w1.head() is None
    w1.cosign(log.note(7), [])
    assert w1.head() == log.checkpoint(7)


def test_empty_log_then_growth(parties: Parties, w1: Witness, log: Log) -> None:
    empty = Log(parties.log)
    w1.cosign(empty.note(), [])
    assert w1.head() == empty.checkpoint() and w1.head().size == 0  # type: ignore[union-attr]
    w1.cosign(log.note(), [])
    assert w1.head() == log.checkpoint()


def test_old_size_mismatch_names_the_witness_size(w1: Witness, log: Log) -> None:
    submit(w1, log, 6)
    mismatch = refused(w1, log.note(), log.proof(5), old_size=5)
    assert mismatch.reason == "old-size-mismatch" and "holds size 6" in mismatch.detail
    assert w1.evidence() == []
    w1.cosign(log.note(), log.proof(6), old_size=6)


def test_state_persists_across_witness_objects(parties: Parties, tmp_path: Path, log: Log) -> None:
    path = tmp_path / "witness" / "state.sqlite"
    submit(witness(parties, parties.w1, path), log, 6)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = witness(parties, parties.w1, path, clock=T0 + 60)
    assert again.head() == log.checkpoint(6)
    assert refused(again, log.note(5), []).reason == "rollback"
    line = again.cosign(log.note(), log.proof(6))
    assert struct.unpack(">Q", SignatureLine.parse(line.rstrip("\n")).signature[:8]) == (T0 + 60,)
    assert witness(parties, parties.w1, path).head() == log.checkpoint()


@pytest.mark.parametrize("forgery", ["flipped", "foreign-key", "other-service", "unsigned"])
@pytest.mark.parametrize("size", [10, 5, 4], ids=["growth", "same", "rollback"])
def test_bad_log_signature_changes_no_state(
    parties: Parties, w1: Witness, log: Log, forgery: str, size: int
) -> None:
    """Refused before anything else is looked at: no new head, no evidence, same bytes."""
    submit(w1, log, 5)
    before = w1.state_path.read_bytes()
    good = log.note(size)
    _, (line,) = Checkpoint.parse(good)
    expected = "missing-log-signature"
    if forgery == "flipped":
        note = good.replace(line.line(), tamper(line.line(), 10))
        expected = "bad-log-signature"
    elif forgery == "foreign-key":
        note = Log(parties.foreign_log, log.leaves).note(size)
    elif forgery == "other-service":
        note = Log(parties.service, log.leaves).note(size)
    else:
        unsigned = log.checkpoint(size).body().decode() + "\n"
        note = unsigned + SignatureLine(LOG, b"abcd", b"x").line()
    assert refused(w1, note, log.proof(5, size) if size > 5 else []).reason == expected
    assert w1.state_path.read_bytes() == before
    assert w1.head() == log.checkpoint(5) and w1.evidence() == []


def test_witness_for_a_log_signed_by_the_wrong_certificate(
    parties: Parties, tmp_path: Path, log: Log
) -> None:
    path = tmp_path / "w.sqlite"
    misconfigured = Witness(
        parties.w1, path, parties.service.certificate, parties.trust, log_name=LOG
    )
    assert refused(misconfigured, log.note(), []).reason == "missing-log-signature"
    wrong_role = Witness(parties.w1, path, parties.w2.certificate, parties.trust, log_name=LOG)
    assert refused(wrong_role, log.note(), []).reason == "wrong-role"
    assert misconfigured.head() is None
