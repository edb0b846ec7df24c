"""The running cloud's logbook: two authority witness processes cosign its heads over HTTPS,
an auditor checks the log through its API (``metrocloud logbook audit``), and attacks on the
stored log — a changed entry, a rollback, a forked head — are caught with the entry or the
size at fault named."""

from __future__ import annotations

import asyncio
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from metrocloud.cli import app
from metrocloud.cloud.cluster import Cluster
from metrocloud.cloud.software import LEGAL_COMPONENTS
from metrocloud.core.errors import Rejected
from metrocloud.core.events import EventKind
from metrocloud.core.software import SoftwareIdentification
from metrocloud.logbook.checkpoint import LOG_ORIGIN, Checkpoint, sign_checkpoint
from metrocloud.logbook.client import LogAuditor, LogbookClient
from metrocloud.logbook.transparency import MerkleLogbook
from metrocloud.logbook.witness import verify_cosigned
from metrocloud.logbook.witness_client import WitnessClient
from metrocloud.pki import Role
from metrocloud.testbed.pipeline import Pipeline, PipelineConfig

WITNESSES = ("witness-1", "witness-2")


def identification(component: str) -> SoftwareIdentification:
    return LEGAL_COMPONENTS[component].load().identification


def audit(data: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["logbook", "audit", "--data", str(data), *args],
        env={"COLUMNS": "400", "NO_COLOR": "1"},
    )  # fmt: skip
    return result.exit_code, " ".join(result.output.split())


def certificate(cluster: Cluster, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((cluster.data.identities / f"{name}.pem").read_bytes())


def cosigned_head(cluster: Cluster, timeout_s: float = 30.0, above: int = -1) -> Checkpoint:
    """The published head once both witnesses cosigned it, it covers the whole log, and it
    is larger than ``above``."""
    data = cluster.data
    witnesses = {name: certificate(cluster, name) for name in WITNESSES}
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            note = (data.root / "checkpoint").read_text(encoding="utf-8")
            head = verify_cosigned(
                note, certificate(cluster, "logbook"), witnesses, 2, data.trust_store(),
                log_name=LOG_ORIGIN,
            )  # fmt: skip
            with MerkleLogbook(data.logbook) as book:
                if head.size == book.size and head.size > above:
                    return head
        except (FileNotFoundError, Rejected):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no head cosigned by both witnesses: {cluster.log_tail('logbook')}"
            )
        time.sleep(0.2)


def published_by_restored_log(cluster: Cluster, timeout_s: float = 30.0) -> Checkpoint:
    """The published head once it is one of the log as it is stored now. After a restart
    the logbook serves the note of its last round before it until the first round of the
    new process has ended (the witnesses answered or failed)."""
    data = cluster.data
    deadline = time.monotonic() + timeout_s
    while True:
        head, _ = Checkpoint.parse((data.root / "checkpoint").read_text(encoding="utf-8"))
        with MerkleLogbook(data.logbook) as book:
            if head.size <= book.size and book.root(head.size) == head.root:
                return head
        if time.monotonic() > deadline:
            raise AssertionError(f"still published: {head}; {cluster.log_tail('logbook')}")
        time.sleep(0.1)


def witness(cluster: Cluster, name: str) -> WitnessClient:
    return WitnessClient.connect(name, cluster.url(name), tls_trust=cluster.data.pki / "root.pem")


@pytest.fixture
def billed(cluster: Cluster) -> Iterator[Cluster]:
    """A cloud that billed one meter for two days."""
    pipeline = Pipeline(cluster, PipelineConfig(meters=1, days=2))
    pipeline.provision()

    async def bill() -> None:
        await pipeline.register_keys()
        await pipeline.send([m for meter in pipeline.meter_ids for m in pipeline.uploads(meter)])
        assert all(o.ok for o in await pipeline.collect(timeout_s=90))

    asyncio.run(bill())
    yield cluster


