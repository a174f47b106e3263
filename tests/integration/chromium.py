"""Headless Debian Chromium driven through chromedriver, for the UI tests (the only selenium user).

Selenium is Debian's python3-selenium 4.8 speaking W3C WebDriver to /usr/bin/chromedriver; no
browser is downloaded. Every call blocks, so async tests run a browser in a worker thread
(asyncio.to_thread) while the hub answers on the test's event loop.
"""

import base64
import shutil
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import (
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# --no-sandbox: we run as root in a container; --disable-dev-shm-usage: the container's
# /dev/shm is small; the rest keep Chromium from talking to Google or updating itself.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage", "--window-size=1200,800"]
VIEWPORT = (1200, 800)

# Runs before any script of every page: each value a <progress> is given goes to
# sessionStorage, which outlives the redirect to the notebook (same origin, same tab).
RECORD_PROGRESS = """
(function () {
  var value = Object.getOwnPropertyDescriptor(HTMLProgressElement.prototype, "value");
  Object.defineProperty(HTMLProgressElement.prototype, "value", {
    configurable: true,
    get: value.get,
    set: function (v) {
      value.set.call(this, v);
      var seen = JSON.parse(sessionStorage.getItem("progress") || "[]");
      seen.push(value.get.call(this));
      sessionStorage.setItem("progress", JSON.stringify(seen));
    }
  });
})();
"""


def missing() -> str | None:
    """Why no browser can run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            return f"{path} is missing (apt-get install chromium chromium-driver)"
    return None


class Page:
    """One browser with its own fresh profile, pointed at a hub."""

    def __init__(self, base: str, profile: Path):
        self.base = base.rstrip("/")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS + [f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                                    {"source": RECORD_PROGRESS})
        # --window-size counts the (invisible) window frame; pin the page's viewport itself.
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": VIEWPORT[0], "height": VIEWPORT[1], "deviceScaleFactor": 1,
            "mobile": False})

    def quit(self) -> None:
        """Close the browser and its chromedriver."""
        self.driver.quit()

    @property
    def path(self) -> str:
        """The current URL's path and query, relative to the hub."""
        url = self.driver.current_url
        return url[len(self.base):] if url.startswith(self.base) else url

    def open(self, path: str) -> None:
        """Load a hub path and wait for the page."""
        self.driver.get(self.base + path)

    def wait_for(self, condition, timeout: float = 10.0, what: str = "condition"):
        """Poll condition(page) until truthy; fail with the page's URL and text."""
        try:
            # Stale elements: the page was replaced between finding and reading; poll again.
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1,
                                 ignored_exceptions=[StaleElementReferenceException]
                                 ).until(lambda _: condition(self))
        except TimeoutException:
            raise AssertionError(f"{what} not met in {timeout}s at {self.path}: "
                                 f"{self.text('body')[:500]!r}") from None

    def wait_for_path(self, prefix: str, timeout: float = 10.0) -> str:
        """Wait until the browser is on a path starting with prefix."""
        self.wait_for(lambda p: p.path.startswith(prefix) and p.ready(), timeout,
                      f"path {prefix}…")
        return self.path

    def ready(self) -> bool:
        """True once the current document has loaded."""
        return self.driver.execute_script("return document.readyState") == "complete"

    def find(self, css: str):
        """The first element matching a CSS selector (fails if none)."""
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list:
        """Every element matching a CSS selector."""
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        """Visible text of the first match, or '' when nothing matches."""
        found = self.all(css)
        try:
            return found[0].text if found else ""
        except WebDriverException as e:
            # The page was replaced between finding and reading (a form's redirect): Chromium
            # may say so this way rather than as a stale element. Nothing to read yet.
            if "does not belong to the document" in str(e):
                return ""
            raise

    def link(self, text: str):
        """The link with exactly this visible text."""
        return self.driver.find_element(By.LINK_TEXT, text)

    def button(self, text: str):
        """The button with exactly this visible text."""
        for element in self.all("button"):
            if element.text == text:
                return element
        raise AssertionError(f"no button {text!r} at {self.path}")

    def fill(self, css: str, value: str) -> None:
        """Replace an input's value as a person typing would."""
        field = self.find(css)
        field.clear()
        field.send_keys(value)

    def progress_seen(self) -> list[float]:
        """Values the spawn page's progress bar took (see RECORD_PROGRESS)."""
        return self.driver.execute_script(
            "return JSON.parse(sessionStorage.getItem('progress') || '[]')")

    def screenshot(self, path: Path, whole: bool = False) -> Path:
        """Save the viewport (or, whole, the page from top to bottom) as a PNG."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if whole:
            path.write_bytes(self._whole_page_png())
            return path
        assert self.driver.save_screenshot(str(path)), f"no screenshot written to {path}"
        return path

    def _whole_page_png(self) -> bytes:
        """The whole document as a PNG, through the DevTools protocol (Page.captureScreenshot
        beyond the viewport: WebDriver's own screenshot stops at the viewport)."""
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": VIEWPORT[0], "height": size["height"],
                     "scale": 1}})
        return base64.b64decode(shot["data"])

