"""The authority's verification monitor: what it shows, and how it gathers it.

Market surveillance wants one view of a running cloud that trusts nothing the operator
says. A :class:`MonitorSnapshot` holds, at one moment:

- **per legally relevant component**, its badge (:mod:`metrocloud.authority.verification`):
  the component is asked over the bus for its signed identification, which is judged
  against the authority's current reference list (:class:`ReferenceStore`); a component
  that does not answer is red (``no-answer``);
- **the logbook's integrity** (:class:`LogbookWatch`): the latest head counts only with
  the log's signature, the witnesses' quorum of cosignatures and a consistency proof from
  the head accepted before (:class:`~metrocloud.logbook.client.LogAuditor`); and every
  entry, read once over the signed read API as an authority reader, must hash to that
  head, so no entry can be hidden from the monitor;
- **the anomaly state** (:func:`anomaly_view`) and **the latest functionality check per
  tariff program** (:func:`latest_checks`), derived from the ``anomaly`` and
  ``functionality-check`` events among those verified entries;
- the monitor's own software identification.

:func:`gather_snapshot` never raises: each failure becomes a red or unknown state with its
reason, shown where it happened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import httpx
from cryptography import x509
from nats.aio.client import Client

from metrocloud.authority.identification import ComponentReport, request_identification
from metrocloud.authority.reference import ReferenceList, ReferenceStore
from metrocloud.authority.verification import ComponentStatus, check_components, judge
from metrocloud.core.errors import MetrocloudError, Rejected
from metrocloud.core.events import EventKind, LogEvent
from metrocloud.core.http import open_http
from metrocloud.core.messages import Signer
from metrocloud.core.software import LoadedComponent, SoftwareIdentification
from metrocloud.logbook.checkpoint import LOG_ORIGIN, Checkpoint
from metrocloud.logbook.client import LogAuditor, LogbookClient, LogbookUnreachable
from metrocloud.logbook.merkle import EMPTY_ROOT, leaf_hash, node_hash
from metrocloud.logbook.witness import verify_cosigned
from metrocloud.pki.validate import TrustStore

_log = logging.getLogger(__name__)

AnomalyLevel = Literal["green", "yellow", "red", "unknown"]
SEVERITY: dict[str, int] = {"green": 0, "yellow": 1, "red": 2}
"""Anomaly states from best to worst; the system is as bad as its worst component."""
PAGE = 1000
"""Entries per read request (the API's largest page)."""
WATCHED_KINDS = (EventKind.ANOMALY, EventKind.FUNCTIONALITY_CHECK)
HTTP_TIMEOUT_S = 5.0
"""How long one request to the logbook's API may take."""


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


# -- the model ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LogbookIntegrity:
    """Whether the logbook's latest head verified, and what it is."""

    verified: bool
    size: int | None
    root_hash: str | None
    """Hex of the verified head's root; None when nothing verified."""
    cosigned_by: list[str]
    """The witnesses whose cosignature on the head holds."""
    checked_at: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "verified": self.verified,
            "size": self.size,
            "root_hash": self.root_hash,
            "cosigned_by": list(self.cosigned_by),
            "checked_at": self.checked_at,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class AnomalyView:
    """The system's anomaly state: the worst of each component's latest state."""

    state: AnomalyLevel
    since: str | None
    """When the system entered this state (ISO); None while it is unknown."""
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "since": self.since, "detail": self.detail}


@dataclass(frozen=True)
class FunctionalityCheckView:
    """The latest functionality-check round of one tariff program."""

    program: str
    version: str
    passed: bool
    checked_at: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "program": self.program,
            "version": self.version,
            "passed": self.passed,
            "checked_at": self.checked_at,
            "detail": self.detail,
        }


def component_dict(status: ComponentStatus) -> dict[str, Any]:
    """One component's row as the status JSON shows it."""
    report = status.report
    ident = report.identification if report else None
    return {
        "component": status.component,
        "badge": status.badge,
        "reason": status.reason,
        "detail": status.detail,
        "instance_id": ident.instance_id if ident else None,
        "name": ident.name if ident else None,
        "version": ident.version if ident else None,
        "checksum": ident.checksum if ident else None,
        "changed": list(report.changed) if report else [],
        "signed_by": report.signed_by if report else None,
    }


