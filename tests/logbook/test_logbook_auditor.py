"""An auditor that trusts nothing the logbook's operator says: heads need the log's signature
and a quorum of witnesses and must extend the last head accepted; entries are hashed by the
auditor and proven; tampering with the stored leaves is caught and the entry named. And who
reads which entries through the API."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography import x509
from fastapi import FastAPI
from fastapi.testclient import TestClient
from logbook_samples import CERTIFICATE

from metrocloud.core.errors import Rejected
from metrocloud.core.events import EventKind, LogEvent
from metrocloud.logbook.api import create_app
from metrocloud.logbook.checkpoint import LOG_ORIGIN, Checkpoint, SignatureLine, sign_checkpoint
from metrocloud.logbook.client import LogAuditor, LogbookClient, RemoteEntry
from metrocloud.logbook.readers import HEADER, ReaderPolicy, request_target, sign_read
from metrocloud.logbook.transparency import AUDIENCES, MerkleLogbook
from metrocloud.logbook.witness import Witness
from metrocloud.logbook.witness_api import create_witness_app
from metrocloud.logbook.witness_client import WitnessClient, gather_cosignatures
from metrocloud.pki.identity import Identity, IdentityStore
from metrocloud.pki.roles import Role
from metrocloud.pki.validate import TrustStore

LOG = LOG_ORIGIN
SIZE = 20
SUBJECTS = ("alice", "meter-a1", "bob", "meter-b1", "meter-a2", "grid")
KINDS = (
    EventKind.ARRIVAL,
    EventKind.PROCESSING,
    EventKind.CERTIFICATE_ISSUED,
    EventKind.USER_ACTIVITY,
    EventKind.SERVICE,
    EventKind.STORAGE,
    EventKind.VERIFICATION_SUCCESS,
)
CUSTOMERS: dict[str, tuple[str, ...]] = {
    "alice": ("alice", "meter-a1", "meter-a2"),
    "bob": ("bob", "meter-b1"),
}


def event(n: int, variant: str = "") -> LogEvent:
    """Entry ``n``; another ``variant`` gives other bytes for the same entry."""
    return LogEvent(
        actor="communication",
        kind=KINDS[n % len(KINDS)],
        subject=SUBJECTS[n % len(SUBJECTS)],
        detail={
            "n": n,
            **({"variant": variant} if variant else {}),
            **(CERTIFICATE if KINDS[n % len(KINDS)] is EventKind.CERTIFICATE_ISSUED else {}),
        },
        time=datetime(2026, 11, 21, tzinfo=timezone.utc),
        event_id=f"e-{n}",
    )


def events(count: int, start: int = 0, changed: int | None = None) -> list[LogEvent]:
    return [event(n, "changed" if n == changed else "") for n in range(start, start + count)]


@dataclass(frozen=True)
class Parties:
    trust: TrustStore
    log: Identity
    w1: Identity
    w2: Identity
    auditor: Identity
    alice: Identity
    bob: Identity
    carol: Identity  # a receiver the cloud knows no meters of
    admin: Identity
    trader: Identity

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
        ids.identity("auditor", Role.AUTHORITY),
        ids.identity("alice", Role.RECEIVER),
        ids.identity("bob", Role.RECEIVER),
        ids.identity("carol", Role.RECEIVER),
        ids.identity("gw-admin", Role.GATEWAY_ADMINISTRATOR),
        ids.identity("trader", Role.MARKET_PARTICIPANT),
    )
    assert ids.pki is not None
    ids.pki.close()


@dataclass
class Site:
    """A logbook file with its own two witnesses (in process, over their HTTP app)."""

    parties: Parties
    root: Path
    known: dict[str, int] = field(default_factory=dict)
    clients: list[WitnessClient] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for identity in (self.parties.w1, self.parties.w2):
            w = Witness(
                identity,
                self.root / f"{identity.common_name}.sqlite",
                self.parties.log.certificate,
                self.parties.trust,
                log_name=LOG,
            )
            self.clients.append(WitnessClient(w.name, TestClient(create_witness_app(w))))

    @property
    def path(self) -> Path:
        return self.root / "logbook.sqlite"

    def append(self, new: Iterable[LogEvent]) -> None:
        with MerkleLogbook(self.path) as book:
            book.append_many(new)

    def head(self) -> Checkpoint:
        with MerkleLogbook(self.path) as book:
            return Checkpoint(LOG, book.size, book.head())

    def publish(self) -> str:
        """The current head, signed by the log and cosigned by both witnesses."""
        with MerkleLogbook(self.path) as book:
            note = sign_checkpoint(
                Checkpoint(LOG, book.size, book.head()), LOG, self.parties.log.key
            )
            round_ = gather_cosignatures(note, self.clients, self.known, book.consistency_proof)
        assert round_.cosigned_by == ["w1", "w2"], round_.failures
        return round_.note


def site(parties: Parties, root: Path, entries: list[LogEvent]) -> Site:
    made = Site(parties, root)
    made.append(entries)
    return made


@dataclass
class Serving:
    """What the API serves: one site's log file and a head note (the operator picks both)."""

    site: Site
    note: str

    def show(self, other: Site) -> None:
        self.site, self.note = other, other.publish()


