"""The scenario runner and its report, on scenarios that need no ecosystem: a check that
fails fails the scenario, an exception is reported rather than raised, the page escapes
what it shows."""

from __future__ import annotations

from typing import Any

import httpx

from metrocloud.testbed.controller import TestbedClient
from metrocloud.testbed.scenarios import Probe, Scenario, render_html, run_scenario


def offline_client() -> TestbedClient:
    """A client whose controller answers every request with a 409 (no ecosystem)."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json={"error": "the testbed is not started"})

    return TestbedClient(httpx.Client(transport=httpx.MockTransport(answer), base_url="http://t"))


def scenario(run: Any, gap: str | None = None) -> Scenario:
    return Scenario("s", "<Title>", "done & undone", "expected <b>", run, gap)


def test_passing_and_failing_checks_decide_the_verdict() -> None:
    def good(client: TestbedClient, probe: Probe) -> None:
        probe.equal("one", 1, 1)
        probe.holds("two", "true", "yes", True)

    def bad(client: TestbedClient, probe: Probe) -> None:
        probe.equal("one", 1, 1)
        probe.equal("two", 2, 3)

    ok = run_scenario(offline_client(), scenario(good))
    assert ok.ok and ok.error is None and len(ok.checks) == 2
    failed = run_scenario(offline_client(), scenario(bad))
    assert not failed.ok
    assert [c.ok for c in failed.checks] == [True, False]
    assert "[FAIL] two: expected 2, observed 3" in failed.text()


def test_a_scenario_without_checks_does_not_pass() -> None:
    report = run_scenario(offline_client(), scenario(lambda client, probe: None))
    assert not report.ok


def test_an_exception_is_a_failed_scenario_with_the_controllers_answer() -> None:
    def measure(client: TestbedClient, probe: Probe) -> None:
        probe.equal("before", 0, 0)
        client.measure(4)

    report = run_scenario(offline_client(), scenario(measure))
    assert not report.ok
    assert report.error is not None
    assert "HTTPStatusError" in report.error and "not started" in report.error


def test_the_page_lists_expected_and_observed_escaped() -> None:
    def run(client: TestbedClient, probe: Probe) -> None:
        probe.equal("<claim>", "a", "<script>x</script>")

    report = run_scenario(offline_client(), scenario(run, gap="issue <10>"))
    page = render_html([report])
    assert "<script>x" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "&lt;Title&gt;" in page and "done &amp; undone" in page and "expected &lt;b&gt;" in page
    assert "Not detected yet: issue &lt;10&gt;" in page
    assert "0 of 1 scenarios passed" in page and 'class="failed"' in page
    assert "(expected a)" in page
