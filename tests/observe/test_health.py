"""Active health checks: status rules, a real HTTP target, and one poller per instance."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import FakeClock
from gateway.config.settings import load_settings
from gateway.observe.health import HealthMonitor, check_service, classify, summarize
from gateway.redis.link import RedisLink
from tests.support.chaos import wait_for
from tests.support.local_http import LocalService, QuietHandler


class Target(LocalService):
    """A tiny local service whose ``/health`` can be made to fail or to be slow."""

    def __init__(self) -> None:
        self.status = 200
        self.delay = 0.0
        self.hits = 0
        target = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                target.hits += 1
                time.sleep(target.delay)
                body = b'{"status":"ok"}' if self.path == "/health" else b"{}"
                self.send_response(target.status if self.path == "/health" else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(Handler)


@pytest.fixture
def target() -> Iterator[Target]:
    server = Target()
    yield server
    server.close()


def settings_for(url: str, **extra: Any) -> Any:
    """Settings with order-service at ``url`` and every other service on a port nothing listens on."""
    names = ("auth-service", "restaurant-service", "delivery-service", "tracking-service")
    services = {name: {"url": "http://127.0.0.1:9"} for name in names}
    return load_settings({}, {"services": {**services, "order-service": {"url": url}}, **extra})


def test_status_rules() -> None:
    ok, bad, slow = (0.0, True, 5.0), (0.0, False, 5.0), (0.0, True, 1500.0)
    assert classify([]) == "unknown"
    assert classify([ok] * 12) == "healthy"
    assert classify([bad] + [ok] * 10) == "healthy"  # older than the last ten
    assert classify([bad] + [ok] * 9) == "degraded"
    assert classify([ok] * 5 + [slow] + [ok] * 4) == "degraded"
    assert classify([ok, bad, bad]) == "degraded"
    assert classify([ok, bad, bad, bad]) == "down"


def test_summary_uptime_over_last_hour() -> None:
    settings = settings_for("http://127.0.0.1:9")
    now = 10_000.0
    history = [(now - 4000, False, 1.0)] + [(now - 60 * i, i % 4 != 0, 2.0) for i in range(8, 0, -1)]
    entry = summarize(settings.services["order-service"], history, now)
    assert entry["checks"] == 8 and entry["uptime_pct"] == 75.0
    assert entry["last_check"] == now - 60 and entry["latency_ms"] == 2.0


def test_check_service_against_a_real_server(target: Target) -> None:
    ok, ms = check_service(target.url, 1.0)
    assert ok and ms < 1000
    target.status = 503
    assert check_service(target.url, 1.0)[0] is False
    target.status, target.delay = 200, 0.3
    assert check_service(target.url, 0.1)[0] is False  # timed out
    assert check_service("http://127.0.0.1:9", 0.5)[0] is False  # refused


# A check's own timeout follows a short interval (50 ms here) unless given: the tests that judge each check's
# outcome give it 5 s, so a check of a local server that answers at once never fails on a loaded machine.
CHECK_TIMEOUT = 5.0


def test_poll_once_and_services(target: Target, tmp_path: Path) -> None:
    clock = FakeClock()
    monitor = HealthMonitor(settings_for(target.url), clock, str(tmp_path), interval=0.05, timeout=CHECK_TIMEOUT)
    assert monitor._acquire()
    try:
        for _ in range(3):
            monitor.poll_once()
            clock.advance(1)
        entry = monitor.services()["services"]["order-service"]
        assert entry["status"] == "healthy" and entry["checks"] == 3 and entry["uptime_pct"] == 100.0
        target.status = 500
        for _ in range(3):
            monitor.poll_once()
        reader = HealthMonitor(settings_for(target.url), clock, str(tmp_path), interval=0.05, timeout=CHECK_TIMEOUT)
        entry = reader.services()["services"]["order-service"]  # another worker reads the same results
        assert entry["status"] == "down" and entry["uptime_pct"] == 50.0
        assert reader.services()["services"]["auth-service"]["status"] == "down"  # nothing listens there
    finally:
        monitor.stop()


def test_one_poller_per_instance_and_takeover(target: Target, tmp_path: Path) -> None:
    settings = settings_for(target.url)
    first = HealthMonitor(settings, run_dir=str(tmp_path), interval=0.05)
    second = HealthMonitor(settings, run_dir=str(tmp_path), interval=0.05)
    first.start()
    try:
        deadline = time.monotonic() + 3
        while not first.is_poller and time.monotonic() < deadline:
            time.sleep(0.01)
        second.start()
        time.sleep(0.3)
        assert first.is_poller and not second.is_poller
        first.stop()  # the poller goes away: the other takes over
        deadline = time.monotonic() + 3
        while not second.is_poller and time.monotonic() < deadline:
            time.sleep(0.01)
        assert second.is_poller
        checks = second.services()["services"]["order-service"]["checks"]
        assert wait_for(lambda: second.services()["services"]["order-service"]["checks"] > checks, 3.0, 0.01)
    finally:
        first.stop()
        second.stop()


def test_interval_zero_is_off(tmp_path: Path) -> None:
    monitor = HealthMonitor(load_settings({}, {"HEALTH_CHECK_INTERVAL": 0}), run_dir=str(tmp_path))
    monitor.start()
    assert monitor._thread is None
    assert all(s["status"] == "unknown" for s in monitor.services()["services"].values())


def test_instances_merge_through_redis(redis_server, target: Target, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(target.url, REDIS_URL=redis_server.url)
    clock = FakeClock()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = HealthMonitor(settings, clock, str(tmp_path / "a"), RedisLink(redis_server.url, "gwh:"), interval=0.05,
                      timeout=CHECK_TIMEOUT)
    b = HealthMonitor(settings, clock, str(tmp_path / "b"), RedisLink(redis_server.url, "gwh:"), interval=0.05,
                      timeout=CHECK_TIMEOUT)
    a.poll_once()
    clock.advance(1)
    b.poll_once()
    for monitor in (a, b):
        assert monitor.services()["services"]["order-service"]["checks"] == 2
    assert all(redis_server.client().ttl(k) > 0 for k in redis_server.client().keys("gwh:*"))


def test_configured_path_and_expected_statuses(target: Target) -> None:
    from gateway.config.settings import HealthCheck

    ok, _ = check_service(target.url, 1.0, check=HealthCheck(path="/other", expected_status=("404",)))
    assert ok  # the target answers 404 everywhere but /health
    assert check_service(target.url, 1.0, check=HealthCheck(path="/other"))[0] is False
    target.status = 301
    assert check_service(target.url, 1.0, check=HealthCheck(expected_status=("2xx", "3xx")))[0] is True
    assert check_service(target.url, 1.0)[0] is False


def test_check_off_never_turns_red_and_calls_nothing(target: Target, tmp_path: Path) -> None:
    services = {name: {"health_check": False} for name in
                ("auth-service", "restaurant-service", "delivery-service", "tracking-service")}
    settings = load_settings({}, {"services": {**services, "order-service": {"url": target.url}}})
    monitor = HealthMonitor(settings, FakeClock(), str(tmp_path), interval=5)
    monitor.poll_once()
    report = monitor.services()["services"]
    assert report["auth-service"] == {"status": "off", "url": "http://127.0.0.1:3001", "last_check": None,
                                      "latency_ms": None, "uptime_pct": None, "checks": 0, "check": None}
    assert report["order-service"]["status"] == "healthy" and target.hits == 1
    assert report["order-service"]["check"] == {"path": "/health", "interval_s": 5, "timeout_s": 2.0,
                                                "expected_status": ["2xx"]}


def test_each_service_keeps_its_own_interval(target: Target, tmp_path: Path) -> None:
    names = ("auth-service", "restaurant-service", "delivery-service", "tracking-service")
    settings = load_settings({}, {"services": {
        **{name: {"health_check": False} for name in names},
        "order-service": {"url": target.url, "health_check": {"interval": 30, "timeout": 0.5}},
        "menu-service": {"prefix": "/menus", "url": target.url, "health_check": {"path": "/x", "interval": 10,
                                                                                  "expected_status": 404}},
    }})
    clock = FakeClock()
    monitor = HealthMonitor(settings, clock, str(tmp_path), interval=10)
    assert monitor.timeout_for(settings.services["order-service"]) == 0.5
    assert monitor.poll_due() == 10  # both checked at once, the menu service is next in 10 s
    for _ in range(3):
        clock.advance(10)
        monitor.poll_due()
    report = monitor.services()["services"]
    assert report["order-service"]["checks"] == 2 and report["menu-service"]["checks"] == 4
    assert report["menu-service"]["status"] == "healthy"


def test_metrics_only_for_checked_services(target: Target, tmp_path: Path) -> None:
    from gateway.observe.metrics import Metrics

    services = {name: {"health_check": False} for name in
                ("auth-service", "restaurant-service", "delivery-service", "tracking-service")}
    settings = load_settings({}, {"services": {**services, "order-service": {"url": target.url}}})
    metrics = Metrics(settings)
    HealthMonitor(settings, FakeClock(), str(tmp_path), interval=5, metrics=metrics).poll_once()
    text = metrics.render()[0].decode()
    assert 'gateway_service_up{service="order-service"} 1.0' in text
    assert 'gateway_service_up{service="auth-service"}' not in text