def lookup(customer: str) -> tuple[str, ...]:
    return CUSTOMERS.get(customer, ())


@pytest.fixture
def honest(parties: Parties, tmp_path: Path) -> Site:
    return site(parties, tmp_path / "honest", events(SIZE))


@pytest.fixture
def serving(honest: Site) -> Serving:
    return Serving(honest, honest.publish())


@pytest.fixture
def app(parties: Parties, serving: Serving) -> FastAPI:
    return create_app(
        lambda: MerkleLogbook(serving.site.path),
        lambda: serving.note,
        readers=ReaderPolicy(parties.trust, lookup),
    )


def reading(app: FastAPI, reader: Identity | None) -> LogbookClient:
    return LogbookClient(TestClient(app), reader)


@pytest.fixture
def client(app: FastAPI, parties: Parties) -> LogbookClient:
    return reading(app, parties.auditor)


def make_auditor(parties: Parties, state: Path | None, quorum: int = 2) -> LogAuditor:
    return LogAuditor(
        parties.log.certificate,
        parties.trust,
        log_name=LOG,
        witnesses=parties.witnesses(),
        quorum=quorum,
        state=state,
    )


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "auditor" / "state.json"


@pytest.fixture
def auditor(parties: Parties, state: Path) -> LogAuditor:
    return make_auditor(parties, state)


def refused(call: Callable[..., object], *args: object, **kwargs: object) -> Rejected:
    with pytest.raises(Rejected) as info:
        call(*args, **kwargs)
    return info.value


# -- an honest log ------------------------------------------------------------------------
def test_an_honest_log_is_accepted_audited_and_remembered(
    parties: Parties,
    honest: Site,
    serving: Serving,
    client: LogbookClient,
    auditor: LogAuditor,
    state: Path,
) -> None:
    assert auditor.accepted() is None
    head = auditor.head(client)
    assert head == honest.head() and head.size == SIZE
    verdict = auditor.audit(client, head)
    assert verdict.head == head and verdict.entries == SIZE
    assert auditor.entry(client, 7, head) == event(7)
    assert auditor.entry(client, SIZE - 1, head) == event(SIZE - 1)
    assert refused(auditor.entry, client, SIZE, head).reason == "not-in-log"

    remembered = json.loads(state.read_text(encoding="utf-8"))
    assert remembered == {
        "origin": LOG,
        "size": SIZE,
        "root": head.root.hex(),
        "note": serving.note,
    }
    assert auditor.accepted() == head
    assert make_auditor(parties, state).accepted() == head  # across runs

    # The same head again, then a grown one: accepted with a consistency proof.
    assert auditor.head(client) == head
    honest.append(events(13, start=SIZE))
    serving.note = honest.publish()
    later = make_auditor(parties, state)
    grown = later.head(client)
    assert grown.size == SIZE + 13 and grown == honest.head()
    assert later.accepted() == grown and auditor.accepted() == grown
    assert later.audit(client, grown).entries == SIZE + 13
    assert later.entry(client, 25, grown) == event(25)
    assert later.entry(client, 7, grown) == event(7)
    assert later.entry(client, 7, head) == event(7)  # an entry in an older head


