"""The cloud cannot tell the authority's test traffic from real traffic (issue #10).

One embedded cloud bills as many ordinary customers' meters as the authority has test
meters behind the same gateway. A process of its own records everything the broker
carries (``admin``, subscribed to ``>``; see ``traffic_capture.py``), and after the run the
operator's records at rest are read too: meter records, stored key registrations, readings
and results, the PKI's certificates. Every message the operator can tie to a meter (by the
identifiers in its subject or in the readable fields of its signed envelope, by the request
it answers, by the message it copies) gives features of that meter: counts, sizes, headers,
positions in the arrival order, arrival times and the gaps around the customer's own
messages, what the decoded fields say. A classifier over these features (each feature as
ranks among the meters; the two most telling, chosen inside each training fold, under a
logistic regression), cross-validated, must do no better than chance at telling test
meters from ordinary ones: a permutation test of its accuracy.

The test must be able to fail: a second period in the same cloud, in which the authority
fetches its results the way a careless tester would (after every customer's, and after a
pause), must be told apart by the same classifier over features extracted the same way.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from numpy.typing import NDArray
from scipy.stats import rankdata  # type: ignore[import-untyped]
from sklearn.feature_selection import SelectKBest, f_classif  # type: ignore[import-untyped]
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
from sklearn.model_selection import (  # type: ignore[import-untyped]
    StratifiedKFold,
    permutation_test_score,
)
from sklearn.pipeline import make_pipeline  # type: ignore[import-untyped]
from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]
from traffic_capture import FETCH_SUBJECT, ID, Linked, Seen, TrafficCapture, family, link

from metrocloud.cloud.cluster import Cluster
from metrocloud.core.clock import BillingPeriod
from metrocloud.testbed.pipeline import Pipeline, PipelineConfig

METERS = 12
"""Ordinary customers' meters; as many test meters: chance is 50 %."""
DAYS = 30
"""A billing month, as the testbed bills by default: what a customer's side does per result
grows with the period, and so would a difference in it."""
SETTLE_S = 1.0
"""Quiet time after each phase, so that what a phase causes is recorded in it."""
CARELESS_PAUSE_S = 1.0
"""How long the careless authority waits before it fetches its own results."""
PERMUTATIONS = 999
FOLDS = 4
ALPHA = 0.002
"""The permutation test's level. With no leak the p-value is uniform (the test meters'
places are drawn at random): at 0.01 a correct cloud failed one CI run in a hundred, and
did (a logbook reply that happened to be slower for the test meters); at 0.002, one in
five hundred. A systematic leak, like the careless authority's, gives the least p-value
the permutations allow, 1 / (PERMUTATIONS + 1)."""

FETCH = family(FETCH_SUBJECT)
pytestmark = pytest.mark.filterwarnings(
    # a feature can be constant within a training fold: the selection then skips it
    "ignore::UserWarning:sklearn.feature_selection._univariate_selection",
    "ignore::RuntimeWarning:sklearn.feature_selection._univariate_selection",
)

RECEIVER_FAMILIES = ("ingress.keys.*", "ingress.report.*", FETCH)
"""What customers' receivers publish (the cloud knows its subject map)."""
GATEWAY_FAMILIES = ("ingress.upload.*",)


@dataclass(frozen=True)
class AtRest:
    """What the operator keeps: meter records, key registrations, readings, results, flags,
    and the certificates its PKI issued to the customers."""

    meter_of: dict[str, str]
    """Customer -> meter, from the operator's meter records."""
    features: dict[str, dict[str, float]]
    """Meter -> features of what the operator keeps about it (period-independent)."""
    stored: dict[tuple[str, str], dict[str, float]]
    """(meter, period id) -> features of the readings and result stored for the period."""


@dataclass
class Scenario:
    pipeline: Pipeline
    seen: list[Seen]
    linked: list[Linked]
    windows: dict[str, tuple[float, float]]
    """Phase (``keys``, ``honest``, ``careless``) -> its time window on the monotonic clock."""
    periods: dict[str, BillingPeriod]
    at_rest: AtRest

    @property
    def meters(self) -> list[str]:
        return sorted(self.pipeline.meter_ids)

    @property
    def labels(self) -> NDArray[np.int_]:
        """1 for the authority's test meters: the answer key, never a feature."""
        assert self.pipeline.authority is not None
        test = set(self.pipeline.authority.plan.meter_ids)
        return np.array([int(m in test) for m in self.meters])


# -- the run -------------------------------------------------------------------------------


