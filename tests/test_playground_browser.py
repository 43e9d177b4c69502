"""The playground page in a real headless browser (Debian's chromium and chromium-driver, through selenium):
changing the backward workers redraws the chart with one row more and shows the simulator's throughput; a
shared URL brings its state back; a bad value is shown on the page; "Download scenario" saves the TOML
`pdasgd simulate` reads. The README's screenshot comes from here (PDASGD_SCREENSHOT=path)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from chromium import CHROMEDRIVER, CHROMIUM, start_chromium
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from pdasgd.playground import base_from, read_query, scenario_of, start_server
from pdasgd.scenario import load_scenario
from simulator import simulate_summary

# a skip per test, not of the module: a module-level skip is reported even under `-m gpu`, whose count the
# GPU check's dry run compares with the gpu-marked tests
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None,
        reason="needs Debian's chromium and chromium-driver: run `make browser`",
    ),
]

WAIT_S = 20


@pytest.fixture(scope="module")
def server():
    server = start_server(0, base_from(None))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(tmp_path_factory, downloads):
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"), downloads)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


def settled(browser, view: str, query_has: str = "") -> dict:
    """Wait until `view` shows the answer to a question containing `query_has`; its state and query."""

    def done(driver):
        section = driver.find_element(By.ID, f"view-{view}")
        state, query = section.get_attribute("data-state"), section.get_attribute("data-query") or ""
        return (
            {"state": state, "query": query} if state in ("ready", "error") and query_has in query else None
        )

    return WebDriverWait(browser, WAIT_S).until(done)


def rows(browser, view: str) -> list[str]:
    chart = browser.find_element(By.CSS_SELECTOR, f"#view-{view} svg.gantt-chart")
    return [row.get_attribute("data-worker") for row in chart.find_elements(By.CSS_SELECTOR, "g.row")]


def shown_throughput(browser, view: str) -> tuple[float, str]:
    cell = browser.find_element(By.ID, f"{view}-throughput")
    return float(cell.get_attribute("data-value")), cell.text


def simulated(query: str):
    base = base_from(None)
    return simulate_summary(scenario_of(read_query(query, base), base))


def type_into(browser, element_id: str, text: str) -> None:
    field = browser.find_element(By.ID, element_id)
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(text)


def test_a_second_backward_worker_adds_a_row_and_the_simulators_throughput(server, browser) -> None:
    browser.get(f"{server.url}?backward=1")
    assert settled(browser, "a")["state"] == "ready"
    assert rows(browser, "a") == ["forward:0", "backward:0"]
    before, _ = shown_throughput(browser, "a")
    assert before == simulated("backward=1").throughput_batches_per_s

    type_into(browser, "a-backward", "2")
    assert settled(browser, "a", "backward=2")["state"] == "ready"
    assert rows(browser, "a") == ["forward:0", "backward:0", "backward:1"]
    value, text = shown_throughput(browser, "a")
    want = simulated("backward=2").throughput_batches_per_s
    assert value == want and float(text) == pytest.approx(want, rel=5e-4)
    assert value == pytest.approx(2 * before)  # beta = 2: the second worker doubles it
    assert "balanced: k = 2 = beta = 2" in browser.find_element(By.CSS_SELECTOR, "#view-a .regime").text
    assert dict(parse_qsl(urlsplit(browser.current_url).query)) == {"backward": "2"}


SHARED = "method=async-bu&beta=3&handoff_s=0.5&ab=1&b.backward=3&b.straggler=backward&b.straggler_s=2"


def test_a_shared_url_brings_the_same_state_back(server, browser) -> None:
    browser.get(f"{server.url}?{SHARED}")
    assert settled(browser, "a")["state"] == "ready" and settled(browser, "b")["state"] == "ready"
    value = lambda element_id: browser.find_element(By.ID, element_id).get_attribute("value")  # noqa: E731
    assert [value("a-method"), value("a-beta"), value("a-handoff_s"), value("a-backward")] == [
        "async-bu",
        "3",
        "0.5",
        "1",
    ]
    assert [value("b-method"), value("b-backward"), value("b-straggler"), value("b-straggler_s")] == [
        "async-lu",
        "3",
        "backward",
        "2",
    ]
    assert (
        browser.find_element(By.ID, "ab").is_selected()
        and browser.find_element(By.ID, "view-b").is_displayed()
    )
    assert dict(parse_qsl(urlsplit(browser.current_url).query)) == dict(parse_qsl(SHARED))
    b_query = "backward=3&straggler=backward&straggler_s=2"
    assert shown_throughput(browser, "b")[0] == simulated(b_query).throughput_batches_per_s
    assert len(rows(browser, "b")) == 4
    # both views share one time axis: the same last tick on both charts
    ticks = [
        browser.find_elements(By.CSS_SELECTOR, f"#view-{view} svg.gantt-chart .axis text")[-2].text
        for view in ("a", "b")
    ]
    assert ticks[0] == ticks[1]
    screenshot = os.environ.get("PDASGD_SCREENSHOT")
    if screenshot:
        assert browser.save_screenshot(screenshot)


def test_a_bad_value_is_shown_on_the_page(server, browser) -> None:
    browser.get(f"{server.url}?layers=3")
    assert settled(browser, "a")["state"] == "ready"
    type_into(browser, "a-layers", "99")
    assert settled(browser, "a", "layers=99")["state"] == "error"
    message = browser.find_element(By.CSS_SELECTOR, "#view-a .error")
    assert message.is_displayed() and message.text == "layers: must be between 1 and 64, got 99"
    Select(browser.find_element(By.ID, "a-method")).select_by_value("sequential")
    type_into(browser, "a-layers", "5")
    assert settled(browser, "a", "layers=5")["state"] == "ready" and not message.is_displayed()
    assert rows(browser, "a") == ["worker:0"]


def test_download_scenario_saves_the_toml_the_cli_reads(server, browser, downloads) -> None:
    browser.get(f"{server.url}?method=async-bu&backward=2&jitter_cv=0.1")
    assert settled(browser, "a")["state"] == "ready"
    browser.find_element(By.CSS_SELECTOR, "#view-a .download").click()
    saved = downloads / "playground-a.toml"
    deadline = time.monotonic() + WAIT_S
    while not saved.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    scenario = load_scenario(saved)
    want = simulated("method=async-bu&backward=2&jitter_cv=0.1").throughput_batches_per_s
    assert simulate_summary(scenario).throughput_batches_per_s == want == shown_throughput(browser, "a")[0]
