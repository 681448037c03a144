"""Fixtures of the browser test: real server processes and headless chromium, always stopped.

- ``cluster_factory`` makes :class:`ProcessCluster` objects under the test's ``tmp_path``
  (as in ``tests/integration``); every process they start is stopped, pass or fail.
- ``open_page(url)`` starts a headless chromium (:mod:`tests.browser.chromium`) on ``url``
  and returns a :class:`~tests.browser.page.StatusPage`; every browser is quit at the end.
  Without chromium, chromedriver or selenium the test is skipped with the install hint;
  under ``CI=true`` it fails instead (``.ci/run`` installs the browser).
- Screenshots go to ``build/artifacts/browser/`` at the top of the checkout (``build/`` is
  ignored by git); their paths are printed, attached to the test's report and listed in
  the terminal summary. A failing test also gets a screenshot of every open tab, the
  page's console and chromedriver's log, besides the tails of its nodes' logs.
- Each test has a time bound (``@pytest.mark.deadline(seconds)``, default
  :data:`DEFAULT_DEADLINE`); every wait inside has its own deadline too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser import chromium
from tests.cluster_fixtures import cluster_factory_fixture
from tests.deadline import deadline_fixture
from tests.integration.harness import ProcessCluster

if TYPE_CHECKING:
    from tests.browser.page import StatusPage

#: Seconds a browser test may run unless it says otherwise.
DEFAULT_DEADLINE = 120.0

#: Where screenshots are saved: ``build/artifacts/browser/`` of this checkout.
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "artifacts" / "browser"

ClusterFactory = Callable[..., ProcessCluster]
PageFactory = Callable[[str], "StatusPage"]

_PAGES = pytest.StashKey[list["StatusPage"]]()
_SHOTS = pytest.StashKey[list[Path]]()
_ALL_SHOTS: list[Path] = []


_deadline = deadline_fixture(DEFAULT_DEADLINE)


cluster_factory = cluster_factory_fixture(ProcessCluster)


@pytest.fixture
def open_page(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PageFactory]:
    """``open_page(url)`` → a loaded :class:`StatusPage` in a new headless chromium."""
    absent = chromium.missing()
    if absent is not None:
        if chromium.in_ci():
            pytest.fail(f"{absent} (CI=true: the browser test must run here)", pytrace=False)
        pytest.skip(absent)
    from tests.browser.page import StatusPage

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pages: list[StatusPage] = request.node.stash.setdefault(_PAGES, [])
    shots: list[Path] = request.node.stash.setdefault(_SHOTS, [])

    def artifact(name: str) -> Path:
        path = ARTIFACTS / f"{request.node.name}-{name}.png"
        shots.append(path)
        _ALL_SHOTS.append(path)
        print(f"screenshot: {path}")
        return path

    def make(url: str) -> StatusPage:
        log = tmp_path / f"chromedriver-{len(pages)}.log"
        driver = chromium.start(tmp_path / f"chromium-{len(pages)}", log)
        page = StatusPage(driver, url, artifact, driver_log=log)
        pages.append(page)
        page.open()
        return page

    try:
        yield make
    finally:
        for page in pages:
            with contextlib.suppress(Exception):
                page.driver.quit()


def _attach_browser_state(item: pytest.Item, report: pytest.TestReport) -> None:
    """A failed test's tabs: a screenshot, the console and chromedriver's log tail each."""
    pages: list[StatusPage] = item.stash.get(_PAGES, [])
    for i, page in enumerate(pages):
        parts = [f"url: {page.url}"]
        with contextlib.suppress(Exception):
            parts.append(f"screenshot: {page.screenshot(f'failure-{i}')}")
        with contextlib.suppress(Exception):
            # selenium leaves get_log unannotated.
            entries: list[dict[str, Any]] = page.driver.get_log("browser")  # type: ignore[no-untyped-call]
            parts.append("console:")
            parts += [f"  {e.get('level')} {e.get('message')}" for e in entries[-40:]]
        with contextlib.suppress(Exception):
            parts.append(f"view: {page.view()}")
        if page.driver_log is not None and page.driver_log.exists():
            tail = page.driver_log.read_text(errors="replace").splitlines()[-20:]
            parts.append("chromedriver log tail:")
            parts += [f"  {line}" for line in tail]
        report.sections.append((f"browser tab {i} ({report.when})", "\n".join(parts)))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and report.when == "call":
        _attach_browser_state(item, report)
    shots = item.stash.get(_SHOTS, [])
    if shots and report.when == "call":
        report.sections.append(("browser screenshots", "\n".join(str(p) for p in shots)))
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _ALL_SHOTS:
        terminalreporter.section("browser screenshots")
        for path in _ALL_SHOTS:
            terminalreporter.write_line(str(path))