async def careless_collect(pipeline: Pipeline, period: BillingPeriod) -> None:
    """What :meth:`Pipeline.collect` does, but the authority's meters last, after a pause:
    a tester who fetches its own results once every customer has theirs."""
    assert pipeline.authority is not None
    test = set(pipeline.authority.plan.meter_ids)
    nc = await pipeline.connect("receiver")

    async def sweep(meters: Sequence[str]) -> None:
        done: set[str] = set()
        deadline = time.monotonic() + 90.0
        while len(done) < len(meters):
            for meter_id in meters:
                if meter_id in done:
                    continue
                receiver = pipeline.receivers[pipeline.owner[meter_id]]
                result = await receiver.fetch(nc, meter_id, period)
                if result is None:
                    continue
                verdict = receiver.check(result, meter_id, period, pipeline.contracts[meter_id])
                await receiver.send_report(nc, verdict)
                done.add(meter_id)
                if meter_id in test:
                    assert pipeline.authority is not None
                    pipeline.authority.keep(meter_id, period, result)
            if len(done) < len(meters):
                assert time.monotonic() < deadline, "results did not come"
                await asyncio.sleep(0.2)

    try:
        await sweep([m for m in pipeline.meter_ids if m not in test])
        await asyncio.sleep(CARELESS_PAUSE_S)
        await sweep([m for m in pipeline.meter_ids if m in test])
    finally:
        await nc.drain()


async def drive(
    pipeline: Pipeline, periods: dict[str, BillingPeriod], uploads: dict[str, list[bytes]]
) -> dict[str, tuple[float, float]]:
    windows: dict[str, tuple[float, float]] = {}
    started = time.monotonic()
    await pipeline.register_keys()
    await asyncio.sleep(SETTLE_S)
    windows["keys"] = (started, time.monotonic())

    for phase, period in periods.items():
        started = time.monotonic()
        await pipeline.send(uploads[phase])
        if phase == "honest":
            outcomes = await pipeline.collect(timeout_s=90.0, period=period)
            assert len(outcomes) == METERS and all(o.ok for o in outcomes)
        else:
            await careless_collect(pipeline, period)
        check_round = pipeline.check(period)
        assert check_round is not None and check_round.passed, check_round
        await pipeline.log_check(check_round)
        await asyncio.sleep(SETTLE_S)
        windows[phase] = (started, time.monotonic())
    return windows


def certificate_features(certificate: x509.Certificate, issued_rank: int) -> dict[str, float]:
    key = certificate.public_key()
    return {
        "cert:der_bytes": float(len(certificate.public_bytes(Encoding.DER))),
        "cert:serial_bits": float(certificate.serial_number.bit_length()),
        "cert:not_before": certificate.not_valid_before_utc.timestamp(),
        "cert:validity_s": (
            certificate.not_valid_after_utc - certificate.not_valid_before_utc
        ).total_seconds(),
        "cert:key_bits": float(key.key_size if isinstance(key, ec.EllipticCurvePublicKey) else 0),
        "cert:signature_bytes": float(len(certificate.signature)),
        "cert:extensions": float(len(certificate.extensions)),
        "cert:issued_rank": float(issued_rank),
    }