@dataclass(frozen=True)
class MonitorSnapshot:
    """Everything the monitor's page shows, as gathered at ``taken_at``."""

    taken_at: str
    reference_serial: int | None
    """The serial of the authority's current reference list; None when there is none."""
    reference_issuer: str | None
    components: list[ComponentStatus]
    own: SoftwareIdentification
    """The monitor's own identification, as this process loaded it."""
    logbook: LogbookIntegrity
    anomaly: AnomalyView
    checks: list[FunctionalityCheckView]
    reference_detail: str = ""
    """Why there is no usable reference list (empty when there is one)."""
    own_changed: tuple[str, ...] = field(default=())
    """The monitor's own legally relevant modules changed on disk since it loaded them."""

    @property
    def all_green(self) -> bool:
        return bool(self.components) and all(s.green for s in self.components)

    @property
    def overall(self) -> Literal["green", "red"]:
        """Green only when every component is green and the logbook verified."""
        return "green" if self.all_green and self.logbook.verified else "red"

    def overall_detail(self) -> str:
        """Why the overall verdict is what it is, in one sentence."""
        red = [s.component for s in self.components if not s.green]
        why = []
        if not self.components:
            why.append("no component was checked")
        if red:
            why.append(f"red: {', '.join(red)}")
        if not self.logbook.verified:
            why.append("the logbook is not verified")
        if not why:
            return (
                f"all {len(self.components)} components run approved software and the "
                "logbook verifies"
            )
        return "; ".join(why)

    def to_dict(self) -> dict[str, Any]:
        return {
            "taken_at": self.taken_at,
            "overall": self.overall,
            "overall_detail": self.overall_detail(),
            "reference": {
                "serial": self.reference_serial,
                "issuer": self.reference_issuer,
                "detail": self.reference_detail,
            },
            "monitor": {**self.own.to_dict(), "changed": list(self.own_changed)},
            "components": [component_dict(s) for s in self.components],
            "logbook": self.logbook.to_dict(),
            "anomaly": self.anomaly.to_dict(),
            "checks": [c.to_dict() for c in self.checks],
        }


# -- deriving the views from logged events ------------------------------------------------
def _metrics_text(metrics: Mapping[str, Any]) -> str:
    return ", ".join(f"{name}={value:g}" for name, value in sorted(metrics.items()))


def anomaly_view(events: Iterable[LogEvent]) -> AnomalyView:
    """The anomaly state after ``events`` (in log order; other kinds are skipped).

    Each component is in the state its latest ``anomaly`` event moved it to; the system is
    in the worst of them, since the event that last changed that. ``unknown`` while no
    anomaly detection has reported.
    """
    latest: dict[str, LogEvent] = {}
    state: str | None = None
    since: str | None = None
    for event in events:
        if event.kind is not EventKind.ANOMALY:
            continue
        latest[str(event.detail["component"])] = event
        worst = max((str(e.detail["state_to"]) for e in latest.values()), key=SEVERITY.__getitem__)
        if worst != state:
            state, since = worst, event.time.isoformat()
    if state is None:
        return AnomalyView("unknown", None, "no anomaly detection has reported yet")
    flagged = [
        f"{name} {e.detail['state_to']} by rule {e.detail['rule']}"
        + (f" ({_metrics_text(e.detail['metrics'])})" if e.detail["metrics"] else "")
        for name, e in sorted(latest.items())
        if e.detail["state_to"] != "green"
    ]
    if flagged:
        detail = "; ".join(flagged)
    else:
        detail = f"every component reported green ({', '.join(sorted(latest))})"
    level: AnomalyLevel = "red" if state == "red" else "yellow" if state == "yellow" else "green"
    return AnomalyView(level, since, detail)


