"""The gateway's HAN side: consumers log in with the password the administrator set, see
their own meters' readings (exactly those the gateway accepted) and nobody else's, and log
out; the password store keeps only scrypt hashes. One test looks at the page in Chromium."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi.testclient import TestClient
from gateway_sides import START, FedGateway
from hypothesis import given
from hypothesis import strategies as st

from browser import screenshot_path
from metrocloud.core.clock import index_time
from metrocloud.core.errors import Rejected
from metrocloud.field import han as han_module
from metrocloud.field.han import (
    FREE_LOGIN_FAILURES,
    LOGIN_BACKOFF_S,
    SESSION_COOKIE,
    ConsumerAccounts,
    create_han_app,
    login_wait_s,
)
from metrocloud.field.interfaces import BackgroundServer
from metrocloud.field.meter import MeterStatus

if TYPE_CHECKING:
    from playwright.sync_api import Browser

PASSWORDS = {"c-1": "first consumer's secret", "c-2": "second consumer's secret"}


class Han:
    """A fed gateway, its consumer accounts and its HAN application."""

    def __init__(self, count: int = 6) -> None:
        self.fed = FedGateway(count)
        self.accounts = ConsumerAccounts()
        for customer, password in PASSWORDS.items():
            self.accounts.set_password(customer, password)
        self.app = create_han_app(self.fed.gateway, self.accounts)

    def client(self) -> TestClient:
        return TestClient(self.app, follow_redirects=False)

    def logged_in(self, customer: str) -> TestClient:
        client = self.client()
        answer = client.post("/login", data={"customer": customer, "password": PASSWORDS[customer]})
        assert answer.status_code == 303 and answer.headers["location"] == "/", answer.text
        return client


@pytest.fixture(scope="module")
def han() -> Han:
    return Han()


def test_without_a_session_there_is_only_the_login(han: Han) -> None:
    client = han.client()
    page = client.get("/")
    assert page.status_code == 303 and page.headers["location"] == "/login"
    api = client.get("/api/readings")
    assert api.status_code == 401 and api.json()["reason"] == "not-authenticated"
    form = client.get("/login")
    assert form.status_code == 200 and '<form class="login" method="post"' in form.text


def test_login_with_a_good_and_bad_passwords(han: Han) -> None:
    client = han.client()
    for customer, password in [
        ("c-1", "second consumer's secret"),  # another consumer's password
        ("c-1", ""),
        ("c-3", "first consumer's secret"),  # no such consumer
        ("", "first consumer's secret"),
    ]:
        answer = client.post("/login", data={"customer": customer, "password": password})
        assert answer.status_code == 401, (customer, password)
        assert "Wrong customer or password." in answer.text
        assert SESSION_COOKIE not in answer.headers.get("set-cookie", "")
        assert client.get("/api/readings").status_code == 401
    answer = client.post("/login", data={"customer": "c-1", "password": PASSWORDS["c-1"]})
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert PASSWORDS["c-1"] not in cookie
    assert client.get("/api/readings").json()["customer"] == "c-1"


def test_each_consumer_sees_only_their_own_meters(han: Han) -> None:
    fed = han.fed
    own = {"c-1": {fed.id("elec"), fed.id("heat")}, "c-2": {fed.id("gas")}}
    for customer, other in (("c-1", "c-2"), ("c-2", "c-1")):
        client = han.logged_in(customer)
        data = client.get("/api/readings").json()
        assert {m["meter_id"] for m in data["meters"]} == own[customer]
        page = client.get("/").text
        for text in (json.dumps(data), page):
            for meter_id in own[other]:
                assert meter_id not in text
            for register in fed.registers(other):
                assert str(register) not in text
        assert {e["meter"] for e in data["log"]} == own[customer]
        assert all(e["detail"]["customer"] == customer for e in data["log"])


def test_the_readings_shown_are_those_the_gateway_accepted(han: Han) -> None:
    fed = han.fed
    client = han.logged_in("c-1")
    data = client.get("/api/readings").json()
    page = client.get("/").text
    accepted = fed.accepted("c-1")
    for meter in data["meters"]:
        got = accepted[meter["meter_id"]]
        assert meter["count"] == len(got) == fed.count
        expected = [
            {
                "index": a.reading.index,
                "time": index_time(a.reading.index).isoformat(),
                "register": a.reading.register_wh,
                "status": "error" if a.reading.status & MeterStatus.ERROR else "ok",
                "received_at": a.received_at.isoformat(),
                "cyclic": dict(a.cyclic),
            }
            for a in reversed(got)  # newest first
        ]
        assert meter["readings"] == expected
        assert meter["latest"] == expected[0]
        sensor = next(s for s in fed.sensors.values() if s.meter_id == meter["meter_id"])
        assert meter["unit"] == sensor.config.medium.unit
        assert meter["medium"] == sensor.config.medium.value
        # The page's table holds the same rows.
        table = re.search(
            rf'<table data-testid="readings-{meter["meter_id"]}">.*?</table>', page, re.S
        )
        assert table is not None
        rows = re.findall(
            r'<tr data-index="(\d+)"><td>([^<]+)</td><td class="register">(\d+)</td>'
            r'<td class="status-(\w+)">',
            table.group(0),
        )
        assert rows == [
            (str(r["index"]), r["time"], str(r["register"]), r["status"]) for r in expected
        ]
    heat = next(m for m in data["meters"] if m["meter_id"] == fed.id("heat"))
    assert set(heat["latest"]["cyclic"]) == {"flow-temperature-c", "return-temperature-c"}
    assert f'data-testid="cyclic-{fed.id("heat")}">Temperatures: flow ' in page
    elec = next(m for m in data["meters"] if m["meter_id"] == fed.id("elec"))
    assert elec["latest"]["cyclic"] == {}


def test_a_meter_that_changes_hands_keeps_its_old_readings_from_the_new_customer() -> None:
    han = Han(count=4)
    fed, gateway = han.fed, han.fed.gateway
    elec = fed.id("elec")
    old = {a.reading.register_wh for a in fed.accepted("c-1")[elec]}
    record = next(r for r in gateway.meters() if r.meter_id == elec)
    gateway.configure_meter(replace(record, customer_id="c-2"))  # a new tenant
    c2 = han.logged_in("c-2")
    before = c2.get("/api/readings").json()
    assert {m["meter_id"]: m["count"] for m in before["meters"]} == {fed.id("gas"): 4, elec: 0}
    fed.feed(START + 4, access=5)
    fed.feed(START + 5, access=6)
    data = c2.get("/api/readings").json()
    (shown,) = [m for m in data["meters"] if m["meter_id"] == elec]
    assert [r["index"] for r in shown["readings"]] == [START + 5, START + 4]
    text = json.dumps(data) + c2.get("/").text
    assert not any(str(register) in text for register in old)
    c1 = han.logged_in("c-1").get("/api/readings").json()
    assert [m["meter_id"] for m in c1["meters"]] == [fed.id("heat")]


def test_limit_and_the_consumer_log(han: Han) -> None:
    client = han.logged_in("c-2")
    data = client.get("/api/readings", params={"limit": 2}).json()
    (gas,) = data["meters"]
    newest = gas["latest"]["index"]
    assert [r["index"] for r in gas["readings"]] == [newest, newest - 1]
    assert gas["count"] == han.fed.count
    assert [e["detail"]["register"] for e in data["log"]] == [
        a.reading.register_wh for a in reversed(han.fed.accepted("c-2")[gas["meter_id"]])
    ]
    assert client.get("/api/readings", params={"limit": 0}).status_code == 422


def test_logout_ends_the_session_even_for_a_kept_cookie(han: Han) -> None:
    client = han.logged_in("c-1")
    cookie = client.cookies[SESSION_COOKIE]
    answer = client.post("/logout")
    assert answer.status_code == 303 and answer.headers["location"] == "/login"
    assert client.get("/").status_code == 303
    replay = han.client()
    replay.cookies.set(SESSION_COOKIE, cookie)
    assert replay.get("/api/readings").status_code == 401


def test_a_new_password_closes_the_sessions(han: Han) -> None:
    client = han.logged_in("c-2")
    assert client.get("/api/readings").status_code == 200
    han.accounts.set_password("c-2", PASSWORDS["c-2"])  # set again by the administrator
    assert client.get("/api/readings").status_code == 401


def test_forged_cookies_are_refused(han: Han) -> None:
    client = han.logged_in("c-1")
    cookie = client.cookies[SESSION_COOKIE]
    payload, signature = cookie.split(".")
    other = ConsumerAccounts()  # another process: another secret
    other.set_password("c-2", PASSWORDS["c-2"])
    foreign = other.open_session("c-2")
    forged_payload = foreign.split(".")[0]
    for forged in (
        f"{payload}.{signature[:-2]}AA",
        f"{forged_payload}.{signature}",  # c-2's claims under c-1's signature
        foreign,  # signed by another secret
        "garbage",
        "",
        "a.b.c",
    ):
        attacker = han.client()
        attacker.cookies.set(SESSION_COOKIE, forged)
        assert attacker.get("/api/readings").status_code == 401, forged


def test_a_login_posted_from_another_site_is_refused(han: Han) -> None:
    client = han.client()
    answer = client.post(
        "/login",
        data={"customer": "c-1", "password": PASSWORDS["c-1"]},
        headers={"origin": "http://evil.example"},
    )
    assert answer.status_code == 403 and SESSION_COOKIE not in client.cookies


def test_the_page_has_no_script_and_strict_headers(han: Han) -> None:
    answer = han.logged_in("c-1").get("/")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert "<script" not in answer.text
    assert "http://" not in answer.text and "https://" not in answer.text  # no external assets
    assert answer.headers["content-security-policy"].startswith("default-src 'none'")
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["x-frame-options"] == "DENY"


def test_passwords_are_kept_as_salted_scrypt_hashes(tmp_path: Path) -> None:
    path = tmp_path / "gw" / "han-passwords.json"
    accounts = ConsumerAccounts(path)
    accounts.set_password("c-1", "the same password")
    accounts.set_password("c-2", "the same password")
    stored: dict[str, Any] = json.loads(path.read_text())
    assert path.stat().st_mode & 0o777 == 0o600
    assert "the same password" not in path.read_text()
    assert stored["c-1"]["scrypt"] == {"n": 16384, "r": 8, "p": 1}
    assert stored["c-1"]["salt"] != stored["c-2"]["salt"]
    assert stored["c-1"]["hash"] != stored["c-2"]["hash"]
    reloaded = ConsumerAccounts(path)
    assert reloaded.check_password("c-1", "the same password")
    assert not reloaded.check_password("c-1", "the same password ")
    assert not reloaded.check_password("c-3", "the same password")
    with pytest.raises(Rejected, match="bad-password"):
        accounts.set_password("c-1", "short")
    with pytest.raises(Rejected, match="bad-customer"):
        accounts.set_password("../c-1", "long enough password")
    assert reloaded.check_password("c-1", "the same password")


def test_a_session_expires(tmp_path: Path) -> None:
    now = [1000.0]
    accounts = ConsumerAccounts(session_s=60, clock=lambda: now[0])
    accounts.set_password("c-1", "long enough password")
    cookie = accounts.open_session("c-1")
    assert accounts.session_customer(cookie) == "c-1"
    now[0] += 61
    assert accounts.session_customer(cookie) is None


# -- guessing passwords -----------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_wrong_passwords_make_the_next_attempts_wait_longer_and_longer() -> None:
    clock = Clock()
    accounts = ConsumerAccounts(clock=clock)
    accounts.set_password("c-1", PASSWORDS["c-1"])
    for n in range(1, FREE_LOGIN_FAILURES + 1):  # the free ones: no wait until the last
        outcome = accounts.attempt_login("c-1", f"guess {n}")
        assert (outcome.ok, outcome.checked, outcome.failures) == (False, True, n)
        assert outcome.wait_s == (LOGIN_BACKOFF_S[0] if n == FREE_LOGIN_FAILURES else 0.0)
    # too early: refused without a look, even with the right password
    early = accounts.attempt_login("c-1", PASSWORDS["c-1"])
    assert (early.ok, early.checked) == (False, False)
    assert 0 < early.wait_s <= LOGIN_BACKOFF_S[0]
    clock.now += LOGIN_BACKOFF_S[0]
    outcome = accounts.attempt_login("c-1", "guess 6")
    assert outcome.checked and outcome.wait_s == 2 * LOGIN_BACKOFF_S[0]  # doubled
    clock.now += 2 * LOGIN_BACKOFF_S[0] - 0.5
    assert not accounts.attempt_login("c-1", PASSWORDS["c-1"]).checked
    clock.now += 0.5
    assert accounts.attempt_login("c-1", PASSWORDS["c-1"]).ok  # and the count starts over
    assert accounts.attempt_login("c-1", "guess").wait_s == 0.0


@given(st.integers(min_value=0, max_value=10_000))
def test_the_wait_grows_with_the_failures_up_to_five_minutes(failures: int) -> None:
    wait = login_wait_s(failures)
    assert 0 <= wait <= LOGIN_BACKOFF_S[1] == 300.0
    assert (wait == 0) == (failures < FREE_LOGIN_FAILURES)
    assert login_wait_s(failures + 1) >= wait


def test_unknown_customers_are_throttled_alike_and_a_new_password_clears_the_count() -> None:
    clock = Clock()
    accounts = ConsumerAccounts(clock=clock)
    accounts.set_password("c-1", PASSWORDS["c-1"])
    for customer in ("c-1", "nobody"):
        outcomes = [accounts.attempt_login(customer, "guess") for _ in range(6)]
        assert [(o.checked, o.failures) for o in outcomes] == [
            *((True, n) for n in range(1, 6)),
            (False, 5),
        ]
    accounts.set_password("c-1", "a new password for c-1")  # the administrator, over the WAN
    assert accounts.attempt_login("c-1", "a new password for c-1").ok
    assert not accounts.attempt_login("nobody", "guess").checked


def test_only_the_latest_customer_ids_are_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(han_module, "MAX_TRACKED_LOGINS", 3)
    accounts = ConsumerAccounts(clock=Clock())
    for _ in range(FREE_LOGIN_FAILURES):
        accounts.attempt_login("c-1", "guess")
    assert not accounts.attempt_login("c-1", "guess").checked
    for customer in ("a", "b", "c"):  # three newer ids push c-1 out
        accounts.attempt_login(customer, "guess")
    assert accounts.attempt_login("c-1", "guess").checked


def test_the_page_answers_429_and_the_administrator_log_names_the_customer() -> None:
    clock = Clock()
    han = Han()
    han.accounts.clock = clock
    client = han.client()
    for n in range(FREE_LOGIN_FAILURES):
        answer = client.post("/login", data={"customer": "c-2", "password": f"guess {n}"})
        assert answer.status_code == 401 and "Wrong customer or password." in answer.text
    assert "next attempt for this customer can be made in 2 s" in answer.text
    answer = client.post("/login", data={"customer": "c-2", "password": PASSWORDS["c-2"]})
    assert answer.status_code == 429 and answer.headers["retry-after"] == "2"
    assert "Too many wrong passwords for this customer: try again in 2 s." in answer.text
    assert SESSION_COOKIE not in answer.headers.get("set-cookie", "")
    logged = [e for e in han.fed.gateway.logs["administrator"].entries if e.kind.startswith("han")]
    assert [(e.kind, e.detail) for e in logged] == [
        ("han-login-throttled", {"customer": "c-2", "failures": FREE_LOGIN_FAILURES})
    ]
    clock.now += 2
    answer = client.post("/login", data={"customer": "c-2", "password": PASSWORDS["c-2"]})
    assert answer.status_code == 303
    assert han.logged_in("c-1")  # the other consumer was never held up


# -- the page in a real browser ---------------------------------------------------------------
def test_the_page_in_chromium(browser: Browser) -> None:
    han = Han(count=8)
    server = BackgroundServer(han.app)
    server.start()
    try:
        assert httpx.get(server.url + "/api/readings", trust_env=False).status_code == 401
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(server.url + "/")
        assert page.url.endswith("/login")
        page.fill('input[name="customer"]', "c-1")
        page.fill('input[name="password"]', "not the password")
        page.click('button[type="submit"]')
        assert "Wrong customer or password." in page.get_by_test_id("login-error").inner_text()
        page.fill('input[name="customer"]', "c-1")
        page.fill('input[name="password"]', PASSWORDS["c-1"])
        page.click('button[type="submit"]')
        page.wait_for_url(server.url + "/")
        assert page.get_by_test_id("customer").inner_text() == "c-1"
        for meter_id, got in han.fed.accepted("c-1").items():
            rows = page.locator(f'table[data-testid="readings-{meter_id}"] tbody tr')
            assert rows.count() == len(got) == 8
            registers = rows.locator("td.register").all_inner_texts()
            assert registers == [str(a.reading.register_wh) for a in reversed(got)]
            latest = page.get_by_test_id(f"latest-{meter_id}").inner_text()
            assert latest.startswith(str(got[-1].reading.register_wh))
        assert han.fed.id("gas") not in page.content()
        assert page.evaluate("() => document.scripts.length") == 0
        path = screenshot_path("han-consumer-page")
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000
        page.get_by_test_id("logout").click()
        page.wait_for_url(server.url + "/login")
        page.goto(server.url + "/")
        assert page.url.endswith("/login")
    finally:
        server.close()