def read_at_rest(cluster: Cluster, periods: Sequence[BillingPeriod]) -> AtRest:
    """Read the operator's store and PKI after the run."""
    at_rest: dict[str, dict[str, float]] = defaultdict(dict)
    stored: dict[tuple[str, str], dict[str, float]] = {}
    store = cluster.data.open_store()
    pki = cluster.data.open_pki()
    try:
        records = store.meters()
        tariffs = statistics.mode(r.tariff for r in records)
        gateways = statistics.mode(r.gateway_id for r in records)
        configs = statistics.mode(repr(sorted(r.tariff_config.items())) for r in records)
        flagged = [f.meter_id for f in store.flags()]
        issued = [row for row in pki.issued() if row["role"] == "receiver"]
        rank = {row["common_name"]: n for n, row in enumerate(issued)}
        serial = {row["common_name"]: int(row["serial"], 16) for row in issued}
        for record in records:
            m, c = record.meter_id, record.customer_id
            features = at_rest[m]
            features["id:number"] = float(int(m.removeprefix("m-")))
            features["id:customer_number"] = float(int(c.removeprefix("c-")))
            features["record:usual_tariff"] = float(record.tariff == tariffs)
            features["record:usual_gateway"] = float(record.gateway_id == gateways)
            features["record:usual_config"] = float(
                repr(sorted(record.tariff_config.items())) == configs
            )
            features["flags"] = float(flagged.count(m))
            parts = store.key_registration(c)
            features["stored_keys:parts"] = float(len(parts))
            features["stored_keys:bytes"] = float(sum(len(p) for p in parts))
            key = store.customer_key(c)
            features["stored_keys:tag_chars"] = float(len(key.key_tag) if key else -1)
            features.update(certificate_features(pki.certificate(serial[c]), rank[c]))
            for period in periods:
                readings = store.readings(m, period.period_id)
                result = store.result(m, period.period_id)
                stored[(m, period.period_id)] = {
                    "stored:readings": float(len(readings)),
                    "stored:reading_bytes": float(sum(len(r) for r in readings)),
                    "stored:result_bytes": float(len(result) if result else -1),
                }
    finally:
        pki.close()
        store.close()
    return AtRest({r.customer_id: r.meter_id for r in records}, dict(at_rest), stored)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    root = tmp_path_factory.mktemp("confidentiality")
    cluster = Cluster(root / "data")
    cluster.start()
    capture = TrafficCapture(cluster.data.root, root / "capture.pickle")
    try:
        config = PipelineConfig(meters=METERS, test_meters=METERS, days=DAYS, tariff="taf1")
        pipeline = Pipeline(cluster, config)
        pipeline.provision()
        honest = config.period
        careless = BillingPeriod.days(config.first_day + timedelta(days=config.days), config.days)
        periods = {"honest": honest, "careless": careless}
        gateway = pipeline.gateway
        assert gateway is not None
        # Encrypted here, on the main thread, before any bus traffic (OpenFHE's first
        # encryption of a process must be on its main thread; and it takes time).
        uploads = {
            phase: [raw for m in pipeline.meter_ids for raw in gateway.uploads(m, period)]
            for phase, period in periods.items()
        }
        capture.start()
        windows = asyncio.run(drive(pipeline, periods, uploads))
        seen = capture.stop()
        at_rest = read_at_rest(cluster, list(periods.values()))
        yield Scenario(pipeline, seen, link(seen, at_rest.meter_of), windows, periods, at_rest)
    finally:
        capture.kill()
        cluster.stop()


# -- features ------------------------------------------------------------------------------


def _add_gaps(
    rows: dict[str, dict[str, float]], linked: Sequence[Linked], families: Sequence[str]
) -> None:
    """For the messages of ``families`` (one sender's), in arrival order: the time since
    the one before and until the one after, per meter and family (first, last, mean)."""
    stream = sorted((item for item in linked if item.family in families), key=lambda i: i.seen.at)
    gaps: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for n, item in enumerate(stream):
        before = item.seen.at - stream[n - 1].seen.at if n > 0 else 0.0
        after = stream[n + 1].seen.at - item.seen.at if n + 1 < len(stream) else 0.0
        gaps[(item.meter, item.family)].append((before, after))
    for (meter, kind), found in gaps.items():
        row, p = rows[meter], f"{kind}:"
        row[p + "gap_before_first"] = found[0][0]
        row[p + "gap_after_last"] = found[-1][1]
        row[p + "gap_before_mean"] = statistics.fmean(b for b, _ in found)
        row[p + "gap_after_mean"] = statistics.fmean(a for _, a in found)


def _timestamp(text: str) -> float | None:
    if not (20 <= len(text) <= 40 and text[4:5] == "-" and "T" in text):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def flatten(fields: Any, path: str, out: dict[str, float]) -> dict[str, float]:
    """Every readable field of a message as numbers, by its path: numbers as they are,
    byte strings (ciphertexts, keys, certificates, signatures) by their length, lists by
    their length and their elements summed, texts by their length, their time if they
    are one, and short ones (a status, a reason, a tariff's name) by their value."""

    def add(key: str, value: float) -> None:
        out[key] = out.get(key, 0.0) + value

    if isinstance(fields, dict):
        for key, value in fields.items():
            flatten(value, f"{path}.{key}", out)
    elif isinstance(fields, list):
        add(path + "#", float(len(fields)))
        for value in fields:
            flatten(value, path + "[]", out)
    elif isinstance(fields, tuple):  # ("bytes", n): opaque
        add(path + ":bytes", float(fields[1]))
    elif isinstance(fields, bytes):
        add(path + ":bytes", float(len(fields)))
    elif isinstance(fields, (bool, int, float)):
        add(path, float(fields))
    elif isinstance(fields, str):
        add(path + ":chars", float(len(fields)))
        stamp = _timestamp(fields)
        if stamp is not None:
            add(path + ":time", stamp)
        elif len(fields) <= 24 and not ID.search(fields):
            add(f"{path}={fields}", 1.0)
    elif fields is None:
        add(path + ":none", 1.0)
    return out