def test_witness_nodes_cosign_and_an_auditor_proves_entries(billed: Cluster) -> None:
    head = cosigned_head(billed)
    code, out = audit(billed.data.root)
    assert code == 0, out
    verified = re.search(r"verified: (\d+) entries", out)
    assert verified and int(verified.group(1)) >= head.size, out  # the log may have grown
    assert "cosigned by 2 of 2 witnesses" in out

    with MerkleLogbook(billed.data.logbook) as book:
        # Each legally relevant service logs the identification of the code it loaded.
        for component in ("communication", "legal", "storage", "logbook", "display"):
            started = book.entries(kind=EventKind.SERVICE, subjects=[component])[0].event
            software = started.detail["software"]
            assert software["checksum"] == identification(component).checksum
            assert software["component"] == component and len(software["instance_id"]) == 32
        issued = book.entries(kind=EventKind.CERTIFICATE_ISSUED, limit=1)[0]
        stored = book.entries(kind=EventKind.STORAGE, limit=1)[0]
    for entry in (issued, stored):
        code, out = audit(billed.data.root, "--entry", str(entry.seq))
        assert code == 0, out
        assert f"verified: entry {entry.seq}: {entry.event.kind.value}" in out

    # A customer reads the log too, and sees only entries about itself and its meter.
    customer = billed.data.identities_store().identity("c-0001", Role.RECEIVER)
    with LogbookClient.connect(
        billed.url("logbook"), tls_trust=billed.data.pki / "root.pem", signer=customer
    ) as client:
        own = client.entries(limit=1000)
        assert own and {e.event.subject for e in own} <= {"c-0001", "m-0001"}
        assert {e.event.kind for e in own} >= {EventKind.ARRIVAL, EventKind.STORAGE}
        with pytest.raises(Rejected) as refused:
            client.entries(audience="authority")
        assert refused.value.reason == "not-authorized"

    # The operator, holding the log's key, signs another root for the same size to show
    # one client a different history: no witness cosigns it, each keeps it as evidence.
    key = billed.data.identities_store().identity("logbook", Role.SERVICE).key
    for name in WITNESSES:
        client = witness(billed, name)
        for _ in range(5):  # fork what the witness holds; it may cosign a newer head meanwhile
            held_note = client.cosigned_note()
            assert held_note is not None
            held = Checkpoint.parse(held_note)[0]
            forked = sign_checkpoint(Checkpoint(LOG_ORIGIN, held.size, bytes(32)), LOG_ORIGIN, key)
            with pytest.raises(Rejected) as refused:
                client.add_checkpoint(held.size, [], forked)
            if refused.value.reason != "rollback":  # older than what it holds by now: again
                break
        assert refused.value.reason == "fork"
        reasons = [e["reason"] for e in client.evidence()]
        assert reasons[-1] == "fork" and set(reasons) <= {"rollback", "fork"}, reasons
        client.close()
    # ...and a client with quorum 2 refuses the forked head outright.
    with pytest.raises(Rejected) as refused:
        verify_cosigned(
            forked, certificate(billed, "logbook"),
            {n: certificate(billed, n) for n in WITNESSES}, 2, billed.data.trust_store(),
            log_name=LOG_ORIGIN,
        )  # fmt: skip
    assert refused.value.reason == "missing-cosignature"


