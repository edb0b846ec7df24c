"""Ingress refuses every bad upload with a clear reason in the logbook and loses nothing.

One cluster for the whole module: two meters × two days, a day per transmission. The first
good transmission (m-0001, day 0) is accepted first; then every bad message below is
published on the gateway's subject; then the rest of the good uploads. Each bad message
must be refused at ingress with its own reason code (matched to it through its JetStream
sequence number), and both bills must still verify and equal the plaintext reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from metrocloud.cloud.cluster import Cluster
from metrocloud.cloud.communication import MAX_UPLOAD_BYTES
from metrocloud.core.clock import READINGS_PER_DAY
from metrocloud.core.events import EventKind
from metrocloud.core.messages import Envelope, Transmission, seal
from metrocloud.fhe.context import CustomerKeyPair, Encryptor
from metrocloud.fhe.params import DEFAULT_PARAMETERS, FheParameters
from metrocloud.field.gateway import Gateway
from metrocloud.logbook import LogEntry
from metrocloud.logbook.transparency import MerkleLogbook
from metrocloud.pki import (
    Curve,
    FileKeyStore,
    Identity,
    IdentityStore,
    Role,
    SoftwareKey,
    generate_private_key,
)
from metrocloud.testbed.observe import flags, logbook_entries, wait_for
from metrocloud.testbed.pipeline import MeterOutcome, Pipeline, PipelineConfig

# label -> the reason code ingress must log for that message
EXPECTED: dict[str, str] = {
    "flipped-signature-byte": "bad-signature",
    "body-changed-after-signing": "bad-signature",
    "unknown-gateway": "unknown-gateway",
    "other-ca-same-name": "bad-certificate-signature",
    "self-signed": "self-signed-certificate",
    "expired-certificate": "certificate-expired",
    "not-yet-valid-certificate": "certificate-not-yet-valid",
    "malformed-certificate": "malformed-certificate",
    "wrong-role": "wrong-role",
    "replayed-verbatim": "replayed-index",
    "replayed-fresh-encryption": "replayed-index",
    "truncated-envelope": "malformed-message",
    "garbage-bytes": "malformed-message",
    "oversized-message": "oversized-message",
    "other-customer-key": "wrong-crypto-context",
    "other-depth-parameters": "wrong-crypto-context",
    "other-ring-dimension": "wrong-crypto-context",
    "names-other-parameters": "wrong-crypto-context",
    "identical-c-and-c-dup": "integrity-protocol",
    "ciphertext-that-crashes-the-parser": "malformed-ciphertext",
}


# A header byte of a serialized ciphertext whose inversion makes OpenFHE's parser segfault.
PARSER_CRASH_BYTE = 113


@dataclass(frozen=True)
class BadMessage:
    label: str
    raw: bytes
    seq: int  # stream sequence of the INGRESS stream, from the publish ack


@dataclass(frozen=True)
class Scenario:
    cluster: Cluster
    pipeline: Pipeline
    bad: dict[str, BadMessage]
    rejections: dict[str, LogEntry]  # event_id -> entry
    outcomes: list[MeterOutcome] | None  # None when collect() timed out
    problem: str  # why collect() timed out


def _reencrypted(tx: Transmission, params: FheParameters) -> Transmission:
    """``tx`` with c and c' (distinct) encrypted under a fresh key pair of ``params``."""
    keys = CustomerKeyPair.generate(params, ())
    enc = Encryptor(params, keys.context, keys.public_key)
    return dataclasses.replace(tx, c=[enc.encrypt([1, 2, 3])], c_dup=[enc.encrypt([1, 2, 3])])


