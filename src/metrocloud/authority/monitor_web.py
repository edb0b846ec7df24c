"""The verification monitor's web page: one server-rendered HTML page and its JSON.

::

    GET /              the page (no scripts, no external assets; refreshes every 10 s)
    GET /status.json   the same snapshot as JSON (MonitorSnapshot.to_dict)

The page shows what :class:`~metrocloud.authority.monitor.MonitorSnapshot` holds: the
monitor's own identification and the reference list it judges by; one row per legally
relevant component with its identification and a green or red badge (red with the reason);
the logbook's integrity; the anomaly state; the latest functionality check per tariff
program; and an overall verdict, green only when every component is green and the logbook
verified. Every text that comes from outside is escaped.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse

from metrocloud.authority.monitor import FunctionalityCheckView, MonitorSnapshot
from metrocloud.authority.verification import ComponentStatus

REFRESH_S = 10
"""How often the browser reloads the page."""
NO_STORE = {"Cache-Control": "no-store"}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1b1f24; background: #f6f7f9; }
h1 { font-size: 1.4rem; margin: 0 0 .3rem; }
h2 { font-size: 1.1rem; margin: 1.4rem 0 .5rem; }
header p, .meta { margin: .15rem 0; color: #444; }
section { background: #fff; border: 1px solid #d8dce1; border-radius: 6px; padding: .8rem 1rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #e4e7eb;
  vertical-align: top; }
th { font-size: .85rem; color: #555; }
.mono { font-family: ui-monospace, monospace; font-size: .8rem; word-break: break-all; }
.badge { display: inline-block; min-width: 3.8rem; text-align: center; border-radius: 4px;
  padding: .1rem .5rem; font-weight: 600; color: #fff; }
.badge.green { background: #1a7f37; }
.badge.red { background: #cf222e; }
.badge.yellow { background: #bf8700; }
.badge.unknown { background: #6e7781; }
.reason { margin-left: .5rem; color: #82071e; }
.why { color: #555; font-size: .85rem; }
.overall { font-size: 1.2rem; margin: 1rem 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; margin: 0; }
dt { color: #555; }
dd { margin: 0; }
"""


def _text(value: object) -> str:
    """``value`` as escaped HTML text; an em dash for nothing."""
    return "—" if value is None or value == "" else escape(str(value))


def _badge(state: str, testid: str, label: str | None = None) -> str:
    return (
        f'<span class="badge {escape(state)}" data-testid="{escape(testid)}">'
        f"{escape(label or state)}</span>"
    )


def _component_row(status: ComponentStatus, own: bool) -> str:
    ident = status.report.identification if status.report else None
    reason = "" if status.green else f'<span class="reason">{escape(status.reason)}</span>'
    name = _text(status.component) + (' <span class="why">(this monitor)</span>' if own else "")
    return (
        f'<tr data-component="{escape(status.component)}">'
        f"<td>{name}</td>"
        f'<td class="mono">{_text(ident.instance_id if ident else None)}</td>'
        f"<td>{_text(ident.name if ident else None)}</td>"
        f"<td>{_text(ident.version if ident else None)}</td>"
        f'<td class="mono">{_text(ident.checksum if ident else None)}</td>'
        f"<td>{_badge(status.badge, f'badge-{status.component}')}{reason}"
        f'<div class="why">{_text(status.detail)}</div></td>'
        "</tr>"
    )


def _check_row(check: FunctionalityCheckView) -> str:
    verdict = _badge(
        "green" if check.passed else "red",
        f"check-{check.program}",
        "pass" if check.passed else "fail",
    )
    return (
        f'<tr data-program="{escape(check.program)}"><td>{_text(check.program)}</td>'
        f"<td>{_text(check.version)}</td><td>{verdict}</td>"
        f"<td>{_text(check.checked_at)}</td><td>{_text(check.detail)}</td></tr>"
    )


def render_page(snapshot: MonitorSnapshot) -> str:
    """The monitor's page for ``snapshot``."""
    own = snapshot.own
    changed = (
        f" — <strong>changed on disk: {escape(', '.join(snapshot.own_changed))}</strong>"
        if snapshot.own_changed
        else ""
    )
    if snapshot.reference_serial is not None:
        reference = (
            f"reference list <strong>{snapshot.reference_serial}</strong> "
            f"of {_text(snapshot.reference_issuer)}"
        )
    else:
        reference = f"<strong>no reference list</strong>: {_text(snapshot.reference_detail)}"
    rows = "".join(_component_row(s, s.component == own.component) for s in snapshot.components)
    log = snapshot.logbook
    log_state = "verified" if log.verified else "NOT verified"
    anomaly = snapshot.anomaly
    checks = "".join(_check_row(c) for c in snapshot.checks) or (
        '<tr><td colspan="5">no functionality check has been logged yet</td></tr>'
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_S}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>metrocloud verification monitor</title>
<style>{STYLE}</style>
</head>
<body>
<header>
<h1>metrocloud verification monitor</h1>
<p data-testid="monitor-identification">this monitor: {_text(own.name)} {_text(own.version)},
checksum <span class="mono">{_text(own.checksum)}</span>, instance
<span class="mono">{_text(own.instance_id)}</span>{changed}</p>
<p data-testid="reference">judged against {reference}</p>
<p class="meta">snapshot taken {_text(snapshot.taken_at)}; this page reloads every
{REFRESH_S} s</p>
</header>
<p class="overall">overall: {_badge(snapshot.overall, "overall")}
<span class="why" data-testid="overall-detail">{_text(snapshot.overall_detail())}</span></p>

<h2>Legally relevant components</h2>
<section>
<table data-testid="components">
<thead><tr><th>component</th><th>instance id</th><th>software</th><th>version</th>
<th>checksum (SHA-256)</th><th>verdict</th></tr></thead>
<tbody>{rows}</tbody>
</table>
</section>

<h2>Logbook integrity</h2>
<section data-testid="logbook-integrity">
<p>{_badge("green" if log.verified else "red", "logbook-badge", log_state)}</p>
<dl>
<dt>size</dt><dd data-testid="logbook-size">{_text(log.size)}</dd>
<dt>root hash</dt><dd class="mono" data-testid="logbook-root">{_text(log.root_hash)}</dd>
<dt>cosigned by</dt><dd data-testid="logbook-cosigners">{_text(", ".join(log.cosigned_by))}</dd>
<dt>checked at</dt><dd>{_text(log.checked_at)}</dd>
<dt>detail</dt><dd data-testid="logbook-detail">{_text(log.detail)}</dd>
</dl>
</section>

<h2>Anomaly state</h2>
<section>
<p>{_badge(anomaly.state, "anomaly-state")} since {_text(anomaly.since)}</p>
<p class="why" data-testid="anomaly-detail">{_text(anomaly.detail)}</p>
</section>

<h2>Functionality checks (latest per tariff program)</h2>
<section>
<table data-testid="checks">
<thead><tr><th>program</th><th>version</th><th>verdict</th><th>checked at</th><th>detail</th>
</tr></thead>
<tbody>{checks}</tbody>
</table>
</section>
</body>
</html>
"""


def create_monitor_app(snapshot: Callable[[], MonitorSnapshot]) -> FastAPI:
    """The page and its JSON for whatever ``snapshot`` returns (the latest one gathered)."""
    app = FastAPI(
        title="metrocloud verification monitor", version="1", docs_url=None, redoc_url=None,
        openapi_url=None,
    )  # fmt: skip

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(render_page(snapshot()), headers=NO_STORE)

    @app.get("/status.json")
    def status() -> JSONResponse:
        return JSONResponse(snapshot().to_dict(), headers=NO_STORE)

    return app
