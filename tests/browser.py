"""Headless Chromium for tests that look at a page the way a person does (Playwright).

The browser is Debian's ``chromium`` package (``scripts/ensure-chromium`` installs it; no
browser is downloaded): :func:`find_chromium` looks at ``$METROCLOUD_CHROMIUM``, then
``chromium`` / ``chromium-browser`` on ``PATH``, then ``/usr/bin/chromium``.

- :func:`browser` (function fixture): a launched headless Chromium; the test fails with
  what to install when there is none (``make setup`` installs it).
- :func:`screenshot_path`: where a test keeps its screenshots (``artifacts/screenshots/``
  at the repository root, which git ignores).

Playwright's sync API runs an event loop in the test's thread while the browser is open, so
``asyncio.run`` cannot be called in that thread meanwhile: start clusters (and anything else
that runs a loop) before the browser, or in another thread. That is also why the fixture is
per test, not per session.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM_ENV = "METROCLOUD_CHROMIUM"
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")
DEBIAN_CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "artifacts" / "screenshots"


def find_chromium() -> Path | None:
    """The Chromium executable to drive, or None if none is installed."""
    given = os.environ.get(CHROMIUM_ENV)
    if given:
        return Path(given)
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return Path(found)
    return DEBIAN_CHROMIUM if DEBIAN_CHROMIUM.is_file() else None


def screenshot_path(name: str) -> Path:
    """``artifacts/screenshots/<name>.png``, its folder made."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}.png"


@pytest.fixture
def browser() -> Iterator[Browser]:
    """A headless Chromium (Debian's), closed after the test."""
    from playwright import sync_api  # a dev dependency: make setup installs it

    executable = find_chromium()
    if executable is None:  # make setup installs it; a missing browser is a failure
        pytest.fail("no Chromium installed: run scripts/ensure-chromium (as root)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(executable), args=["--no-sandbox"], headless=True
        )
        try:
            yield launched
        finally:
            launched.close()