def test_without_state_each_head_stands_alone(
    parties: Parties, serving: Serving, honest: Site, client: LogbookClient
) -> None:
    older = serving.note
    honest.append(events(5, start=SIZE))
    serving.note = honest.publish()
    forgetful = make_auditor(parties, None)
    assert forgetful.head(client).size == SIZE + 5
    serving.note = older
    assert forgetful.head(client).size == SIZE  # no memory, no rollback to catch
    assert forgetful.accepted() is None


# -- what the operator may try ------------------------------------------------------------
def test_rollback_to_an_older_checkpoint(
    honest: Site, serving: Serving, client: LogbookClient, auditor: LogAuditor
) -> None:
    older = serving.note
    auditor.head(client)
    honest.append(events(10, start=SIZE))
    serving.note = honest.publish()
    accepted = auditor.head(client)
    assert accepted.size == SIZE + 10
    serving.note = older
    rollback = refused(auditor.head, client)
    assert rollback.reason == "rollback"
    assert f"shows size {SIZE}," in rollback.detail
    assert f"size {SIZE + 10} was accepted before" in rollback.detail
    assert auditor.accepted() == accepted


def test_rollback_to_a_truncated_copy(
    parties: Parties,
    tmp_path: Path,
    serving: Serving,
    client: LogbookClient,
    auditor: LogAuditor,
) -> None:
    accepted = auditor.head(client)
    # A copy of the log without its last five entries, cosigned by witnesses that lost their
    # state (or never saw the log): its head is well signed and cosigned.
    serving.show(site(parties, tmp_path / "truncated", events(SIZE - 5)))
    rollback = refused(auditor.head, client)
    assert rollback.reason == "rollback"
    assert f"size {SIZE - 5}" in rollback.detail and f"size {SIZE}" in rollback.detail
    assert f"entries {SIZE - 5} to {SIZE - 1} are gone" in rollback.detail
    assert auditor.accepted() == accepted


def test_fork_of_the_same_size(
    parties: Parties,
    tmp_path: Path,
    serving: Serving,
    client: LogbookClient,
    auditor: LogAuditor,
) -> None:
    accepted = auditor.head(client)
    other = site(parties, tmp_path / "forked", events(SIZE, changed=7))
    serving.show(other)
    assert make_auditor(parties, None).check_head(serving.note) == other.head()  # well signed
    fork = refused(auditor.head, client)
    assert fork.reason == "fork" and f"size {SIZE}" in fork.detail
    assert other.head().root.hex() in fork.detail and accepted.root.hex() in fork.detail
    assert auditor.accepted() == accepted


def test_a_bigger_head_that_does_not_extend(
    parties: Parties,
    tmp_path: Path,
    serving: Serving,
    client: LogbookClient,
    auditor: LogAuditor,
) -> None:
    accepted = auditor.head(client)
    serving.show(site(parties, tmp_path / "rewritten", events(SIZE + 5, changed=7)))
    inconsistent = refused(auditor.head, client)
    assert inconsistent.reason == "inconsistent"
    assert f"size {SIZE + 5} does not extend size {SIZE}" in inconsistent.detail
    assert auditor.accepted() == accepted


def _with_lines(note: str, keep: dict[str, str]) -> str:
    """``note`` with the log's line and the witness lines named in ``keep`` (name → how:
    "as-is" or "flipped", a byte of the signature changed)."""
    checkpoint, lines = Checkpoint.parse(note)
    text = checkpoint.body().decode() + "\n"
    for line in lines:
        if line.name == LOG or keep.get(line.name) == "as-is":
            text += line.line()
        elif keep.get(line.name) == "flipped":
            signature = bytearray(line.signature)
            signature[20] ^= 0x01
            text += SignatureLine(line.name, line.key_id, bytes(signature)).line()
    return text


