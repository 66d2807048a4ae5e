"""Gateway-wide statistics: cache math, breaker figures, and the merge over workers and instances."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.breaker.core import Outcome
from gateway.clock import FakeClock
from gateway.config.settings import load_settings
from gateway.observe.stats import GatewayStats
from gateway.redis.link import RedisLink

SERVICE = "order-service"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def workers(tmp_path: Path, clock: FakeClock) -> Iterator[tuple[GatewayStats, GatewayStats]]:
    """Two workers of one instance: same run directory, no Redis, no background flusher."""
    settings = load_settings({})
    first = GatewayStats(settings, None, clock, str(tmp_path), flush_interval=0)
    second = GatewayStats(settings, None, clock, str(tmp_path), flush_interval=0)
    yield first, second


def test_cache_stats_math(workers: tuple[GatewayStats, GatewayStats]) -> None:
    stats, _ = workers
    for _ in range(3):
        stats.record_request(SERVICE, "GET", 200, "HIT", 0.002, None)
    stats.record_request(SERVICE, "GET", 200, "MISS", 0.050, 0.045)
    stats.record_request(SERVICE, "GET", 200, "REVALIDATED", 0.030, 0.02)
    stats.record_request(SERVICE, "GET", 200, "STALE", 0.001, None)
    stats.record_request(SERVICE, "POST", 201, "BYPASS", 0.010, 0.009)
    stats.record_request(SERVICE, "GET", 503, None, 0.0005, None)
    stats.record_cache("coalesced")
    stats.record_cache("upstream_call")
    c = stats.cache_stats()
    assert c["requests"] == 8
    assert (c["hits"], c["misses"], c["revalidated"], c["stale"], c["bypass"]) == (3, 1, 1, 1, 1)
    assert c["coalesced"] == 1
    assert c["upstream_calls"] == 4  # three requests reached the upstream, plus a background call
    assert c["hit_rate"] == 50.0  # 3 hits of 6 lookups (hit, miss, revalidated, stale)
    assert c["avg_hit_latency_ms"] == pytest.approx(2.0)
    assert c["avg_miss_latency_ms"] == pytest.approx(50.0)
    assert c["keys"] is None and c["memory_used_bytes"] is None


def test_cache_window_is_five_minutes(workers: tuple[GatewayStats, GatewayStats], clock: FakeClock) -> None:
    stats, _ = workers
    stats.record_request(SERVICE, "GET", 200, "HIT", 0.001, None)
    clock.advance(200)
    stats.record_request(SERVICE, "GET", 200, "MISS", 0.001, 0.001)
    assert stats.cache_stats()["requests"] == 2
    clock.advance(101)
    c = stats.cache_stats()
    assert (c["requests"], c["hits"], c["misses"]) == (1, 0, 1)


def test_two_workers_add_up(workers: tuple[GatewayStats, GatewayStats]) -> None:
    first, second = workers
    for i in range(10):
        (first if i % 2 else second).record_request(SERVICE, "GET", 200, "HIT", 0.001, None)
        (first if i % 3 else second).on_call(SERVICE, Outcome.SUCCESS if i < 7 else Outcome.FAILURE, 0.01)
    second.on_reject(SERVICE)
    second.flush()  # what the second worker's flusher does every half second
    for reader in (first, second):
        assert reader.cache_stats()["requests"] == 10
        b = reader.breaker_stats()["services"][SERVICE]
        assert (b["fires"], b["successes"], b["failures"], b["rejects"]) == (11, 7, 3, 1)
        assert b["failure_rate"] == 30.0


def test_dead_workers_keep_their_counts(tmp_path: Path, clock: FakeClock) -> None:
    settings = load_settings({})
    gone = GatewayStats(settings, None, clock, str(tmp_path), flush_interval=0)
    gone.on_call(SERVICE, Outcome.TIMEOUT, 0.5)
    gone.record_request(SERVICE, "GET", 504, None, 0.5, None)
    gone.flush()
    del gone
    clock.advance(30)
    reader = GatewayStats(settings, None, clock, str(tmp_path), flush_interval=0)
    b = reader.breaker_stats()["services"][SERVICE]
    assert (b["failures"], b["timeouts"]) == (1, 1)
    assert b["failure_rate"] == 0.0  # out of the 10 s window by now
    assert reader.cache_stats()["requests"] == 1


def test_breaker_window_and_latency(workers: tuple[GatewayStats, GatewayStats], clock: FakeClock) -> None:
    first, second = workers
    for ms in range(1, 101):  # 1..100 ms split over two workers
        (first if ms % 2 else second).on_call(SERVICE, Outcome.SUCCESS, ms / 1000)
    second.flush()
    b = first.breaker_stats()["services"][SERVICE]
    assert b["latency_ms"]["mean"] == pytest.approx(50.5)
    assert b["latency_ms"]["p50"] == pytest.approx(50, rel=0.1)
    assert b["latency_ms"]["p95"] == pytest.approx(95, rel=0.1)
    assert b["latency_ms"]["p99"] == pytest.approx(99, rel=0.1)
    clock.advance(11)
    b = first.breaker_stats()["services"][SERVICE]
    assert b["latency_ms"] == {"mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0}
    assert b["successes"] == 100  # cumulative


def test_reset_clears_every_worker(workers: tuple[GatewayStats, GatewayStats]) -> None:
    first, second = workers
    first.on_call(SERVICE, Outcome.FAILURE, 0.01)
    second.on_call(SERVICE, Outcome.FAILURE, 0.01)
    second.on_call("auth-service", Outcome.SUCCESS, 0.01)
    second.flush()
    first.reset_breaker(SERVICE)
    for reader in (first, second):
        services = reader.breaker_stats()["services"]
        assert services[SERVICE]["fires"] == 0 and services[SERVICE]["failure_rate"] == 0.0
        assert services["auth-service"]["successes"] == 1
    second.on_call(SERVICE, Outcome.SUCCESS, 0.01)
    second.flush()
    assert first.breaker_stats()["services"][SERVICE]["successes"] == 1


class FakeBreaker:
    def __init__(self, state: str, opened_at: float | None = None) -> None:
        self.state = state
        self.opened_at = opened_at

    def snapshot(self) -> dict[str, object]:
        nxt = self.opened_at + 30 if self.opened_at else None
        return {"state": self.state, "opened_at": self.opened_at, "next_attempt_at": nxt}


class FakeRegistry(dict):  # type: ignore[type-arg]
    pass


def test_worst_breaker_state_of_live_workers(workers: tuple[GatewayStats, GatewayStats], clock: FakeClock) -> None:
    first, second = workers
    first.breakers = FakeRegistry({SERVICE: FakeBreaker("CLOSED")})
    second.breakers = FakeRegistry({SERVICE: FakeBreaker("OPEN", clock())})
    second.flush()
    b = first.breaker_stats()["services"][SERVICE]
    assert b["state"] == "OPEN" and b["opened_at"] == clock() and b["next_attempt_at"] == clock() + 30
    clock.advance(10)  # the second worker stopped writing: its breaker no longer counts
    assert first.breaker_stats()["services"][SERVICE]["state"] == "CLOSED"


def test_cache_snapshot_is_duck_typed(workers: tuple[GatewayStats, GatewayStats]) -> None:
    stats, other = workers

    class Cache:
        def snapshot(self) -> dict[str, object]:
            return {"keys": 12, "memory_used_bytes": 3456}

    stats.cache = Cache()
    c = stats.cache_stats()
    assert (c["keys"], c["memory_used_bytes"]) == (12, 3456)
    other.cache = Cache()
    other.flush()  # embedded mode: every worker has its own cache, the sizes add up
    c = stats.cache_stats()
    assert (c["keys"], c["memory_used_bytes"]) == (24, 6912)


def test_flusher_publishes_in_background(tmp_path: Path) -> None:
    settings = load_settings({})
    worker = GatewayStats(settings, None, run_dir=str(tmp_path), flush_interval=0.05)
    reader = GatewayStats(settings, None, run_dir=str(tmp_path), flush_interval=0)
    worker.start()
    try:
        worker.record_request(SERVICE, "GET", 200, "MISS", 0.01, 0.01)
        import time

        deadline = time.monotonic() + 2
        while reader.cache_stats()["requests"] != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert reader.cache_stats()["requests"] == 1
    finally:
        worker.close()


def test_two_instances_share_through_redis(redis_server, tmp_path: Path, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings({"REDIS_URL": redis_server.url})
    links = [RedisLink(redis_server.url, "gwtest:") for _ in range(2)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = GatewayStats(settings, links[0], clock, str(tmp_path / "a"), flush_interval=0)
    b = GatewayStats(settings, links[1], clock, str(tmp_path / "b"), flush_interval=0)
    for i in range(6):
        (a if i % 2 else b).record_request(SERVICE, "GET", 200, "HIT" if i < 4 else "MISS", 0.004, None)
        (a if i % 2 else b).on_call(SERVICE, Outcome.FAILURE if i == 0 else Outcome.SUCCESS, 0.02)
    a.on_reject(SERVICE)
    b.flush()
    for reader in (a, b):
        c = reader.cache_stats()
        assert (c["requests"], c["hits"], c["misses"]) == (6, 4, 2)
        s = reader.breaker_stats()["services"][SERVICE]
        assert (s["fires"], s["failures"], s["rejects"]) == (7, 1, 1)
        assert s["failure_rate"] == pytest.approx(16.67)
    keys = redis_server.client().keys("*")
    assert keys and all(k.startswith(b"gwtest:stats:") for k in keys)
    assert all(redis_server.client().ttl(k) > 0 for k in keys)
    a.reset_breaker(SERVICE)
    s = b.breaker_stats()["services"][SERVICE]
    assert (s["fires"], s["failure_rate"]) == (0, 0.0)


def test_redis_down_falls_back_to_local(redis_server, tmp_path: Path, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings({"REDIS_URL": redis_server.url})
    stats = GatewayStats(settings, RedisLink(redis_server.url, "gwtest:"), clock, str(tmp_path), flush_interval=0)
    stats.record_request(SERVICE, "GET", 200, "HIT", 0.001, None)
    redis_server.kill()
    stats.record_request(SERVICE, "GET", 200, "HIT", 0.001, None)
    stats.on_call(SERVICE, Outcome.SUCCESS, 0.01)
    assert stats.cache_stats()["requests"] == 2
    assert stats.breaker_stats()["services"][SERVICE]["successes"] == 1


def two_instances(settings: Any, url: str, prefix: str, tmp_path: Path) -> tuple[list[RedisLink], GatewayStats,
                                                                                GatewayStats]:
    """Stats of two instances on one Redis (run directories a and b), without background flushers."""
    links = [RedisLink(url, prefix) for _ in range(2)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    clock = FakeClock()
    return (links, GatewayStats(settings, links[0], clock, str(tmp_path / "a"), flush_interval=0),
            GatewayStats(settings, links[1], clock, str(tmp_path / "b"), flush_interval=0))


def test_shared_breaker_counts_come_with_its_state(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Right after a breaker opens in one instance, another reads OPEN with the failures that opened it."""
    from gateway.breaker.registry import BreakerRegistry
    from gateway.errors import CircuitOpen

    settings = load_settings({"REDIS_URL": redis_server.url, "CB_RESET_TIMEOUT": "30"})
    links, writer, reader = two_instances(settings, redis_server.url, "gwcounts:", tmp_path)
    opening = BreakerRegistry(settings, links[0], listeners=[writer])[SERVICE]
    reading = BreakerRegistry(settings, links[1], listeners=[reader])
    try:
        opening.after_call(opening.before_call(), Outcome.SUCCESS, 0.01)
        for _ in range(2):  # 2 of 3 failed: open
            opening.after_call(opening.before_call(), Outcome.FAILURE, 0.01)
        with pytest.raises(CircuitOpen):
            opening.before_call()
        # The writer has not flushed its stats: only the breaker's own record in Redis can say this.
        entry = reader.breaker_stats(reading)["services"][SERVICE]
        assert entry["state"] == "OPEN" and entry["counts_lagging"] is False
        assert (entry["fires"], entry["successes"], entry["failures"], entry["rejects"]) == (4, 1, 2, 1)
        assert (entry["failure_rate"], entry["window_calls"]) == (66.67, 3)
        # Redis unreachable: the local figures are shown, labelled as lagging.
        redis_server.kill()
        assert reader.breaker_stats(reading)["services"][SERVICE]["counts_lagging"] is True
    finally:
        for link in links:
            link.close()


