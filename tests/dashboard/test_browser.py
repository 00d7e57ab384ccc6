"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium through
Debian's chromedriver, against two real agent processes.

Why Selenium: it drives the system browser through the chromedriver built with it (same
version, same package), with no browser download; Playwright pins its own Chromium builds
and speaks to others only on a best-effort basis. Skips with the reason when Chromium,
chromedriver or selenium is missing. Screenshots of every page go to docs/img/.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.integration.agents import LOOPBACK_LAN

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - the test extra brings it
    webdriver = None  # type: ignore[assignment]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(webdriver is None, reason="selenium is not installed (test extra)"),
    pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                       reason="needs Debian's chromium and chromium-driver "
                       "(apt-get install chromium chromium-driver)"),
]
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "img"
DASH = LOOPBACK_LAN + "[dashboard]\nport = 0\ninterval = 0.3\n"


@pytest.fixture
def browser(tmp_path):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,900", f"--user-data-dir={tmp_path / 'chrome'}",
                "--host-resolver-rules=MAP evil.test 127.0.0.1",  # a DNS-rebinding name
                "--no-first-run", "--disable-background-networking"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(options=opts, service=Service(executable_path=DRIVER))
    drv.set_page_load_timeout(30)
    yield drv
    drv.quit()


def wait(drv, pred, what: str, timeout: float = 30.0):
    """A guard against hanging, not a timing assertion."""
    return WebDriverWait(drv, timeout, poll_frequency=0.1,  # the live view redraws tables
                         ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: pred(d), message=f"waiting for {what}")


def click(drv, css: str) -> None:
    """Click what *css* names, again if the live view redrew it in between."""
    def attempt(d) -> bool:
        d.find_element(By.CSS_SELECTOR, css).click()
        return True
    wait(drv, attempt, f"a click on {css}")


def text(drv, css: str) -> str:
    return drv.find_element(By.CSS_SELECTOR, css).text


def page(drv, name: str) -> None:
    drv.find_element(By.CSS_SELECTOR, f'nav a[data-page="{name}"]').click()
    wait(drv, lambda d: d.find_element(By.ID, f"page-{name}").is_displayed(), name)


def shot(drv, name: str) -> None:
    if os.environ.get("SHOAL_SCREENSHOTS", "1") != "0":
        SHOTS.mkdir(parents=True, exist_ok=True)
        drv.save_screenshot(str(SHOTS / f"dashboard-{name}.png"))


def test_dashboard_in_chromium(agents, browser, tmp_path):
    a, b = agents("a", start=False), agents("b", start=False)
    for x in (a, b):
        x.config(DASH)
        x.start()
    url_a, url_b = a.json("dashboard")["url"], b.json("dashboard")["url"]
    base_a = url_a.split("/login")[0]
    port_a = base_a.rsplit(":", 1)[1]

    # the token and the Host check refuse, in the browser too
    browser.get(base_a + "/")
    assert "not signed in" in browser.find_element(By.TAG_NAME, "body").text
    browser.get(base_a + "/login?token=" + "0" * 64)
    assert "wrong or missing token" in browser.find_element(By.TAG_NAME, "body").text
    browser.get(url_a)  # signs in; the cookie is then refused under a rebinding name
    browser.get(f"http://evil.test:{port_a}/")
    assert "localhost only" in browser.find_element(By.TAG_NAME, "body").text

    # a's page renders and goes live
    browser.get(url_a)
    wait(browser, lambda d: text(d, "#live") == "live", "the live stream")
    wait(browser, lambda d: "a ·" in text(d, "#me"), "the device name")
    tab_a = browser.current_window_handle
    browser.switch_to.new_window("tab")
    tab_b = browser.current_window_handle
    browser.get(url_b)
    wait(browser, lambda d: text(d, "#live") == "live", "b's live stream")

    # pairing through the UI: b opens a window, a asks, both screens show one code
    page(browser, "pairing")
    browser.find_element(By.ID, "open-window").click()
    wait(browser, lambda d: text(d, "#window") == "open", "the window to open")
    browser.switch_to.window(tab_a)
    page(browser, "pairing")
    browser.find_element(By.ID, "pair-address").send_keys(b.address)
    browser.find_element(By.CSS_SELECTOR, "#pair-form button").click()
    code_a = wait(browser, lambda d: [e.text for e in
                                      d.find_elements(By.CSS_SELECTOR, "#pending .code")],
                  "a's code")[0]
    browser.switch_to.window(tab_b)
    code_b = wait(browser, lambda d: [e.text for e in
                                      d.find_elements(By.CSS_SELECTOR, "#pending .code")],
                  "b's code")[0]
    assert code_a == code_b and len(code_a.replace(" ", "")) == 6
    shot(browser, "pairing")
    browser.switch_to.window(tab_a)
    click(browser, "#pending button")
    browser.switch_to.window(tab_b)
    click(browser, "#pending button")
    wait(browser, lambda d: "a" in text(d, "#paired tbody"), "a among b's paired devices")
    browser.switch_to.window(tab_a)
    wait(browser, lambda d: "b" in text(d, "#paired tbody"), "b among a's paired devices")

    # publish by upload on a; the resources table updates live
    sample = tmp_path / "sample.bin"
    sample.write_bytes(os.urandom(3 * 1024 * 1024))
    page(browser, "resources")
    browser.find_element(By.ID, "upload-file").send_keys(str(sample))
    browser.find_element(By.CSS_SELECTOR, "#publish-upload button").click()
    wait(browser, lambda d: "sample.bin" in text(d, "#resources tbody"), "the upload listed")
    shot(browser, "resources")

    # fetch through b's UI; the transfer shows done, b holds it
    browser.switch_to.window(tab_b)
    page(browser, "resources")
    browser.find_element(By.ID, "list-remote").click()
    wait(browser, lambda d: "sample.bin" in text(d, "#remote tbody"), "a's offer at b")
    browser.find_element(By.ID, "fetch-resource").send_keys("sample.bin")
    browser.find_element(By.CSS_SELECTOR, "#fetch-form button").click()
    page(browser, "transfers")
    wait(browser, lambda d: "done" in text(d, "#transfers tbody"), "the fetch to finish")
    assert "100 %" in text(browser, "#transfers tbody")
    shot(browser, "transfers")
    held = b.json("resources", "--local")
    assert [r["name"] for r in held["local"]] == ["sample.bin"]

    # the other pages render
    page(browser, "mesh")
    wait(browser, lambda d: "lan" in text(d, "#peers tbody"), "a's link at b")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#mesh-graph line"), "the graph")
    shot(browser, "mesh")
    page(browser, "prediction")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#plot-hits text"), "the plot")
    shot(browser, "prediction")
    page(browser, "health")
    wait(browser, lambda d: "role" in text(d, "#raft"), "the Raft state")
    wait(browser, lambda d: d.find_element(By.ID, "doctor").get_attribute("data-state")
         == "done", "doctor's findings", timeout=60)
    shot(browser, "health")
    # no script error on the way (the refusals above are logged as network errors)
    errors = [e for e in browser.get_log("browser")
              if e.get("level") == "SEVERE" and e.get("source") != "network"
              and not e.get("message", "").startswith("http://evil.test")]
    assert not errors, [e["message"] for e in errors]
