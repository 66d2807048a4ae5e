"""The stats history: points from the metrics' running totals, one sampler per instance, bounded to 15 minutes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.breaker.core import Outcome
from gateway.clock import FakeClock
from gateway.config.settings import load_settings
from gateway.observe.metrics import Metrics
from gateway.observe.stats import GatewayStats
from gateway.observe.stats_history import WINDOW_S, StatsHistory, point, quantile


def test_quantile_interpolates_inside_the_bucket() -> None:
    assert quantile(0.95, {}) is None
    assert quantile(0.95, {"0.1": 0, "+Inf": 0}) is None
    assert quantile(0.5, {"0.1": 10, "0.2": 20, "+Inf": 20}) == pytest.approx(0.1)
    assert quantile(0.75, {"0.1": 10, "0.2": 20, "+Inf": 20}) == pytest.approx(0.15)
    assert quantile(0.95, {"0.1": 0, "1": 0, "+Inf": 4}) == 1.0  # past the last bound: that bound


def test_point_from_two_readings() -> None:
    before = {"req": 10, "err": 1, "hit": 2, "lookup": 4, "le": {"0.01": 5, "0.1": 10, "+Inf": 10},
              "trans": {"CLOSED>OPEN": 1}, "state": "CLOSED"}
    after = {"req": 30, "err": 6, "hit": 12, "lookup": 24, "le": {"0.01": 5, "0.1": 30, "+Inf": 30},
             "trans": {"CLOSED>OPEN": 2, "OPEN>HALF_OPEN": 1}, "state": "HALF_OPEN"}
    rate, errors, p95, hits, state, changes = point(before, after, 10.0)
    assert (rate, errors, hits, state, changes) == (2.0, 25.0, 50.0, "HALF_OPEN", ["HALF_OPEN", "OPEN"])
    assert p95 == pytest.approx(95.5)  # 19 of 20 new requests in (10 ms, 100 ms]
    idle = point(after, after, 10.0)
    assert idle == [0.0, None, None, None, "HALF_OPEN", []]  # no requests: no rates, not zeros
    assert point(after, before, 10.0)[0] == 1.0  # totals went down (restart): counted from zero


def make(tmp_path: Path, interval: float = 10.0) -> tuple[GatewayStats, StatsHistory, FakeClock]:
    settings = load_settings({})
    clock = FakeClock()
    stats = GatewayStats(settings, None, clock, str(tmp_path), flush_interval=0)
    metrics = Metrics(settings)
    stats.metrics = metrics
    history = StatsHistory(metrics, str(tmp_path), interval, clock)
    stats.history = history
    return stats, history, clock


def test_history_of_a_service_over_time(tmp_path: Path) -> None:
    stats, history, clock = make(tmp_path)
    stats.flush()  # the first reading: no point yet
    assert history.report()["t"] == []
    for _ in range(8):
        stats.record_request("order-service", "GET", 200, "HIT", 0.002, None)
    stats.record_request("order-service", "GET", 200, "MISS", 0.03, 0.02)
    stats.record_request("order-service", "GET", 502, "BYPASS", 0.04, 0.04)
    stats.on_state_change("order-service", "CLOSED", "OPEN")
    clock.advance(5)
    stats.flush()  # not due yet
    assert history.report()["t"] == []
    clock.advance(5)
    stats.flush()
    report = history.report()
    assert report["window_s"] == WINDOW_S and report["interval_s"] == 10 and len(report["t"]) == 1
    orders = report["services"]["order-service"]
    assert orders["requests_per_s"] == [1.0] and orders["error_pct"] == [10.0]
    assert orders["cache_hit_pct"] == [pytest.approx(88.89)]  # 8 hits of 9 lookups; the BYPASS was none
    assert orders["state"] == ["OPEN"] and orders["changes"] == [["OPEN"]]
    assert 2.5 <= orders["p95_ms"][0] <= 50
    assert report["services"]["auth-service"]["requests_per_s"] == [0.0]
    assert report["services"]["auth-service"]["error_pct"] == [None]


def test_history_is_bounded_to_fifteen_minutes(tmp_path: Path) -> None:
    stats, history, clock = make(tmp_path, interval=10)
    for _ in range(200):
        stats.record_request("order-service", "GET", 200, None, 0.001, None)
        clock.advance(10)
        stats.flush()
    report = history.report()
    assert len(report["t"]) == WINDOW_S // 10 - 1 or len(report["t"]) == WINDOW_S // 10
    assert report["t"][0] > clock() - WINDOW_S
    assert (tmp_path / "history.json").stat().st_size < 200_000


def test_one_sampler_per_instance_and_takeover(tmp_path: Path) -> None:
    stats, first, clock = make(tmp_path)
    other = StatsHistory(first.metrics, str(tmp_path), 10, clock)
    first.maybe_sample()
    other.maybe_sample()
    assert first._lock_fd is not None and other._lock_fd is None
    stats.record_request("order-service", "GET", 200, None, 0.001, None)
    clock.advance(10)
    first.maybe_sample()
    other.maybe_sample()
    assert len(other.report()["t"]) == 1  # any worker reads the instance's history
    first.release()
    stats.record_request("order-service", "GET", 200, None, 0.001, None)
    clock.advance(10)
    other.maybe_sample()  # takes over from the file, continuing the same series
    assert other._lock_fd is not None
    assert other.report()["services"]["order-service"]["requests_per_s"] == [0.1, 0.1]
    other.release()


def test_a_broken_history_file_is_ignored(tmp_path: Path) -> None:
    _, history, _ = make(tmp_path)
    (tmp_path / "history.json").write_text("{not json")
    assert history.report()["t"] == []
    (tmp_path / "history.json").write_text(json.dumps([1, 2]))
    assert history.report()["t"] == []


def test_breaker_outcomes_do_not_disturb_the_history(tmp_path: Path) -> None:
    stats, history, clock = make(tmp_path)
    stats.flush()
    stats.on_call("order-service", Outcome.TIMEOUT, 0.5)
    clock.advance(10)
    stats.flush()
    assert history.report()["services"]["order-service"]["requests_per_s"] == [0.0]
