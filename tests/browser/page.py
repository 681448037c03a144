"""The ``/ui`` page as the browser test sees it: the DOM contract of issue 14.

The page re-renders every second, so reading it element by element could mix
two renders or hit a replaced element. :meth:`StatusPage.view` reads everything
the test looks at in one script call instead, and waits poll such views with
:class:`WebDriverWait` until a condition holds or a deadline passes; a timeout's
message carries the last view seen.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from selenium.common.exceptions import (
    ElementNotInteractableException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

__all__ = ["Member", "PageView", "StatusPage"]

T = TypeVar("T")

#: Seconds between two looks at the page while waiting (the page itself polls every 1 s).
POLL = 0.1

# One render's worth of the contract's elements, read in a single call.
_VIEW_SCRIPT = """
const one = (s) => document.querySelector(s);
const text = (s) => { const e = one(s); return e === null ? null : e.textContent.trim(); };
const attr = (s, a) => { const e = one(s); return e === null ? null : e.getAttribute(a); };
const all = (s) => Array.from(document.querySelectorAll(s));
return {
  state: attr('#node-state', 'data-state'),
  state_text: text('#node-state'),
  leader: text('#leader'),
  leader_attr: attr('#leader', 'data-leader'),
  term: text('#term'),
  members: all('#members tbody tr').map((tr) => ({
    id: tr.getAttribute('data-member-id'),
    role: tr.getAttribute('data-role'),
    self: tr.getAttribute('data-self'),
    reachable: tr.getAttribute('data-reachable'),
    cells: Array.from(tr.cells).map((c) => c.textContent.trim()),
  })),
  changes: all('#leader-changes li').map((li) => ({
    term: li.getAttribute('data-term'), leader: li.getAttribute('data-leader'),
  })),
  rates: Object.fromEntries(all('#rates [data-rate]').map(
    (e) => [e.getAttribute('data-rate'), e.textContent.trim()])),
  keys: all('#kv-keys li[data-key]').map((li) => li.getAttribute('data-key')),
  value: text('#kv-value'),
  kv_error: text('#kv-error'),
  updated: text('#updated'),
  updated_at: attr('#updated', 'data-at'),
};
"""


@dataclass(frozen=True)
class Member:
    """One ``#members tbody tr``: its ``data-*`` attributes and cell texts."""

    id: str | None
    role: str | None
    self: str | None
    reachable: str | None
    cells: tuple[str, ...]


@dataclass(frozen=True)
class PageView:
    """What the page showed at one moment (``None``: the element is absent)."""

    state: str | None
    state_text: str | None
    leader: str | None
    leader_attr: str | None
    term: str | None
    members: tuple[Member, ...]
    changes: tuple[tuple[str | None, str | None], ...]  # (data-term, data-leader), newest first
    rates: dict[str, str]
    keys: tuple[str, ...]
    value: str | None
    kv_error: str | None
    updated: str | None
    updated_at: str | None

    @property
    def leader_rows(self) -> list[Member]:
        """The member rows with ``data-role="leader"``."""
        return [m for m in self.members if m.role == "leader"]

    @property
    def self_rows(self) -> list[Member]:
        """The member rows with ``data-self="true"``."""
        return [m for m in self.members if m.self == "true"]


def _view(raw: dict[str, Any]) -> PageView:
    members = tuple(
        Member(m["id"], m["role"], m["self"], m["reachable"], tuple(m["cells"]))
        for m in raw["members"]
    )
    changes = tuple((c["term"], c["leader"]) for c in raw["changes"])
    return PageView(
        state=raw["state"],
        state_text=raw["state_text"],
        leader=raw["leader"],
        leader_attr=raw["leader_attr"],
        term=raw["term"],
        members=members,
        changes=changes,
        rates=dict(raw["rates"]),
        keys=tuple(raw["keys"]),
        value=raw["value"],
        kv_error=raw["kv_error"],
        updated=raw["updated"],
        updated_at=raw["updated_at"],
    )