def test_a_changed_entry_and_a_rollback_are_named(cluster: Cluster, tmp_path: Path) -> None:
    data = cluster.data
    first = cosigned_head(cluster)
    assert audit(data.root)[0] == 0  # the auditor accepts and remembers this head

    # A changed entry: the operator rewrites entry 3 in the running log's file.
    with sqlite3.connect(data.logbook) as db:
        (original,) = db.execute("SELECT entry FROM leaves WHERE idx = 3").fetchone()
        changed = original.replace(b'"actor":"', b'"actor":"not-')
        assert changed != original
        db.execute("UPDATE leaves SET entry = ? WHERE idx = 3", (changed,))
    code, out = audit(data.root)
    assert code == 1 and "not-included: entry 3 as served is not in the head" in out, out
    code, out = audit(data.root, "--entry", "3")
    assert code == 1 and "entry 3" in out, out
    with sqlite3.connect(data.logbook) as db:
        db.execute("UPDATE leaves SET entry = ? WHERE idx = 3", (original,))
    assert audit(data.root)[0] == 0

    # A rollback: the operator keeps a copy, lets the log grow, then restores the copy.
    snapshot = tmp_path / "logbook-copy.sqlite"
    with sqlite3.connect(data.logbook) as db, sqlite3.connect(snapshot) as copy:
        db.backup(copy)
        (copied,) = copy.execute("SELECT COUNT(*) FROM leaves").fetchone()
    cluster.restart("storage")  # a restart is logged: the log grows
    # beyond the copy: a head the copy also reaches (the audits above are logged reads,
    # so the copy may be larger than `first`) would be extended by the copy, rightly
    grown = cosigned_head(cluster, above=copied)
    assert grown.size > copied >= first.size
    assert audit(data.root)[0] == 0  # the auditor now holds the grown head
    cluster.kill("logbook")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{data.logbook}{suffix}").unlink(missing_ok=True)
    shutil.copy(snapshot, data.logbook)
    cluster.restart("logbook")

    # The witnesses refuse to cosign the smaller head, so the auditor refuses it...
    published_by_restored_log(cluster)
    code, out = audit(data.root)
    assert code == 1 and "missing-cosignature" in out, out
    for name in WITNESSES:  # they still hold the grown head
        client = witness(cluster, name)
        held = client.cosigned_note()
        assert held is not None and Checkpoint.parse(held)[0].size >= grown.size
        client.close()
    # ...and one that trusts the log's signature alone still sees the history rewritten:
    # smaller than the head it accepted (rollback), or, once the restored log has grown
    # again (the restarted logbook logs its start), another root at that size (fork) or a
    # head that does not extend it (inconsistent).
    auditor = LogAuditor(
        certificate(cluster, "logbook"), data.trust_store(), log_name=LOG_ORIGIN,
        state=data.root / "authority" / "auditor" / "accepted-head.json",
    )  # fmt: skip
    accepted = auditor.accepted()
    assert accepted is not None and accepted.size >= grown.size
    reader = data.identities_store().identity("auditor", Role.AUTHORITY)
    with (
        LogbookClient.connect(
            cluster.url("logbook"), tls_trust=data.pki / "root.pem", signer=reader
        ) as client,
        pytest.raises(Rejected) as refused,
    ):
        auditor.head(client)
    assert refused.value.reason in ("rollback", "fork", "inconsistent"), refused.value
    assert f"size {accepted.size}" in refused.value.detail


def test_a_malformed_event_is_logged_as_a_rejection_and_the_log_goes_on(
    cluster: Cluster,
) -> None:
    """Junk on a logbook subject (here from the admin role, the only one that may publish
    as another service) becomes a rejection entry with its digest; later events still land."""
    from metrocloud.bus.connect import connect

    async def publish() -> None:
        nc = await connect(
            cluster.server.url, cluster.data.credentials("admin"), name="junk", role="admin"
        )
        js = nc.jetstream()
        await js.publish("legal.log.storage", b'{"not": "an event"}')
        await nc.close()

    asyncio.run(publish())
    cluster.restart("display")  # a valid event after the junk
    deadline = time.monotonic() + 30
    while True:
        with MerkleLogbook(cluster.data.logbook) as book:
            rejected = [
                e for e in book.entries(kind=EventKind.REJECTION)
                if e.event.detail.get("reason") == "malformed-event"
            ]  # fmt: skip
            later = [
                e for e in book.entries(kind=EventKind.SERVICE, subject_prefix="display")
                if rejected and e.seq > rejected[0].seq
            ]  # fmt: skip
        if rejected and later:
            break
        assert time.monotonic() < deadline, cluster.log_tail("logbook")
        time.sleep(0.2)
    assert rejected[0].event.subject == "legal.log.storage"
    assert len(rejected[0].event.detail["sha256"]) == 64
    assert cosigned_head(cluster).size >= later[0].seq + 1
