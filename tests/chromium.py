"""Headless Chromium for the report tests: load a page, let its scripts run, return the DOM as it then is.

No DevTools protocol: ``--dump-dom`` prints the DOM after the load event, and the report's browser script
records what it did (``data-browser-ready``, ``#mb-errors``, ``data-matching``) in the DOM itself.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def browser_or_skip() -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no headless Chromium installed (Debian package 'chromium')")
    return browser


def dump_dom(page: Path, profile: Path, fragment: str = "") -> str:
    """The page's DOM after load (scripts run), opened as file:// with an optional #fragment."""
    browser = browser_or_skip()
    url = page.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    done = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                          capture_output=True, text=True, timeout=180, check=False)
    assert "<body" in done.stdout, done.stderr[-2000:]
    return done.stdout
