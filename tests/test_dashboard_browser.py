"""The dashboard in a real headless Chromium against a real gateway: live values, an OPEN breaker.

Needs Debian's ``chromium`` package (``apt-get install -y chromium``); Playwright drives it through
``executable_path``, so no browser download is involved. Set ``DASHBOARD_SCREENSHOT=<file.png>`` to
keep a screenshot of the run.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
from pathlib import Path
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
    from playwright.sync_api import expect, sync_playwright

    env = {**clean_samples.env(), "OPS_TOKEN": TOKEN, "HEALTH_CHECK_INTERVAL": "0.5", "CB_RESET_TIMEOUT": "60"}
    gateway = gateway_factory(env, workers=2)
    sent = 0
    for path in ["/orders/1", "/orders/2", "/orders/42", "/restaurants/1", "/restaurants/2/menu"] * 6:
        assert fetch(gateway.url, path) == 200
        sent += 1
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(http_credentials={"username": "ops", "password": TOKEN},
                                          viewport={"width": 1280, "height": 860}, device_scale_factor=1)
            page = context.new_page()
            assert page.goto(gateway.url + "/dashboard").status == 200  # type: ignore[union-attr]
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

            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("DASHBOARD_SCREENSHOT"):
                shutil.copyfile(shot, os.environ["DASHBOARD_SCREENSHOT"])
        finally:
            browser.close()
