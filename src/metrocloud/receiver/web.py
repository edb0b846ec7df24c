"""The secure display's web page on 127.0.0.1: server-rendered HTML, no scripts, no assets.

::

    GET  /                                   every meter and billing period: bill and mark
    GET  /statement/{meter}/{period}         one period: mark and reason, registers, bill,
         ?zoom=day|week|month&at=N           tariff and its software identification, the
                                             recomputation, the quarter-hour chart (window
                                             N of the zoom, 0 = the period's first)
    POST /refresh                            pull from the cloud again, back to /
    GET  /api/statements.json                every statement as JSON
    GET  /export/readings.csv | .json        every decrypted quarter hour
    GET  /export/bills.csv | .json           every bill

The chart is an SVG with one bar per quarter hour; every bar carries its reading index and
energy (``data-index``, ``data-wh``), so what is drawn can be checked against the readings.
Every text that comes from outside (the cloud's result, the configuration) is escaped.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from html import escape
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware

from metrocloud.core.clock import READINGS_PER_DAY
from metrocloud.receiver.keyfolder import DisplayError
from metrocloud.receiver.statement import (
    Statement,
    bill_row,
    bills_csv,
    euro,
    iso,
    readings_csv,
    readings_json,
)

NO_STORE = {"Cache-Control": "no-store"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
"""No scripts, no framing, nothing loaded from elsewhere: the page needs none of it."""
ZOOMS = {"day": READINGS_PER_DAY, "week": 7 * READINGS_PER_DAY, "month": 31 * READINGS_PER_DAY}
CHART_W, CHART_H, PAD = 960, 260, 40

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1b1f24; background: #f6f7f9; }
h1 { font-size: 1.4rem; margin: 0 0 .3rem; }
h2 { font-size: 1.1rem; margin: 1.2rem 0 .5rem; }
section { background: #fff; border: 1px solid #d8dce1; border-radius: 6px; padding: .8rem 1rem;
  margin-bottom: 1rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #e4e7eb; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
th { font-size: .85rem; color: #555; }
.mono { font-family: ui-monospace, monospace; font-size: .8rem; word-break: break-all; }
.mark { display: inline-block; border-radius: 4px; padding: .15rem .6rem; font-weight: 600;
  color: #fff; }
.mark.verified { background: #1a7f37; }
.mark.not-verified { background: #cf222e; }
.mark.pending { background: #6e7781; }
.reason { color: #82071e; margin: .4rem 0; }
.ok { color: #1a7f37; }
nav a, .zoom a { margin-right: .8rem; }
.zoom a.current { font-weight: 700; text-decoration: none; color: #1b1f24; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; margin: 0; }
dt { color: #555; }
dd { margin: 0; }
svg .bar { fill: #0969da; }
svg .bar.error { fill: #cf222e; }
svg text { font-size: 11px; fill: #555; }
"""


def _t(value: object) -> str:
    return "—" if value is None or value == "" else escape(str(value))


def mark(s: Statement) -> str:
    label = {"verified": "✔ verified", "not-verified": "✘ not verified", "pending": "… pending"}
    return (
        f'<span class="mark {s.status}" data-testid="mark" data-status="{s.status}">'
        f"{label[s.status]}</span>"
    )


def link(s: Statement, zoom: str = "month", at: int = 0) -> str:
    return (
        f"/statement/{quote(s.meter_id, safe='')}/{quote(s.period.period_id, safe='')}"
        f"?zoom={zoom}&at={at}"
    )