def test_cosignatures_short_of_the_quorum(
    parties: Parties, serving: Serving, client: LogbookClient, auditor: LogAuditor
) -> None:
    full = serving.note
    serving.note = _with_lines(full, {"w1": "as-is"})
    missing = refused(auditor.head, client)
    assert missing.reason == "missing-cosignature"
    assert "1 of 2" in missing.detail and "w2 (no cosignature)" in missing.detail
    serving.note = _with_lines(full, {})
    missing = refused(auditor.head, client)
    assert missing.reason == "missing-cosignature" and "0 of 2" in missing.detail
    assert auditor.accepted() is None  # nothing remembered from a refused head
    # An auditor content with one witness takes it.
    serving.note = _with_lines(full, {"w1": "as-is"})
    assert make_auditor(parties, None, quorum=1).head(client).size == SIZE


@pytest.mark.parametrize("flipped", ["w1", "w2"])
def test_a_bad_cosignature(
    parties: Parties, serving: Serving, client: LogbookClient, auditor: LogAuditor, flipped: str
) -> None:
    other = "w2" if flipped == "w1" else "w1"
    serving.note = _with_lines(serving.note, {flipped: "flipped", other: "as-is"})
    bad = refused(auditor.head, client)
    assert bad.reason == "bad-cosignature" and flipped in bad.detail
    # A bad line spoils the head even for an auditor that needs only the other one.
    assert refused(make_auditor(parties, None, quorum=1).head, client).reason == ("bad-cosignature")
    assert auditor.accepted() is None


def test_a_head_the_log_did_not_sign(
    parties: Parties, serving: Serving, client: LogbookClient, auditor: LogAuditor
) -> None:
    checkpoint, lines = Checkpoint.parse(serving.note)
    serving.note = (
        checkpoint.body().decode() + "\n" + "".join(x.line() for x in lines if x.name != LOG)
    )
    assert refused(auditor.head, client).reason == "missing-log-signature"


# -- tampering with the stored log --------------------------------------------------------
def _sql(site: Site, statement: str, *args: object) -> None:
    conn = sqlite3.connect(site.path)
    try:
        with conn:
            changed = conn.execute(statement, args).rowcount
    finally:
        conn.close()
    assert changed == 1


@pytest.mark.parametrize("junk", [False, True], ids=["other-event", "junk-bytes"])
@pytest.mark.parametrize("index", [0, 7, SIZE - 1])
def test_a_changed_leaf_is_named(
    honest: Site, client: LogbookClient, auditor: LogAuditor, index: int, junk: bool
) -> None:
    head = auditor.head(client)
    assert auditor.audit(client, head).entries == SIZE
    changed = b"\x00not an event" if junk else event(index, "x").to_json()
    _sql(honest, "UPDATE leaves SET entry = ? WHERE idx = ?", changed, index)
    assert auditor.head(client) == head  # the head is what was signed; the leaf is not
    audit = refused(auditor.audit, client, head)
    assert audit.reason == "not-included" and f"entry {index} " in audit.detail
    entry = refused(auditor.entry, client, index, head)
    assert entry.reason == "not-included" and f"entry {index} " in entry.detail
    for neighbour in {max(index - 1, 0), min(index + 1, SIZE - 1)} - {index}:
        assert auditor.entry(client, neighbour, head) == event(neighbour)


def test_a_changed_leaf_after_others_grew(
    honest: Site, serving: Serving, client: LogbookClient, auditor: LogAuditor
) -> None:
    """Audits read the log a page at a time; the first bad entry is named, however many
    good or bad ones follow it."""
    honest.append(events(1010, start=SIZE))  # more than one page of entries
    serving.note = honest.publish()
    head = auditor.head(client)
    assert auditor.audit(client, head).entries == 1030
    for index in (1020, 5):
        _sql(
            honest, "UPDATE leaves SET entry = ? WHERE idx = ?", event(index, "x").to_json(), index
        )
    audit = refused(auditor.audit, client, head)
    assert audit.reason == "not-included" and "entry 5 " in audit.detail
    assert refused(auditor.entry, client, 1020, head).reason == "not-included"
    assert auditor.entry(client, 1029, head) == event(1029)


