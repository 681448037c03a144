"""Headless Debian chromium driven by selenium, for the status page's browser test.

The test needs three things outside the Python project's own dependencies: the
``selenium`` package (in the ``test`` extra, so ``make test`` installs it), and
Debian's ``chromium`` and ``chromium-driver`` packages (``.ci/run`` installs them
with apt-get). :func:`missing` says which is absent and how to install it; the
fixture skips the test with that message, or fails it under ``CI=true``, where
the browser test must run.

selenium is imported inside :func:`start` only, so that collecting the tests
works without it (and then skips them with the install hint).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

__all__ = [
    "BROWSER_HINT",
    "CHROMEDRIVER",
    "CHROMIUM",
    "FLAGS",
    "SELENIUM_HINT",
    "in_ci",
    "missing",
    "start",
]

#: Debian's paths: ``chromium`` is the launcher script, ``chromedriver`` the WebDriver server.
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

#: What to run when something is missing (said in the skip or failure message).
BROWSER_HINT = (
    "install the browser with `sudo apt-get install chromium chromium-driver` (.ci/run does it)"
)
SELENIUM_HINT = (
    "install selenium with `make test` (it is in the test extra) "
    "or `.venv/bin/pip install 'selenium>=4.20'`"
)

#: Chromium's flags for this machine and CI: headless without a GPU or a sandbox (a
#: container's root cannot use the setuid/namespace sandbox), /tmp instead of a small
#: /dev/shm, and no network traffic of its own (no QUIC, updates, sync, first-run
#: pages or background fetches), so that the only requests are the page's.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
    # Chromium refuses a few "unsafe" ports; 10080 is the one in the range free_ports
    # picks from (10000 up to the ephemeral range).
    "--explicitly-allowed-ports=10080",
)

#: Seconds a page load and an ``execute_script`` call may take.
PAGE_LOAD_TIMEOUT = 30.0
SCRIPT_TIMEOUT = 10.0


def in_ci() -> bool:
    """``CI=true``: the browser test must run, a missing browser is a failure."""
    return os.environ.get("CI", "").lower() == "true"


def missing() -> str | None:
    """What the browser test lacks, as one message with the install hint; ``None``: nothing."""
    absent, hints = [], []
    binaries = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if binaries:
        absent += binaries
        hints.append(BROWSER_HINT)
    if importlib.util.find_spec("selenium") is None:
        absent.append("the selenium package")
        hints.append(SELENIUM_HINT)
    if not absent:
        return None
    return f"the browser test needs {' and '.join(absent)}: {'; '.join(hints)}"


def start(profile: Path, driver_log: Path) -> WebDriver:
    """Start headless chromium with a fresh profile directory ``profile``.

    chromedriver writes its warnings to ``driver_log``. The caller must ``quit()`` the
    driver (it stops chromium and chromedriver).
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)  # given, so selenium-manager never runs
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    # The page's console (JavaScript errors) is attached to a failing test's report.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(
        executable_path=str(CHROMEDRIVER),
        service_args=["--log-level=WARNING"],  # its INFO lines echo every command's JSON
        log_output=str(driver_log),
    )
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT)
        driver.set_script_timeout(SCRIPT_TIMEOUT)
    except BaseException:
        driver.quit()
        raise
    return driver
