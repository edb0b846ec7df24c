"""The gateway's HAN side: the consumer's local display page (BSI TR-03109-1, HAN).

A consumer opens the page on the gateway's home-network address (here ``127.0.0.1`` only),
logs in with the customer id and the password the gateway administrator set for it over the
WAN (:mod:`metrocloud.field.wan`), and sees the meters of that customer only
(:meth:`~metrocloud.field.smgw.SmartMeterGateway.consumer_view`): per meter its medium,
unit and latest register, a table of the recent readings (time, register, status, a heat
meter's flow and return temperatures), and the consumer-log entries about those meters.
``GET /api/readings`` answers the same as JSON.

Endpoints::

    GET  /               the page (303 to /login without a session)
    GET  /login          the login form
    POST /login          customer, password (form) -> session cookie, 303 to /; 401 if wrong,
                         429 (Retry-After) while the customer id has to wait
    POST /logout         ends the session, 303 to /login
    GET  /api/readings   {"customer", "meters": [...], "log": [...]}; 401 without a session
                         (``?limit=N``: the newest N readings per meter, default 96: a day)

**Why a session cookie, not HTTP Basic.** The page is for a person at a browser: a login form
with a clear error, and a logout that really ends the session, which Basic cannot do (the
browser resends the cached credentials until it is closed). Basic would also send the
password with every request and make scrypt run on each of them. The cookie is
``HttpOnly`` (no script can read it; the page has no script anyway) and ``SameSite=Strict``
(no other site can make the browser send it, so no cross-site request forgery of the
logout or of a page view); it carries the customer, a random session id and the expiry, signed
with HMAC-SHA256 under a random secret made when :class:`ConsumerAccounts` is created (so a
restart logs everybody out). A session also has to be open on the gateway:
logging out, or the administrator setting a new password, closes it at once, even though
the cookie's signature would still hold. Form posts from another origin are refused too.
The HAN here is plain HTTP on loopback, so the cookie is not ``Secure``; a gateway that
serves its HAN over TLS (as the TR asks) would add that flag.

Passwords are kept only as scrypt hashes (``hashlib.scrypt``, a random 16-byte salt per
password, N=2^14, r=8, p=1) and compared in constant time; an unknown customer costs the
same scrypt run as a known one, so the answer time does not tell which customers exist.
Guessing is throttled per customer id (:meth:`ConsumerAccounts.attempt_login`): after five
wrong passwords in a row each attempt waits, doubling up to five minutes; earlier ones get
``429`` with ``Retry-After`` unchecked, and the administrator log notes it once.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import hmac
import html
import json
import math
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import FastAPI, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from metrocloud.core.clock import index_time
from metrocloud.core.errors import Rejected
from metrocloud.field.meter import MeterStatus
from metrocloud.field.smgw import Accepted, LogEntry, SmartMeterGateway
from metrocloud.pki.pem import write_atomically

SESSION_COOKIE = "metrocloud_han"
SESSION_S = 8 * 3600
"""How long a HAN session lasts after login."""
RECENT_READINGS = 96
"""Readings per meter on the page, newest first: one day of quarter hours."""
LOG_ENTRIES = 50
"""Consumer-log entries on the page, newest first."""
MIN_PASSWORD = 8
MAX_PASSWORD = 256
MAX_FORM_BYTES = 4096
FREE_LOGIN_FAILURES = 5
"""Wrong passwords for one customer id before each further attempt has to wait."""
LOGIN_BACKOFF_S = (2.0, 300.0)
"""The wait after those, doubling with every further failure, and its longest."""
MAX_TRACKED_LOGINS = 10_000
"""Customer ids (as typed) whose failures are remembered; the oldest are forgotten first."""

SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 1 << 14, 8, 1, 32
_CUSTOMER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_customer_id(customer_id: str) -> str:
    """``customer_id`` if it is a valid customer id, else ``Rejected("bad-customer")``."""
    if not isinstance(customer_id, str) or not _CUSTOMER.fullmatch(customer_id):
        raise Rejected(
            "bad-customer",
            f"{customer_id!r} is no customer id: 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
        )
    return customer_id


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, dklen=SCRYPT_LEN, maxmem=64 * 1024 * 1024
    )


@dataclass(frozen=True)
class PasswordHash:
    """One consumer's password as the gateway keeps it: scrypt parameters, salt, digest."""

    salt: bytes
    digest: bytes
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P

    @classmethod
    def of(cls, password: str) -> PasswordHash:
        salt = secrets.token_bytes(16)
        return cls(salt, _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P))

    def matches(self, password: str) -> bool:
        return hmac.compare_digest(
            _scrypt(password, self.salt, self.n, self.r, self.p), self.digest
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "scrypt": {"n": self.n, "r": self.r, "p": self.p},
            "salt": self.salt.hex(),
            "hash": self.digest.hex(),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> PasswordHash:
        params = raw["scrypt"]
        return cls(
            bytes.fromhex(raw["salt"]),
            bytes.fromhex(raw["hash"]),
            int(params["n"]),
            int(params["r"]),
            int(params["p"]),
        )


_DUMMY = PasswordHash.of(secrets.token_urlsafe(16))
"""Checked against when the customer has no password: the same work, always False."""


@dataclass(frozen=True)
class LoginOutcome:
    """What a login attempt came to."""

    ok: bool
    wait_s: float = 0.0
    """After a failure: how long the customer id must wait before its next attempt (0: it
    may try at once). With ``checked`` false the attempt itself came too early."""
    failures: int = 0
    """Wrong passwords in a row for this customer id, this attempt included."""
    checked: bool = True
    """Whether the password was looked at (not while the customer id has to wait)."""


def login_wait_s(failures: int) -> float:
    """How long a customer id waits after ``failures`` wrong passwords in a row."""
    if failures < FREE_LOGIN_FAILURES:
        return 0.0
    first, longest = LOGIN_BACKOFF_S
    return min(first * 2.0 ** min(failures - FREE_LOGIN_FAILURES, 32), longest)


class ConsumerAccounts:
    """The consumers' HAN passwords (scrypt hashes only) and their open sessions.

    With ``path``, the hashes are also kept there as JSON (mode 0600) and loaded at start.
    Sessions live in memory, signed with a secret made here: a new process starts with none.
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        session_s: float = SESSION_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.session_s = session_s
        self.clock = clock
        self._secret = secrets.token_bytes(32)
        self._hashes: dict[str, PasswordHash] = {}
        self._sessions: dict[str, tuple[str, float]] = {}  # session id -> (customer, expiry)
        self._failures: dict[str, tuple[int, float]] = {}  # id as typed -> (count, last try)
        self._lock = threading.Lock()
        if path is not None and path.exists():
            raw = json.loads(path.read_text())
            self._hashes = {c: PasswordHash.from_json(h) for c, h in raw.items()}

    # -- passwords (set by the administrator over the WAN) ---------------------------------
    def set_password(self, customer_id: str, password: str) -> None:
        """Set (or replace) ``customer_id``'s password and close its open sessions.

        ``Rejected``: ``bad-customer`` for an invalid id, ``bad-password`` for a password
        shorter than :data:`MIN_PASSWORD` or longer than :data:`MAX_PASSWORD` characters.
        """
        check_customer_id(customer_id)
        if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise Rejected(
                "bad-password",
                f"a HAN password has {MIN_PASSWORD} to {MAX_PASSWORD} characters",
            )
        hashed = PasswordHash.of(password)
        with self._lock:
            self._hashes[customer_id] = hashed
            self._sessions = {s: v for s, v in self._sessions.items() if v[0] != customer_id}
            self._failures.pop(customer_id, None)
            if self.path is not None:
                data = {c: h.to_json() for c, h in sorted(self._hashes.items())}
                self.path.parent.mkdir(parents=True, exist_ok=True)
                write_atomically(self.path, json.dumps(data, indent=1).encode(), 0o600)

    def has_password(self, customer_id: str) -> bool:
        with self._lock:
            return customer_id in self._hashes

    def check_password(self, customer_id: str, password: str) -> bool:
        """Whether ``password`` is ``customer_id``'s; as slow for unknown customers."""
        with self._lock:
            hashed = self._hashes.get(customer_id)
        if hashed is None:
            _DUMMY.matches(password)
            return False
        return hashed.matches(password)

    def attempt_login(self, customer_id: str, password: str) -> LoginOutcome:
        """Check a login, throttled per customer id: after :data:`FREE_LOGIN_FAILURES`
        wrong passwords in a row each attempt must wait (:func:`login_wait_s`, doubling up
        to five minutes) and one that comes earlier is refused without a look at the
        password. Unknown ids are throttled alike, so the answers do not tell which
        customers exist. A right password, or a new one set by the administrator, clears
        the count. Counted before the password is checked, so attempts sent at once count
        one by one."""
        now = self.clock()
        with self._lock:
            failures, last = self._failures.get(customer_id, (0, 0.0))
            early = last + login_wait_s(failures) - now
            if early > 0:
                return LoginOutcome(False, early, failures, checked=False)
            self._failures.pop(customer_id, None)  # re-inserted last: the newest
            self._failures[customer_id] = (failures + 1, now)
            while len(self._failures) > MAX_TRACKED_LOGINS:
                del self._failures[next(iter(self._failures))]
        if self.check_password(customer_id, password):
            with self._lock:
                self._failures.pop(customer_id, None)
            return LoginOutcome(True)
        return LoginOutcome(False, login_wait_s(failures + 1), failures + 1)

    # -- sessions -------------------------------------------------------------------------
    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()

    def open_session(self, customer_id: str) -> str:
        """A new session of ``customer_id``: the cookie value that names it."""
        now = self.clock()
        sid = secrets.token_urlsafe(24)
        expiry = now + self.session_s
        with self._lock:
            self._sessions = {s: v for s, v in self._sessions.items() if v[1] > now}
            self._sessions[sid] = (customer_id, expiry)
        payload = json.dumps({"c": customer_id, "s": sid, "e": expiry}).encode()
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def _open(self, cookie: str | None) -> tuple[str, str] | None:
        """(session id, customer) of a valid cookie of an open session, else None."""
        if not cookie or len(cookie) > 1024 or cookie.count(".") != 1:
            return None
        payload_b64, signature_b64 = cookie.split(".")
        try:
            payload, signature = _unb64(payload_b64), _unb64(signature_b64)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(self._sign(payload), signature):
            return None
        try:
            claims = json.loads(payload)
            customer, sid, expiry = str(claims["c"]), str(claims["s"]), float(claims["e"])
        except (ValueError, KeyError, TypeError):
            return None
        now = self.clock()
        with self._lock:
            held = self._sessions.get(sid)
        if held is None or held[0] != customer or expiry <= now or held[1] <= now:
            return None
        return sid, customer

    def session_customer(self, cookie: str | None) -> str | None:
        """The customer of the session the cookie names, None if none is open."""
        found = self._open(cookie)
        return None if found is None else found[1]

    def close_session(self, cookie: str | None) -> None:
        found = self._open(cookie)
        if found is not None:
            with self._lock:
                self._sessions.pop(found[0], None)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- what a consumer sees -------------------------------------------------------------------
def _reading_json(got: Accepted) -> dict[str, Any]:
    reading = got.reading
    return {
        "index": reading.index,
        "time": index_time(reading.index).isoformat(),
        "register": reading.register_wh,
        "status": "error" if reading.status & MeterStatus.ERROR else "ok",
        "received_at": got.received_at.isoformat(),
        "cyclic": dict(got.cyclic),
    }


class ReadingOwners:
    """Whose each accepted reading is, as the consumer log says (its ``reading`` entries
    name the customer the meter belonged to when the reading came in).

    :meth:`SmartMeterGateway.consumer_view` goes by a meter's current customer, and a meter
    keeps its readings when the administrator gives it to another customer (a new tenant):
    the page shows the new customer only the readings that came in for them. The log is read
    incrementally; per meter only the runs of readings of one customer are kept.
    """

    def __init__(self, gateway: SmartMeterGateway) -> None:
        self._log = gateway.logs["consumer"]
        self._seen = 0
        self._runs: dict[str, tuple[list[int], list[str]]] = {}  # meter -> (first indices, owners)
        self._lock = threading.Lock()

    def _update(self) -> None:
        with self._lock:
            new = self._log.entries[self._seen :]
            self._seen += len(new)
            for entry in new:
                customer, index = entry.detail.get("customer"), entry.detail.get("index")
                if entry.kind != "reading" or entry.meter is None or not isinstance(index, int):
                    continue
                starts, owners = self._runs.setdefault(entry.meter, ([], []))
                if not owners or owners[-1] != customer:
                    starts.append(index)
                    owners.append(str(customer))

    def of(self, customer_id: str, meter_id: str, readings: list[Accepted]) -> list[Accepted]:
        """Those of ``readings`` (of ``meter_id``, oldest first) that are ``customer_id``'s.
        A reading not in the log yet counts as its meter's latest owner's (the safe side:
        a meter that just changed hands shows its new customer nothing of it until then)."""
        self._update()
        with self._lock:
            starts, owners = self._runs.get(meter_id, ([], []))
            starts, owners = list(starts), list(owners)
        out = []
        for got in readings:
            run = bisect.bisect_right(starts, got.reading.index) - 1
            if run >= 0 and owners[run] == customer_id:
                out.append(got)
        return out


def consumer_data(
    gateway: SmartMeterGateway,
    customer_id: str,
    *,
    limit: int = RECENT_READINGS,
    owners: ReadingOwners | None = None,
) -> dict[str, Any]:
    """What ``customer_id`` may see, as JSON: their meters (medium, unit, latest reading,
    the newest ``limit`` readings, newest first) and the consumer-log entries about them.
    Only the readings that came in while the meter was the customer's (``owners``: an
    incremental reader of the consumer log; default: one for this call)."""
    owners = ReadingOwners(gateway) if owners is None else owners
    view = gateway.consumer_view(customer_id)
    records = {r.meter_id: r for r in gateway.meters()}
    meters = []
    for meter_id in sorted(view):
        record = records.get(meter_id)
        if record is None:  # removed between the two calls
            continue
        readings = owners.of(customer_id, meter_id, view[meter_id])
        meters.append(
            {
                "meter_id": meter_id,
                "medium": record.medium.value,
                "unit": record.medium.unit,
                "count": len(readings),
                "latest": _reading_json(readings[-1]) if readings else None,
                "readings": [_reading_json(a) for a in reversed(readings[-limit:])],
            }
        )
    return {
        "gateway": gateway.gateway_id,
        "customer": customer_id,
        "meters": meters,
        "log": [_entry_json(e) for e in consumer_log(gateway, customer_id, set(view))],
    }


def consumer_log(
    gateway: SmartMeterGateway, customer_id: str, meters: set[str], *, limit: int = LOG_ENTRIES
) -> list[LogEntry]:
    """The newest ``limit`` consumer-log entries about ``meters`` that name ``customer_id``
    (a meter that changed hands keeps the entries of its former customer from the new one)."""
    out: list[LogEntry] = []
    for entry in reversed(gateway.logs["consumer"].entries):
        if entry.meter in meters and entry.detail.get("customer") == customer_id:
            out.append(entry)
            if len(out) >= limit:
                break
    return out


def _entry_json(entry: LogEntry) -> dict[str, Any]:
    return {"at": entry.at, "kind": entry.kind, "meter": entry.meter, "detail": entry.detail}


# -- the page -------------------------------------------------------------------------------
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1f2328; background: #f6f8fa; }
header { display: flex; justify-content: space-between; align-items: center; }
h1 { font-size: 1.4rem; margin: 0; }
section.meter { background: #fff; border: 1px solid #d0d7de; border-radius: 6px;
  padding: 1rem; margin: 1rem 0; }
h2 { font-size: 1.1rem; margin: 0 0 .5rem 0; }
.medium { font-weight: normal; color: #57606a; }
.latest { font-size: 1.2rem; }
table { border-collapse: collapse; margin-top: .5rem; }
th, td { border-bottom: 1px solid #d0d7de; padding: .25rem .75rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
table.log th, table.log td { text-align: left; }
.status-error { color: #cf222e; font-weight: bold; }
.status-ok { color: #1a7f37; }
form.login { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: 1rem;
  max-width: 22rem; }
label { display: block; margin: .5rem 0; }
input { width: 100%; padding: .3rem; box-sizing: border-box; }
button { margin-top: .5rem; padding: .3rem 1rem; }
.error { color: #cf222e; }
"""


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def render_login(gateway_id: str, error: str = "") -> str:
    message = (
        f'<p class="error" data-testid="login-error">{html.escape(error)}</p>' if error else ""
    )
    return _page(
        "metrocloud gateway: log in",
        f"<h1>Smart meter gateway {html.escape(gateway_id)}</h1>\n"
        "<p>Log in to see your meters' readings.</p>\n"
        f"{message}\n"
        '<form class="login" method="post" action="/login">'
        '<label>Customer <input name="customer" autocomplete="username" required></label>'
        '<label>Password <input name="password" type="password" '
        'autocomplete="current-password" required></label>'
        '<button type="submit">Log in</button></form>',
    )


def _cyclic_text(cyclic: dict[str, Any]) -> str:
    names = {"flow-temperature-c": "flow", "return-temperature-c": "return"}
    return ", ".join(
        f"{names.get(k, k)} {v} °C" if k.endswith("-c") else f"{k} {v}" for k, v in cyclic.items()
    )


def render_page(data: dict[str, Any]) -> str:
    """The consumer's page for :func:`consumer_data`'s ``data`` (every value escaped)."""
    e = html.escape
    parts = [
        "<header><h1>Smart meter gateway "
        f'{e(data["gateway"])}</h1><form method="post" action="/logout">'
        f'<span data-testid="customer">{e(data["customer"])}</span> '
        '<button type="submit" data-testid="logout">Log out</button></form></header>'
    ]
    if not data["meters"]:
        parts.append('<p data-testid="no-meters">No meters are configured for you.</p>')
    for meter in data["meters"]:
        mid, unit = e(meter["meter_id"]), e(meter["unit"])
        latest = meter["latest"]
        cyclic_column = any(r["cyclic"] for r in meter["readings"])
        parts.append(f'<section class="meter" data-meter="{mid}">')
        parts.append(f'<h2>{mid} <span class="medium">{e(meter["medium"])}, {unit}</span></h2>')
        if latest is None:
            parts.append("<p>No reading received yet.</p></section>")
            continue
        parts.append(
            f'<p class="latest">Latest register: <strong data-testid="latest-{mid}">'
            f"{latest['register']} {unit}</strong> at {e(latest['time'])}</p>"
        )
        if latest["cyclic"]:
            parts.append(
                f'<p data-testid="cyclic-{mid}">Temperatures: {e(_cyclic_text(latest["cyclic"]))}'
                "</p>"
            )
        head = f"<th>time (UTC)</th><th>register ({unit})</th><th>status</th>"
        if cyclic_column:
            head += "<th>temperatures</th>"
        parts.append(
            f"<p>The newest {len(meter['readings'])} of {meter['count']} readings.</p>"
            f'<table data-testid="readings-{mid}"><thead><tr>{head}</tr></thead><tbody>'
        )
        for r in meter["readings"]:
            row = (
                f'<tr data-index="{r["index"]}"><td>{e(r["time"])}</td>'
                f'<td class="register">{r["register"]}</td>'
                f'<td class="status-{r["status"]}">{r["status"]}</td>'
            )
            if cyclic_column:
                row += f"<td>{e(_cyclic_text(r['cyclic']))}</td>"
            parts.append(row + "</tr>")
        parts.append("</tbody></table></section>")
    parts.append("<h2>Your log</h2>")
    if data["log"]:
        parts.append(
            '<table class="log" data-testid="log"><thead><tr><th>at</th><th>event</th>'
            "<th>meter</th><th>detail</th></tr></thead><tbody>"
        )
        for entry in data["log"]:
            detail = ", ".join(f"{k}={v}" for k, v in sorted(entry["detail"].items()))
            parts.append(
                f"<tr><td>{e(entry['at'])}</td><td>{e(entry['kind'])}</td>"
                f"<td>{e(str(entry['meter']))}</td><td>{e(detail)}</td></tr>"
            )
        parts.append("</tbody></table>")
    else:
        parts.append("<p>No entries yet.</p>")
    return _page(f"metrocloud gateway {data['gateway']}: {data['customer']}", "\n".join(parts))


# -- the application ------------------------------------------------------------------------
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not "no-referrer": Chromium then sends "Origin: null" with the page's own form posts.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _same_origin(request: Request) -> bool:
    """Whether a form post comes from this page (no Origin header: not a browser's
    cross-site post, which always carries one)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


def create_han_app(
    gateway: SmartMeterGateway,
    accounts: ConsumerAccounts,
    *,
    recent: int = RECENT_READINGS,
) -> FastAPI:
    """The HAN application of ``gateway``: the consumer's page, login and JSON readings."""
    app = FastAPI(
        title=f"metrocloud gateway {gateway.gateway_id} (HAN)",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    owners = ReadingOwners(gateway)

    def customer_of(request: Request) -> str | None:
        return accounts.session_customer(request.cookies.get(SESSION_COOKIE))

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request) -> Response:
        customer = customer_of(request)
        if customer is None:
            return RedirectResponse("/login", status_code=303)
        data = consumer_data(gateway, customer, limit=recent, owners=owners)
        return HTMLResponse(render_page(data))

    @app.get("/login", response_class=HTMLResponse)
    def login_form() -> HTMLResponse:
        return HTMLResponse(render_login(gateway.gateway_id))

    @app.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        if not _same_origin(request):
            return HTMLResponse(
                render_login(gateway.gateway_id, "Refused: the form was posted from elsewhere."),
                status_code=403,
            )
        raw = await request.body()
        form = parse_qs(raw[:MAX_FORM_BYTES].decode("utf-8", "replace"))
        customer = (form.get("customer") or [""])[0].strip()
        password = (form.get("password") or [""])[0]
        if len(raw) > MAX_FORM_BYTES or not customer or not password:
            return HTMLResponse(
                render_login(gateway.gateway_id, "Wrong customer or password."), status_code=401
            )
        outcome = await run_in_threadpool(accounts.attempt_login, customer, password)
        if not outcome.ok:
            return refused_login(customer, outcome)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            accounts.open_session(customer),
            max_age=int(accounts.session_s),
            path="/",
            httponly=True,
            samesite="strict",
        )
        return response

    def refused_login(customer: str, outcome: LoginOutcome) -> Response:
        wait = math.ceil(outcome.wait_s)
        if not outcome.checked:
            return HTMLResponse(
                render_login(
                    gateway.gateway_id,
                    f"Too many wrong passwords for this customer: try again in {wait} s.",
                ),
                status_code=429,
                headers={"Retry-After": str(wait)},
            )
        if outcome.failures == FREE_LOGIN_FAILURES:  # once per run of failures
            gateway.log_han_login_throttled(customer, outcome.failures)
        message = "Wrong customer or password."
        if wait:
            message += f" The next attempt for this customer can be made in {wait} s."
        return HTMLResponse(render_login(gateway.gateway_id, message), status_code=401)

    @app.post("/logout")
    def logout(request: Request) -> Response:
        if _same_origin(request):
            accounts.close_session(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @app.get("/api/readings")
    def readings(
        request: Request, limit: int = Query(RECENT_READINGS, ge=1, le=100_000)
    ) -> Response:
        customer = customer_of(request)
        if customer is None:
            return JSONResponse(
                {"reason": "not-authenticated", "detail": "log in at /login first"},
                status_code=401,
            )
        return JSONResponse(consumer_data(gateway, customer, limit=limit, owners=owners))

    return app


__all__ = [
    "FREE_LOGIN_FAILURES",
    "LOGIN_BACKOFF_S",
    "SESSION_COOKIE",
    "ConsumerAccounts",
    "LoginOutcome",
    "PasswordHash",
    "ReadingOwners",
    "check_customer_id",
    "consumer_data",
    "consumer_log",
    "create_han_app",
    "login_wait_s",
    "render_login",
    "render_page",
]