def latest_checks(events: Iterable[LogEvent]) -> list[FunctionalityCheckView]:
    """The latest ``functionality-check`` round per tariff program (events in log order),
    sorted by program."""
    latest: dict[str, LogEvent] = {}
    for event in events:
        if event.kind is EventKind.FUNCTIONALITY_CHECK:
            latest[str(event.detail["program"])] = event
    views = []
    for program, event in sorted(latest.items()):
        d = event.detail
        views.append(
            FunctionalityCheckView(
                program,
                str(d["program_version"]),
                d["verdict"] == "pass",
                event.time.isoformat(),
                f"{d['checks']} checks, {d['failures']} failed (round {d['round_id']})",
            )
        )
    return views


# -- the logbook --------------------------------------------------------------------------
class Frontier:
    """The right edge of an RFC 9162 tree (its perfect subtrees, largest first): the root of
    every size is computed from it, leaf by leaf, without keeping the leaves."""

    def __init__(self) -> None:
        self.size = 0
        self._subtrees: list[tuple[int, bytes]] = []  # (leaves, hash)

    def copy(self) -> Frontier:
        other = Frontier()
        other.size, other._subtrees = self.size, list(self._subtrees)
        return other

    def append(self, leaf: bytes) -> None:
        """Add the entry ``leaf`` (its bytes; hashed here)."""
        width, digest = 1, leaf_hash(leaf)
        while self._subtrees and self._subtrees[-1][0] == width:
            _, left = self._subtrees.pop()
            width, digest = 2 * width, node_hash(left, digest)
        self._subtrees.append((width, digest))
        self.size += 1

    def root(self) -> bytes:
        if not self._subtrees:
            return EMPTY_ROOT
        digest = self._subtrees[-1][1]
        for _, left in reversed(self._subtrees[:-1]):
            digest = node_hash(left, digest)
        return digest


@dataclass(frozen=True)
class LogbookSource:
    """Where the logbook's read API is and whom the monitor trusts about it."""

    url: str
    tls_trust: Path
    """PEM bundle the API's TLS certificate must chain to (the PKI's ``root.pem``)."""
    log_certificate: x509.Certificate
    witnesses: Mapping[str, x509.Certificate]
    quorum: int
    reader: Signer
    """Signs the entry reads: an authority identity (every entry is in its view)."""
    state: Path
    """Where the last accepted head is kept (``<data>/authority/monitor/accepted-head.json``)."""


class _NoteKeeper(LogbookClient):
    """A client that keeps the last head note it fetched (to name the cosigners)."""

    note: str | None = None

    def checkpoint(self) -> str:
        self.note = super().checkpoint()
        return self.note


