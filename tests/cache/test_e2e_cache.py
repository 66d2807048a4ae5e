"""The cache through real gunicorn gateways sharing one Redis (alone, Sentinel or a cluster): coalescing,
invalidation, purge, Redis failures."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from gateway.cache.tier import DEFAULT_BOUND as TIER_BOUND
from tests.support.chaos import wait_for
from tests.support.processes import GatewayProcess, RedisServer, SampleServices, start_gateway
from tests.support.topology import SharedRedis

pytestmark = pytest.mark.e2e
HOST = "gateway.test"  # one Host for every instance, so they share keys
TOKEN = "cache-admin-token"


def send(gw: GatewayProcess, method: str, target: str, headers: dict[str, str] | None = None,
         body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request(method, target, body=body, headers={"Host": HOST, **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def x_cache(gw: GatewayProcess, target: str) -> str | None:
    status, headers, _ = send(gw, "GET", target)
    assert status == 200, (target, status)
    return headers.get("x-cache")


@contextmanager
def two_instances(samples: SampleServices, redis_env: dict[str, str], tmp_path: Any) -> Iterator[list[GatewayProcess]]:
    """Two gateway instances (2 workers each) on one Redis."""
    env = {**samples.env(), **redis_env, "HEALTH_CHECK_INTERVAL": "0", "ADMIN_TOKEN": TOKEN,
           "CB_VOLUME_THRESHOLD": "1000"}
    with start_gateway(env, 2, log_dir=tmp_path / "a") as first, \
            start_gateway(env, 2, log_dir=tmp_path / "b") as second:
        yield [first, second]


@pytest.fixture
def pair(clean_samples: SampleServices, shared_redis: SharedRedis, tmp_path: Any) -> Iterator[list[GatewayProcess]]:
    """Two instances on each form of Redis in turn."""
    with two_instances(clean_samples, shared_redis.env(), tmp_path) as gateways:
        yield gateways


@pytest.fixture
def pair_on_one_redis(clean_samples: SampleServices, redis_server: RedisServer,
                      tmp_path: Any) -> Iterator[list[GatewayProcess]]:
    """Two instances on a redis-server of the test's own (which it may kill)."""
    with two_instances(clean_samples, {"REDIS_URL": redis_server.url}, tmp_path) as gateways:
        yield gateways


def test_concurrent_cold_gets_make_one_upstream_call(pair: list[GatewayProcess], clean_samples: SampleServices) -> None:
    clean_samples.faults("restaurant-service", latency_ms=300)
    results: list[str | None] = []
    lock = threading.Lock()

    def fetch(gw: GatewayProcess) -> None:
        label = x_cache(gw, "/restaurants/1")
        with lock:
            results.append(label)
    threads = [threading.Thread(target=fetch, args=(pair[i % 2],)) for i in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert len(results) == 100
    assert clean_samples.stats("restaurant-service")["requests"] == 1
    assert sorted(results) == ["HIT"] * 99 + ["MISS"]


def missed_within_a_second(gw: GatewayProcess, path: str) -> bool:
    """Invalidations reach every worker and instance within 1 s (per-worker copies live at most 0.5 s)."""
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if x_cache(gw, path) == "MISS":
            return True
        time.sleep(0.05)
    return False


def test_invalidation_and_purge_reach_every_worker_and_instance(pair: list[GatewayProcess],
                                                               clean_samples: SampleServices) -> None:
    first, second = pair
    assert x_cache(first, "/orders/3") == "MISS"
    for _ in range(6):  # both workers of both instances
        assert x_cache(first, "/orders/3") == "HIT" and x_cache(second, "/orders/3") == "HIT"
    status, _, body = send(second, "PATCH", "/orders/3", {"Content-Type": "application/json"},
                           b'{"delivery_address": "1 Test Street"}')
    assert status == 200, body
    assert missed_within_a_second(first, "/orders/3")
    x_cache(first, "/restaurants/1")
    status, _, body = send(second, "DELETE", "/admin/cache?prefix=/restaurants/", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, body
    assert missed_within_a_second(first, "/restaurants/1")
    assert x_cache(second, "/orders/3") == "HIT"


def test_redis_killed_then_restarted(pair_on_one_redis: list[GatewayProcess], redis_server: Any) -> None:
    first = pair_on_one_redis[0]
    x_cache(first, "/restaurants/2")
    assert x_cache(first, "/restaurants/2") == "HIT"
    redis_server.kill()
    # A worker may still answer from its own copy of the entry (kept at most TIER_BOUND) until its
    # subscription notices Redis is gone; from then on every answer bypasses the cache.
    assert wait_for(lambda: x_cache(first, "/restaurants/2") == "BYPASS", 2 * TIER_BOUND + 1)
    assert [x_cache(first, "/restaurants/2") for _ in range(4)] == ["BYPASS"] * 4
    redis_server.start()
    deadline = time.monotonic() + 5
    while x_cache(first, "/restaurants/2") != "HIT":
        assert time.monotonic() < deadline, "the cache did not come back after Redis restarted"
        time.sleep(0.2)
