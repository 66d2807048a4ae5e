"""Operator endpoints through a real gunicorn gateway with two workers: /ready, /admin/services, /metrics."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e

ADMIN = "admin-token-for-tests"


def fetch(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection (so the two workers take turns answering)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_ready_and_services_listing(gateway_factory, clean_samples) -> None:  # type: ignore[no-untyped-def]
    gateway = gateway_factory({**clean_samples.env(), "HEALTH_CHECK_INTERVAL": "0", "ADMIN_TOKEN": ADMIN},
                              workers=2)
    status, headers, body = fetch(gateway.url, "/ready")
    assert status == 200 and json.loads(body)["ready"] is True and json.loads(body)["redis"] == "disabled"
    assert fetch(gateway.url, "/admin/services")[0] == 401
    status, _, body = fetch(gateway.url, "/admin/services", {"Authorization": f"Bearer {ADMIN}"})
    listing = json.loads(body)
    assert status == 200
    orders = next(s for s in listing["services"] if s["name"] == "order-service")
    assert orders["prefix"] == "/orders" and orders["upstream"] == clean_samples.env()["ORDER_SERVICE_URL"]
    assert orders["health_check"] is None  # HEALTH_CHECK_INTERVAL=0: no active checks
    assert ADMIN not in body.decode()


def test_metrics_cover_every_worker_and_pass_promtool(gateway_factory, clean_samples, tmp_path) -> None:  # type: ignore[no-untyped-def]
    run_dir = tmp_path / "run"
    gateway = gateway_factory({**clean_samples.env(), "HEALTH_CHECK_INTERVAL": "0", "GATEWAY_RUN_DIR": str(run_dir)},
                              workers=2)
    for path in ("/orders/1", "/orders/1", "/orders/_debug/status/404"):
        fetch(gateway.url, path)
    # Until both workers have answered a proxied request (each then publishes a stats snapshot).
    workers = set(map(str, gateway.worker_pids()))
    assert len(workers) == 2
    for _ in range(200):
        published = {p.name.split("-")[1] for p in run_dir.glob("stats-*-*.json")}
        if workers <= published:
            break
        fetch(gateway.url, "/orders/1")
        time.sleep(0.01)
    assert workers <= published, (workers, published)
    held: list[Any] = []
    # Other workers' in-flight counts arrive with their stats snapshots (at most a second old).
    slow = threading.Thread(target=lambda: held.append(fetch(gateway.url, "/orders/_debug/slow-headers?ms=4000")))
    slow.start()
    try:
        deadline = time.monotonic() + 8
        while True:
            found = samples(fetch(gateway.url, "/metrics")[2].decode())
            if found.get(("gateway_requests_in_flight", ())) == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert found[("gateway_requests_in_flight", ())] == 1
    finally:
        slow.join(10)
    assert held and held[0][0] == 200
    for _ in range(4):  # whichever worker answers, it reports both
        status, headers, body = fetch(gateway.url, "/metrics")
        found = samples(body.decode())
        pids = {dict(ls)["pid"] for (n, ls) in found if n == "process_resident_memory_bytes"}
        assert pids == workers
    assert sum(v for (n, ls), v in found.items()
               if n == "gateway_requests_total" and ("code", "404") in ls) == 1
    assert found[("gateway_cache_entries", ())] >= 1 and found[("gateway_cache_bytes", ())] > 0
    assert found[("gateway_breaker_calls_total", (("outcome", "success"), ("service", "order-service")))] >= 2
    assert any(n == "gateway_build_info" for n, _ in found)
    status, headers, body = fetch(gateway.url, "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert "gateway_requests" in {f.name for f in openmetrics_families(body.decode())}
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not found: install Debian's prometheus package (apt-get install prometheus)")
    text = fetch(gateway.url, "/metrics")[2]
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert done.returncode == 0, (done.stdout + done.stderr).decode()
