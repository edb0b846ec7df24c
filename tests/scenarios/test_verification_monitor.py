"""The authority's verification monitor against a running cloud, in headless Chromium: once
the authority approves this installation, every component that answers is green and the
logbook verifies; a newer list that leaves one component out turns exactly that badge red
within the refresh interval."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from typer.testing import CliRunner

from browser import screenshot_path
from metrocloud.cli import app
from metrocloud.cloud.cluster import Cluster
from metrocloud.cloud.software import all_components

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

SERVICES = ("communication", "legal", "storage", "logbook", "display")
REFRESH_S = 1.0
LEFT_OUT = "display"


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "data", options={"monitor": {"refresh_s": str(REFRESH_S)}})
    c.start()
    try:
        yield c
    finally:
        c.stop()


def approve(cluster: Cluster, *components: str) -> str:
    args = [a for c in components for a in ("--component", c)]
    result = CliRunner().invoke(
        app, ["authority", "approve", "--data", str(cluster.data.root), *args]
    )
    assert result.exit_code == 0, result.output
    return result.output


def until(what: str, check: Callable[[], Any], timeout_s: float) -> Any:
    """``check()`` once it returns something true; fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.2)


def badge(page: Page, component: str) -> tuple[str, str]:
    element = page.get_by_test_id(f"badge-{component}")
    return str(element.get_attribute("class")), element.inner_text()


def test_the_monitor_page_shows_what_runs(cloud: Cluster, browser: Browser) -> None:
    url = str(cloud.data.cluster()["monitor_url"])
    assert url == cloud.url("monitor")
    # The page is served with the monitor's certificate from the PKI: httpx checks it
    # against the root, so the browser may skip that check.
    status = httpx.Client(
        base_url=url,
        verify=ssl.create_default_context(cafile=cloud.data.pki / "root.pem"),
        timeout=10,
    )

    def snapshot() -> dict[str, Any]:
        response = status.get("/status.json")
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    def gathered() -> dict[str, Any] | None:  # the first snapshot, not the pending one
        body = snapshot()
        return None if body["components"][0]["reason"] == "pending" else body

    before = until("the first snapshot", gathered, 10)
    assert before["reference"]["serial"] is None and before["overall"] == "red"
    assert before["reference"]["detail"] == "no reference list approved yet"
    assert {c["reason"] for c in before["components"]} == {"no-reference-list"}
    assert [c["component"] for c in before["components"]] == sorted(all_components())

    approve(cloud)

    def approved() -> dict[str, Any] | None:
        body = snapshot()
        rows = {c["component"]: c for c in body["components"]}
        answered = [c for c in rows.values() if c["name"] is not None]
        if body["reference"]["serial"] != 1 or not body["logbook"]["verified"]:
            return None
        if not all(c["badge"] == "green" for c in answered):
            return None
        return body if all(rows[s]["badge"] == "green" for s in SERVICES) else None

    body = until("every answering component green", approved, 20)
    rows = {c["component"]: c for c in body["components"]}
    for service in SERVICES:
        assert rows[service]["signed_by"] == service and len(rows[service]["checksum"]) == 64
    silent = [c for c, row in rows.items() if row["name"] is None]
    assert all(rows[c]["reason"] == "no-answer" for c in silent), [rows[c] for c in silent]
    assert body["overall"] == ("green" if not silent else "red")
    assert body["logbook"]["cosigned_by"] == ["witness-1", "witness-2"]

    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(url + "/")
    for component, row in rows.items():
        assert badge(page, component) == (f"badge {row['badge']}", row["badge"]), component
        if row["checksum"]:
            assert row["checksum"] in page.locator(f'tr[data-component="{component}"]').inner_text()
    logbook = page.get_by_test_id("logbook-integrity").inner_text()
    assert "verified" in logbook and "NOT verified" not in logbook
    assert "witness-1, witness-2" in logbook
    overall = page.get_by_test_id("overall")
    assert overall.inner_text() == body["overall"]
    assert (
        "reference list 1 of market-surveillance" in page.get_by_test_id("reference").inner_text()
    )
    page.screenshot(path=str(screenshot_path("monitor-cloud-approved")), full_page=True)

    # A newer list that leaves the display out: its badge turns red, the others stay.
    approve(cloud, *(c for c in all_components() if c != LEFT_OUT))
    approved_at = time.monotonic()

    def display_red() -> bool:
        page.reload()
        return badge(page, LEFT_OUT) == ("badge red", "red")

    until("the display's badge red", display_red, 3 * REFRESH_S + 5)
    took = time.monotonic() - approved_at
    row = page.locator(f'tr[data-component="{LEFT_OUT}"]')
    assert row.locator(".reason").inner_text() == "unknown-component"
    assert (
        "reference list 2 of market-surveillance" in page.get_by_test_id("reference").inner_text()
    )
    for service in SERVICES:
        if service != LEFT_OUT:
            assert badge(page, service) == ("badge green", "green"), service
    assert page.get_by_test_id("overall").inner_text() == "red"
    page.screenshot(path=str(screenshot_path("monitor-cloud-display-left-out")), full_page=True)
    context.close()
    status.close()
    assert took < 3 * REFRESH_S + 5
