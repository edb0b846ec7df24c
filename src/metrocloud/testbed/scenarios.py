"""The scenario library: attacks and faults run through the test controller, each with what
the system must detect or survive, and what it did.

A :class:`Scenario` drives a :class:`~metrocloud.testbed.controller.TestbedClient` from a
defined start state and records :class:`Check` s: a claim, the expected outcome and the
observed one. :func:`run_scenario` turns that into a :class:`ScenarioReport` (an exception
is a failed scenario with its message, never a crash of the run), :func:`render_html` into
the page ``metrocloud testbed run --report out.html`` writes. The pytest suite
(``tests/scenarios/test_scenario_library.py``) runs the same scenarios and asserts every
check.

Where the system cannot detect something yet, the scenario says so (:attr:`Scenario.gap`)
and its checks assert what does happen, so a change in either direction shows.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from metrocloud.testbed.attacks import UPDATE_ATTACKS
from metrocloud.testbed.controller import TestbedClient


@dataclass(frozen=True)
class Check:
    claim: str
    expected: str
    observed: str
    ok: bool


@dataclass
class Probe:
    """Collects a scenario's checks."""

    checks: list[Check] = field(default_factory=list)

    def equal(self, claim: str, expected: Any, observed: Any) -> bool:
        return self.holds(claim, str(expected), observed, observed == expected)

    def holds(self, claim: str, expected: str, observed: Any, ok: bool) -> bool:
        self.checks.append(Check(claim, expected, str(observed), bool(ok)))
        return bool(ok)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    action: str
    """What is done to the system."""
    expected: str
    """What the system must detect or survive."""
    run: Callable[[TestbedClient, Probe], None]
    gap: str | None = None
    """What the system cannot detect yet, and what will."""


@dataclass(frozen=True)
class ScenarioReport:
    name: str
    title: str
    action: str
    expected: str
    gap: str | None
    checks: tuple[Check, ...]
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.ok for c in self.checks)

    def text(self) -> str:
        """The report as plain text lines (for a failing test's message)."""
        lines = [f"{self.name}: {'passed' if self.ok else 'FAILED'} in {self.seconds:.1f} s"]
        lines += [
            f"  [{'ok' if c.ok else 'FAIL'}] {c.claim}: "
            f"expected {c.expected}, observed {c.observed}"
            for c in self.checks
        ]
        if self.error:
            lines.append(f"  error: {self.error}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str, title: str, *, action: str, expected: str, gap: str | None = None
) -> Callable[[Callable[[TestbedClient, Probe], None]], Callable[[TestbedClient, Probe], None]]:
    def register(
        run: Callable[[TestbedClient, Probe], None],
    ) -> Callable[[TestbedClient, Probe], None]:
        SCENARIOS[name] = Scenario(name, title, action, expected, run, gap)
        return run

    return register


def run_scenario(client: TestbedClient, chosen: Scenario) -> ScenarioReport:
    probe = Probe()
    started = time.monotonic()
    error = None
    try:
        chosen.run(client, probe)
    except Exception as exc:  # a failed scenario, reported; the run goes on
        error = f"{type(exc).__name__}: {exc}"
        response = getattr(exc, "response", None)
        if response is not None:
            error += f" ({response.text[:300]})"
    return ScenarioReport(
        chosen.name, chosen.title, chosen.action, chosen.expected, chosen.gap,
        tuple(probe.checks), time.monotonic() - started, error,
    )  # fmt: skip


def run_scenarios(
    client: TestbedClient,
    names: Iterable[str] | None = None,
    progress: Callable[[ScenarioReport], None] | None = None,
) -> list[ScenarioReport]:
    """Run the named scenarios (default: all, in library order); the testbed is stopped
    afterwards. ``KeyError`` for an unknown name, before anything runs."""
    chosen = [SCENARIOS[n] for n in (names or SCENARIOS)]
    reports = []
    try:
        for s in chosen:
            reports.append(run_scenario(client, s))
            if progress:
                progress(reports[-1])
    finally:
        client.stop()
    return reports


