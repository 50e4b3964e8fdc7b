"""GET / in a real headless Chromium (Selenium + Debian chromium-driver), served by the real
agent polling the real 3-node Galera cluster: the page loads, shows each node's state and, with
--writer, the writer election as /writer/<node> answers it, follows a frozen node, and fits a
phone screen; without --writer it shows nothing of the election. The screenshot goes to a
temporary file; scripts/screenshot sets GALERA_SCREENSHOT to make docs/status-page.png (tests
never rewrite tracked files)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from galera_health.testbed import GaleraTestbed
from testkit.agent import AgentProcess

pytestmark = pytest.mark.galera

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,900",
]
SCREENSHOT = os.environ.get("GALERA_SCREENSHOT")  # scripts/screenshot (not GALERA_HEALTH_*)
TIMING = ["--interval", "0.5", "--connect-timeout", "2", "--read-timeout", "2"]
NAMES = ("n1", "n2", "n3")

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        message = f"the status page test needs {', '.join(missing)}: run ./scripts/setup.sh"
        if os.environ.get("CI") or os.environ.get("GALERA_TESTS_REQUIRE_GALERA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not try the network
    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


# The page redraws every 2 s: read what it shows in one script call, never via held elements.
READ_PAGE = """
const cards = {};
for (const s of document.querySelectorAll("section.node")) {
  const text = (sel) => { const e = s.querySelector(sel); return e ? e.textContent : null; };
  cards[s.dataset.node] = {
    state: s.dataset.state, classes: s.className, badge: text(".state"),
    reason: text(".reason"), timeline: text("ol.timeline"), left: s.getBoundingClientRect().left,
    writer: s.dataset.writer === undefined ? null : s.dataset.writer,
    writerBadges: s.querySelectorAll(".head .badge.role").length,
    writerReason: text("dd.writer"), lease: text("dd.lease"),
  };
}
return cards;
"""
# The page as a whole: writer badges anywhere, and whether the legend explains them.
READ_WRITER = """
return {
  badges: document.querySelectorAll(".badge.role").length,
  legend: !document.getElementById("writer-legend").hidden,
};
"""


def page(driver: WebDriver) -> dict[str, dict[str, Any]]:
    cards: dict[str, dict[str, Any]] = driver.execute_script(READ_PAGE)
    return cards


def wait_page(
    driver: WebDriver, predicate: Callable[[dict[str, dict[str, Any]]], bool], timeout: float
) -> dict[str, dict[str, Any]]:
    WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: predicate(page(d)), message=f"the page showed: {page(driver)}"
    )
    return page(driver)


def states(cards: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: card["state"] for name, card in cards.items()}


def writer_shown(driver: WebDriver, agent: AgentProcess) -> str | None:
    """The one writer when the page and the agent's /writer/<node> agree on it: one badge, on
    the node whose /writer/<node> is 200, and every other node's /writer reason naming it."""
    cards = page(driver)
    answers = {name: agent.get(f"/writer/{name}") for name in cards}
    holders = [name for name, answer in answers.items() if answer.status == 200]
    if len(cards) != 3 or len(holders) != 1:
        return None
    holder = holders[0]
    whole: dict[str, Any] = driver.execute_script(READ_WRITER)
    if whole["badges"] != 1 or cards[holder]["writerBadges"] != 1:
        return None
    for name, card in cards.items():
        reason = answers[name].body.removeprefix(f"{name}: ").rstrip("\n")
        if name != holder and reason != f"standby (writer: {holder})":
            return None
        if card["writerReason"] != reason or card["writer"] != str(name == holder).lower():
            return None
    return holder


