"""The logbook's read API: what it serves checks out with the RFC 9162 verifier alone.

Entry reads here are signed by an authority (who sees every view); who sees what is in
``test_logbook_auditor.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from logbook_samples import CERTIFICATE

from metrocloud.core.events import EventKind, LogEvent
from metrocloud.logbook.api import create_app
from metrocloud.logbook.merkle import leaf_hash, verify_consistency, verify_inclusion
from metrocloud.logbook.readers import HEADER, ReaderPolicy, request_target, sign_read
from metrocloud.logbook.transparency import MerkleLogbook
from metrocloud.pki import Identity, IdentityStore, Role


def event(n: int) -> LogEvent:
    kinds = [EventKind.ARRIVAL, EventKind.CERTIFICATE_ISSUED, EventKind.USER_ACTIVITY]
    return LogEvent(
        actor="pki" if n % 3 == 1 else "communication",
        kind=kinds[n % 3],
        subject=f"s-{n}",
        detail={"n": n, **(CERTIFICATE if n % 3 == 1 else {})},
        time=datetime(2026, 11, 21, tzinfo=timezone.utc),
        event_id=f"e-{n}",
    )


class SignedClient(TestClient):
    """Signs every GET as ``reader`` would, so the tests read like plain requests."""

    reader: Identity

    def get(self, url: httpx.URL | str, **kwargs: object) -> httpx.Response:  # type: ignore[override]
        parts = urlsplit(str(url))
        target = request_target("GET", parts.path, dict(parse_qsl(parts.query)))
        return super().get(url, headers={HEADER: sign_read(self.reader, target)})


@pytest.fixture(scope="module")
def ids(tmp_path_factory: pytest.TempPathFactory) -> IdentityStore:
    return IdentityStore.open_local(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def api(tmp_path: Path, ids: IdentityStore) -> Iterator[TestClient]:
    path = tmp_path / "logbook.sqlite"
    with MerkleLogbook(path) as book:
        book.append_many(event(n) for n in range(50))
    head = tmp_path / "checkpoint"
    head.write_text("metrocloud.local/logbook\n50\nAAAA\n\n— signature line\n")
    readers = ReaderPolicy(ids.trust, lambda customer: ())
    app = create_app(lambda: MerkleLogbook(path), head.read_text, readers=readers)
    with SignedClient(app) as client:
        client.reader = ids.identity("auditor", Role.AUTHORITY)
        yield client


def test_an_entry_comes_with_a_proof_that_verifies(api: TestClient) -> None:
    body = api.get("/entries/31").json()
    assert body["event"]["subject"] == "s-31" and body["tree_size"] == 50
    leaf = leaf_hash(event(31).to_json())
    assert body["leaf_hash"] == leaf.hex()
    proof = [bytes.fromhex(p) for p in body["inclusion_proof"]]
    assert verify_inclusion(leaf, 31, 50, proof, bytes.fromhex(body["root"]))
    older = api.get("/entries/31?size=40").json()
    assert older["tree_size"] == 40
    assert verify_inclusion(
        leaf, 31, 40, [bytes.fromhex(p) for p in older["inclusion_proof"]],
        bytes.fromhex(older["root"]),
    )  # fmt: skip


def test_consistency_and_roots(api: TestClient) -> None:
    body = api.get("/proofs/consistency?old=17").json()
    assert (body["old"], body["new"]) == (17, 50)
    assert body["old_root"] == api.get("/roots/17").json()["root"]
    assert verify_consistency(
        17, 50, bytes.fromhex(body["old_root"]), bytes.fromhex(body["new_root"]),
        [bytes.fromhex(p) for p in body["proof"]],
    )  # fmt: skip


def test_pages_and_views(api: TestClient) -> None:
    page = api.get("/entries?start=10&limit=5").json()
    assert page["size"] == 50 and [e["seq"] for e in page["entries"]] == [10, 11, 12, 13, 14]
    issued = api.get("/entries?kind=certificate-issued&limit=1000").json()["entries"]
    assert {e["event"]["kind"] for e in issued} == {"certificate-issued"} and len(issued) == 17
    consumer = api.get("/entries?audience=consumer&limit=1000").json()["entries"]
    assert {e["event"]["kind"] for e in consumer} == {"arrival", "user-activity"}


def test_requests_outside_the_log(api: TestClient) -> None:
    for url in ("/entries/50", "/entries/3?size=60", "/proofs/consistency?old=0",
                "/proofs/consistency?old=20&new=10", "/roots/51"):  # fmt: skip
        response = api.get(url)
        assert response.status_code == 404 and response.json()["reason"] == "not-in-log", url
    assert api.get("/entries?audience=landlord").json()["reason"] == "unknown-audience"
    assert api.get("/entries?kind=gossip").json()["reason"] == "unknown-kind"
    assert api.get("/entries?limit=0").status_code == 422


def test_the_latest_head_is_served_as_text(api: TestClient) -> None:
    response = api.get("/checkpoint")
    assert response.status_code == 200 and response.text.startswith(
        "metrocloud.local/logbook\n50\n"
    )


def test_no_head_yet(tmp_path: Path, ids: IdentityStore) -> None:
    def missing() -> str:
        raise FileNotFoundError("no checkpoint")

    path = tmp_path / "empty.sqlite"
    readers = ReaderPolicy(ids.trust, lambda customer: ())
    with TestClient(create_app(lambda: MerkleLogbook(path), missing, readers=readers)) as client:
        assert client.get("/checkpoint").json()["reason"] == "no-checkpoint"
