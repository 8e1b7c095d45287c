"""Driving the console in Debian's chromium through Playwright: the browser, sign-in, screenshots."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, sync_playwright

from tests.support.agents import PROJECT_ROOT
from tests.support.server import ServerProcess

CHROMIUM = Path(os.environ.get("AGENTPLANE_CHROMIUM", "/usr/bin/chromium"))
# Playwright's own browser download cannot work offline; Debian's chromium needs no sandbox as root in a
# container, and nothing it would fetch in the background (updates, sync, QUIC probes) is wanted in a test.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOTS = PROJECT_ROOT / "test-output" / "console"
KEY_STORAGE = "agentplane.console.key"


@contextmanager
def chromium(profile: Path) -> Iterator[BrowserContext]:
    if not CHROMIUM.exists():
        pytest.skip(f"chromium is not installed at {CHROMIUM} (`apt-get install chromium`; .ci/run does it)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


def screenshot(page: Page, name: str) -> Path:
    """The page as the user sees it, under test-output/console/ (docs/console.md embeds copies)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: Page, server: ServerProcess, key: str, hash: str = "") -> None:
    page.goto(f"{server.base_url}/console/{hash}")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#nav a").first.wait_for()
