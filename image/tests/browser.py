"""The dashboard tests' browser: the system Chromium driven by Playwright, pages that note what goes
wrong in them, and screenshots into test-artifacts/. The fixtures (`browser`, `pages`) are in conftest."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, sync_playwright

from conftest import ARTIFACTS

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@contextmanager
def chromium() -> Iterator[Browser]:
    """The system Chromium, headless (never `playwright install`)."""
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (make test installs it)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class PageProblems:
    """Console errors, uncaught exceptions, failed requests and HTTP errors, minus those a test expects."""

    def __init__(self, page: Page) -> None:
        self.items: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.items.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: self.items.append(f"uncaught: {e}"))
        page.on("requestfailed", lambda r: self.items.append(f"request failed: {r.url} {r.failure}"))
        page.on("response", lambda r: r.status >= 400 and self.items.append(f"HTTP {r.status}: {r.url}"))

    def unexpected(self, *allowed: str) -> list[str]:
        return [item for item in self.items if not any(re.search(pattern, item) for pattern in allowed)]


class Pages:
    """Opens pages, each in a fresh browser context; close() closes them all."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []

    def open(self, url: str, width: int = 1280, height: int = 900, color_scheme: str = "light",
             permissions: Iterable[str] = ()) -> tuple[Page, PageProblems]:
        """`url` + "/" loaded in a `width` x `height` viewport, with `permissions` granted to `url`."""
        context = self.browser.new_context(viewport={"width": width, "height": height}, color_scheme=color_scheme)
        if permissions:
            context.grant_permissions(list(permissions), origin=url)
        self.contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        problems = PageProblems(page)
        page.goto(url + "/")
        return page, problems

    def close(self) -> None:
        for context in self.contexts:
            context.close()


def screenshot(target: Page | Locator, name: str) -> None:
    """test-artifacts/<name>: a page whole (full_page), a locator as it stands."""
    ARTIFACTS.mkdir(exist_ok=True)
    whole = {"full_page": True} if isinstance(target, Page) else {}
    target.screenshot(path=str(ARTIFACTS / name), animations="disabled", **whole)


def no_horizontal_overflow(page: Page) -> tuple[int, int]:
    return page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