def page(title: str, body: str, customer: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style></head>
<body><header><h1>{escape(title)}</h1>
<p>Customer {escape(customer)} · secure display: results are decrypted and checked on this
computer only; the cloud never sees a reading in the clear.</p>
<nav><a href="/">All bills</a><a href="/export/bills.csv">bills.csv</a>
<a href="/export/bills.json">bills.json</a><a href="/export/readings.csv">readings.csv</a>
<a href="/export/readings.json">readings.json</a></nav>
<form method="post" action="/refresh"><button type="submit">Fetch again</button></form>
</header>{body}</body></html>"""


def bill(s: Statement) -> str:
    """The bill in euro for people to read (thousands separated), or a dash."""
    return euro(s.registers.bill_microcent) if s.registers else "—"


def overview(statements: Sequence[Statement], customer: str) -> str:
    rows = "".join(
        f'<tr data-testid="statement" data-meter="{escape(s.meter_id)}" '
        f'data-period="{escape(s.period.period_id)}">'
        f"<td>{escape(s.meter_id)}</td><td>{escape(s.period.label())}</td>"
        f"<td>{_t(s.tariff_id.get('name'))} {_t(s.tariff_id.get('version'))}</td>"
        f'<td class="num" data-testid="bill">{bill(s)}</td>'
        f"<td>{mark(s)}</td>"
        f'<td class="reason-cell">{"" if s.verified else escape(s.reason)}</td>'
        f'<td><a href="{link(s)}">details</a></td></tr>'
        for s in statements
    )
    if not statements:
        rows = '<tr><td colspan="7">No bills from the cloud yet.</td></tr>'
    body = (
        "<section><h2>Bills</h2><table><tr><th>meter</th><th>billing period</th>"
        '<th>tariff</th><th class="num">bill €</th><th>mark</th><th>reason</th><th></th></tr>'
        f"{rows}</table></section>"
    )
    return page("Your meter readings and bills", body, customer)


def chart(s: Statement, zoom: str, at: int) -> str:
    """The SVG bars of window ``at`` of ``zoom`` over the period's quarter hours."""
    intervals = s.recomputation.intervals
    width = ZOOMS[zoom]
    shown = intervals[at * width : (at + 1) * width]
    if not shown:
        return '<p data-testid="no-chart">No readings to draw.</p>'
    top = max(max(iv.energy_wh for iv in shown), 1)
    step = (CHART_W - 2 * PAD) / len(shown)
    bars = []
    for n, iv in enumerate(shown):
        h = (CHART_H - 2 * PAD) * iv.energy_wh / top
        x, y = PAD + n * step, CHART_H - PAD - h
        bars.append(
            f'<rect class="bar{" error" if iv.error else ""}" data-index="{iv.index}" '
            f'data-wh="{iv.energy_wh}" x="{x:.2f}" y="{y:.2f}" width="{max(step * 0.9, 0.3):.2f}" '
            f'height="{h:.2f}"><title>{iso(iv.index, end=False)}: {iv.energy_wh} Wh'
            f"{' (error)' if iv.error else ''}</title></rect>"
        )
    # ticks: every 6 hours on a day, every day on a week, every week on a month
    every = {"day": READINGS_PER_DAY // 4, "week": READINGS_PER_DAY, "month": 7 * READINGS_PER_DAY}
    label = slice(11, 16) if zoom == "day" else slice(5, 10)
    days = [
        f'<text x="{PAD + n * step:.1f}" y="{CHART_H - PAD + 14}">'
        f"{iso(iv.index, end=False)[label]}</text>"
        for n, iv in enumerate(shown)
        if (iv.index - s.period.start) % every[zoom] == 0
    ]
    axis = (
        f'<text x="2" y="{PAD - 6}">{top} Wh</text>'
        f'<line x1="{PAD}" y1="{CHART_H - PAD}" x2="{CHART_W - PAD}" y2="{CHART_H - PAD}" '
        'stroke="#888"/>'
    )
    return (
        f'<svg data-testid="chart" data-zoom="{zoom}" data-first-index="{shown[0].index}" '
        f'data-points="{len(shown)}" viewBox="0 0 {CHART_W} {CHART_H}" width="100%" '
        f'role="img" aria-label="consumption per quarter hour">{axis}{"".join(bars)}'
        f"{''.join(days)}</svg>"
    )


def zoom_bar(s: Statement, zoom: str, at: int) -> str:
    count = len(s.recomputation.intervals)
    windows = max(1, -(-count // ZOOMS[zoom]))
    links = [
        f'<a href="{link(s, z, 0)}" data-testid="zoom-{z}"'
        f"{' class=current' if z == zoom else ''}>{z}</a>"
        for z in ZOOMS
    ]
    if at > 0:
        links.append(f'<a href="{link(s, zoom, at - 1)}" data-testid="previous">← earlier</a>')
    if at + 1 < windows:
        links.append(f'<a href="{link(s, zoom, at + 1)}" data-testid="next">later →</a>')
    return f'<p class="zoom">{"".join(links)} <span>{zoom} {at + 1} of {windows}</span></p>'


def detail(s: Statement, customer: str, zoom: str, at: int) -> str:
    regs = s.registers
    tariff = s.tariff_id
    rows = "".join(
        f'<tr data-testid="register"><td>{escape(name)}</td><td class="num">{wh:,}</td>'
        f'<td class="num">{_t(price)}</td></tr>'
        for name, wh, price in s.register_rows()
    )
    registers = (
        "<table><tr><th>register</th><th class='num'>Wh</th><th class='num'>m¢/kWh</th></tr>"
        f"{rows}<tr><td>error register</td><td class='num'>{regs.error_register_wh:,}</td>"
        f"<td></td></tr><tr><td>total register</td>"
        f"<td class='num'>{regs.total_register_wh:,}</td><td></td></tr>"
        f"</table><p>Bill: <strong data-testid='bill'>{bill(s)} €</strong></p>"
        if regs
        else "<p>No registers: the result did not verify or has not arrived.</p>"
    )
    recomputation = s.recomputation
    body = f"""
<section><h2>Meter {escape(s.meter_id)}, {escape(s.period.label())}</h2>
<p>{mark(s)}</p>
<p class="{"ok" if s.verified else "reason"}" data-testid="reason">{escape(s.reason)}</p>
{registers}</section>
<section><h2>Tariff program</h2><dl>
<dt>program</dt><dd data-testid="tariff-name">{_t(tariff.get("name"))}</dd>
<dt>version</dt><dd data-testid="tariff-version">{_t(tariff.get("version"))}</dd>
<dt>checksum (SHA-256)</dt>
<dd class="mono" data-testid="tariff-checksum">{_t(tariff.get("checksum"))}</dd>
<dt>configuration</dt><dd class="mono">{escape(json.dumps(s.contract.config))}</dd>
<dt>configuration digest</dt><dd class="mono">{escape(s.contract.config_digest)}</dd>
</dl></section>
<section><h2>Recomputed from the gateway's signed readings</h2>
<p data-testid="recomputation" data-status="{recomputation.status}">{escape(recomputation.status)}:
{escape(recomputation.reason)}</p>
<p>Gateway: {_t(recomputation.gateway)} · error energy not attributable to a quarter hour:
{recomputation.error_wh:,} Wh</p></section>
<section><h2>Consumption per quarter hour</h2>{zoom_bar(s, zoom, at)}{chart(s, zoom, at)}</section>
"""
    return page(f"Bill of meter {s.meter_id}", body, customer)


def create_app(
    customer: str,
    statements: Callable[[], list[Statement]],
    refresh: Callable[[], Awaitable[object]],
) -> FastAPI:
    """The display's app over ``statements`` (the current ones) and ``refresh`` (pull again)."""
    app = FastAPI(
        title="metrocloud secure display", docs_url=None, redoc_url=None, openapi_url=None
    )
    # Only this machine's own names: a web page elsewhere that rebinds its DNS name to
    # 127.0.0.1 gets no answer, so it cannot read the customer's readings.
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost"])

    @app.middleware("http")
    async def locked_down(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    def find(meter: str, period: str) -> Statement:
        for s in statements():
            if (s.meter_id, s.period.period_id) == (meter, period):
                return s
        raise HTTPException(404, f"no bill for meter {meter} and period {period}")

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(overview(statements(), customer), headers=NO_STORE)

    @app.get("/statement/{meter}/{period}", response_class=HTMLResponse)
    def statement(meter: str, period: str, zoom: str = "month", at: int = 0) -> HTMLResponse:
        if zoom not in ZOOMS:
            raise HTTPException(422, f"zoom must be one of {', '.join(ZOOMS)}")
        s = find(meter, period)
        windows = max(1, -(-len(s.recomputation.intervals) // ZOOMS[zoom]))
        if not 0 <= at < windows:
            raise HTTPException(422, f"at must be between 0 and {windows - 1}")
        return HTMLResponse(detail(s, customer, zoom, at), headers=NO_STORE)

    @app.post("/refresh", response_model=None)
    async def refreshed() -> RedirectResponse | HTMLResponse:
        try:
            await refresh()
        except DisplayError as exc:  # the cloud gone, say: a plain message, not a trace
            body = (
                f'<section><p class="reason" data-testid="error">{escape(str(exc))}</p></section>'
            )
            return HTMLResponse(page("Could not fetch", body, customer), status_code=503)
        return RedirectResponse("/", status_code=303)

    @app.get("/api/statements.json")
    def as_json() -> JSONResponse:
        return JSONResponse([s.to_dict() for s in statements()], headers=NO_STORE)

    @app.get("/export/readings.csv")
    def readings_as_csv() -> PlainTextResponse:
        return PlainTextResponse(
            readings_csv(statements()), media_type="text/csv", headers=NO_STORE
        )

    @app.get("/export/readings.json")
    def readings_as_json() -> JSONResponse:
        return JSONResponse(readings_json(statements()), headers=NO_STORE)

    @app.get("/export/bills.csv")
    def bills_as_csv() -> PlainTextResponse:
        return PlainTextResponse(bills_csv(statements()), media_type="text/csv", headers=NO_STORE)

    @app.get("/export/bills.json")
    def bills_as_json() -> JSONResponse:
        return JSONResponse([bill_row(s) for s in statements()], headers=NO_STORE)

    return app