def test_rejects_held_by_a_worker_reach_the_shared_counts_at_its_next_flush(  # type: ignore[no-untyped-def]
        redis_server, tmp_path: Path) -> None:
    from gateway.breaker.registry import BreakerRegistry
    from gateway.errors import CircuitOpen
    from tests.support.chaos import wait_for

    settings = load_settings({"REDIS_URL": redis_server.url, "CB_RESET_TIMEOUT": "30"})
    links, writer, reader = two_instances(settings, redis_server.url, "gwheld:", tmp_path)
    registry = BreakerRegistry(settings, links[0], listeners=[writer])
    writer.breakers = registry  # as build_gateway does in a worker
    breaker = registry[SERVICE]
    reading = BreakerRegistry(settings, links[1])
    try:
        assert wait_for(lambda: breaker.subscription.ensure(), 3.0, 0.01)  # OPEN answers may be held
        for _ in range(3):
            breaker.after_call(breaker.before_call(), Outcome.FAILURE, 0.01)
        for _ in range(4):
            with pytest.raises(CircuitOpen):
                breaker.before_call()  # the first asks Redis, the others are answered here
        assert breaker._held_rejects == 3
        assert reader.breaker_stats(reading)["services"][SERVICE]["rejects"] == 1
        writer.flush()
        assert breaker._held_rejects == 0
        assert reader.breaker_stats(reading)["services"][SERVICE]["rejects"] == 4
    finally:
        for link in links:
            link.close()