class LogbookWatch:
    """Checks the logbook's head and reads every new entry up to it, refresh after refresh.

    Every entry is read once (unfiltered, the authority's view) and hashed into a
    :class:`Frontier`; the root must be the accepted head's, so the events the monitor
    shows come from a log it verified, and an index that hides an entry from a filtered
    read cannot hide it here. :meth:`check` blocks (HTTP); call it from a thread.
    ``http`` makes the HTTP client of one check (default: TLS to ``source.url``, checked
    against ``source.tls_trust``).
    """

    def __init__(
        self,
        source: LogbookSource,
        trust: TrustStore,
        *,
        http: Callable[[], httpx.Client] | None = None,
    ) -> None:
        self.source = source
        self._http = http or (
            lambda: open_http(source.url, tls_trust=source.tls_trust, timeout_s=HTTP_TIMEOUT_S)
        )
        self.auditor = LogAuditor(
            source.log_certificate,
            trust,
            log_name=LOG_ORIGIN,
            witnesses=source.witnesses,
            quorum=source.quorum,
            state=source.state,
        )
        self.frontier = Frontier()
        self.events: list[LogEvent] = []
        """The watched kinds' events (:data:`WATCHED_KINDS`) of the verified log, in order."""
        self.unreadable: list[int] = []
        """Entries in the verified log that hold no valid event."""

    def cosigners(self, note: str) -> list[str]:
        """The configured witnesses whose cosignature on ``note`` holds."""
        found = []
        for name, certificate in sorted(self.source.witnesses.items()):
            try:
                verify_cosigned(
                    note, self.source.log_certificate, {name: certificate}, 1,
                    self.auditor.trust, log_name=LOG_ORIGIN,
                )  # fmt: skip
            except (Rejected, ValueError):
                continue
            found.append(name)
        return found

    def check(self) -> LogbookIntegrity:
        """The logbook's integrity now; never raises."""
        checked = now_iso()
        try:
            client = _NoteKeeper(self._http(), self.source.reader)
        except (OSError, ValueError) as exc:
            return LogbookIntegrity(False, None, None, [], checked, f"cannot reach it: {exc}")
        try:
            before = self.auditor.accepted()
            head = self.auditor.head(client)
            self._read_to(client, head)
            cosigners = self.cosigners(client.note or "")
        except Rejected as exc:
            return LogbookIntegrity(False, None, None, [], checked, f"{exc.reason}: {exc.detail}")
        except LogbookUnreachable as exc:
            return LogbookIntegrity(False, None, None, [], checked, f"unreachable: {exc}")
        except (MetrocloudError, OSError, ValueError, KeyError) as exc:
            _log.warning("logbook check failed: %r", exc)
            return LogbookIntegrity(
                False, None, None, [], checked, f"check failed: {type(exc).__name__}: {exc}"
            )
        finally:
            client.close()
        witnesses = len(self.source.witnesses)
        parts = [
            f"head of size {head.size} signed by the log",
            f"cosigned by {len(cosigners)} of {witnesses} witnesses (quorum {self.auditor.quorum})",
            "no earlier head to compare"
            if before is None
            else f"extends the head of size {before.size} accepted before",
            f"all {head.size} entries hash to it",
        ]
        if self.unreadable:
            shown = ", ".join(str(s) for s in self.unreadable[:5])
            parts.append(f"entries holding no valid event: {shown}")
        return LogbookIntegrity(
            True, head.size, head.root.hex(), cosigners, checked, "; ".join(parts)
        )

    def _read_to(self, client: LogbookClient, head: Checkpoint) -> None:
        """Read the entries from the last one read to ``head``'s size; ``Rejected`` unless
        they hash to its root (then nothing of them is kept)."""
        if head.size < self.frontier.size:  # the auditor refuses rollbacks; this is belt
            raise Rejected("rollback", f"size {head.size} after {self.frontier.size} was read")
        frontier = self.frontier.copy()
        found: list[LogEvent] = []
        unreadable: list[int] = []
        while frontier.size < head.size:
            wanted = min(PAGE, head.size - frontier.size)
            page = client.entries(frontier.size, wanted, audience="authority")
            if not page:
                raise Rejected("missing-entry", f"entry {frontier.size} is missing from the log")
            for entry in page[:wanted]:
                if entry.seq != frontier.size:
                    raise Rejected(
                        "missing-entry",
                        f"entry {frontier.size} is missing (the log served {entry.seq})",
                    )
                frontier.append(entry.leaf)
                try:
                    event = entry.event
                except Rejected:
                    unreadable.append(entry.seq)
                    continue
                if event.kind in WATCHED_KINDS:
                    found.append(event)
        if frontier.root() != head.root:
            raise Rejected(
                "inconsistent",
                f"the entries served do not hash to the cosigned head of size {head.size}",
            )
        self.frontier = frontier
        self.events.extend(found)
        self.unreadable.extend(unreadable)


# -- gathering ----------------------------------------------------------------------------
def _reference(store: ReferenceStore, trust: TrustStore) -> tuple[ReferenceList | None, str]:
    try:
        reference = store.current(trust)
    except Rejected as exc:
        return None, f"the reference list is refused: {exc.reason}: {exc.detail}"
    except (MetrocloudError, OSError, ValueError) as exc:
        return None, f"the reference list cannot be read: {exc}"
    if reference is None:
        return None, "no reference list approved yet"
    return reference, ""


