"""A real browser for the console's tests and benchmarks: Debian's chromium driven by
Playwright (`playwright install` would download a browser of its own, which these machines
cannot). Screenshots go to $LLMKUBE_TEST_ARTIFACTS (default test-artifacts/ in the checkout)."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and nothing that reaches out to the network on its own: this machine refuses it.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",  # tests run as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
]
ARTIFACTS_ENV = "LLMKUBE_TEST_ARTIFACTS"


@contextmanager
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run `bash hack/setup.sh --tests`")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def artifacts_dir() -> Path:
    default = Path(__file__).parents[2] / "test-artifacts"
    folder = Path(os.environ.get(ARTIFACTS_ENV) or default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(page: Page, name: str) -> Path:
    path = artifacts_dir() / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def page_errors(page: Page) -> list[str]:
    """Collects the page's uncaught script errors and failed requests from now on."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"script error: {error}"))
    page.on(
        "response",
        lambda response: (
            errors.append(f"{response.status} {response.url}") if response.status >= 400 else None
        ),
    )
    return errors