def test_a_deleted_last_leaf_and_its_index_row_are_detected(
    honest: Site, client: LogbookClient, auditor: LogAuditor
) -> None:
    head = auditor.head(client)
    last = SIZE - 1
    _sql(honest, "DELETE FROM leaves WHERE idx = ?", last)
    _sql(honest, "DELETE FROM events WHERE seq = ?", last)
    audit = refused(auditor.audit, client, head)
    assert audit.reason in ("missing-entry", "not-included")
    assert f"entry {last} " in audit.detail
    entry = refused(auditor.entry, client, last, head)
    assert entry.reason in ("missing-entry", "not-included", "not-in-log")
    assert f"no entry {last} " in entry.detail


def test_a_deleted_last_leaf_is_detected(app: FastAPI, honest: Site, parties: Parties) -> None:
    client = LogbookClient(TestClient(app, raise_server_exceptions=False), parties.auditor)
    auditor = make_auditor(parties, None)
    head = auditor.head(client)
    last = SIZE - 1
    _sql(honest, "DELETE FROM leaves WHERE idx = ?", last)
    entry = refused(auditor.entry, client, last, head)
    assert entry.reason in ("missing-entry", "not-included", "not-in-log")
    assert f"no entry {last} " in entry.detail
    audit = refused(auditor.audit, client, head)  # LogbookUnreachable (HTTP 500) today
    assert audit.reason in ("missing-entry", "not-included")
    assert f"entry {last} " in audit.detail


def test_a_log_that_grows_from_empty(
    parties: Parties, tmp_path: Path, serving: Serving, client: LogbookClient, state: Path
) -> None:
    """Every tree extends the empty one; there is no consistency proof from size 0 to ask
    the log for (once refused as ``not-in-log``)."""
    empty = site(parties, tmp_path / "empty", [])
    serving.show(empty)
    auditor = make_auditor(parties, state)
    assert auditor.head(client).size == 0
    empty.append(events(5))
    serving.note = empty.publish()
    assert auditor.head(client).size == 5


# -- who reads what -----------------------------------------------------------------------
def seqs(found: Iterable[RemoteEntry]) -> list[int]:
    return [e.seq for e in found]


def visible(audience: str, subjects: Iterable[str] | None = None) -> list[int]:
    kinds = AUDIENCES[audience]
    wanted = None if subjects is None else set(subjects)
    return [
        n
        for n in range(SIZE)
        if (kinds is None or event(n).kind in kinds)
        and (wanted is None or event(n).subject in wanted)
    ]


def test_an_authority_sees_every_entry(app: FastAPI, parties: Parties) -> None:
    reader = reading(app, parties.auditor)
    assert seqs(reader.entries(0, 1000)) == list(range(SIZE))
    assert seqs(reader.entries(5, 3)) == [5, 6, 7]
    consumer = visible("consumer")
    assert seqs(reader.entries(0, 1000, audience="consumer")) == consumer
    assert len(consumer) < SIZE
    issued = seqs(reader.entries(0, 1000, kind="certificate-issued"))
    assert issued == [n for n in range(SIZE) if event(n).kind is EventKind.CERTIFICATE_ISSUED]
    assert [e.event for e in reader.entries(0, 3)] == events(3)


@pytest.mark.parametrize("name", ["alice", "bob", "carol"])
def test_a_customer_sees_its_own_entries_only(app: FastAPI, parties: Parties, name: str) -> None:
    reader = reading(app, getattr(parties, name))
    expected = visible("consumer", lookup(name))
    assert seqs(reader.entries(0, 1000)) == expected
    assert seqs(reader.entries(0, 1000, audience="consumer")) == expected
    theirs = [n for n in range(SIZE) if event(n).subject in lookup(name)]
    if name == "carol":
        assert expected == [] and theirs == []
    else:
        # Some entries about the customer are of kinds the consumer's view leaves out.
        assert expected and set(expected) < set(theirs)
    not_authorized = refused(reader.entries, 0, 1000, audience="authority")
    assert not_authorized.reason == "not-authorized"


