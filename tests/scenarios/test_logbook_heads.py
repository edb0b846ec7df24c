"""The running cloud's logbook signs a tree head after every batch; two authority witnesses
cosign the heads as they grow, and a client with quorum 2 then proves entries against them.

The witnesses run in the test process here (wiring them as cloud processes is still to do);
they see only what any outsider sees: the published heads and the log file's proofs.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from cryptography import x509

from metrocloud.cloud.cluster import Cluster
from metrocloud.cloud.logbook import LOG_ORIGIN
from metrocloud.core.errors import Rejected
from metrocloud.core.events import EventKind
from metrocloud.logbook.checkpoint import Checkpoint, append_lines, open_checkpoint, sign_checkpoint
from metrocloud.logbook.merkle import verify_inclusion
from metrocloud.logbook.transparency import MerkleLogbook
from metrocloud.logbook.witness import Witness, verify_cosigned
from metrocloud.pki import Role
from metrocloud.testbed.pipeline import Pipeline, PipelineConfig


def notes(data: Path) -> list[str]:
    lines = (data / "checkpoints.jsonl").read_text(encoding="utf-8").splitlines()
    return [str(json.loads(line)["note"]) for line in lines]


def test_heads_are_signed_cosigned_and_prove_entries(cluster: Cluster, tmp_path: Path) -> None:
    pipeline = Pipeline(cluster, PipelineConfig(meters=1, days=2))
    pipeline.provision()

    async def bill() -> None:
        await pipeline.register_keys()
        await pipeline.send([m for meter in pipeline.meter_ids for m in pipeline.uploads(meter)])
        assert all(o.ok for o in await pipeline.collect(timeout_s=90))

    asyncio.run(bill())
    data = cluster.data
    trust = data.trust_store()
    log_cert = x509.load_pem_x509_certificate((data.identities / "logbook.pem").read_bytes())
    pki = data.open_pki()
    ids = data.identities_store(pki)
    authorities = [ids.identity(f"witness-{n}", Role.AUTHORITY) for n in (1, 2)]
    pki.close()
    witnesses = [
        Witness(a, tmp_path / f"{a.common_name}.sqlite", log_cert, trust, log_name=LOG_ORIGIN)
        for a in authorities
    ]

    heads = notes(data.root)
    assert len(heads) >= 2
    with MerkleLogbook(data.logbook) as book:
        cosigned = ""
        for note in heads:
            head = open_checkpoint(note, log_cert, trust, log_name=LOG_ORIGIN)
            assert head.root == book.root(head.size)  # each signed head is the log's root
            lines = []
            for witness in witnesses:
                seen = witness.head()
                proof = book.consistency_proof(seen.size, head.size) if seen and seen.size else []
                lines.append(witness.cosign(note, proof, old_size=seen.size if seen else 0))
            cosigned = append_lines(note, lines)
        certificates = {a.common_name: a.certificate for a in authorities}
        final = verify_cosigned(cosigned, log_cert, certificates, 2, trust, log_name=LOG_ORIGIN)
        issued = book.entries(kind=EventKind.CERTIFICATE_ISSUED, limit=1)[0]
        proof = book.inclusion_proof(issued.seq, final.size)
        assert verify_inclusion(issued.entry_hash, issued.seq, final.size, proof, final.root)

        # A second head of the same size with another root, signed with the real key (an
        # operator showing two clients two histories): both witnesses refuse it.
        logbook_key = data.identities_store().identity("logbook", Role.SERVICE).key
        forked = sign_checkpoint(
            Checkpoint(LOG_ORIGIN, final.size, bytes(32)), LOG_ORIGIN, logbook_key
        )
        for witness in witnesses:
            with pytest.raises(Rejected) as refused:
                witness.cosign(forked, [], old_size=final.size)
            assert refused.value.reason == "fork"