class StatusPage:
    """A chromium tab on one node's ``/ui``."""

    def __init__(
        self,
        driver: WebDriver,
        url: str,
        artifacts: Callable[[str], Path],
        driver_log: Path | None = None,
    ) -> None:
        """Args:
        driver: the browser (owned by the fixture, which quits it).
        url: the page, ``http://127.0.0.1:<api port>/ui``.
        artifacts: ``artifacts(name)`` → where to save the screenshot ``name``.
        driver_log: chromedriver's log file (shown when a test fails).
        """
        self.driver = driver
        self.url = url
        self.driver_log = driver_log
        self._artifacts = artifacts

    def open(self) -> None:
        """Load the page (its script then polls the node by itself)."""
        self.driver.get(self.url)

    def view(self) -> PageView:
        """Everything the test reads, from one render."""
        raw = self.driver.execute_script(_VIEW_SCRIPT)
        return _view(raw)

    def body_text(self) -> str:
        """The text the page shows (``document.body.innerText``)."""
        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def wait(self, what: str, check: Callable[[PageView], T | None], timeout: float) -> T:
        """Poll :meth:`view` until ``check(view)`` is neither ``None`` nor ``False``.

        Raises:
            AssertionError: ``timeout`` seconds passed; says ``what`` and the last view.
        """
        last: list[PageView] = []

        def probe(_: WebDriver) -> T | None:
            view = self.view()
            last[:] = [view]
            result = check(view)
            return None if result is False else result

        try:
            # until() returns only what the probe returned truthy, never None.
            result = cast(T, WebDriverWait(self.driver, timeout, poll_frequency=POLL).until(probe))
        except TimeoutException:
            seen = last[0] if last else "(no view: the page never answered the script)"
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what}; the page showed:\n{seen}"
            ) from None
        return result

    def _act(self, what: str, action: Callable[[WebDriver], bool], timeout: float) -> None:
        """Run ``action`` until it returns true, retrying a re-rendered element."""
        try:
            WebDriverWait(
                self.driver,
                timeout,
                poll_frequency=POLL,
                ignored_exceptions=(
                    StaleElementReferenceException,
                    ElementNotInteractableException,
                ),
            ).until(action)
        except TimeoutException:
            raise AssertionError(f"timed out after {timeout:g}s trying to {what}") from None

    def type_into(self, selector: str, text: str, timeout: float = 10.0) -> None:
        """Replace the text of the input ``selector`` with ``text``."""

        def act(driver: WebDriver) -> bool:
            field = driver.find_element(By.CSS_SELECTOR, selector)
            field.clear()
            field.send_keys(text)
            return field.get_attribute("value") == text

        self._act(f"type into {selector}", act, timeout)

    def click(self, selector: str, timeout: float = 10.0) -> None:
        """Click the element ``selector`` (waiting for it to exist and be clickable)."""

        def act(driver: WebDriver) -> bool:
            driver.find_element(By.CSS_SELECTOR, selector).click()
            return True

        self._act(f"click {selector}", act, timeout)

    def list_keys(self, prefix: str) -> None:
        """Ask the key browser for the keys under ``prefix``."""
        self.type_into("#kv-prefix", prefix)
        self.click("#kv-list")

    def open_key(self, key: str) -> None:
        """Click the listed key ``key`` (its value then shows in ``#kv-value``)."""
        self.click(f'#kv-keys li[data-key="{_css_string(key)}"]')

    def save_token(self, token: str) -> None:
        """Type ``token`` into ``#token`` and press ``#token-save``."""
        self.type_into("#token", token)
        self.click("#token-save")

    def screenshot(self, name: str) -> Path:
        """Save a PNG of the whole page (not only the 1280x900 window) as the artifact
        ``name``, through chromium's DevTools protocol; returns its path."""
        path = self._artifacts(name)
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": clip},
        )
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


def _css_string(text: str) -> str:
    """``text`` for a double-quoted CSS attribute value."""
    return text.replace("\\", "\\\\").replace('"', '\\"')
