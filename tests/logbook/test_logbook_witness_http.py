"""A witness over HTTP (C2SP ``tlog-witness``'s ``add-checkpoint``) and the log's side of it:
status codes per refusal, the stale-size retry, and cosigning rounds with witnesses that are
behind, unreachable or refusing."""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from logbook_samples import MemoryLog

from metrocloud.core.errors import Rejected
from metrocloud.logbook.checkpoint import (
    LOG_ORIGIN,
    Checkpoint,
    SignatureLine,
    append_lines,
    b64,
)
from metrocloud.logbook.witness import MAX_PROOF_HASHES, Witness, verify_cosigned
from metrocloud.logbook.witness_api import (
    MAX_BODY_BYTES,
    SIZE_MEDIA_TYPE,
    create_witness_app,
    parse_add_checkpoint,
)
from metrocloud.logbook.witness_client import (
    MAX_ATTEMPTS,
    CosigningRound,
    StaleOldSize,
    WitnessClient,
    WitnessUnreachable,
    add_checkpoint_body,
    gather_cosignatures,
)
from metrocloud.pki.identity import Identity, IdentityStore
from metrocloud.pki.roles import Role
from metrocloud.pki.validate import TrustStore

LOG = LOG_ORIGIN
PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Parties:
    trust: TrustStore
    log: Identity
    w1: Identity
    w2: Identity
    stranger: Identity  # a valid service certificate, but not the log's

    def witnesses(self) -> dict[str, x509.Certificate]:
        return {"w1": self.w1.certificate, "w2": self.w2.certificate}


@pytest.fixture(scope="module")
def parties(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parties]:
    ids = IdentityStore.open_local(tmp_path_factory.mktemp("pki"))
    yield Parties(
        ids.trust,
        ids.identity("logbook", Role.SERVICE),
        ids.identity("w1", Role.AUTHORITY),
        ids.identity("w2", Role.AUTHORITY),
        ids.identity("stranger", Role.SERVICE),
    )
    assert ids.pki is not None
    ids.pki.close()


Log = MemoryLog


@dataclass
class Served:
    """A witness behind its HTTP app, with a raw test client and the log's client."""

    witness: Witness
    http: TestClient
    client: WitnessClient

    def post(self, old: int, proof: list[bytes], note: str) -> httpx.Response:
        return self.post_raw(add_checkpoint_body(old, proof, note))

    def post_raw(self, body: bytes) -> httpx.Response:
        response: httpx.Response = self.http.post(
            "/add-checkpoint", content=body, headers={"Content-Type": "text/plain"}
        )
        return response

    def held(self) -> tuple[Checkpoint | None, str | None]:
        """What the witness holds, as it knows it and as ``GET /checkpoint`` serves it."""
        response = self.http.get("/checkpoint")
        note = response.text if response.status_code == 200 else None
        return self.witness.head(), note

    def evidence(self) -> list[dict[str, object]]:
        response = self.http.get("/evidence")
        assert response.status_code == 200
        found = response.json()
        assert isinstance(found, list)
        return found


def serve(
    parties: Parties,
    identity: Identity,
    path: Path,
    log_certificate: x509.Certificate | None = None,
    **client_kwargs: bool,
) -> Served:
    w = Witness(
        identity,
        path,
        parties.log.certificate if log_certificate is None else log_certificate,
        parties.trust,
        log_name=LOG,
    )
    http = TestClient(create_witness_app(w), **client_kwargs)  # type: ignore[arg-type]
    return Served(w, http, WitnessClient(w.name, http))


def check(parties: Parties, note: str, quorum: int, **witnesses: x509.Certificate) -> Checkpoint:
    return verify_cosigned(
        note,
        parties.log.certificate,
        witnesses or parties.witnesses(),
        quorum,
        parties.trust,
        log_name=LOG,
    )


