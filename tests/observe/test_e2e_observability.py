"""Observability through a real gunicorn gateway with two workers: totals are gateway-wide."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e

REQUESTS = 40


def fetch(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One request on a fresh connection (so the two workers take turns answering)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def stats(url: str, path: str) -> Any:
    status, body = fetch(url, path)
    assert status == 200, body
    return json.loads(body)


def eventually(check: Any, timeout: float = 3.0) -> Any:
    """Retry ``check`` until it returns a truthy value (the stats lag by at most a second)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_totals_cover_both_workers(gateway_factory, clean_samples) -> None:  # type: ignore[no-untyped-def]
    gateway = gateway_factory({**clean_samples.env(), "HEALTH_CHECK_INTERVAL": "0.5"}, workers=2)
    for i in range(REQUESTS):
        status, _ = fetch(gateway.url, f"/orders/{(1, 2, 3, 42)[i % 4]}")
        assert status == 200
    fetch(gateway.url, "/delivery/")  # one more service, one more request
    expected = REQUESTS + 1

    def cache_total() -> bool:
        return all(stats(gateway.url, "/stats/cache")["requests"] == expected for _ in range(6))

    assert eventually(cache_total), stats(gateway.url, "/stats/cache")
    cache = stats(gateway.url, "/stats/cache")
    assert cache["misses"] + cache["hits"] + cache["bypass"] + cache["revalidated"] + cache["stale"] <= expected
    breakers = stats(gateway.url, "/stats/circuit-breakers")["services"]
    assert breakers["order-service"]["successes"] == cache["upstream_calls"] - breakers["delivery-service"]["fires"]
    for _ in range(4):  # whichever worker answers
        families = {f.name: f for f in text_string_to_metric_families(fetch(gateway.url, "/metrics")[1].decode())}
        total = sum(s.value for s in families["gateway_requests"].samples if s.name == "gateway_requests_total")
        assert total == expected

    def polled() -> bool:
        services = stats(gateway.url, "/health/services")["services"]
        return services["order-service"]["status"] == "healthy" and services["order-service"]["checks"] >= 1

    assert eventually(polled), stats(gateway.url, "/health/services")
    pollers = [e for e in gateway.json_logs() if e.get("message") == "this worker runs the health checks"]
    assert len(pollers) == 1  # one poller per instance, not per worker


def test_instances_sharing_redis_report_the_same_totals(gateway_factory, clean_samples, shared_redis) -> None:  # type: ignore[no-untyped-def]
    """On one redis-server, a Sentinel set and a Redis Cluster in turn: stats and health results merge."""
    env = {**clean_samples.env(), **shared_redis.env(), "HEALTH_CHECK_INTERVAL": "0.5"}
    first = gateway_factory(env, workers=2)
    second = gateway_factory(env, workers=1)
    for i in range(30):
        assert fetch((first, second)[i % 3 == 0].url, f"/restaurants/{1 + i % 3}")[0] == 200

    def agreed() -> bool:
        return all(stats(g.url, "/stats/cache")["requests"] == 30 for g in (first, second, first, first))

    assert eventually(agreed), [stats(g.url, "/stats/cache") for g in (first, second)]
    for gateway in (first, second):
        breakers = stats(gateway.url, "/stats/circuit-breakers")["services"]
        assert breakers["restaurant-service"]["successes"] == stats(gateway.url, "/stats/cache")["upstream_calls"]
        services = eventually(lambda g=gateway: stats(g.url, "/health/services")["services"]["auth-service"]["checks"])
        assert services
