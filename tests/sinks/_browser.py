"""The dashboard page in a real browser: Debian's chromium driven by Playwright's sync API.

Shared by the dashboard test and the demo test; the sync API runs in a worker thread there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

READ_PAGE = """() => {
  const text = (id) => document.getElementById(id).textContent;
  const prices = (sel) => [...document.querySelectorAll(sel + ' .level span:first-of-type')].map(e => e.textContent);
  return {bestBid: text('best-bid'), bestAsk: text('best-ask'), spread: text('spread-value'),
          updates: Number(text('book-updates')), seq: text('book-seq'), title: text('book-title'),
          bids: prices('#bids'), asks: prices('#asks'), connection: text('connection')};
}"""
"""What the page shows of the book, as a dict (``page.evaluate(READ_PAGE)``)."""


def browser_or_skip() -> None:
    """Skip when playwright or chromium is missing; fail instead under ALPHAPULSE_REQUIRE_BROWSER=1 (CI)."""
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[test]')"
    if not os.path.exists(CHROMIUM):
        reason = "Debian chromium is not installed (apt-get install chromium)"
    if reason is None:
        return
    if os.environ.get("ALPHAPULSE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"ALPHAPULSE_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def headless_chromium() -> Iterator[Any]:
    """A Playwright browser on Debian's chromium, closed on the way out whatever happens."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def wait_for_full_book(page: Any, timeout_ms: int) -> None:
    """Wait until the page holds a book with 20 levels on each side."""
    page.wait_for_function(
        "() => window.alphapulse && alphapulse.book.seq !== null"
        " && document.querySelectorAll('#bids .level').length === 20"
        " && document.querySelectorAll('#asks .level').length === 20", timeout=timeout_ms)