def refusal_of(response: httpx.Response, status: int, reason: str) -> str:
    """The detail of a JSON refusal, once its status and reason are as expected."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["reason"] == reason, body
    return str(body["detail"])


@pytest.fixture
def log(parties: Parties) -> Log:
    grown = Log(parties.log)
    grown.grow(10, random.Random(1))
    return grown


@pytest.fixture
def w1(parties: Parties, tmp_path: Path) -> Served:
    return serve(parties, parties.w1, tmp_path / "w1" / "state.sqlite")


@pytest.fixture
def w2(parties: Parties, tmp_path: Path) -> Served:
    return serve(parties, parties.w2, tmp_path / "w2" / "state.sqlite")


@pytest.fixture
def holding(w1: Served, log: Log) -> Served:
    """``w1`` holding ``log`` at size 10, nothing refused yet."""
    assert w1.post(0, [], log.note()).status_code == 200
    return w1


# -- accepted -----------------------------------------------------------------------------
def test_first_contact_then_growth(parties: Parties, w1: Served, log: Log) -> None:
    missing = w1.http.get("/checkpoint")
    assert missing.status_code == 404 and missing.json()["reason"] == "no-checkpoint"
    assert w1.client.cosigned_note() is None

    note = log.note()
    first = w1.post(0, [], note)
    assert first.status_code == 200, first.text
    assert first.text.startswith("\u2014 w1 ") and first.text.endswith("\n")
    assert first.text.count("\n") == 1
    assert check(parties, append_lines(note, [first.text]), 1, w1=parties.w1.certificate) == (
        log.checkpoint()
    )

    log.grow(7, random.Random(2))
    grown = log.note()
    second = w1.post(10, log.proof(10), grown)
    assert second.status_code == 200, second.text
    assert check(parties, append_lines(grown, [second.text]), 1, w1=parties.w1.certificate) == (
        log.checkpoint()
    )
    head, served = w1.held()
    assert head == log.checkpoint() and log.size == 17
    assert served == grown + second.text
    assert w1.client.cosigned_note() == served
    assert check(parties, served, 1, w1=parties.w1.certificate) == log.checkpoint()
    assert w1.evidence() == [] and w1.client.evidence() == []


def test_the_client_returns_the_line(parties: Parties, w1: Served, log: Log) -> None:
    line = w1.client.add_checkpoint(0, [], log.note(4))
    log_line = w1.client.add_checkpoint(4, log.proof(4), log.note())
    for size, got in ((4, line), (10, log_line)):
        cosigned = append_lines(log.note(size), [got])
        assert check(parties, cosigned, 1, w1=parties.w1.certificate) == log.checkpoint(size)
    # The same head again needs no proof and is cosigned again.
    assert w1.client.add_checkpoint(10, [], log.note())
    assert w1.witness.head() == log.checkpoint()


def test_health(w1: Served) -> None:
    assert w1.http.get("/health").json() == {"status": "ok", "witness": "w1"}


# -- stale old size -----------------------------------------------------------------------
def test_stale_old_size_answers_the_held_size(holding: Served, log: Log) -> None:
    before = holding.held()
    log.grow(5, random.Random(3))
    for old, proof in ((3, log.proof(3)), (0, []), (12, log.proof(12))):
        response = holding.post(old, proof, log.note())
        assert response.status_code == 409, response.text
        assert response.headers["content-type"].startswith(SIZE_MEDIA_TYPE)
        assert response.text == "10\n"
        with pytest.raises(StaleOldSize) as info:
            holding.client.add_checkpoint(old, proof, log.note())
        assert info.value.size == 10 and "holds size 10" in str(info.value)
    assert holding.held() == before
    assert holding.evidence() == []  # a stale size proves nothing against the log
    # With the size it named, the request goes through.
    assert holding.client.add_checkpoint(10, log.proof(10), log.note())
    assert holding.witness.head() == log.checkpoint()


def test_a_fresh_witness_names_size_zero(w1: Served, log: Log) -> None:
    response = w1.post(5, log.proof(5), log.note())
    assert response.status_code == 409 and response.text == "0\n"
    assert response.headers["content-type"].startswith(SIZE_MEDIA_TYPE)
    with pytest.raises(StaleOldSize) as info:
        w1.client.add_checkpoint(5, log.proof(5), log.note())
    assert info.value.size == 0
    assert w1.held() == (None, None)


# -- refused, with evidence ---------------------------------------------------------------
def test_fork_is_409_and_kept_as_evidence(holding: Served, log: Log) -> None:
    before = holding.held()
    other = log.fork(4, random.Random(4))
    assert other.size == log.size and other.checkpoint().root != log.checkpoint().root
    forked = other.note()
    detail = refusal_of(holding.post(10, [], forked), 409, "fork")
    assert "size 10" in detail
    assert other.checkpoint().root.hex() in detail and log.checkpoint().root.hex() in detail
    with pytest.raises(Rejected) as info:
        holding.client.add_checkpoint(10, [], forked)
    assert info.value.reason == "fork" and holding.client.url in info.value.detail
    assert holding.held() == before
    evidence = holding.evidence()
    assert len(evidence) == 2 and evidence == holding.client.evidence()
    assert {e["reason"] for e in evidence} == {"fork"}
    assert evidence[0]["origin"] == LOG and evidence[0]["note"] == forked
    assert evidence[0]["proof"] == []


def test_rollback_is_400(holding: Served, log: Log) -> None:
    before = holding.held()
    for old in (0, 4):
        detail = refusal_of(holding.post(old, log.proof(old, 4), log.note(4)), 400, "rollback")
        assert "size 4" in detail and "size 10" in detail
    assert holding.held() == before
    evidence = holding.evidence()
    assert [e["reason"] for e in evidence] == ["rollback", "rollback"]
    assert Checkpoint.parse(str(evidence[0]["note"]))[0] == log.checkpoint(4)


def test_wrong_proof_is_422(holding: Served, log: Log) -> None:
    before = holding.held()
    rng = random.Random(5)
    rewritten = log.fork(3, rng)  # history changed below the held size
    log.grow(6, rng)
    rewritten.grow(6, rng)
    true_proof = log.proof(10)
    cases = [
        (rewritten.note(), rewritten.proof(10)),  # the rewritten log's own proof
        (log.note(), true_proof[:-1]),  # truncated
        (log.note(), log.proof(8)),  # from another size
        (log.note(), [bytes(32)] * len(true_proof)),  # junk
        (log.note(), [bytes(32)] * MAX_PROOF_HASHES),  # as long as the parser allows
        (log.note(), [h[:31] for h in true_proof]),  # short hashes
        (log.note(), []),  # none
    ]
    for note, proof in cases:
        detail = refusal_of(holding.post(10, proof, note), 422, "inconsistent")
        assert "size 10" in detail
        assert holding.held() == before
    evidence = holding.evidence()
    assert len(evidence) == len(cases) and {e["reason"] for e in evidence} == {"inconsistent"}
    assert evidence[0]["proof"] == [h.hex() for h in rewritten.proof(10)]
    # The true proof still goes through.
    assert holding.post(10, true_proof, log.note()).status_code == 200
    assert holding.witness.head() == log.checkpoint()


# -- refused before anything is looked at -------------------------------------------------
def _flip(line: SignatureLine) -> str:
    signature = bytearray(line.signature)
    signature[10] ^= 0x01
    return SignatureLine(line.name, line.key_id, bytes(signature)).line()


@pytest.mark.parametrize("forgery", ["other-key", "flipped", "no-log-line", "witness-only"])
def test_bad_log_signature_is_403(
    parties: Parties, holding: Served, log: Log, forgery: str
) -> None:
    before = holding.held()
    log.grow(3, random.Random(6))
    good = log.note()
    _, (line,) = Checkpoint.parse(good)
    body = log.checkpoint().body().decode() + "\n"
    notes = {
        "other-key": Log(parties.stranger, log.leaves).note(),
        "flipped": body + _flip(line),
        "no-log-line": body + SignatureLine(LOG, b"abcd", b"x").line(),
        "witness-only": body + str(before[1]).split("\n\n")[1].split("\n")[1] + "\n",
    }
    reason = "bad-log-signature" if forgery == "flipped" else "missing-log-signature"
    detail = refusal_of(holding.post(10, log.proof(10), notes[forgery]), 403, reason)
    assert LOG in detail
    with pytest.raises(Rejected) as info:
        holding.client.add_checkpoint(10, log.proof(10), notes[forgery])
    assert info.value.reason == reason
    assert holding.held() == before and holding.evidence() == []


def test_refused_log_certificate_is_403(parties: Parties, tmp_path: Path, log: Log) -> None:
    # A witness configured with an authority's certificate as the log's: wrong role.
    misconfigured = serve(
        parties, parties.w1, tmp_path / "w.sqlite", log_certificate=parties.w2.certificate
    )
    refusal_of(misconfigured.post(0, [], log.note()), 403, "wrong-role")
    assert misconfigured.held() == (None, None) and misconfigured.evidence() == []


def test_another_origin_is_404(parties: Parties, holding: Served, log: Log) -> None:
    before = holding.held()
    other = Log(parties.log, log.leaves, origin="other.example/log")
    detail = refusal_of(holding.post(10, [], other.note()), 404, "wrong-origin")
    assert "other.example/log" in detail
    assert holding.held() == before and holding.evidence() == []


def _bodies(note: str) -> dict[str, tuple[bytes, str]]:
    """Malformed ``add-checkpoint`` bodies for a witness holding size 10 of a note of size
    10, each with a piece of the detail that says which check refused it."""
    proof_line = b64(bytes(32))
    lines = "\n".join([proof_line] * (MAX_PROOF_HASHES + 1))
    flat = note.replace("\n\n", "\n")
    return {
        "empty": (b"", "no empty line"),
        "no-blank-line": (f"old 10\n{flat}".encode(), "no empty line"),
        "no-old-line": (f"\n\n{note}".encode(), "is not 'old <size>'"),
        "new-instead-of-old": (f"new 10\n\n{note}".encode(), "is not 'old <size>'"),
        "negative": (f"old -1\n\n{note}".encode(), "is not 'old <size>'"),
        "leading-zero": (f"old 010\n\n{note}".encode(), "is not 'old <size>'"),
        "trailing-space": (f"old 10 \n\n{note}".encode(), "is not 'old <size>'"),
        "two-spaces": (f"old  10\n\n{note}".encode(), "is not 'old <size>'"),
        "exponent": (f"old 1e1\n\n{note}".encode(), "is not 'old <size>'"),
        "twenty-digits": (f"old {10**19}\n\n{note}".encode(), "is not 'old <size>'"),
        "crlf": (f"old 10\r\n\r\n{note}".encode(), "is not 'old <size>'"),
        "not-base64": (f"old 10\n!!!!\n\n{note}".encode(), "not base64"),
        "non-canonical-base64": (f"old 10\nAB==\n\n{note}".encode(), "not base64"),
        "too-many-proof-lines": (
            f"old 10\n{lines}\n\n{note}".encode(),
            f"more than {MAX_PROOF_HASHES} proof lines",
        ),
        "old-beyond-size": (f"old 11\n\n{note}".encode(), "larger than size 10"),
        "not-utf8": (b"old 10\n\n" + note.encode().replace(b"\n\n", b"\n\n\xff\xfe", 1), "UTF-8"),
        "too-large": (
            f"old 10\n\n{note}".encode() + b"\n" * MAX_BODY_BYTES,
            f"limit {MAX_BODY_BYTES}",
        ),
    }


MALFORMED = sorted(_bodies("o\n1\nr\n\n\u2014 s x\n"))


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_request_is_400(holding: Served, log: Log, case: str) -> None:
    before = holding.held()
    body, fragment = _bodies(log.note())[case]
    detail = refusal_of(holding.post_raw(body), 400, "malformed-request")
    assert fragment in detail
    with pytest.raises(Rejected) as info:  # the parser's own refusal
        parse_add_checkpoint(body)
    assert info.value.reason == "malformed-request" and fragment in info.value.detail
    assert holding.held() == before and holding.evidence() == []


def test_the_size_limit_is_exact(holding: Served) -> None:
    for size, limit_hit in ((MAX_BODY_BYTES, False), (MAX_BODY_BYTES + 1, True)):
        body = b"old 10\n\n" + b" " * (size - 8)
        assert len(body) == size
        detail = refusal_of(
            holding.post_raw(body),
            400,
            "malformed-checkpoint" if not limit_hit else "malformed-request",
        )
        assert (f"limit {MAX_BODY_BYTES}" in detail) is limit_hit


def test_malformed_checkpoint_is_400(holding: Served, log: Log) -> None:
    before = holding.held()
    for note in ("hello\n", log.checkpoint().body().decode() + "\n", log.note().rstrip("\n")):
        refusal_of(holding.post(10, [], note), 400, "malformed-checkpoint")
    assert holding.held() == before and holding.evidence() == []


def test_parse_add_checkpoint(log: Log) -> None:
    proof, note = log.proof(4), log.note()
    assert parse_add_checkpoint(add_checkpoint_body(4, proof, note)) == (4, proof, note)
    assert parse_add_checkpoint(add_checkpoint_body(0, [], note)) == (0, [], note)
    body = add_checkpoint_body(4, proof, note)
    assert body.startswith(b"old 4\n" + b64(proof[0]).encode() + b"\n")
    # The parser reads the framing only: an empty note is for the witness to refuse.
    assert parse_add_checkpoint(b"old 1\n\n") == (1, [], "")


def test_non_ascii_digit_size_is_400(parties: Parties, tmp_path: Path, log: Log) -> None:
    """``'\u00b2'.isdigit()`` holds but ``int('\u00b2')`` raises: once an HTTP 500."""
    w = serve(parties, parties.w1, tmp_path / "w.sqlite", raise_server_exceptions=False)
    note = log.note().replace("\n10\n", "\n\u00b2\n", 1)
    response = w.post(0, [], note)
    assert response.status_code == 400, response.text
    assert response.json()["reason"] in ("malformed-request", "malformed-checkpoint")


# -- cosigning rounds ---------------------------------------------------------------------
@dataclass
class RecordingProver:
    log: Log
    calls: list[tuple[int, int]] = field(default_factory=list)

    def __call__(self, old: int, new: int) -> list[bytes]:
        self.calls.append((old, new))
        return self.log.proof(old, new)


def test_gather_retries_after_stale_sizes(
    parties: Parties, w1: Served, w2: Served, log: Log
) -> None:
    witnesses = [w1.client, w2.client]
    known: dict[str, int] = {}
    first = gather_cosignatures(log.note(6), witnesses, known, log.proof)
    assert (first.cosigned_by, first.failures) == (["w1", "w2"], {})
    assert known == {"w1": 6, "w2": 6}
    assert check(parties, first.note, 2) == log.checkpoint(6)

    # The log restarted and forgot what its witnesses hold: both answer 409 with size 6.
    known.clear()
    prove = RecordingProver(log)
    second = gather_cosignatures(log.note(), witnesses, known, prove)
    assert (second.cosigned_by, second.failures) == (["w1", "w2"], {})
    assert prove.calls == [(6, 10), (6, 10)]
    assert known == {"w1": 10, "w2": 10}
    assert w1.witness.head() == w2.witness.head() == log.checkpoint()
    assert check(parties, second.note, 2) == log.checkpoint()

    # Wrong in both directions (below and above what they hold).
    log.grow(5, random.Random(7))
    known.update(w1=3, w2=12)
    prove = RecordingProver(log)
    third = gather_cosignatures(log.note(), witnesses, known, prove)
    assert (third.cosigned_by, third.failures) == (["w1", "w2"], {})
    assert prove.calls == [(3, 15), (10, 15), (12, 15), (10, 15)]
    assert known == {"w1": 15, "w2": 15}
    assert check(parties, third.note, 2) == log.checkpoint()


def test_gather_after_a_witness_lost_its_state(
    parties: Parties, tmp_path: Path, w1: Served, log: Log
) -> None:
    known: dict[str, int] = {}
    gather_cosignatures(log.note(5), [w1.client], known, log.proof)
    restarted = serve(parties, parties.w1, tmp_path / "w1-new.sqlite")
    round_ = gather_cosignatures(log.note(), [restarted.client], known, log.proof)
    assert round_.cosigned_by == ["w1"] and known == {"w1": 10}
    assert restarted.witness.head() == log.checkpoint()


def test_gather_without_a_reachable_witness(parties: Parties, w1: Served, log: Log) -> None:
    dead = WitnessClient(
        "w2", httpx.Client(base_url="https://127.0.0.1:9", timeout=0.5, trust_env=False)
    )
    with pytest.raises(WitnessUnreachable, match=r"127\.0\.0\.1:9"):
        dead.add_checkpoint(0, [], log.note())
    note = log.note()
    known: dict[str, int] = {}
    round_ = gather_cosignatures(note, [dead, w1.client], known, log.proof)
    dead.close()
    assert round_.cosigned_by == ["w1"]
    assert list(round_.failures) == ["w2"] and "127.0.0.1:9" in round_.failures["w2"]
    assert known == {"w1": 10}  # nothing learnt about the unreachable one
    assert round_.note.startswith(note) and round_.note.count("\u2014 w1 ") == 1
    assert "\u2014 w2 " not in round_.note
    assert check(parties, round_.note, 1) == log.checkpoint()
    with pytest.raises(Rejected) as info:
        check(parties, round_.note, 2)
    assert info.value.reason == "missing-cosignature"
    assert "1 of 2" in info.value.detail and "w2 (no cosignature)" in info.value.detail
    assert "w1 (" not in info.value.detail


def test_gather_reports_refusals(parties: Parties, w1: Served, w2: Served, log: Log) -> None:
    other = log.fork(5, random.Random(8))
    assert w2.post(0, [], other.note()).status_code == 200  # w2 saw another head first
    known: dict[str, int] = {}
    round_ = gather_cosignatures(log.note(), [w1.client, w2.client], known, log.proof)
    assert round_.cosigned_by == ["w1"]
    assert list(round_.failures) == ["w2"] and "fork" in round_.failures["w2"]
    assert known == {"w1": 10}  # a fork is refused before the old size is looked at
    assert check(parties, round_.note, 1) == log.checkpoint()
    # A witness that holds more than the log shows is not asked at all: a rollback.
    older = log.note(4)
    smaller = gather_cosignatures(older, [w1.client], known, log.proof)
    assert smaller.cosigned_by == [] and "rolled back" in smaller.failures["w1"]
    assert smaller.note == older
    assert w1.witness.head() == log.checkpoint()


def _mock(name: str, handler: Callable[[httpx.Request], httpx.Response]) -> WitnessClient:
    return WitnessClient(
        name, httpx.Client(base_url="http://mock", transport=httpx.MockTransport(handler))
    )


def test_gather_with_misbehaving_servers(parties: Parties, w1: Served, log: Log) -> None:
    sizes = iter(range(1, 100))

    def moving(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            409, text=f"{next(sizes)}\n", headers={"content-type": SIZE_MEDIA_TYPE}
        )

    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="down")

    def garbled(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, text="ten\n", headers={"content-type": SIZE_MEDIA_TYPE})

    def teapot(request: httpx.Request) -> httpx.Response:
        return httpx.Response(418, text="no JSON here")

    servers = [
        _mock("m1", moving),
        _mock("m2", broken),
        _mock("m3", garbled),
        _mock("m4", teapot),
        w1.client,
    ]
    round_ = gather_cosignatures(log.note(), servers, {}, log.proof)
    assert round_.cosigned_by == ["w1"]
    assert sorted(round_.failures) == ["m1", "m2", "m3", "m4"]
    assert f"over {MAX_ATTEMPTS} attempts" in round_.failures["m1"]
    assert "HTTP 503" in round_.failures["m2"]
    assert "malformed size answer" in round_.failures["m3"]
    assert "HTTP 418" in round_.failures["m4"]
    assert check(parties, round_.note, 1) == log.checkpoint()


def test_gather_survives_a_witness_answering_junk(parties: Parties, w1: Served, log: Log) -> None:
    """One witness answering 200 with junk once cost the round every other cosignature."""
    junk = _mock("m1", lambda request: httpx.Response(200, text="not a signature line\n"))
    round_ = gather_cosignatures(log.note(), [junk, w1.client], {}, log.proof)
    assert round_.cosigned_by == ["w1"] and list(round_.failures) == ["m1"]
    assert check(parties, round_.note, 1) == log.checkpoint()


@PROPERTY
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 12), st.sampled_from(["keep", "forget", "wrong"])),
        min_size=1,
        max_size=6,
    ),
    seed=st.integers(0, 2**32),
)
def test_rounds_keep_witnesses_at_the_latest_head(
    parties: Parties, steps: list[tuple[int, str]], seed: int
) -> None:
    rng = random.Random(seed)
    log = Log(parties.log)
    known: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        served = [
            serve(parties, parties.w1, Path(tmp) / "w1.sqlite"),
            serve(parties, parties.w2, Path(tmp) / "w2.sqlite"),
        ]
        witnesses = [s.client for s in served]
        for grow, memory in steps:
            log.grow(grow, rng)
            if memory == "forget":
                known.clear()
            elif memory == "wrong":
                known.update({name: rng.randint(0, log.size) for name in ("w1", "w2")})
            round_: CosigningRound = gather_cosignatures(log.note(), witnesses, known, log.proof)
            assert round_.failures == {} and round_.cosigned_by == ["w1", "w2"]
            assert known == {"w1": log.size, "w2": log.size}
            for s in served:
                assert s.witness.head() == log.checkpoint()
            assert check(parties, round_.note, 2) == log.checkpoint()
        for s in served:
            assert s.witness.evidence() == []