# -- helpers of the scenarios ---------------------------------------------------------------
def bills_verified(probe: Probe, outcomes: list[dict[str, Any]], claim: str) -> None:
    failed = [f"{o['meter']}: {o['reason']}" for o in outcomes if not o["ok"]]
    probe.holds(
        claim,
        "every bill verified and equal to the plaintext reference",
        "; ".join(failed) or f"{len(outcomes)} of {len(outcomes)} verified and equal",
        bool(outcomes) and not failed,
    )


def metrological(client: TestbedClient) -> list[tuple[str, str | None, Any]]:
    return [
        (e["kind"], e["meter"], e["detail"].get("reason"))
        for e in client.gateway_log("metrological")
    ]


def rejection_reasons(client: TestbedClient) -> list[str]:
    return [str(e["detail"].get("reason")) for e in client.logbook("rejection")]


def until(check: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    """``check()`` once true, or its last (false) value after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


# -- the library -------------------------------------------------------------------------------
@scenario(
    "lossy-radio",
    "Lossy radio channel",
    action="An electricity, a gas, a water and a heat meter send a day through a realistic "
    "channel: fading, collisions, interference, bit errors and echoes.",
    expected="Lost and corrupted telegrams never become readings; the quarter hours that "
    "never arrived go to the error register, and every bill still verifies.",
)
def lossy_radio(client: TestbedClient, probe: Probe) -> None:
    client.start(
        meters=4, days=1, channel="realistic", seed=11,
        media=["electricity", "gas", "water", "heat"],
    )  # fmt: skip
    field = client.measure()
    lost = sum(v for k, v in field["channel"].items() if k.startswith("lost_"))
    refused = sum(v for k, v in field["outcomes"].items() if k != "accepted")
    probe.holds(
        "the channel disturbed the run", "telegrams lost or refused", f"{lost} lost, "
        f"{refused} refused of {field['sent']}", lost + refused > 0
    )  # fmt: skip
    outcomes = client.bill()
    bills_verified(probe, outcomes, "bills")
    gaps = sum(o["error_intervals"] for o in outcomes)
    probe.holds("gaps booked to the error register", "some quarter hours", gaps, gaps > 0)


@scenario(
    "replay",
    "Replayed telegram",
    action="A telegram captured on the air is sent again during the next quarter hour.",
    expected="The gateway refuses it (access number seen before), logs it for the "
    "authority, and bills are unaffected.",
)
def replay(client: TestbedClient, probe: Probe) -> None:
    meters = client.start(meters=2, days=1)["meters"]
    client.measure(8)
    client.inject(replay_of=meters[0])
    field = client.measure()
    probe.equal("refused as replayed", 1, field["outcomes"].get("replayed-access-number", 0))
    probe.holds(
        "in the metrological log",
        "telegram-refused, replayed-access-number",
        metrological(client)[-3:],
        ("telegram-refused", meters[0], "replayed-access-number") in metrological(client),
    )
    bills_verified(probe, client.bill(), "bills")


@scenario(
    "wrong-key",
    "Meter key changed behind the gateway's back",
    action="A meter encrypts with a new key the gateway was not told of for four quarter "
    "hours; then the administrator installs the key.",
    expected="The four telegrams fail the decryption check and are logged for the "
    "authority; the key change is logged; the missing hour goes to the error register.",
)
def wrong_key(client: TestbedClient, probe: Probe) -> None:
    meters = client.start(meters=2, days=1)["meters"]
    client.measure(8)
    key = bytes(range(16, 32))
    client.change_key(meters[1], key)
    client.measure(4)
    client.change_key(meters[1], key, tell_gateway=True)
    field = client.measure()
    probe.equal("decryption check failed", 4, field["outcomes"].get("decryption-check-failed"))
    log = metrological(client)
    refused = log.count(("telegram-refused", meters[1], "decryption-check-failed"))
    probe.equal("refusals in the metrological log", 4, refused)
    probe.holds("key change logged", "key-changed", log, ("key-changed", meters[1], None) in log)
    admin = client.gateway_log("administrator")
    leaked = [e for e in admin if "register" in e["detail"]]
    probe.equal("administrator log without measured values", 0, len(leaked))
    outcomes = client.bill()
    bills_verified(probe, outcomes, "bills")
    gaps = {o["meter"]: o["error_intervals"] for o in outcomes}
    probe.holds(
        "the hour went to the error register", f"{meters[0]}: 0, {meters[1]}: 4 or more", gaps,
        gaps.get(meters[0]) == 0 and gaps.get(meters[1], 0) >= 4,
    )  # fmt: skip


@scenario(
    "gateway-interfaces",
    "Gateway administration and the consumer's page",
    action="A customer's certificate tries the gateway's WAN API; the administrator sets a "
    "consumer's HAN password and installs a meter's new key over the WAN; the consumer "
    "logs in to the HAN page.",
    expected="Only the administrator's certificate is let in, and the WAN never shows a "
    "measured value; the key installed over the WAN takes effect at once and is logged "
    "for the authority; the consumer sees their own meter's readings and nobody else's.",
)
def gateway_interfaces(client: TestbedClient, probe: Probe) -> None:
    state = client.start(meters=2, days=1)
    meters, admin = state["meters"], state["gateway_administrator"]
    client.measure(8)
    intruder = client.gateway_wan("c-0002", "PUT", f"/meters/{meters[1]}/key", {"key": "00" * 16})
    probe.holds("a customer's certificate at the WAN", "refused (handshake or 401/403)",
                intruder.get("status") or intruder.get("error"),
                intruder.get("status") in (None, 401, 403))  # fmt: skip
    refusals = [
        e["detail"].get("reason")
        for e in client.gateway_log("administrator")
        if e["kind"] == "wan-refused"
    ]
    probe.holds("the refusal in the administrator's log", "wan-refused", refusals,
                intruder.get("status") is None or refusals == ["wrong-role"])  # fmt: skip
    listing = client.gateway_wan(admin, "GET", "/meters")
    listed = listing["body"].get("meters", []) if listing.get("status") == 200 else []
    probe.holds("the administrator's meter list", "both meters, no register value",
                [m.get("meter_id") for m in listed],
                len(listed) == 2 and "register" not in str(listing))  # fmt: skip
    password = "a long HAN passphrase"
    answer = client.gateway_wan(admin, "PUT", "/consumers/c-0001/password", {"password": password})
    probe.equal("HAN password set", 200, answer.get("status"))
    key = bytes(range(32, 48))
    client.change_key(meters[1], key)  # the meter's side...
    answer = client.gateway_wan(admin, "PUT", f"/meters/{meters[1]}/key", {"key": key.hex()})
    probe.equal("key installed over the WAN", 200, answer.get("status"))
    field = client.measure()
    probe.equal("telegrams refused after the key change", 0,
                sum(v for k, v in field["outcomes"].items() if k != "accepted"))  # fmt: skip
    log = client.gateway_log("metrological")
    by_admin = [e for e in log if e["kind"] == "key-changed" and e["detail"].get("by") == admin]
    probe.equal("key change in the metrological log, by the administrator", 1, len(by_admin))
    with httpx.Client(base_url=state["urls"]["gateway-han"], trust_env=False) as han:
        han.post("/login", data={"customer": "c-0001", "password": password})
        seen = han.get("/api/readings", params={"limit": 1000}).json()
    shown = {m["meter_id"]: m["count"] for m in seen.get("meters", [])}
    accepted = sum(
        1 for e in client.gateway_log("consumer")
        if e["meter"] == meters[0] and e["kind"] == "reading"
    )  # fmt: skip
    probe.equal("the consumer's page", {meters[0]: accepted}, shown)
    bills_verified(probe, client.bill(), "bills")


@scenario(
    "register-jump",
    "Register set on the meter",
    action="A meter's register is set to 9,000,000 in the middle of the day.",
    expected="The jump is more than a quarter hour can consume: exactly that quarter hour "
    "goes to the error register, and the bill still verifies.",
)
def register_jump(client: TestbedClient, probe: Probe) -> None:
    meters = client.start(meters=1, days=1)["meters"]
    client.measure(10)
    client.set_register(meters[0], 9_000_000)
    client.measure()
    (outcome,) = client.bill()
    bills_verified(probe, [outcome], "bill")
    probe.equal("quarter hours in the error register", 1, outcome["error_intervals"])
    error_wh = (outcome["registers"] or {}).get("error_wh", 0)
    probe.holds("the jump is in the error register", "more than 8,000,000 Wh", error_wh,
                error_wh > 8_000_000)  # fmt: skip


@scenario(
    "forged-gateway",
    "Forged gateway",
    action="An attacker seals every meter's period under a look-alike of the gateway's "
    "certificate (same names and extensions, the attacker's own key) and sends it first.",
    expected="Ingress refuses every forged message (the certificate's signature does not "
    "verify under the gateways CA) and logs it; the genuine bills verify.",
)
def forged_gateway(client: TestbedClient, probe: Probe) -> None:
    meters = client.start(meters=2, days=1)["meters"]
    client.measure()
    sent = client.forge_gateway()["sent"]
    until(lambda: rejection_reasons(client).count("bad-certificate-signature") >= sent)
    probe.equal(
        "forged messages refused as bad-certificate-signature",
        sent,
        rejection_reasons(client).count("bad-certificate-signature"),
    )
    outcomes = client.bill()
    bills_verified(probe, outcomes, "genuine bills")
    probe.equal("meters billed", len(meters), len(outcomes))


@scenario(
    "revoked-certificate",
    "Revoked gateway certificate",
    action="The authority revokes the gateway's certificate; after one CRL refresh the "
    "gateway sends its period.",
    expected="Ingress refuses the transmission and the closing as certificate-revoked and "
    "logs both; no result is computed.",
)
def revoked_certificate(client: TestbedClient, probe: Probe) -> None:
    client.start(meters=1, days=1, crl_refresh_s=1.0)
    client.measure()
    client.revoke("gw-0001")
    time.sleep(2.5)  # one CRL refresh, with room
    (outcome,) = client.bill(timeout_s=3.0)
    probe.equal("no result", "no-result", outcome["reason"])
    revoked = until(lambda: rejection_reasons(client).count("certificate-revoked") >= 2)
    probe.holds("refusals logged", "2 (transmission and closing)", revoked, revoked)


@scenario(
    "tampered-ciphertext",
    "Tampered ciphertexts",
    action="A transmission is altered on its way to the cloud; then legal runs manipulated "
    "and corrupts the result ciphertext r (not r') of one meter.",
    expected="Ingress refuses the altered transmission (bad signature); the customer's "
    "display refuses the corrupted result (dec(r) != dec(r')), it is logged as a "
    "verification failure and the measuring system is flagged; the other bills verify.",
)
def tampered_ciphertext(client: TestbedClient, probe: Probe) -> None:
    meters = client.start(meters=3, days=1)["meters"]
    client.measure()
    client.alter_upload(meters[0])
    refused = until(lambda: "bad-signature" in rejection_reasons(client))
    probe.holds("altered transmission refused", "bad-signature", rejection_reasons(client),
                refused)  # fmt: skip
    client.manipulate("legal", f"flip-r:{meters[2]}")
    outcomes = {o["meter"]: o for o in client.bill()}
    bad = outcomes.pop(meters[2])
    probe.holds(f"{meters[2]} refused by the display", "not verified: dec(r) != dec(r')",
                bad["reason"], not bad["verified"] and "dec(r)" in bad["reason"])  # fmt: skip
    bills_verified(probe, list(outcomes.values()), "the other bills")

    def meters_failed() -> list[str]:  # the monitor may log legal's restart, too
        return [
            e["subject"] for e in client.logbook("verification-failure") if e["subject"] in meters
        ]

    probe.equal("verification failure in the logbook", [meters[2]], until(meters_failed))
    flagged = until(lambda: [f["meter_id"] for f in client.flags()])
    probe.equal("the measuring system flagged", [meters[2]], flagged)


@scenario(
    "consistent-manipulation",
    "Consistent manipulation of all results",
    action="Legal runs manipulated: every reading of the time-of-use tariff (TAF 2) is "
    "billed in the register of two hours later, for r and r' alike. The authority has a "
    "test meter among the customers' meters and runs a round of functionality checks.",
    expected="The duplicate check cannot see a manipulation applied to both copies: every "
    "result verifies, yet no bill equals the plaintext reference. The authority's test "
    "meter's result differs from its secret test vector: the round fails and is logged as "
    "a failed functionality check of TAF 2.",
)
def consistent_manipulation(client: TestbedClient, probe: Probe) -> None:
    client.start(meters=2, days=1, tariff="taf2", test_meters=1)
    client.measure()
    client.manipulate("legal", "shift-schedule:8")
    outcomes = client.bill()
    probe.holds("the display's checks pass", "every result verified",
                [o["reason"] for o in outcomes], all(o["verified"] for o in outcomes))  # fmt: skip
    probe.holds(
        "the bills are wrong", "no bill equal to the plaintext reference",
        [(o["registers"] or {}).get("tariff_wh") for o in outcomes],
        bool(outcomes) and not any(o["bill_matches"] for o in outcomes),
    )  # fmt: skip
    check = client.check()
    probe.holds("the functionality check fails", "taf2: 1 check, 1 failed",
                check["verdicts"], not check["passed"]
                and [(v["program"], v["checks"], v["failures"]) for v in check["verdicts"]]
                == [("taf2", 1, 1)])  # fmt: skip
    reasons = [c["reason"] for c in check["checks"]]
    probe.holds("the test meter's bill differs from its test vector", "result differs",
                reasons, all("differs from the test vector" in r for r in reasons))  # fmt: skip

    def logged() -> list[str]:
        return [e["detail"]["verdict"] for e in client.logbook("functionality-check")]

    probe.equal("the round in the logbook", ["fail"], until(logged))


@scenario(
    "malicious-update",
    "Malicious software update",
    action="Three packages carrying a TAF 1 that bills 10 % more are pushed to the download "
    "manager: one genuinely signed but never approved, one signed under a look-alike "
    "manufacturer certificate, one whose module was swapped after signing.",
    expected="Each is refused with its reason and logged as a software update attempt; "
    "nothing is installed and the bills verify.",
)
def malicious_update(client: TestbedClient, probe: Probe) -> None:
    client.start(meters=1, days=1)
    expected = {
        "unapproved": "not-approved",
        "foreign-signer": "bad-certificate-signature",
        "altered-file": "digest-mismatch",
    }
    assert set(expected) == set(UPDATE_ATTACKS)
    for kind in UPDATE_ATTACKS:
        answer = client.update_attack(kind)
        probe.equal(f"{kind} refused", ("refused", expected[kind]),
                    (answer.get("result"), answer.get("reason")))  # fmt: skip
    probe.equal("releases installed", {}, client.software()["releases"])
    logged = until(lambda: len(client.logbook("software-update")) >= 3 and client.logbook(
        "software-update"))  # fmt: skip
    probe.equal(
        "attempts in the logbook",
        [("refused", expected[k]) for k in UPDATE_ATTACKS],
        [(e["detail"].get("result"), e["detail"].get("reason")) for e in logged or []],
    )
    bills_verified(probe, client.bill(), "bills")


@scenario(
    "third-party-into-legal",
    "Third-party service writing into the legal zone",
    action="A third-party service (bus role thirdparty) publishes a forged transmission "
    "into legal's input, a forged logbook event and a forged result; the gateway role "
    "tries legal's input too.",
    expected="The broker refuses every one (permissions violation), nothing reaches legal, "
    "and the bills verify.",
)
def third_party(client: TestbedClient, probe: Probe) -> None:
    meters = client.start(meters=1, days=1)["meters"]
    client.measure()
    attempts = [
        ("thirdparty", f"legal.in.reading.{meters[0]}"),
        ("thirdparty", "legal.log.legal"),
        ("thirdparty", f"legal.results.{meters[0]}"),
        ("gateway", f"legal.in.reading.{meters[0]}"),
    ]
    for role, subject in attempts:
        answer = client.publish_as(role, subject, b"\x00forged")
        probe.holds(f"{role} on {subject}", "refused by the broker",
                    answer["violation"] or "accepted", answer["refused"])  # fmt: skip
    outcomes = client.bill()
    bills_verified(probe, outcomes, "bills")
    malformed = [r for r in rejection_reasons(client) if r.startswith("malformed")]
    probe.equal("nothing reached a service", [], malformed)


@scenario(
    "logbook-tampering",
    "Logbook tampering",
    action="After a billed day the auditor accepts the log; then an entry is rewritten in "
    "the logbook's database file, behind the service.",
    expected="The auditor's next check refuses the log and names the entry: it is not the "
    "one the witnesses cosigned.",
)
def logbook_tampering(client: TestbedClient, probe: Probe) -> None:
    client.start(meters=1, days=1)
    bills_verified(probe, client.bill(), "bill")
    before = client.audit_logbook(wait_s=30.0)
    probe.holds("accepted before", "verified", before.get("verdict") or before,
                before["verified"])  # fmt: skip
    client.alter_logbook(3)
    after = client.audit_logbook()
    probe.holds(
        "refused after", "not verified, entry 3 not in the cosigned head",
        f"{after.get('reason')}: {after.get('detail')}",
        not after["verified"] and after.get("reason") == "not-included"
        and "entry 3" in str(after.get("detail")),
    )  # fmt: skip


@scenario(
    "service-crash",
    "Service crash",
    action="Legal is killed (kill -9) in the middle of the billing period and started "
    "again; then storage is killed and restarted before the gateway sends.",
    expected="Nothing accepted is lost and nothing is billed twice: every bill verifies.",
)
def service_crash(client: TestbedClient, probe: Probe) -> None:
    client.start(meters=2, days=1)
    client.measure(48)
    client.service("legal", "kill")
    probe.equal("legal down", False, client.state()["services"]["legal"])
    client.measure()
    client.service("legal", "start")
    probe.equal("legal up", True, client.state()["services"]["legal"])
    client.service("storage", "kill")
    client.service("storage", "start")
    bills_verified(probe, client.bill(), "bills")


# -- the report ---------------------------------------------------------------------------------
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#1d2330}
table{border-collapse:collapse;width:100%}
th,td{border:1px solid #c9ced8;padding:.45rem .6rem;vertical-align:top;text-align:left}
th{background:#eef1f6}
.passed{color:#14622b;font-weight:600}.failed{color:#a11919;font-weight:600}
.gap{background:#fff6d6;padding:.3rem .5rem;margin-top:.4rem}
ul{margin:0;padding-left:1.1rem}li.fail{color:#a11919}
"""


def render_html(reports: list[ScenarioReport], *, title: str = "metrocloud scenarios") -> str:
    """A self-contained page: each scenario with what is done, what is expected, what was
    observed, and the verdict."""
    e = html.escape
    passed = sum(r.ok for r in reports)
    rows = []
    for r in reports:
        checks = "".join(
            f'<li class="{"ok" if c.ok else "fail"}">{"✓" if c.ok else "✗"} {e(c.claim)}: '
            f"{e(c.observed)}" + ("" if c.ok else f" <em>(expected {e(c.expected)})</em>") + "</li>"
            for c in r.checks
        )
        if r.error:
            checks += f'<li class="fail">error: {e(r.error)}</li>'
        gap = f'<div class="gap">Not detected yet: {e(r.gap)}</div>' if r.gap else ""
        verdict = "passed" if r.ok else "failed"
        rows.append(
            f'<tr data-scenario="{e(r.name)}"><td><strong>{e(r.title)}</strong><br>'
            f"<code>{e(r.name)}</code></td><td>{e(r.action)}</td><td>{e(r.expected)}{gap}</td>"
            f'<td><ul>{checks}</ul></td><td class="{verdict}">{verdict}<br>'
            f"<small>{r.seconds:.1f} s</small></td></tr>"
        )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{e(title)}</h1>"
        f'<p data-testid="summary">{passed} of {len(reports)} scenarios passed.</p>'
        "<table><thead><tr><th>scenario</th><th>what is done</th><th>expected</th>"
        "<th>observed</th><th>verdict</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></body></html>\n"
    )
