"""The dashboard in a real headless Chromium against a real gateway: live values, OPEN and HALF_OPEN, history, 700 px.

Needs Debian's ``chromium`` package (``apt-get install -y chromium``); Playwright drives it through
``executable_path``, so no browser download is involved. Set ``DASHBOARD_SCREENSHOT=<file.png>`` and
``DASHBOARD_SCREENSHOT_NARROW=<file.png>`` to keep the history test's screenshots at 1400 and 700 px
(``docs/dashboard.png`` is the first, from such a run).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "dashboard-test-token"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"Chromium not found at {CHROMIUM}: install it with `apt-get install -y chromium` "
                              "(Debian) or point CHROMIUM_PATH at a Chromium binary"),
]


@contextmanager
def dashboard(url: str, width: int, height: int) -> Iterator[Any]:
    """The gateway's dashboard in headless Chromium at ``width`` x ``height``, signed in with the ops token."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(http_credentials={"username": "ops", "password": TOKEN},
                                          viewport={"width": width, "height": height}, device_scale_factor=1)
            page = context.new_page()
            assert page.goto(url + "/dashboard").status == 200  # type: ignore[union-attr]
            yield page
        finally:
            browser.close()


def fetch(url: str, path: str) -> int:
    """GET on a fresh connection (so both workers serve traffic); return the status."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_dashboard_shows_live_values(gateway_factory, clean_samples, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    env = {**clean_samples.env(), "OPS_TOKEN": TOKEN, "HEALTH_CHECK_INTERVAL": "0.5", "CB_RESET_TIMEOUT": "60"}
    gateway = gateway_factory(env, workers=2)
    sent = 0
    for path in ["/orders/1", "/orders/2", "/orders/42", "/restaurants/1", "/restaurants/2/menu"] * 6:
        assert fetch(gateway.url, path) == 200
        sent += 1
    with dashboard(gateway.url, 1280, 860) as page:
        expect(page.locator("#c-requests")).to_have_text(str(sent), timeout=8000)
        expect(page.locator("#c-saved")).not_to_have_text("0")
        healthy = page.locator('#health-rows tr[data-service="order-service"]')
        expect(healthy).to_have_attribute("data-status", "healthy", timeout=8000)

        # A dead service: its breaker opens and the page shows it without a reload.
        clean_samples.faults("delivery-service", down=True)
        statuses = []
        for _ in range(20):
            statuses.append(fetch(gateway.url, "/delivery/1"))
            sent += 1
            if statuses.count(503) >= 2:  # open on both workers (each has its own breaker here)
                break
        assert 503 in statuses, statuses
        row = page.locator('#breaker-rows tr[data-service="delivery-service"]')
        expect(row).to_have_attribute("data-state", "OPEN", timeout=8000)
        expect(row.locator('[data-field="state"]')).to_have_text("OPEN")
        expect(row.locator('[data-field="failures"]')).to_have_text(str(statuses.count(502)))
        expect(page.locator("#c-requests")).to_have_text(str(sent), timeout=8000)
        down = page.locator('#health-rows tr[data-service="delivery-service"]')
        expect(down).to_have_attribute("data-status", re.compile("degraded|down"), timeout=8000)
        expect(page.locator("#live")).to_have_class(re.compile(r"\bok\b"))

        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)


class Traffic:
    """Requests in the background (bounded in count) so the history has points while the page is open."""

    def __init__(self, url: str, paths: list[str], limit: int = 1500) -> None:
        self.url, self.paths, self.limit = url, paths, limit
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set() and self.sent < self.limit:
            fetch(self.url, self.paths[self.sent % len(self.paths)])
            self.sent += 1
            self.stop.wait(0.02)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(15)


def test_dashboard_history_half_open_and_narrow_screen(gateway_factory, clean_samples, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    env = {**clean_samples.env(), "OPS_TOKEN": TOKEN, "HEALTH_CHECK_INTERVAL": "0.5", "CB_RESET_TIMEOUT": "8",
           "STATS_HISTORY_INTERVAL": "1"}
    gateway = gateway_factory(env, workers=2)
    paths = ["/orders/1", "/orders/2", "/restaurants/1", "/orders/1", "/restaurants/2/menu", "/orders/42",
             "/tracking/1", "/orders/_debug/status/404", "/orders/1", "/restaurants/1"]
    with Traffic(gateway.url, paths), dashboard(gateway.url, 1400, 900) as page:
        orders = '#history-rows .hrow[data-service="order-service"]'
        orders_rate = page.locator(f'{orders} [data-metric="requests_per_s"]')
        expect(orders_rate).to_have_attribute("data-points", re.compile(r"^([4-9]|\d\d+)$"), timeout=15000)
        hit = page.locator(f'{orders} [data-metric="cache_hit_pct"]')
        expect(hit).not_to_have_attribute("data-points", "0")

        # delivery-service dies: its breaker opens on both workers, then turns HALF_OPEN by time alone.
        clean_samples.faults("delivery-service", down=True)
        statuses = []
        for _ in range(20):
            statuses.append(fetch(gateway.url, "/delivery/1"))
            if statuses.count(503) >= 4:
                break
        assert 503 in statuses, statuses
        note = page.locator("#breaker-note")
        expect(note).to_have_text(re.compile(r"1 open"), timeout=8000)
        row = page.locator('#breaker-rows tr[data-service="delivery-service"]')
        expect(row).to_have_attribute("data-state", "OPEN")
        marks = page.locator('#history-rows .hrow[data-service="delivery-service"] [data-metric="error_pct"]')
        expect(marks).not_to_have_attribute("data-marks", "0", timeout=8000)
        # Nothing calls it any more, so no probe: after CB_RESET_TIMEOUT it reads HALF_OPEN, and so does the header.
        expect(row).to_have_attribute("data-state", "HALF_OPEN", timeout=20000)
        expect(note).to_have_text("1 half-open")
        expect(page.locator("#live")).to_have_class(re.compile(r"\bok\b"))

        # One base: the hit rate is the Hits bar's share of the same lookups.
        rate = page.locator("#hit-rate").inner_text().replace(" %", "")
        hits_share = page.locator("#v-hits").inner_text().split("·")[1].strip().replace(" %", "")
        assert abs(float(rate) - float(hits_share)) <= 0.5 + 1e-9, (rate, hits_share)
        assert re.search(r"\d+ (entry|entries)$", page.locator("#c-keys").inner_text())

        wide = tmp_path / "dashboard-1400.png"
        page.screenshot(path=str(wide), full_page=True)
        page.set_viewport_size({"width": 700, "height": 900})
        page.wait_for_timeout(300)
        overflow = page.evaluate("""() => [document.documentElement.scrollWidth,
            ...[...document.querySelectorAll('.scroll')].map((e) => e.scrollWidth - e.clientWidth)]""")
        assert overflow[0] <= 700 and all(extra <= 1 for extra in overflow[1:]), overflow
        narrow = tmp_path / "dashboard-700.png"
        page.screenshot(path=str(narrow), full_page=True)
        for name, shot in (("DASHBOARD_SCREENSHOT", wide), ("DASHBOARD_SCREENSHOT_NARROW", narrow)):
            if os.environ.get(name):
                shutil.copyfile(shot, os.environ[name])
