"""Rate limiting and CORS through real gunicorn gateways with two workers (and two instances on one Redis)."""

from __future__ import annotations

import http.client
import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.observe.test_dashboard_browser import CHROMIUM, TOKEN, dashboard

pytestmark = pytest.mark.e2e

RATE_LIMITED = """
services:
  restaurant-service:
    rate_limit:
      key: header:X-Api-Key
      limits: ["5/m", "1000/h"]
  order-service:
    rate_limit:
      limits: ["100/m"]
      redis_down: closed
"""

CORS = """
services:
  restaurant-service:
    cors:
      origins: ["https://app.example.com", "https://*.example.org"]
      methods: [GET, POST]
      headers: [Content-Type, X-Api-Key]
      expose_headers: [X-Cache]
      credentials: true
      max_age: 600
  # A nested prefix: every /restaurants request then goes through the Flask blueprints, the other entrance.
  menus-v2:
    prefix: /restaurants/v2
    url: http://127.0.0.1:9
    health_check: false
"""


def send(url: str, path: str, headers: dict[str, str] | None = None,
         method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection (so the two workers take turns answering)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return str(path)


def rate_limit_stats(url: str, service: str, field: str, want: int) -> dict[str, Any]:
    """``/stats/rate-limits`` for ``service`` once ``field`` reaches ``want`` (the stats are flushed every 0.5 s)."""
    deadline = time.monotonic() + 5
    while True:
        entry = json.loads(send(url, "/stats/rate-limits")[2])["services"][service]
        if entry[field] >= want or time.monotonic() > deadline:
            return entry  # type: ignore[no-any-return]
        time.sleep(0.1)


def metric(url: str, service: str, event: str) -> float:
    text = send(url, "/metrics")[2].decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gateway_rate_limit_events_total" and sample.labels == {"service": service,
                                                                                      "event": event}:
                return float(sample.value)
    return 0.0


def test_two_instances_share_the_limit_on_redis_and_fail_as_configured(  # type: ignore[no-untyped-def]
        gateway_factory, clean_samples, redis_server, tmp_path) -> None:
    env = {**clean_samples.env(), "REDIS_URL": redis_server.url, "HEALTH_CHECK_INTERVAL": "0",
           "GATEWAY_CONFIG": config(tmp_path, RATE_LIMITED)}
    first = gateway_factory(env, workers=2)
    second = gateway_factory(env, workers=2)
    key = {"X-Api-Key": "key-one"}
    answers = [send((first, second)[i % 2].url, "/restaurants/1", key) for i in range(5)]
    assert [status for status, _, _ in answers] == [200] * 5
    told = [h["ratelimit"].split(", ") for _, h, _ in answers]
    assert [minute.split(";t=")[0] for minute, _ in told] == [f'"per-minute";r={left}' for left in (4, 3, 2, 1, 0)]
    assert [hour.split(";t=")[0] for _, hour in told] == [f'"per-hour";r={left}' for left in range(999, 994, -1)]
    for spent, (minute, _) in enumerate(told, start=1):
        assert spent * 12 - 5 <= int(minute.split(";t=")[1]) <= spent * 12  # 12 s earned back per request
    assert answers[0][1]["ratelimit-policy"] == '"per-minute";q=5;w=60, "per-hour";q=1000;w=3600'
    assert "HIT" in [h["x-cache"] for _, h, _ in answers]  # a cache hit counts against the limit too
    for gateway in (first, second):
        status, headers, body = send(gateway.url, "/restaurants/1", key)
        assert status == 429, body
        error = json.loads(body)["error"]
        assert error["code"] == "rate_limited" and error["service"] == "restaurant-service"
        assert 1 <= int(headers["retry-after"]) <= 12 and headers["ratelimit"].startswith('"per-minute";r=0;')
        assert headers["content-type"] == "application/json" and headers["cache-control"] == "no-store"
    assert send(second.url, "/restaurants/1", {"X-Api-Key": "key-two"})[0] == 200  # another key, its own count
    assert rate_limit_stats(first.url, "restaurant-service", "limited", 2)["limited"] == 2  # both instances'
    assert metric(first.url, "restaurant-service", "limited") + metric(second.url, "restaurant-service",
                                                                       "limited") == 2
    keys = [k.decode() for k in redis_server.client().keys("gw:rl:*")]
    assert keys and "key-one" not in "".join(keys)

    redis_server.kill()
    status, headers, _ = send(first.url, "/restaurants/1", key)
    assert status == 200 and "ratelimit" not in headers  # open by default: through, nothing to tell
    status, headers, body = send(first.url, "/orders/1")
    assert status == 503 and json.loads(body)["error"]["code"] == "rate_limit_unavailable"  # closed
    assert headers["retry-after"] == "1"
    # Redis is down: each instance reports its own workers' figures.
    entry = rate_limit_stats(first.url, "order-service", "redis_down_refused", 1)
    assert entry["redis_down_refused"] == 1 and entry["redis_down"] == "closed"
    assert rate_limit_stats(first.url, "restaurant-service", "redis_down_allowed", 1)["redis_down_allowed"] == 1
    assert metric(first.url, "order-service", "redis_down_refused") == 1


