"""The dashboard in a real headless browser (Debian's chromium through Selenium): each view loads,
draws data from real rounds, and logs no console error; /docs and /redoc render too. The browser can
reach no host but the local server, so a page that needs the internet fails here.

Skipped ONLY when chromium or chromedriver is absent (`apt-get install chromium chromium-driver`).
With ADAPTINF_SCREENSHOT_DIR set (e.g. docs/screenshots) the README's screenshots are written there.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--window-size=1400,1000",
         # no network but the local server, even on a machine that has one: every other host fails to resolve
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
WAIT_S = 60


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("CHROMIUM ABSENT: the dashboard's browser tests did NOT run; install Debian's chromium and "
                    "chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not download a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver) -> list[dict]:  # noqa: ANN001
    """The browser log's SEVERE entries since the last call (reading the log empties it)."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def wait_until(driver, condition, what: str):  # noqa: ANN001, ANN201
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(condition, f"timed out waiting for {what}")


def open_view(driver, dashboard, fragment: str, loaded: str) -> None:  # noqa: ANN001
    """Open /ui/#<fragment>, typing the API key the first time, and wait until the view has drawn."""
    from selenium.webdriver.common.by import By

    console_errors(driver)  # drop what earlier pages logged
    driver.get(f"{dashboard.base_url}/ui/#{fragment}")
    if not driver.execute_script("return sessionStorage.getItem('adaptinf.apiKey')"):
        driver.find_element(By.ID, "key-input").send_keys(dashboard.key)
        driver.find_element(By.ID, "key-save").click()
    wait_until(driver, lambda d: d.find_element(By.ID, "view").get_attribute("data-loaded") in (loaded, "error"),
               f"the {loaded} view")
    assert driver.find_element(By.ID, "view").get_attribute("data-loaded") == loaded, \
        driver.find_element(By.ID, "view").text


def screenshot(driver, name: str, tmp_path: Path) -> Path:  # noqa: ANN001
    """The whole page as PNG, in ADAPTINF_SCREENSHOT_DIR when set."""
    out = Path(os.environ.get("ADAPTINF_SCREENSHOT_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # charts re-lay out when the window grows; measure again until the page fits
        height = driver.execute_script("return Math.max(document.body.scrollHeight, 400)")
        driver.set_window_size(1400, min(height + 140, 5000))
        time.sleep(0.5)
    path = out / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)
    assert path.stat().st_size > 10_000  # a blank page compresses to a few KB
    return path


def plot_data(driver, element_id: str) -> list[dict]:  # noqa: ANN001
    """The traces plotly drew into element `element_id`."""
    return driver.execute_script(
        f"const g = document.getElementById('{element_id}');"
        "return g && g.data ? g.data.map(t => ({name: t.name, type: t.type, x: t.x, y: t.y, z: t.z})) : null")


def test_pools_view_lists_the_pool(browser, dashboard, tmp_path) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    open_view(browser, dashboard, "/", "pools")
    rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#view tbody tr")]
    assert len(rows) == 1 and dashboard.pool_id in rows[0] and "caption, vqa" in rows[0]
    assert console_errors(browser) == []
    screenshot(browser, "dashboard-pools", tmp_path)


def test_round_view_shows_live_progress_then_the_map(browser, dashboard, tmp_path) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    second = dashboard.round_ids[1]
    open_view(browser, dashboard, f"/rounds/{second}", "round")
    progress = browser.find_element(By.ID, "job-progress").text
    assert "running" in progress and "select" in progress, progress  # stopped before its select stage
    assert "appears when the select stage finishes" in browser.find_element(By.ID, "view").text
    dashboard.finish_rounds()  # the page polls the job and redraws once it ends
    wait_until(browser, lambda d: "succeeded" in d.find_element(By.ID, "job-progress").text
               and d.find_element(By.ID, "view").get_attribute("data-loaded") == "round"
               and plot_data(d, "cluster-map"), "the round to succeed on the page")
    api_map = dashboard.get(f"/v1/rounds/{second}/map").json()["points"]
    traces = {t["name"]: t for t in plot_data(browser, "cluster-map")}
    for c in set(api_map["cluster"]):
        assert len(traces[f"cluster {c}"]["x"]) == api_map["cluster"].count(c)
    assert len(traces["selected"]["x"]) == sum(api_map["selected"]) == 8
    assert len(traces["pruned"]["x"]) == sum(api_map["pruned"]) > 0
    histograms = dashboard.get(f"/v1/rounds/{second}/score-histograms").json()["histograms"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#histograms .js-plotly-plot")) == len(histograms) > 0
    clusters = dashboard.get(f"/v1/rounds/{second}").json()["result"]["clusters"]
    table = browser.find_element(By.CSS_SELECTOR, "#view section.card table").text
    assert all(c["expert"] in table for c in clusters if c["expert"])
    assert console_errors(browser) == []
    screenshot(browser, "dashboard-round", tmp_path)


def test_pool_view_draws_the_accuracy_heatmap_and_forgetting(browser, dashboard, tmp_path) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    dashboard.finish_rounds()  # no-op after the round test; makes this test independent of order
    open_view(browser, dashboard, f"/pools/{dashboard.pool_id}", "pool")
    metrics = dashboard.get(f"/v1/pools/{dashboard.pool_id}/metrics").json()
    assert len(metrics["accuracy"]) == 2
    (heatmap,) = plot_data(browser, "accuracy-heatmap")
    assert heatmap["type"] == "heatmap" and heatmap["z"] == metrics["accuracy"] and heatmap["x"] == metrics["skills"]
    # vqa arrived in round 1, so round 2 gives it a forgetting point: best before minus now
    lines = {t["name"]: t for t in plot_data(browser, "forgetting-lines")}
    j = metrics["skills"].index("vqa")
    assert lines["vqa"]["x"] == [2]
    assert lines["vqa"]["y"] == [pytest.approx(metrics["accuracy"][0][j] - metrics["accuracy"][1][j])]
    rounds = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#rounds tbody tr")]
    assert len(rounds) == 2 and all("succeeded" in r for r in rounds)
    assert plot_data(browser, "cluster-bars")
    assert console_errors(browser) == []
    screenshot(browser, "dashboard-pool", tmp_path)


def test_the_ui_page_itself_needs_no_key_but_its_data_does(browser, dashboard) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    console_errors(browser)
    browser.get(f"{dashboard.base_url}/ui/")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    wait_until(browser, lambda d: "Enter an API key" in d.find_element(By.ID, "view").text, "the key prompt")
    assert console_errors(browser) == []


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_api_docs_render_offline(browser, dashboard, path) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    console_errors(browser)
    browser.get(dashboard.base_url + path)
    if path == "/docs":
        wait_until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) > 10, "Swagger UI's operations")
    else:
        wait_until(browser, lambda d: "Start a round" in d.find_element(By.TAG_NAME, "body").text, "ReDoc's operations")
    assert console_errors(browser) == []
