"""The display's page and exports on their own (no cloud): what is shown, escaped, refused."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

import pytest
from fastapi.testclient import TestClient

from metrocloud.core.clock import BillingPeriod
from metrocloud.fhe.packing import Interval
from metrocloud.receiver.keyfolder import DisplayError
from metrocloud.receiver.recompute import Recomputation
from metrocloud.receiver.statement import Statement
from metrocloud.receiver.verify import Verdict
from metrocloud.receiver.web import create_app
from metrocloud.tariffs import PROGRAMS, load_program

PERIOD = BillingPeriod.days(datetime(2026, 2, 2, tzinfo=timezone.utc), 2)
HOSTILE = "<script>alert('x')</script>"
TAF2 = load_program(
    "taf2",
    PROGRAMS["taf2"].parameters,
    {
        "registers": [
            {"name": HOSTILE, "price_mct_per_kwh": 30_000},
            {"name": "night", "price_mct_per_kwh": 20_000},
        ],
        "windows": [{"days": "mon-fri", "from": "06:00", "to": "22:00", "register": 0}],
        "default_register": 1,
    },
)


def statement(verified: bool = True, pending: bool = False) -> Statement:
    intervals = [Interval(i, (i * 13) % 400, i % 50 == 0) for i in range(PERIOD.start, PERIOD.end)]
    registers = TAF2.reference("m-0009", intervals)
    verdict = None if pending else Verdict(
        "m-0009", PERIOD.period_id, verified, "verified" if verified else "dec(r) != dec(r')",
        registers if verified else None,
    )  # fmt: skip
    recomputation = Recomputation(
        "match", "equal", registers, tuple(intervals), registers.error_register_wh, "gw-0001"
    )
    return Statement("m-0009", PERIOD, TAF2, verdict, recomputation)


def client(*statements: Statement, refresh_fails: bool = False) -> TestClient:
    async def refresh() -> None:
        if refresh_fails:
            raise DisplayError("cannot reach the cloud at tls://127.0.0.1:1: refused")

    app = create_app("c-0009", lambda: list(statements), refresh)
    return TestClient(app, base_url="http://127.0.0.1:8480")


def test_the_page_escapes_what_comes_from_outside() -> None:
    page = client(statement()).get(f"/statement/m-0009/{PERIOD.period_id}").text
    assert HOSTILE not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert 'data-status="verified"' in page


def test_a_foreign_host_name_is_refused_and_the_page_is_locked_down() -> None:
    web = client(statement())
    assert web.get("/", headers={"Host": "attacker.example"}).status_code == 400
    answer = web.get("/", headers={"Host": "localhost:8480"})
    assert answer.status_code == 200
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert "<script" not in answer.text  # the page itself needs no script


def test_marks_for_not_verified_and_pending() -> None:
    page = client(statement(verified=False), statement(pending=True)).get("/").text
    assert 'data-status="not-verified"' in page and "dec(r) != dec(r&#x27;)" in page
    assert 'data-status="pending"' in page


def test_zoom_windows_and_bad_requests() -> None:
    web = client(statement())
    base = f"/statement/m-0009/{PERIOD.period_id}"
    day2 = web.get(base + "?zoom=day&at=1").text
    assert f'data-first-index="{PERIOD.start + 96}"' in day2
    assert 'data-testid="previous"' in day2 and 'data-testid="next"' not in day2
    assert web.get(base + "?zoom=year").status_code == 422
    assert web.get(base + "?zoom=day&at=2").status_code == 422
    assert web.get(f"/statement/m-0001/{PERIOD.period_id}").status_code == 404


def test_exports_hold_every_quarter_hour_and_the_bill() -> None:
    web = client(statement())
    rows = list(csv.DictReader(io.StringIO(web.get("/export/readings.csv").text)))
    assert len(rows) == PERIOD.intervals
    for row in rows:
        index = int(row["index"])
        assert row["error"] == str(int(index % 50 == 0))
        assert row["energy_wh"] == str(index * 13 % 400)
    (bill,) = web.get("/export/bills.json").json()
    assert bill["status"] == "verified" and bill["tariff"] == "taf2"
    assert bill["registers_wh"].startswith(f"{HOSTILE}=")  # data, not markup: CSV/JSON as is
    (full,) = web.get("/api/statements.json").json()
    assert len(full["readings"]["wh"]) == PERIOD.intervals
    assert [r["name"] for r in full["registers"]] == [HOSTILE, "night"]


@pytest.mark.parametrize("fails", [False, True])
def test_fetch_again(fails: bool) -> None:
    answer = client(statement(), refresh_fails=fails).post("/refresh", follow_redirects=False)
    if fails:
        assert answer.status_code == 503 and "cannot reach the cloud" in answer.text
    else:
        assert answer.status_code == 303 and answer.headers["location"] == "/"