def test_without_redis_each_worker_counts_its_own(gateway_factory, clean_samples, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**clean_samples.env(), "HEALTH_CHECK_INTERVAL": "0", "GATEWAY_CONFIG": config(tmp_path, RATE_LIMITED)}
    gateway = gateway_factory(env, workers=2)
    statuses = [send(gateway.url, "/restaurants/2", {"X-Api-Key": "k"})[0] for _ in range(12)]
    passed = statuses.count(200)
    assert 5 <= passed <= 10 and set(statuses) == {200, 429}, statuses  # 5 a minute per worker, two workers
    assert rate_limit_stats(gateway.url, "restaurant-service", "limited", 12 - passed)["limited"] == 12 - passed


def test_cors_preflights_and_cached_answers_across_origins(  # type: ignore[no-untyped-def]
        gateway_factory, clean_samples, redis_server, tmp_path) -> None:
    # On Redis, so that both workers share one cache entry.
    env = {**clean_samples.env(), "REDIS_URL": redis_server.url, "HEALTH_CHECK_INTERVAL": "0",
           "GATEWAY_CONFIG": config(tmp_path, CORS)}
    gateway = gateway_factory(env, workers=2)
    preflight = {"Origin": "https://shop.example.org", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}
    status, headers, body = send(gateway.url, "/restaurants/1", preflight, method="OPTIONS")
    assert status == 204 and body == b""
    assert headers["access-control-allow-origin"] == "https://shop.example.org"
    assert headers["access-control-allow-methods"] == "GET, POST"
    assert headers["access-control-allow-headers"] == "content-type"
    assert headers["access-control-allow-credentials"] == "true" and headers["access-control-max-age"] == "600"
    assert "Origin" in headers["vary"]
    status, headers, body = send(gateway.url, "/restaurants/1", {**preflight, "Origin": "https://evil.test"},
                                 method="OPTIONS")
    assert status == 403 and json.loads(body)["error"]["code"] == "cors_forbidden"
    assert not any(name.startswith("access-control-") for name in headers)
    assert clean_samples.stats("restaurant-service")["requests"] == 0  # no preflight went upstream

    seen = []
    for origin in ("https://app.example.com", "https://a.example.org", "https://evil.test", None):
        status, headers, _ = send(gateway.url, "/restaurants/1", {"Origin": origin} if origin else {})
        assert status == 200
        seen.append((headers["x-cache"], headers.get("access-control-allow-origin"), headers["vary"]))
        if origin and "evil" not in origin:
            assert headers["access-control-allow-credentials"] == "true"
            assert headers["access-control-expose-headers"] == "X-Cache"
    assert [cache for cache, _, _ in seen] == ["MISS", "HIT", "HIT", "HIT"]  # one stored entry for every origin
    assert [allowed for _, allowed, _ in seen] == ["https://app.example.com", "https://a.example.org", None, None]
    assert all("Origin" in vary for _, _, vary in seen)
    assert clean_samples.stats("restaurant-service")["requests"] == 1
    # Services without CORS are untouched.
    status, headers, _ = send(gateway.url, "/orders/1", {"Origin": "https://app.example.com"})
    assert "access-control-allow-origin" not in headers and "Origin" not in headers.get("vary", "")


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Chromium not found: apt-get install -y chromium")
def test_dashboard_shows_the_rate_limited_requests(gateway_factory, clean_samples, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    env = {**clean_samples.env(), "HEALTH_CHECK_INTERVAL": "0", "OPS_TOKEN": TOKEN,
           "GATEWAY_CONFIG": config(tmp_path, RATE_LIMITED)}
    gateway = gateway_factory(env, workers=2)
    statuses = [send(gateway.url, "/restaurants/1", {"X-Api-Key": "k"})[0] for _ in range(14)]
    with dashboard(gateway.url, 1280, 1200) as page:
        row = page.locator('#rate-limit-rows tr[data-service="restaurant-service"]')
        expect(row.locator('[data-field="limited"]')).to_have_text(str(statuses.count(429)), timeout=8000)
        expect(row).to_contain_text("header:X-Api-Key")
        expect(row).to_contain_text("5/m, 1000/h")
        expect(page.locator('#rate-limit-rows tr[data-service="order-service"]')).to_contain_text("closed")
