"""``metrocloud logbook audit`` with explicit options, against the read API over real HTTPS
on 127.0.0.1: what an authority outside the cloud's data folder runs."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner

from metrocloud.cli import app
from metrocloud.core.events import EventKind, LogEvent
from metrocloud.logbook.api import create_app
from metrocloud.logbook.checkpoint import LOG_ORIGIN, Checkpoint, append_lines, sign_checkpoint
from metrocloud.logbook.readers import ReaderPolicy
from metrocloud.logbook.transparency import MerkleLogbook
from metrocloud.logbook.witness import Witness
from metrocloud.pki import IdentityStore, Role

HOSTS = ("127.0.0.1", "localhost")


@dataclass
class Served:
    url: str
    folder: Path
    book: Path
    head: Path
    witness: Witness
    ids: IdentityStore

    def grow(self, count: int) -> None:
        """Append ``count`` events, sign the new head, have the witness cosign it."""
        with MerkleLogbook(self.book) as book:
            old = book.size
            book.append_many(event(n) for n in range(old, old + count))
            key = self.ids.identity("logbook", Role.SERVICE, hosts=HOSTS).key
            note = sign_checkpoint(Checkpoint(LOG_ORIGIN, book.size, book.head()), LOG_ORIGIN, key)
            proof = book.consistency_proof(old, book.size) if old else []
        line = self.witness.cosign(note, proof, old_size=old)
        self.head.write_text(append_lines(note, [line]), encoding="utf-8")

    def args(self, *extra: str) -> list[str]:
        ids = self.folder / "identities"
        return [
            "logbook", "audit", "--url", self.url, "--trust", str(self.folder / "pki"),
            "--log-cert", str(ids / "logbook.pem"),
            "--witness", f"witness-1={ids / 'witness-1.pem'}",
            "--identities", str(ids), "--as", "auditor",
            "--state", str(self.folder / "accepted.json"), *extra,
        ]  # fmt: skip


def event(n: int) -> LogEvent:
    return LogEvent(
        actor="communication",
        kind=EventKind.ARRIVAL,
        subject=f"m-{n % 3}",
        detail={"n": n},
        time=datetime(2026, 11, 21, tzinfo=timezone.utc),
        event_id=f"e-{n}",
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "400", "NO_COLOR": "1"})
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("authority")
    ids = IdentityStore.open_local(folder)  # no passphrase: plain key files, as the CLI reads
    log = ids.identity("logbook", Role.SERVICE, hosts=HOSTS)
    ids.identity("auditor", Role.AUTHORITY)
    ids.identity("intruder", Role.MARKET_PARTICIPANT)
    witness = Witness(
        ids.identity("witness-1", Role.AUTHORITY),
        folder / "witness.sqlite",
        log.certificate,
        ids.trust,
        log_name=LOG_ORIGIN,
    )
    site = Served("", folder, folder / "logbook.sqlite", folder / "checkpoint", witness, ids)
    site.grow(30)
    api = create_app(
        lambda: MerkleLogbook(site.book),
        lambda: site.head.read_text(encoding="utf-8"),
        readers=ReaderPolicy(ids.trust, lambda customer: ()),
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            api,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            ssl_certfile=str(folder / "identities" / "logbook.pem"),
            ssl_keyfile=str(folder / "identities" / "logbook.key"),
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    site.url = f"https://127.0.0.1:{port}"
    try:
        yield site
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_an_auditor_checks_the_log_and_then_its_growth(served: Served) -> None:
    code, out = run(*served.args())
    assert code == 0, out
    assert "verified: 30 entries" in out and "cosigned by 1 of 1 witnesses" in out
    assert "no earlier head to compare" in out
    served.grow(7)
    code, out = run(*served.args())
    assert code == 0 and "verified: 37 entries" in out, out
    assert "extends the head of size 30 accepted before" in out
    code, out = run(*served.args("--entry", "33"))
    assert code == 0, out
    assert "verified: entry 33: arrival m-0 by communication, in the head of size 37" in out


def test_refusals_are_one_line_verdicts(served: Served) -> None:
    code, out = run(*served.args("--quorum", "2"))
    assert code == 1 and "a quorum of 2 needs as many witnesses; 1 configured" in out, out
    code, out = run(*served.args("--entry", "999"))
    assert code == 1 and "not-in-log: no entry 999" in out, out
    code, out = run(*[a.replace("auditor", "intruder") for a in served.args()])
    assert code == 1 and "reader intruder: wrong-role" in out, out  # auditing is the authority's
    ids = served.folder / "identities"
    code, out = run(*served.args("--log-cert", str(ids / "witness-1.pem")))
    assert code == 1 and "not verified" in out and "wrong-role" in out, out


def test_options_that_do_not_add_up(served: Served) -> None:
    code, out = run("logbook", "audit", "--url", served.url)
    assert code == 1 and "give --data, or --url, --trust, --log-cert and --identities" in out
    code, out = run(*served.args("--witness", "no-equals-sign"))
    assert code == 1 and "is not NAME=CERT.pem" in out, out
    code, out = run("logbook", "audit", "--data", str(served.folder / "nothing-here"))
    assert code == 1 and "no running cloud in" in out, out
    unreachable = [a if a != served.url else "https://127.0.0.1:9" for a in served.args()]
    code, out = run(*unreachable)
    assert code == 1 and "not verified" in out, out