def test_a_customer_reads_and_proves_its_entry(
    app: FastAPI, parties: Parties, auditor: LogAuditor, client: LogbookClient
) -> None:
    head = auditor.head(client)
    alice = reading(app, parties.alice)
    mine = visible("consumer", lookup("alice"))
    assert auditor.entry(alice, mine[0], head) == event(mine[0])
    for n in range(SIZE):
        if n in mine:
            continue
        outside = refused(alice.entry, n, SIZE)
        assert outside.reason == "not-in-view" and f"entry {n} " in outside.detail
        assert "alice" in outside.detail


def test_entries_outside_the_view_are_403(app: FastAPI, parties: Parties) -> None:
    http = TestClient(app)
    bobs = visible("consumer", lookup("bob"))[0]
    target = request_target("GET", f"/entries/{bobs}", {})
    response = http.get(f"/entries/{bobs}", headers={HEADER: sign_read(parties.alice, target)})
    assert response.status_code == 403 and response.json()["reason"] == "not-in-view"
    response = http.get(f"/entries/{bobs}", headers={HEADER: sign_read(parties.bob, target)})
    assert response.status_code == 200 and response.json()["seq"] == bobs


def test_a_gateway_administrator_sees_its_view(app: FastAPI, parties: Parties) -> None:
    reader = reading(app, parties.admin)
    assert seqs(reader.entries(0, 1000)) == visible("gateway-administrator")
    assert refused(reader.entries, 0, 1000, audience="consumer").reason == "not-authorized"


def test_a_market_participant_may_not_read(app: FastAPI, parties: Parties) -> None:
    reader = reading(app, parties.trader)
    denied = refused(reader.entries, 0, 10)
    assert denied.reason == "not-authorized" and "trader" in denied.detail
    assert refused(reader.entry, 0, SIZE).reason == "not-authorized"
    http = TestClient(app)
    for path in ("/entries", "/entries/0"):
        header = sign_read(parties.trader, request_target("GET", path, {}))
        response = http.get(path, headers={HEADER: header})
        assert response.status_code == 403 and response.json()["reason"] == "not-authorized"


def test_an_unsigned_read_is_401(app: FastAPI) -> None:
    http = TestClient(app)
    for path in ("/entries", "/entries/3", "/entries?start=2"):
        for headers in ({}, {HEADER: ""}, {HEADER: "not base64!"}):
            response = http.get(path, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.json()["reason"] == "not-authenticated"
    assert refused(reading(app, None).entries).reason == "not-authenticated"
    # What is public stays public.
    assert http.get("/checkpoint").status_code == 200
    assert http.get("/proofs/consistency?old=3&new=9").status_code == 200
    assert http.get("/roots/4").status_code == 200


def test_a_read_signed_for_another_target(app: FastAPI, parties: Parties) -> None:
    http = TestClient(app)
    cases: list[tuple[str, dict[str, object], str]] = [
        ("/entries", {"start": 5}, "/entries?start=0"),
        ("/entries", {}, "/entries?limit=3"),
        ("/entries/3", {}, "/entries/4"),
        ("/entries/3", {"size": SIZE}, "/entries/3?size=10"),
        ("/entries", {"audience": "consumer"}, "/entries?audience=authority"),
    ]
    for path, query, asked in cases:
        header = sign_read(parties.auditor, request_target("GET", path, query))
        response = http.get(asked, headers={HEADER: header})
        assert response.status_code == 401, (path, query, asked)
        assert response.json()["reason"] == "wrong-target"
    # Signed for what it asks, the same reader is served.
    header = sign_read(parties.auditor, request_target("GET", "/entries", {"start": 5}))
    assert http.get("/entries?start=5", headers={HEADER: header}).status_code == 200


def test_a_reader_signed_by_a_foreign_pki(
    app: FastAPI, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = IdentityStore.open_local(tmp_path_factory.mktemp("other-pki"))
    stranger = other.identity("auditor", Role.AUTHORITY)
    assert other.pki is not None
    other.pki.close()
    response = TestClient(app).get(
        "/entries", headers={HEADER: sign_read(stranger, request_target("GET", "/entries", {}))}
    )
    assert response.status_code == 401 and response.json()["reason"] != "not-authenticated"
