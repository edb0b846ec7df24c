"""Benchmark of the logbook service's path per batch (``metrocloud.cloud.logbook``).

``bench/logbook.py`` measures the bare Merkle tree. This script times what the logbook
service does with each batch it fetches from the LOGBOOK stream, step by step:

1. appending ``LogEvent`` objects with ``MerkleLogbook.append_many`` (leaves, nodes and one
   index row per event in one fsynced transaction; idempotent on event ids), in batches of
   1, 32, 256 (the most the service fetches at once) and 1,000; a batch of 256 events
   already logged (a redelivery after a crash); and, for batches of 256, the parts of
   ``append_many`` that can be timed from outside and the bytes it writes to SQLite's
   write-ahead log;
2. signing a tree head as a C2SP checkpoint with the logbook's P-256 file key;
3. a cosigning round over HTTPS on loopback: two witnesses, each a uvicorn server with TLS
   (its authority certificate from a fresh PKI) in a background thread of this process,
   asked in turn by ``gather_cosignatures``. Each round first appends a batch of 256 events
   (decoded from JSON, as the service receives them, with ``append_positions``, which the
   service uses: no read-back of the new entries) and signs the new head. Every cosigned
   note is checked with ``verify_cosigned(quorum=2)``, outside the timing. For comparison,
   each round also times a third witness's ``cosign`` called in-process and one HTTPS
   request that does nothing (``GET /health``).

The log ends at ``--entries`` entries (default 200,000): the cosigning rounds add
``--rounds`` × 256 of them at the end, the append phases fill the rest.

Usage: ``python bench/logbook_service.py [--entries N] [--rounds R] [--signatures S]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn
from cryptography import x509

from benchlib import machine
from metrocloud.core.events import EventKind, LogEvent
from metrocloud.core.http import open_http
from metrocloud.logbook.checkpoint import LOG_ORIGIN, Checkpoint, sign_checkpoint
from metrocloud.logbook.transparency import MerkleLogbook
from metrocloud.logbook.tree import MerkleTree
from metrocloud.logbook.witness import Witness, verify_cosigned
from metrocloud.logbook.witness_api import create_witness_app
from metrocloud.logbook.witness_client import WitnessClient, gather_cosignatures
from metrocloud.pki import Role
from metrocloud.pki.identity import IdentityStore

SERVICE_BATCH = 256
"""The most events the logbook service fetches from the stream at once."""
PHASES = ((1, 2_000), (32, 32_000), (256, 64_000))
"""Batch size and entries appended for each timed phase; batches of 1,000 fill the rest."""
SPLIT_BATCHES = 50
"""Batches of 256 whose ``append_many`` is taken apart (see :func:`split_append`)."""
WITNESSES = ("witness-1", "witness-2")
LOCAL_WITNESS = "witness-3"
"""A third witness called in-process on the same heads, to split a round's time."""


def events(count: int, start: int) -> list[LogEvent]:
    """``count`` arrival events like the communication service's (about 250 bytes each)."""
    return [
        LogEvent(
            actor="communication",
            kind=EventKind.ARRIVAL,
            subject=f"m-{(start + i) % 5000:04d}",
            detail={"what": "transmission", "seq": start + i, "gateway": "gw-0001"},
        )
        for i in range(count)
    ]


def append_rate(book: MerkleLogbook, total: int, batch: int) -> float:
    """Events per second appending ``total`` fresh events in batches of ``batch``."""
    fresh = events(total, book.size)
    start = time.perf_counter()
    for offset in range(0, total, batch):
        book.append_many(fresh[offset : offset + batch])
    return total / (time.perf_counter() - start)


def split_append(book: MerkleLogbook, tree: MerkleTree, batches: int) -> dict[str, list[float]]:
    """Seconds per batch of 256: ``append_many``, and on the same events the parts it is
    made of that can be timed from outside: the canonical check (serialise, parse,
    serialise each event), the bare tree's fsynced append (a tree in another file), and
    reading the new entries back (what ``append_many`` returns)."""
    times: dict[str, list[float]] = {"all": [], "check": [], "tree": [], "read": []}
    for _ in range(batches):
        batch = events(SERVICE_BATCH, book.size)
        t0 = time.perf_counter()
        canonical = [LogEvent.from_json(event.to_json()).to_json() for event in batch]
        t1 = time.perf_counter()
        tree.append_many(canonical)
        t2 = time.perf_counter()
        book.append_many(batch)
        t3 = time.perf_counter()
        for seq in range(book.size - SERVICE_BATCH, book.size):
            book.get(seq)
        t4 = time.perf_counter()
        for key, seconds in zip(times, (t3 - t2, t1 - t0, t2 - t1, t4 - t3), strict=True):
            times[key].append(seconds)
    return times