def test_status_page_in_a_real_browser(
    synced_cluster: GaleraTestbed,
    writer_account: tuple[str, str],
    browser: WebDriver,
    tmp_path: Path,
) -> None:
    nodes = [f"{n}={synced_cluster.node(n).address()}" for n in NAMES]
    with AgentProcess(nodes, *writer_account, [*TIMING, "--writer"]) as agent:
        agent.wait_for(lambda a: a.status == 200, timeout=15)
        started = time.monotonic()
        browser.get(f"http://127.0.0.1:{agent.port}/")
        cards = wait_page(browser, lambda c: len(c) == 3, timeout=10)
        first_render = time.monotonic() - started
        assert navigation_status(browser) == 200
        assert states(cards) == {"n1": "synced", "n2": "synced", "n3": "synced"}
        load_ms = browser.execute_script(
            "const n = performance.getEntriesByType('navigation')[0];"
            "return n.loadEventEnd - n.startTime;"
        )
        print(f"page load event {load_ms:.0f} ms; nodes drawn {first_render * 1000:.0f} ms")
        n1 = cards["n1"]
        assert n1["badge"] == "synced" and "ok" in n1["classes"].split()
        assert "starting" in n1["timeline"] and "synced" in n1["timeline"]
        assert browser.find_element(By.ID, "overall").text.lower() == "all serving"

        # --writer: one badge, on the node /writer/<node> answers 200 for; the standby reason
        # on the others; the lease's epoch and age on every card.
        writer = WebDriverWait(browser, 30, poll_frequency=0.2).until(
            lambda d: writer_shown(d, agent),
            message=f"page and /writer/<node> never agreed on one writer: {page(browser)}",
        )
        print(f"writer {writer} on the page {time.monotonic() - started:.1f} s after loading it")
        cards = page(browser)
        epoch = int(cards[writer]["writerReason"].removeprefix("writer (epoch ").rstrip(")"))
        assert cards[writer]["writerReason"] == f"writer (epoch {epoch})", cards
        assert epoch >= 1, cards
        for name, card in cards.items():
            assert card["lease"].startswith(f"epoch {epoch}, moved "), cards
            assert card["lease"].endswith(" s ago"), cards
            assert card["writerBadges"] == (1 if name == writer else 0), cards
        assert browser.execute_script(READ_WRITER)["legend"] is True

        # a standby freezes: the writer keeps its badge once Galera evicted the frozen node
        victim_name = next(n for n in reversed(NAMES) if n != writer)
        others = [n for n in NAMES if n != victim_name]
        victim = synced_cluster.node(victim_name)
        victim.freeze()
        try:
            cards = wait_page(browser, lambda c: c[victim_name]["state"] != "synced", timeout=15)
            assert [cards[n]["state"] for n in others] == ["synced", "synced"], cards
            frozen = cards[victim_name]
            assert frozen["state"] == "timeout", cards
            assert "bad" in frozen["classes"].split() and frozen["badge"] == "timeout"
            assert "no answer" in frozen["reason"]
            assert "synced" in frozen["timeline"] and "timeout" in frozen["timeline"]
            assert browser.find_element(By.ID, "overall").text.lower() == "1 of 3 not serving"
            # `/` is a probe too: the page itself now comes with a 503, and must draw as well
            browser.refresh()
            assert navigation_status(browser) == 503
            cards = wait_page(browser, lambda c: len(c) == 3, timeout=10)
            assert cards[victim_name]["state"] == "timeout", cards
            # /writer is 503 wherever /health is: the frozen node never shows the badge
            assert cards[victim_name]["writer"] == "false", cards
            assert cards[victim_name]["writerBadges"] == 0, cards
            assert not browser.find_element(By.ID, "error").is_displayed()
            assert browser.find_element(By.ID, "overall").text.lower() == "1 of 3 not serving"
            if SCREENSHOT:  # for the docs: the writer back after the eviction, one more refresh
                wait_page(browser, lambda c: c[writer]["writerBadges"] == 1, timeout=30)
                time.sleep(2.5)
            shot = Path(SCREENSHOT) if SCREENSHOT else tmp_path / "status-page.png"
            assert browser.save_screenshot(str(shot))

            # a phone: one column, nothing wider than the screen
            browser.set_window_size(390, 844)
            deadline = time.monotonic() + 15
            while len({card["left"] for card in page(browser).values()}) != 1:
                assert time.monotonic() < deadline, "the cards never stacked in one column"
                time.sleep(0.1)
            overflow = browser.execute_script(
                "const e = document.documentElement; return e.scrollWidth - e.clientWidth;"
            )
            assert overflow <= 0, overflow
            assert len({card["left"] for card in page(browser).values()}) == 1
        finally:
            victim.thaw()

        # The agent goes away: the page says so instead of showing old data as current.
        agent.stop()
        WebDriverWait(browser, 10, poll_frequency=0.2).until(
            lambda d: d.find_element(By.ID, "error").is_displayed()
        )
        assert "not answering" in browser.find_element(By.ID, "error").text

    # The page ran without a CSP violation or script error.
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    errors = [e for e in errors if "/status" not in e["message"]]  # the stopped agent
    # the page's own 503 (the verdict) is logged by Chromium as a failed resource load
    page_url = f"http://127.0.0.1:{agent.port}/ "
    errors = [e for e in errors if not e["message"].startswith(page_url + "- Failed to load")]
    assert not errors, errors


def navigation_status(driver: WebDriver) -> int:
    """The HTTP status of the page's own document (Navigation Timing responseStatus)."""
    status: int = driver.execute_script(
        "return performance.getEntriesByType('navigation')[0].responseStatus;"
    )
    return status


def test_status_page_without_writer_shows_no_election(
    synced_cluster: GaleraTestbed, browser: WebDriver
) -> None:
    """An agent without --writer: /status has no `writer`, and the page shows nothing of it."""
    nodes = [f"{n}={synced_cluster.node(n).address()}" for n in NAMES]
    with AgentProcess(
        nodes, synced_cluster.monitor_user, synced_cluster.password_file, TIMING
    ) as agent:
        agent.wait_for(lambda a: a.status == 200, timeout=15)
        assert all("writer" not in node for node in agent.status()["nodes"].values())
        browser.get(f"http://127.0.0.1:{agent.port}/")
        cards = wait_page(
            browser, lambda c: states(c) == dict.fromkeys(NAMES, "synced"), timeout=10
        )
        for card in cards.values():
            assert card["writer"] is None and card["writerBadges"] == 0, cards
            assert card["writerReason"] is None and card["lease"] is None, cards
        assert browser.execute_script(READ_WRITER) == {"badges": 0, "legend": False}
