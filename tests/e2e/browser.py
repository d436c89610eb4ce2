"""Drive Debian's headless Chromium: the gallery is checked in a real browser.

A test that needs it FAILS when it is missing (``apt-get install -y chromium``, as
``.ci/run`` does), it never skips.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str:
    """Return the browser's path, or fail the test saying how to install it."""
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError("chromium is not installed: apt-get install -y chromium (see .ci/run)")


def _run(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    profile.mkdir(parents=True, exist_ok=True)
    command = [
        chromium_path(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *extra,
        url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def dump_dom(url: str, profile: Path) -> str:
    """Return the DOM after the page's scripts ran, serialised as HTML."""
    return _run(url, profile, "--dump-dom").stdout


def screenshot(url: str, profile: Path, dest: Path, *, size: str = "1280,1000") -> Path:
    """Save a PNG of the rendered page at ``dest`` and return it."""
    _run(url, profile, f"--screenshot={dest}", f"--window-size={size}")
    assert dest.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "chromium wrote no PNG"
    return dest