def _add_fields(rows: dict[str, dict[str, float]], linked: Sequence[Linked]) -> None:
    """What the readable fields of each meter's messages say, per family of subject: the
    mean over its messages (a value's count for short texts)."""
    found: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    for item in linked:
        fields: dict[str, float] = {}
        if item.seen.fields is not None:
            flatten(item.seen.fields, "", fields)
        elif item.seen.data is not None:  # a log event, say: its text's length
            fields["text:chars"] = float(len(item.seen.data))
        found[(item.meter, item.family)].append(fields)
    for (meter, kind), messages in found.items():
        row = rows[meter]
        for key in {k for fields in messages for k in fields}:
            values = [fields[key] for fields in messages if key in fields]
            name = f"{kind}|{key}"
            row[name] = sum(values) if "=" in key else statistics.fmean(values)


def traffic_features(
    scenario: Scenario, window: tuple[float, float], meters: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per meter: what the messages tied to it in ``window`` look like to the cloud."""
    start, end = window
    everything = [s for s in scenario.seen if start <= s.at < end]
    assert everything, "nothing captured in the window"
    rank = {s.order: n / len(everything) for n, s in enumerate(everything)}
    t0 = everything[0].at
    linked = [item for item in scenario.linked if start <= item.seen.at < end]
    by_family: dict[str, list[Linked]] = defaultdict(list)
    for item in linked:
        by_family[item.family].append(item)
    family_rank = {
        item.seen.order: n / len(items)
        for items in by_family.values()
        for n, item in enumerate(items)
    }
    rows: dict[str, dict[str, float]] = {m: {} for m in meters}
    groups: dict[tuple[str, str], list[Linked]] = defaultdict(list)
    for item in linked:
        groups[(item.meter, item.family)].append(item)
    for (meter, kind), items in groups.items():
        row, p = rows[meter], f"{kind}:"
        first, last = items[0].seen, items[-1].seen
        sizes = [i.seen.size for i in items]
        row[p + "count"] = float(len(items))
        row[p + "bytes"] = float(sum(sizes))
        row[p + "min_bytes"] = float(min(sizes))
        row[p + "max_bytes"] = float(max(sizes))
        row[p + "headers"] = float(sum(len(i.seen.headers) for i in items))
        row[p + "header_chars"] = float(
            sum(len(k) + len(v) for i in items for k, v in i.seen.headers)
        )
        row[p + "rank"] = rank[first.order]
        row[p + "family_rank"] = family_rank[first.order]
        row[p + "t_first"] = first.at - t0
        row[p + "t_last"] = last.at - t0
        answered = [i.seen.at - i.reply_of.at for i in items if i.reply_of is not None]
        if answered:
            row[p + "latency_mean"] = statistics.fmean(answered)
            row[p + "latency_max"] = max(answered)
    for meter in meters:  # from its period's closing to what its customer does
        row = rows[meter]
        closed = row.get("legal.in.close.*:t_first")
        for name in ("egress.results.>", FETCH, "ingress.report.*"):
            if closed is not None and f"{name}:t_first" in row:
                row[f"{name}:after_close"] = row[f"{name}:t_first"] - closed
        ready = row.get("egress.results.>:t_first")
        if ready is not None and "ingress.report.*:t_first" in row:
            row["ready_to_report"] = row["ingress.report.*:t_first"] - ready
    _add_gaps(rows, linked, RECEIVER_FAMILIES)
    _add_gaps(rows, linked, GATEWAY_FAMILIES)
    _add_fields(rows, linked)
    return rows


def feature_matrix(scenario: Scenario, phase: str) -> tuple[NDArray[np.float64], list[str]]:
    """One row per meter: its traffic in ``phase``, its key registration, and what the
    operator keeps about it; the same columns for every meter (absent: 0); columns that
    are the same for every meter dropped (they cannot tell anything apart)."""
    meters = scenario.meters
    period = scenario.periods[phase]
    keys = traffic_features(scenario, scenario.windows["keys"], meters)
    traffic = traffic_features(scenario, scenario.windows[phase], meters)
    rows: list[dict[str, float]] = []
    for m in meters:
        row = {f"keys|{k}": v for k, v in keys[m].items()}
        row.update(traffic[m])
        row.update(scenario.at_rest.features[m])
        row.update(scenario.at_rest.stored[(m, period.period_id)])
        rows.append(row)
    columns = sorted({k for row in rows for k in row})
    matrix = np.array([[row.get(c, 0.0) for c in columns] for row in rows], dtype=np.float64)
    matrix -= matrix.min(axis=0)  # times of day and the like: offsets, for precision
    varies = matrix.std(axis=0) > 0
    return matrix[:, varies], [c for c, v in zip(columns, varies, strict=True) if v]


# -- the classifier -------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    accuracy: float
    p_value: float
    features: int
    telling: str
    """The features that differ most between the classes, alone (to say what leaks)."""

    def __str__(self) -> str:
        return (
            f"accuracy {self.accuracy:.3f} (chance 0.5), p = {self.p_value:.4f} "
            f"over {self.features} features; most telling alone: {self.telling}"
        )


def classifier() -> object:
    """The two most telling features, chosen inside each training fold, under a linear
    model: with a few dozen meters and hundreds of features, a leak shows in one or two of
    them (a size, a position, a gap); a forest over all of them mostly splits on noise."""
    return make_pipeline(StandardScaler(), SelectKBest(f_classif, k=2), LogisticRegression())


def ranks(matrix: NDArray[np.float64]) -> NDArray[np.float64]:
    """Each feature replaced by its rank among the meters (ties share one): no labels go
    in, and a few outliers (a gap while a service was busy) no longer hide a difference."""
    ranked: NDArray[np.float64] = rankdata(matrix, axis=0)
    return ranked


def most_telling(
    matrix: NDArray[np.float64], labels: NDArray[np.int_], columns: Sequence[str], n: int = 4
) -> str:
    """The ``n`` features that tell the classes apart best on their own (for the message:
    what leaks), with their means (offsets from their least value) per class."""
    scores, p_values = f_classif(ranks(matrix), labels)
    order = np.argsort(-np.nan_to_num(scores, nan=-1.0))[:n]
    return ", ".join(
        f"{columns[i]} (test {matrix[labels == 1, i].mean():.4g}, "
        f"ordinary {matrix[labels == 0, i].mean():.4g}, p {p_values[i]:.2g})"
        for i in order
    )


def tell_apart(
    matrix: NDArray[np.float64], labels: NDArray[np.int_], columns: Sequence[str]
) -> Verdict:
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=0)
    accuracy, _, p_value = permutation_test_score(
        classifier(),
        ranks(matrix),
        labels,
        cv=folds,
        n_permutations=PERMUTATIONS,
        scoring="accuracy",
        random_state=0,
        n_jobs=1,
    )
    telling = most_telling(matrix, labels, columns)
    return Verdict(float(accuracy), float(p_value), matrix.shape[1], telling)


# -- the tests ------------------------------------------------------------------------------


def test_the_capture_ties_every_meter_to_its_traffic(scenario: Scenario) -> None:
    """The features come from a capture that saw every meter's whole round trip."""
    needed = (
        "ingress.upload.*",
        "legal.in.reading.*",
        "legal.in.close.*",
        "legal.results.*",
        "egress.results.>",
        FETCH,
        f"reply<{FETCH}",
        "ingress.report.*",
    )
    for phase in ("honest", "careless"):
        start, end = scenario.windows[phase]
        families: dict[str, set[str]] = defaultdict(set)
        for item in scenario.linked:
            if start <= item.seen.at < end:
                families[item.meter].add(item.family)
        for meter in scenario.meters:
            missing = set(needed) - families[meter]
            assert not missing, f"{phase}: nothing of {meter} in {sorted(missing)}"
    keys_start, keys_end = scenario.windows["keys"]
    registered = {
        i.meter for i in scenario.linked
        if i.family == "ingress.keys.*" and keys_start <= i.seen.at < keys_end
    }  # fmt: skip
    assert registered == set(scenario.meters)
    # The authority's round reaches the logbook without a meter or customer in it.
    rounds = [s for s in scenario.seen if s.subject == "legal.log.monitor"]
    assert len(rounds) >= 2
    assert all(s.data is not None and b"m-0" not in s.data and b"c-0" not in s.data for s in rounds)


def test_a_classifier_over_everything_the_cloud_sees_does_no_better_than_chance(
    scenario: Scenario,
) -> None:
    matrix, columns = feature_matrix(scenario, "honest")
    assert matrix.shape == (2 * METERS, len(columns)) and len(columns) > 40, columns
    verdict = tell_apart(matrix, scenario.labels, columns)
    print("honest period:", verdict)
    assert verdict.p_value > ALPHA, f"the cloud tells test traffic from real traffic: {verdict}"


def test_the_classifier_does_tell_a_careless_authority_apart(scenario: Scenario) -> None:
    """The positive control: the same features and classifier, on the period in which
    the authority fetched its results after every customer's and after a pause."""
    matrix, columns = feature_matrix(scenario, "careless")
    verdict = tell_apart(matrix, scenario.labels, columns)
    print("careless period:", verdict)
    assert verdict.p_value < 0.01 and verdict.accuracy >= 0.9, str(verdict)
