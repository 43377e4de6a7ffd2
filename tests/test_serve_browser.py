"""The search page in a real browser: Debian's chromium + chromium-driver, headless, through
Selenium. Type a query, see results with a thumbnail (or its placeholder where this build has
no thumbnails), trash an item, see it leave the list; restore it from the trash view."""

from __future__ import annotations

import os
import shutil
from typing import Any
from urllib.parse import urlencode

import pytest
from test_serve_support import Server, serve_extra_or_skip

serve_extra_or_skip()
webdriver = pytest.importorskip("selenium.webdriver",
                                reason="needs selenium (the test extra)")

from kvmedia import Library  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    import PIL  # noqa: F401

    PILLOW = True
except ImportError:
    PILLOW = False
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver: apt-get install -y chromium "
           "chromium-driver")


@pytest.fixture(scope="module")
def browser() -> Any:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--window-size=1200,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp_path = tmp_path_factory.mktemp("browser")
    vol = tmp_path / "vol"
    (vol / "Photos").mkdir(parents=True)
    for name in ("sunset_beach_1.jpg", "sunset_beach_2.jpg", "sunset_clip.mp4",
                 "tax_notes.txt"):
        (vol / "Photos" / name).write_bytes(name.encode() + b" contents")
    if PILLOW:  # real photos, so real thumbnails can be made of them
        from PIL import Image

        for i, colour in ((1, (250, 120, 40)), (2, (40, 90, 200))):
            Image.new("RGB", (80, 60), colour).save(vol / "Photos" / f"sunset_beach_{i}.jpg")
    with Library.open(tmp_path / "data") as lib:
        lib.scan([os.fsencode(vol)])
    srv = Server(tmp_path / "data")
    yield srv
    assert srv.stop() == 0, srv.log()


def rows(driver: Any) -> list[Any]:
    return driver.find_elements("css selector", "#results li.item")


def shown(driver: Any) -> str | None:
    """The query whose results the list shows (set by the page after each render)."""
    return driver.find_element("css selector", "body").get_attribute("data-shown")


def names(driver: Any) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#results li.item .name')].map(e => e.textContent)")


def ids(driver: Any) -> list[str]:
    """The listed ids, read in one step (the list may be re-rendered at any moment)."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#results li.item')].map(li => li.dataset.id)")


def wait(driver: Any, predicate: Any, timeout_s: float = 15) -> Any:
    """Poll until `predicate` holds; elements replaced by a re-render meanwhile are retried."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, poll_frequency=0.05,
                         ignored_exceptions=[StaleElementReferenceException]).until(
        lambda d: predicate(d))


def test_search_trash_and_restore_in_the_page(browser: Any, server: Server) -> None:
    browser.get(f"http://127.0.0.1:{server.port}/")
    wait(browser, lambda d: d.find_element("css selector", "body").get_attribute("data-ready"))
    box = browser.find_element("css selector", "#q")
    box.send_keys("sunset beach")
    wait(browser, lambda d: shown(d) == "sunset beach" and len(rows(d)) == 2)
    assert sorted(names(browser)) == ["sunset_beach_1.jpg", "sunset_beach_2.jpg"]
    assert "2 results" in browser.find_element("css selector", "#meta").text

    thumbs = server.get("/api/status").json()["features"]["thumbnails"] and PILLOW
    for row in rows(browser):
        if thumbs:
            wait(browser, lambda d, row=row: row.find_elements("css selector", "img.thumb"))
            img = row.find_element("css selector", "img.thumb")
            assert browser.execute_script("return arguments[0].naturalWidth", img) > 0
        else:
            placeholder = row.find_element("css selector", ".thumb.placeholder")
            assert placeholder.is_displayed() and placeholder.text.lower() == "image"

    first = rows(browser)[0]
    gone = first.get_attribute("data-id")
    first.find_element("css selector", "button.trash").click()
    wait(browser, lambda d: len(rows(d)) == 1)
    assert gone not in ids(browser)
    assert "1 result" in browser.find_element("css selector", "#meta").text
    trashed = server.get("/api/search?" + urlencode({"q": "sunset beach", "trash": "true"}))
    assert [h["uuid"] for h in trashed.json()["hits"]] == [gone]

    browser.find_element("css selector", "#view-trash").click()
    wait(browser, lambda d: ids(d) == [gone])
    rows(browser)[0].find_element("css selector", "button.restore").click()
    wait(browser, lambda d: len(rows(d)) == 0)
    live = server.get("/api/search?" + urlencode({"q": "sunset beach"})).json()
    assert gone in [h["uuid"] for h in live["hits"]]


def test_type_filter_and_bad_query_in_the_page(browser: Any, server: Server) -> None:
    browser.get(f"http://127.0.0.1:{server.port}/")
    wait(browser, lambda d: d.find_element("css selector", "body").get_attribute("data-ready"))
    browser.find_element("css selector", "#q").send_keys("sunset")
    wait(browser, lambda d: shown(d) == "sunset" and len(rows(d)) == 3)
    browser.find_element("css selector", '.filters button[data-type="video"]').click()
    wait(browser, lambda d: names(d) == ["sunset_clip.mp4"])
    browser.find_element("css selector", "#q").send_keys(' "oops')
    error = wait(browser, lambda d: d.find_element("css selector", "#error").is_displayed()
                 and d.find_element("css selector", "#error"))
    lines = error.text.split("\n")
    assert lines[1] == 'sunset "oops' and lines[2].index("^") == len("sunset ")


def test_open_button_downloads_through_a_share_link(browser: Any, server: Server) -> None:
    browser.get(f"http://127.0.0.1:{server.port}/")
    wait(browser, lambda d: d.find_element("css selector", "body").get_attribute("data-ready"))
    browser.find_element("css selector", "#q").send_keys("tax_notes")
    wait(browser, lambda d: shown(d) == "tax_notes" and len(rows(d)) == 1)
    page = browser.current_window_handle
    rows(browser)[0].find_element("css selector", "button.open").click()
    wait(browser, lambda d: len(d.window_handles) == 2)
    browser.switch_to.window(next(h for h in browser.window_handles if h != page))
    try:
        wait(browser, lambda d: "/f/" in d.current_url)
        wait(browser, lambda d: d.find_element("css selector", "body").text
             == "tax_notes.txt contents")
    finally:
        browser.close()
        browser.switch_to.window(page)