def _self_signed(common_name: str) -> Identity:
    """A gateway identity with a self-signed certificate that copies the real profile."""
    key = generate_private_key(Curve.BRAINPOOL_P256R1)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "metrocloud"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, Role.GATEWAY.value),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([Role.GATEWAY.oid]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Identity(common_name, Role.GATEWAY, SoftwareKey(common_name, key), cert)


def _gateway_certified_for(
    pipeline: Pipeline, not_before: datetime, not_after: datetime
) -> Identity:
    """The real gateway key with a certificate signed by the real gateways CA, but valid only
    from ``not_before`` to ``not_after``."""
    gateway = pipeline.gateway
    assert gateway is not None
    data = pipeline.cluster.data
    ca_key = FileKeyStore(data.pki / "private", data.passphrase()).load("ca-gateways")
    ca_cert = x509.load_pem_x509_certificate((data.pki / "ca" / "gateways.pem").read_bytes())
    real = gateway.identity.certificate
    cert = (
        x509.CertificateBuilder()
        .subject_name(real.subject)
        .issuer_name(ca_cert.subject)
        .public_key(gateway.identity.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for extension in real.extensions:
        cert = cert.add_extension(extension.value, extension.critical)
    signed = cert.sign(ca_key.private_key, hashes.SHA256())
    return Identity(gateway.identity.common_name, Role.GATEWAY, gateway.identity.key, signed)


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def build_bad_messages(pipeline: Pipeline, accepted: bytes, other_pki: Path) -> dict[str, bytes]:
    """Every bad message by label. None carries readings that are accepted later on, except
    the two replays, so one wrongly let through would also break a bill or a later upload."""
    gateway = pipeline.gateway
    assert isinstance(gateway, Gateway)
    period = pipeline.config.period
    ident = gateway.identity

    def tx(meter: str, seq: int) -> Transmission:
        return gateway.transmission(meter, period, seq)

    data = pipeline.cluster.data
    pki = data.open_pki()
    stranger = data.identities_store(pki).identity("gw-9999", Role.GATEWAY)  # not registered
    pki.close()
    same_name_ca = IdentityStore.open_local(other_pki / "same-name").identity(
        "gw-0001", Role.GATEWAY
    )
    rogue = _self_signed("gw-0001")
    now = datetime.now(timezone.utc)
    expired = _gateway_certified_for(pipeline, now - timedelta(days=30), now - timedelta(days=1))
    not_yet_valid = _gateway_certified_for(
        pipeline, now + timedelta(days=1), now + timedelta(days=30)
    )
    receiver = pipeline.receivers["c-0001"].identity

    good = Envelope.decode(seal(ident, tx("m-0001", 1)))
    other = Envelope.decode(seal(ident, tx("m-0002", 0)))
    sealed_valid = seal(ident, tx("m-0002", 1))
    padded = tx("m-0002", 1)
    padded = dataclasses.replace(padded, c_dup=[padded.c_dup[0] + bytes(MAX_UPLOAD_BYTES)])
    alien_params = FheParameters(ring_dimension=16384)
    twin = tx("m-0002", 1)
    return {
        "flipped-signature-byte": Envelope(
            good.body, good.certificate, _flip(good.signature, len(good.signature) - 1)
        ).encode(),
        "body-changed-after-signing": Envelope(
            _flip(other.body, len(other.body) // 2), other.certificate, other.signature
        ).encode(),
        "unknown-gateway": seal(stranger, dataclasses.replace(tx("m-0001", 1), gateway="gw-9999")),
        "other-ca-same-name": seal(same_name_ca, tx("m-0001", 1)),
        "self-signed": seal(rogue, tx("m-0001", 1)),
        "expired-certificate": seal(expired, tx("m-0001", 1)),
        "not-yet-valid-certificate": seal(not_yet_valid, tx("m-0001", 1)),
        "malformed-certificate": Envelope(
            good.body, good.certificate[: len(good.certificate) // 2], good.signature
        ).encode(),
        "wrong-role": seal(receiver, tx("m-0001", 1)),
        "replayed-verbatim": accepted,
        "replayed-fresh-encryption": seal(ident, tx("m-0001", 0)),
        "truncated-envelope": sealed_valid[: len(sealed_valid) // 2],
        "garbage-bytes": b"\xc1 this is not msgpack \x00\xff",
        "oversized-message": seal(ident, padded),
        "other-customer-key": seal(ident, _reencrypted(tx("m-0002", 0), DEFAULT_PARAMETERS)),
        "other-depth-parameters": seal(
            ident,
            _reencrypted(
                tx("m-0002", 0),
                FheParameters(multiplicative_depth=DEFAULT_PARAMETERS.multiplicative_depth + 1),
            ),
        ),
        "other-ring-dimension": seal(ident, _reencrypted(tx("m-0002", 1), alien_params)),
        "names-other-parameters": seal(
            ident, dataclasses.replace(tx("m-0002", 1), parameters_id=alien_params.parameters_id)
        ),
        "identical-c-and-c-dup": seal(ident, dataclasses.replace(twin, c_dup=twin.c)),
        # OpenFHE segfaults on this header byte; ingress parses in a worker it can lose
        "ciphertext-that-crashes-the-parser": seal(
            ident, dataclasses.replace(twin, c_dup=[_flip(twin.c_dup[0], PARSER_CRASH_BYTE)])
        ),
    }


async def publish(pipeline: Pipeline, messages: dict[str, bytes]) -> dict[str, BadMessage]:
    """Publish as the gateway user on the gateway's own subject; keep each stream sequence."""
    assert pipeline.gateway is not None
    nc = await pipeline.connect("gateway")
    js = nc.jetstream(timeout=30.0)
    out = {}
    try:
        for label, raw in messages.items():
            ack = await js.publish(pipeline.gateway.subject, raw)
            out[label] = BadMessage(label, raw, ack.seq)
    finally:
        await nc.drain()
    return out


def rejection_entries(cluster: Cluster) -> dict[str, LogEntry]:
    return {e.event.event_id: e for e in logbook_entries(cluster.data, EventKind.REJECTION)}


def arrived(cluster: Cluster, meter: str, first_index: int) -> bool:
    return any(
        e.event.subject == meter and e.event.detail.get("first_index") == first_index
        for e in logbook_entries(cluster.data, EventKind.ARRIVAL)
    )


def handled(cluster: Cluster) -> int:
    """Uploads ingress has finished with: each ends in exactly one arrival or rejection."""
    return len(logbook_entries(cluster.data, EventKind.ARRIVAL)) + len(rejection_entries(cluster))


def settle(probe: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Wait for ``probe``, but let the tests report what is wrong if it never holds."""
    with contextlib.suppress(TimeoutError):
        wait_for(probe, timeout_s)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    root = tmp_path_factory.mktemp("ingress")
    cluster = Cluster(root / "data")
    cluster.start()
    try:
        # a day per transmission (the default is one per period): the bad messages below
        # are built from the second day, which must not have been accepted yet
        config = PipelineConfig(meters=2, days=2, readings_per_transmission=READINGS_PER_DAY)
        pipeline = Pipeline(cluster, config)
        pipeline.provision()
        uploads = {m: pipeline.uploads(m) for m in pipeline.meter_ids}
        first, *rest_of_first = uploads["m-0001"]
        rest = rest_of_first + uploads["m-0002"]

        asyncio.run(pipeline.register_keys())
        asyncio.run(pipeline.send([first]))
        wait_for(lambda: arrived(cluster, "m-0001", pipeline.config.period.start), 30)

        messages = build_bad_messages(pipeline, first, root / "other-pki")
        assert set(messages) == set(EXPECTED)
        bad = asyncio.run(publish(pipeline, messages))
        settle(lambda: handled(cluster) >= 1 + len(bad))

        asyncio.run(pipeline.send(rest))
        outcomes: list[MeterOutcome] | None = None
        problem = ""
        try:
            outcomes = asyncio.run(pipeline.collect(timeout_s=60))
        except TimeoutError as exc:
            problem = str(exc)
        else:
            # the receivers' reports pass through ingress last: once both are logged, ingress
            # has handled every message of this scenario
            settle(lambda: len(logbook_entries(cluster.data, EventKind.VERIFICATION_SUCCESS)) == 2)
        yield Scenario(cluster, pipeline, bad, rejection_entries(cluster), outcomes, problem)
    finally:
        cluster.stop()


@pytest.mark.parametrize("label", list(EXPECTED))
def test_bad_message_is_refused_at_ingress_with_its_reason(scenario: Scenario, label: str) -> None:
    msg = scenario.bad[label]
    entry = scenario.rejections.get(f"reject-{msg.seq}")
    assert entry is not None, f"no rejection logged for {label} (stream seq {msg.seq})"
    detail = entry.event.detail
    assert detail["reason"] == EXPECTED[label], detail
    assert isinstance(detail["detail"], str) and detail["detail"], detail
    assert detail["bytes"] == len(msg.raw)
    assert detail["subject"] == "ingress.upload.gw-0001"
    assert entry.event.actor == "communication"


def test_a_parser_crash_costs_only_the_worker(scenario: Scenario) -> None:
    """The crafted ciphertext aborts OpenFHE; ingress refuses it and keeps serving."""
    msg = scenario.bad["ciphertext-that-crashes-the-parser"]
    entry = scenario.rejections[f"reject-{msg.seq}"]
    assert "crashed the FHE parser" in str(entry.event.detail["detail"])
    assert scenario.cluster.dead() == []


def test_exactly_one_rejection_per_bad_message(scenario: Scenario) -> None:
    reasons = Counter(str(e.event.detail["reason"]) for e in scenario.rejections.values())
    assert reasons == Counter(EXPECTED.values())
    assert set(scenario.rejections) == {f"reject-{m.seq}" for m in scenario.bad.values()}


def test_nothing_already_accepted_is_lost(scenario: Scenario) -> None:
    outcomes = scenario.outcomes
    assert outcomes is not None, f"bills incomplete: {scenario.problem}"
    assert [o.meter_id for o in outcomes] == ["m-0001", "m-0002"]
    for o in outcomes:
        assert o.verdict.verified, o.verdict.reason
        assert o.verdict.registers == o.reference
        assert o.reference.total_register_wh > 0
    assert flags(scenario.cluster.data) == []
    # two days and one period closing per meter, each once, nothing of the bad messages
    period = scenario.pipeline.config.period
    day = [first for first, _ in period.chunks(READINGS_PER_DAY)]
    arrivals = sorted(
        (e.event.subject, str(e.event.detail["what"]), e.event.detail.get("first_index", -1))
        for e in logbook_entries(scenario.cluster.data, EventKind.ARRIVAL)
    )
    assert arrivals == sorted(
        [(m, "transmission", first) for m in ("m-0001", "m-0002") for first in day]
        + [(m, "period-close", -1) for m in ("m-0001", "m-0002")]
    )


def test_logbook_chain_still_verifies(scenario: Scenario) -> None:
    book = MerkleLogbook(Path(scenario.cluster.data.logbook))
    try:
        assert book.verify().ok
    finally:
        book.close()


def test_replayed_period_closing_is_refused(scenario: Scenario) -> None:
    """A closing replayed after the bill was made, verbatim or freshly signed, is refused."""
    pipeline = scenario.pipeline
    assert pipeline.gateway is not None
    original = pipeline.uploads("m-0001")[-1]  # a freshly signed closing of the same period
    before = len(logbook_entries(scenario.cluster.data, EventKind.REJECTION))
    asyncio.run(pipeline.send([original]))

    def refused() -> list[LogEntry]:
        entries = logbook_entries(scenario.cluster.data, EventKind.REJECTION)
        return entries[before:] if len(entries) > before else []

    new = wait_for(refused, timeout_s=30)
    assert [e.event.detail["reason"] for e in new] == ["replayed-index"]  # type: ignore[attr-defined]
    closes = [
        e
        for e in logbook_entries(scenario.cluster.data, EventKind.ARRIVAL)
        if e.event.subject == "m-0001" and e.event.detail["what"] == "period-close"
    ]
    assert len(closes) == 1