async def _status(
    nc: Client | None,
    component: str,
    trust: TrustStore,
    reference: ReferenceList | None,
    reference_detail: str,
    timeout_s: float,
) -> ComponentStatus:
    """One component's badge; never raises."""
    if nc is None:
        return ComponentStatus(component, False, "no-bus", "the monitor is not on the bus")
    try:
        if reference is not None:
            [status] = await check_components(
                nc, [component], trust, reference, timeout_s=timeout_s
            )
            return status
        try:
            report = await request_identification(nc, component, trust, timeout_s=timeout_s)
        except Rejected as exc:
            return ComponentStatus(component, False, exc.reason, exc.detail)
        return ComponentStatus(component, False, "no-reference-list", reference_detail, report)
    except Exception as exc:  # whatever goes wrong shows as this component's badge
        _log.warning("checking %s failed: %r", component, exc)
        return ComponentStatus(component, False, "check-failed", f"{type(exc).__name__}: {exc}")


def own_status(
    own: LoadedComponent, signer: str, reference: ReferenceList | None, reference_detail: str
) -> ComponentStatus:
    """The monitor's own badge: its loaded identification judged against the list."""
    ident = own.identification
    report = ComponentReport(ident, tuple(own.changed_modules()), signer)
    if reference is None:
        return ComponentStatus(
            ident.component, False, "no-reference-list", reference_detail, report
        )
    return judge(ident.component, report, reference)


def pending_snapshot(components: Sequence[str], own: LoadedComponent) -> MonitorSnapshot:
    """What the monitor shows before its first snapshot is gathered: nothing checked yet."""
    taken = now_iso()
    why = "not checked yet: the monitor is gathering its first snapshot"
    return MonitorSnapshot(
        taken_at=taken,
        reference_serial=None,
        reference_issuer=None,
        reference_detail=why,
        components=[ComponentStatus(c, False, "pending", why) for c in components],
        own=own.identification,
        logbook=LogbookIntegrity(False, None, None, [], taken, why),
        anomaly=AnomalyView("unknown", None, why),
        checks=[],
    )


async def gather_snapshot(
    *,
    components: Sequence[str],
    trust: TrustStore,
    reference: ReferenceStore,
    own: LoadedComponent,
    own_signer: str,
    nc: Client | None,
    watch: LogbookWatch | None,
    timeout_s: float = 2.0,
    no_logbook: str = "no logbook configured",
) -> MonitorSnapshot:
    """Ask every component in ``components`` over ``nc``, judge each against the current
    list in ``reference``, check the logbook with ``watch``, and derive the anomaly state
    and functionality checks from its events. Never raises.

    The monitor's own component (``own``), when it is in ``components``, is judged from
    what this process loaded rather than asked over the bus. Without a ``watch`` the
    logbook is shown as not verified, saying ``no_logbook``.
    """
    taken = now_iso()
    listed, reference_detail = await asyncio.to_thread(_reference, reference, trust)
    ident = own.identification
    asked = [c for c in components if c != ident.component]

    async def logbook() -> LogbookIntegrity:
        if watch is None:
            return LogbookIntegrity(False, None, None, [], taken, no_logbook)
        try:
            return await asyncio.to_thread(watch.check)
        except Exception as exc:  # LogbookWatch.check does not raise; belt and braces
            _log.exception("logbook check")
            return LogbookIntegrity(False, None, None, [], taken, f"check failed: {exc!r}")

    checking_log = asyncio.ensure_future(logbook())
    try:
        statuses = await asyncio.gather(
            *(_status(nc, c, trust, listed, reference_detail, timeout_s) for c in asked)
        )
        integrity = await checking_log
    finally:
        checking_log.cancel()
    by_name: dict[str, ComponentStatus] = {s.component: s for s in statuses}
    if ident.component in components:
        by_name[ident.component] = own_status(own, own_signer, listed, reference_detail)
    events = list(watch.events) if watch is not None else []
    anomaly = anomaly_view(events)
    if watch is not None and not integrity.verified:
        note = " (as of the last verified head: the logbook does not verify now)"
        anomaly = AnomalyView(anomaly.state, anomaly.since, anomaly.detail + note)
    return MonitorSnapshot(
        taken_at=taken,
        reference_serial=listed.serial if listed else None,
        reference_issuer=listed.issuer if listed else None,
        reference_detail=reference_detail,
        components=[by_name[c] for c in components],
        own=ident,
        own_changed=tuple(own.changed_modules()),
        logbook=integrity,
        anomaly=anomaly,
        checks=latest_checks(events),
    )
