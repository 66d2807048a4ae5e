"""Scale-out: two gateway instances (separate gunicorn masters, 2 workers each) on one Redis act as one.

Each test runs on one redis-server, on a Sentinel set and on a Redis Cluster (``shared_redis``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.chaos import Answer, fetch, report, wait_for
from tests.support.processes import GatewayProcess, SampleServices, start_gateway
from tests.support.topology import SharedRedis

pytestmark = pytest.mark.e2e

TOKEN = "scale-out-admin"
HOST = "api.example"  # one Host for both instances, as behind one load balancer


@pytest.fixture
def pair(clean_samples: SampleServices, shared_redis: SharedRedis, tmp_path: Path) -> Iterator[list[GatewayProcess]]:
    env = {**clean_samples.env(), **shared_redis.env(), "HEALTH_CHECK_INTERVAL": "0", "ADMIN_TOKEN": TOKEN,
           "CB_RESET_TIMEOUT": "30"}
    with start_gateway(env, 2, log_dir=tmp_path / "a") as one, start_gateway(env, 2, log_dir=tmp_path / "b") as two:
        yield [one, two]


def get(gw: GatewayProcess, target: str) -> Answer:
    answer = fetch(gw.port, target, headers={"Host": HOST})
    assert answer.status is not None, answer.error
    return answer


def x_cache(gw: GatewayProcess, target: str) -> str | None:
    return get(gw, target).x_cache


def invalidated_within(gw: GatewayProcess, target: str, seconds: float) -> float:
    """Seconds until ``target`` is no longer a HIT on ``gw`` (fails after ``seconds``)."""
    started = time.monotonic()
    while x_cache(gw, target) == "HIT":
        assert time.monotonic() - started < seconds, f"{target} still cached on the other instance"
        time.sleep(0.02)
    return time.monotonic() - started


def test_two_instances_behave_as_one(pair: list[GatewayProcess], clean_samples: SampleServices,
                                     shared_redis: SharedRedis, request: pytest.FixtureRequest) -> None:
    one, two = pair
    figures: dict[str, object] = {}
    # A miss filled by one is a hit on the other (every worker of it).
    assert x_cache(one, "/orders/3") == "MISS"
    assert [x_cache(two, "/orders/3") for _ in range(8)] == ["HIT"] * 8
    assert x_cache(two, "/orders") == "MISS" and x_cache(one, "/orders") == "HIT"
    assert clean_samples.stats("order-service")["by_path"] == {"/3": 1, "/": 1}

    # A write through one drops the entry (and its parent list) on the other within 1 s.
    patch = fetch(one.port, "/orders/3", "PATCH", {"Host": HOST, "Content-Type": "application/json"},
                  b'{"delivery_address": "2 Scale Street"}')
    assert patch.status == 200, patch.body
    figures["patch_invalidated_s"] = round(invalidated_within(two, "/orders/3", 1.0), 3)
    invalidated_within(two, "/orders", 1.0)  # the parent list went too
    assert json.loads(get(one, "/orders/3").body)["delivery_address"] == "2 Scale Street"
    order = {"customer_id": 1, "restaurant_id": 1, "delivery_address": "3 Scale Street",
             "items": [{"menu_item_id": 101, "name": "Margherita", "quantity": 1, "unit_price_cents": 1150}]}
    created = fetch(two.port, "/orders", "POST", {"Host": HOST, "Content-Type": "application/json"},
                    json.dumps(order).encode())
    assert created.status in (200, 201), created.body
    invalidated_within(one, "/orders", 1.0)  # the list, dropped by a write through the other
    # An admin purge through one empties the other within 1 s.
    for gw in (one, two):
        get(gw, "/restaurants/1")
    assert x_cache(one, "/restaurants/1") == "HIT"
    purge = fetch(two.port, "/admin/cache?prefix=/restaurants", "DELETE", {"Authorization": f"Bearer {TOKEN}"})
    assert purge.status == 200
    figures["purge_invalidated_s"] = round(invalidated_within(one, "/restaurants/1", 1.0), 3)

    # A breaker opened through one is open on the other, without a call reaching the service.
    clean_samples.faults("delivery-service", error_rate=1.0, status=500)
    clean_samples.reset_stats("delivery-service")
    assert [get(one, "/delivery/_debug/status/200").status for _ in range(3)] == [500] * 3
    rejected = [get(two, "/delivery/_debug/status/200") for _ in range(6)]
    assert [a.status for a in rejected] == [503] * 6
    assert clean_samples.stats("delivery-service")["requests"] == 3
    clean_samples.reset_faults("delivery-service")
    # Everything the instances keep in Redis expires by itself (on every primary of a cluster).
    assert shared_redis.keys() and not shared_redis.keys_without_ttl()
    report(request, "scale-out", topology=shared_redis.name, **figures)


def test_stats_merge_across_instances(pair: list[GatewayProcess], request: pytest.FixtureRequest) -> None:
    one, two = pair

    def totals() -> list[tuple[int, int]]:
        pairs = []
        for gw in pair:
            cache = json.loads(fetch(gw.port, "/stats/cache").body)
            breakers = json.loads(fetch(gw.port, "/stats/circuit-breakers").body)["services"]
            pairs.append((cache["requests"], breakers["tracking-service"]["fires"]))
        return pairs

    assert wait_for(lambda: len(set(totals())) == 1, 3.0)
    base_cache, base_fires = totals()[0]
    cached = ["/restaurants/1", "/restaurants/2", "/orders/1"]
    through = {one.port: 0, two.port: 0}
    for n in range(40):  # cache requests (GET) and breaker calls (tracking has no cache), split unevenly
        gw = one if n % 3 else two
        assert get(gw, cached[n % 3]).status == 200
        assert get(gw, "/tracking/_debug/status/200").status == 200
        through[gw.port] += 1
    want = (base_cache + 80, base_fires + 40)  # every proxied GET is a cache request (BYPASS included)
    assert wait_for(lambda: totals() == [want, want], 3.0), (totals(), want)
    report(request, "scale-out-stats", sent_through_first=through[one.port], sent_through_second=through[two.port],
           merged_cache_requests=want[0] - base_cache, merged_breaker_fires=want[1] - base_fires)