def wal_bytes(path: Path, append: Callable[[], object]) -> int:
    """Bytes one call of ``append`` writes to the write-ahead log of the SQLite file ``path``
    (the log is checkpointed and truncated first, from a connection of our own)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    append()
    return Path(f"{path}-wal").stat().st_size


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class TlsServer:
    """``app`` under uvicorn with TLS on a free loopback port, in a daemon thread.

    uvicorn binds the port itself, as ``metrocloud.cloud.https`` has it do: a socket made
    here with ``socket.socket()`` has protocol 0, so asyncio would not set ``TCP_NODELAY``
    on the accepted connections and every response would wait ~40 ms for a delayed ACK.
    """

    def __init__(self, app: object, certfile: Path, keyfile: Path) -> None:
        config = uvicorn.Config(
            app,  # type: ignore[arg-type]
            host="127.0.0.1",
            port=0,
            ssl_certfile=str(certfile),
            ssl_keyfile=str(keyfile),
            log_level="warning",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self.url = ""

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("a witness server did not start")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"https://127.0.0.1:{port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def row(name: str, values: list[float]) -> str:
    return (
        f"| {name} | {statistics.median(values) * 1e3:.2f} ms | "
        f"{percentile(values, 0.99) * 1e3:.2f} ms |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--signatures", type=int, default=200)
    args = parser.parse_args()
    fill = args.entries - (args.rounds + SPLIT_BATCHES) * SERVICE_BATCH
    scale = min(1.0, fill / (sum(count for _, count in PHASES) * 1.25))
    if fill <= 0 or scale <= 0:
        parser.error(f"--entries must exceed (--rounds + {SPLIT_BATCHES}) × {SERVICE_BATCH}")
    phases = [(batch, max(batch, int(count * scale) // batch * batch)) for batch, count in PHASES]
    phases.append((1_000, fill - sum(count for _, count in phases)))

    with tempfile.TemporaryDirectory(prefix="metrocloud-bench-logbook-service-") as tmp:
        root = Path(tmp)
        ids = IdentityStore.open_local(root / "data")  # no passphrase: key files in clear
        logbook = ids.identity("logbook", Role.SERVICE)
        witness_ids = [
            ids.identity(name, Role.AUTHORITY, hosts=("127.0.0.1", "localhost"))
            for name in (*WITNESSES, LOCAL_WITNESS)
        ]
        assert ids.pki is not None
        trust = ids.pki.trust_store()
        tls_trust = root / "data" / "pki" / "root.pem"
        book = MerkleLogbook(root / "logbook.sqlite")

        # 1. Appends per batch size.
        appends = []
        for batch, count in phases:
            appends.append((batch, count, append_rate(book, count, batch)))
            print(f"- batches of {batch:,}: done", flush=True)
        bare = MerkleTree(root / "tree.sqlite")
        split = split_append(book, bare, SPLIT_BATCHES - 1)
        wal_book = wal_bytes(book.path, lambda: book.append_many(events(SERVICE_BATCH, book.size)))
        canonical = [event.to_json() for event in events(SERVICE_BATCH, 0)]
        wal_tree = wal_bytes(bare.path, lambda: bare.append_many(canonical))
        bare.close()
        logged = [book.get(seq).event for seq in range(SERVICE_BATCH)]  # same event ids
        size_before = book.size
        redelivery = []
        for _ in range(20):
            t0 = time.perf_counter()
            book.append_many(logged)
            redelivery.append(time.perf_counter() - t0)
        assert book.size == size_before

        # 2. Signing a head.
        checkpoint = Checkpoint(LOG_ORIGIN, book.size, book.head())
        signing = []
        for _ in range(args.signatures):
            t0 = time.perf_counter()
            sign_checkpoint(checkpoint, LOG_ORIGIN, logbook.key)
            signing.append(time.perf_counter() - t0)
        print("- signing: done", flush=True)

        # 3. Cosigning rounds with two witnesses over HTTPS.
        witnesses = [
            Witness(
                identity,
                root / "authority" / identity.common_name / "witness.sqlite",
                logbook.certificate,
                trust,
                log_name=LOG_ORIGIN,
            )
            for identity in witness_ids
        ]
        local = witnesses.pop()
        servers, clients = [], []
        for identity, witness in zip(witness_ids[: len(WITNESSES)], witnesses, strict=True):
            server = TlsServer(
                create_witness_app(witness),
                ids.chain_path(identity.common_name),
                ids.keys.path(identity.common_name),  # type: ignore[attr-defined]
            )
            server.start()
            servers.append(server)
            clients.append(
                WitnessClient.connect(identity.common_name, server.url, tls_trust=tls_trust)
            )
        certificates: dict[str, x509.Certificate] = {
            i.common_name: i.certificate for i in witness_ids[: len(WITNESSES)]
        }
        probe = open_http(servers[0].url, tls_trust=tls_trust)  # the bare HTTPS round trip
        history = root / "checkpoints.jsonl"
        known: dict[str, int] = {}
        decode, append, sign, cosign, first_round = [], [], [], [], 0.0
        health, in_process, local_size = [], [], 0
        try:
            for number in range(args.rounds):
                raw = [event.to_json() for event in events(SERVICE_BATCH, book.size)]
                t0 = time.perf_counter()
                fetched = [LogEvent.from_json(message) for message in raw]
                t1 = time.perf_counter()
                book.append_positions(fetched)  # as the service does: no read-back
                t2 = time.perf_counter()
                note = sign_checkpoint(
                    Checkpoint(LOG_ORIGIN, book.size, book.head()), LOG_ORIGIN, logbook.key
                )
                with history.open("a", encoding="utf-8") as lines:
                    lines.write(json.dumps({"size": book.size, "note": note}) + "\n")
                t3 = time.perf_counter()
                result = gather_cosignatures(note, clients, known, book.consistency_proof)
                t4 = time.perf_counter()
                if result.failures:
                    raise RuntimeError(f"round {number}: {result.failures}")
                verify_cosigned(
                    result.note, logbook.certificate, certificates, 2, trust, log_name=LOG_ORIGIN
                )
                proof = book.consistency_proof(local_size) if local_size else []
                t5 = time.perf_counter()
                local.cosign(note, proof, old_size=local_size)
                t6 = time.perf_counter()
                local_size = book.size
                probe.get("/health").raise_for_status()
                t7 = time.perf_counter()
                if number == 0:  # includes both TLS handshakes: reported on its own
                    first_round = t4 - t3
                    continue
                in_process.append(t6 - t5)
                health.append(t7 - t6)
                decode.append(t1 - t0)
                append.append(t2 - t1)
                sign.append(t3 - t2)
                cosign.append(t4 - t3)
        finally:
            probe.close()
            for client in clients:
                client.close()
            for server in servers:
                server.stop()
        print("- cosigning rounds: done", flush=True)
        size = book.size
        book.close()

    batch_s = statistics.median(decode) + statistics.median(append) + statistics.median(sign)
    round_s = statistics.median(cosign)
    print(f"\nmachine: {machine()}\n")
    print(
        f"## Appends of events (MerkleLogbook.append_many: tree, index, one fsynced "
        f"transaction per batch; log grows to {size:,})\n"
    )
    print("| batch | events | appends/s |")
    print("| ---: | ---: | ---: |")
    for batch, count, rate in appends:
        print(f"| {batch:,} | {count:,} | {rate:,.0f} |")
    print(
        f"\nA batch of {SERVICE_BATCH} events already logged (redelivery, nothing appended): "
        f"{statistics.median(redelivery) * 1e3:.2f} ms median over {len(redelivery)}.\n"
    )
    print(f"## Where append_many's time goes ({SPLIT_BATCHES - 1} batches of {SERVICE_BATCH})\n")
    print("| part | median | p99 |")
    print("| --- | ---: | ---: |")
    print(row(f"append_many of {SERVICE_BATCH} events", split["all"]))
    print(row("- the canonical check: serialise, parse, serialise each event", split["check"]))
    print(row("- the bare tree's append (leaves, nodes, fsync)", split["tree"]))
    print(row("- reading the new entries back (the return value)", split["read"]))
    rest = statistics.median(split["all"]) - sum(
        statistics.median(split[key]) for key in ("check", "tree", "read")
    )
    print(f"| - the rest: id lookup, index rows (difference of medians) | {rest * 1e3:.2f} ms | |")
    print(
        f"\nOne batch of {SERVICE_BATCH} writes {wal_book / 1e6:.2f} MB to the write-ahead log "
        f"(the bare tree: {wal_tree / 1e6:.2f} MB)."
    )
    print(f"\n## Signing a head (P-256 file key, {args.signatures} signatures)\n")
    print("| operation | median | p99 |")
    print("| --- | ---: | ---: |")
    print(row("sign_checkpoint", signing))
    print(
        f"\n## One batch of {SERVICE_BATCH} and its cosigning round "
        f"({len(cosign)} rounds; 2 witnesses, HTTPS on loopback, each note verified)\n"
    )
    print("| step | median | p99 |")
    print("| --- | ---: | ---: |")
    print(row(f"decode {SERVICE_BATCH} events from JSON", decode))
    print(row(f"append_positions of {SERVICE_BATCH} events", append))
    print(row("sign the head, add it to checkpoints.jsonl", sign))
    print(row("cosigning round (2 witnesses in turn)", cosign))
    totals = [d + a + s + c for d, a, s, c in zip(decode, append, sign, cosign, strict=True)]
    print(row("all of the above", totals))
    print(row("for comparison: Witness.cosign in-process, no HTTP", in_process))
    print(row("for comparison: one HTTPS request that does nothing (GET /health)", health))
    print(
        f"\nFirst round, with both TLS handshakes: {first_round * 1e3:.2f} ms. "
        f"Ceiling: {1 / round_s:,.0f} cosigned heads/s; "
        f"{SERVICE_BATCH / batch_s:,.0f} events/s for decode + append + sign alone; "
        f"{SERVICE_BATCH / (batch_s + round_s):,.0f} events/s with a round after every batch."
    )


if __name__ == "__main__":
    main()
