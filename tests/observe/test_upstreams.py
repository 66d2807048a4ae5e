"""Retries and targets in ``/stats/upstreams``, the metrics and ``/health/services``, with two workers' books."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gateway.clock import FakeClock
from gateway.config.settings import load_settings
from gateway.http.targets import TargetSet
from gateway.observe.health import HealthMonitor
from gateway.observe.metrics import Metrics
from gateway.observe.stats import GatewayStats
from gateway.observe.target_health import LatestChecks
from gateway.observe.upstreams import UpstreamEvents
from tests.observe.test_health import Target

A, B = "http://10.0.0.1:4000", "http://10.0.0.2:4000"
SETTINGS = load_settings({}, {"services": {"menu": {
    "prefix": "/menus", "urls": [A, B], "retries": {"attempts": 3},
    "outlier_detection": {"consecutive_failures": 2, "ejection_time": 30}}}})


def worker(tmp_path: Path, clock: FakeClock) -> tuple[GatewayStats, TargetSet]:
    """One worker's stats and its menu targets, told of each other as the app wires them."""
    stats = GatewayStats(SETTINGS, None, clock, str(tmp_path), flush_interval=0, metrics=Metrics(SETTINGS))
    targets = TargetSet(SETTINGS.services["menu"], [None, None], clock, random.Random(1),
                        listeners=[UpstreamEvents(stats)])
    stats.upstream = SimpleNamespace(targets={"menu": targets})
    return stats, targets


def samples(stats: GatewayStats) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = stats.metrics.render()[0].decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_two_workers_counts_add_up_and_each_says_what_it_ejected(tmp_path: Path) -> None:
    clock = FakeClock()
    (first, first_targets), (second, second_targets) = worker(tmp_path, clock), worker(tmp_path, clock)
    events = UpstreamEvents(first)
    b = first_targets.targets[1]
    first_targets.record(b, False)
    first_targets.record(b, False)  # ejected in the first worker only
    second_targets.record(second_targets.targets[0], True)
    events.on_retry("menu")
    events.on_retry_refused("menu", "budget")
    second.flush()
    report = first.upstream_stats()["services"]["menu"]
    assert report["retried"] == 1 and report["retry_refused"] == {"budget": 1, "deadline": 0}
    assert report["balance"] == "round_robin" and report["retries"]["attempts"] == 3
    assert report["outlier_detection"] == {"consecutive_failures": 2, "ejection_time_s": 30,
                                           "max_ejection_time_s": 300}
    assert report["targets"][A] == {"state": "in", "ejected_workers": 0, "workers": 2, "ejected_until": None,
                                    "outstanding": 0, "attempts": 1, "failures": 0, "ejections": 0}
    assert report["targets"][B] == {"state": "ejected in some workers", "ejected_workers": 1, "workers": 2,
                                    "ejected_until": clock() + 30, "outstanding": 0, "attempts": 2, "failures": 2,
                                    "ejections": 1}
    seen = samples(first)
    assert seen[("gateway_upstream_attempts_total", (("outcome", "failure"), ("service", "menu"), ("target", B)))] == 2
    assert seen[("gateway_upstream_ejections_total", (("service", "menu"), ("target", B)))] == 1
    assert seen[("gateway_upstream_target_ejected", (("service", "menu"), ("target", B)))] == 1
    assert seen[("gateway_upstream_retries_total", (("service", "menu"),))] == 1
    assert seen[("gateway_upstream_retry_refusals_total", (("reason", "budget"), ("service", "menu")))] == 1
    clock.advance(31)  # the ejection is over, and nothing checks the target: it returns by time
    first.flush()
    assert first.upstream_stats()["services"]["menu"]["targets"][B]["state"] == "in"
    assert samples(first)[("gateway_upstream_target_ejected", (("service", "menu"), ("target", B)))] == 0


def test_a_one_url_service_has_one_target_and_no_balancing(tmp_path: Path) -> None:
    stats, _ = worker(tmp_path, FakeClock())
    orders = stats.upstream_stats()["services"]["order-service"]
    assert orders["balance"] is None and orders["retries"] is None and orders["outlier_detection"] is None
    assert list(orders["targets"]) == ["http://127.0.0.1:3002"]


def test_each_target_is_checked_and_the_service_is_degraded_while_one_fails(tmp_path: Path) -> None:
    up, down = Target(), Target()
    down.status = 503
    try:
        settings = load_settings({}, {"services": {"menu": {"prefix": "/menus", "urls": [up.url, down.url]}}})
        clock = FakeClock()
        monitor = HealthMonitor(settings, clock, str(tmp_path), interval=1, timeout=1)
        menu = settings.services["menu"]
        monitor.poll_once([menu])
        entry = monitor.services()["services"]["menu"]
        assert entry["status"] == "degraded" and entry["checks"] == 1  # the service answers, one target does not
        assert {url: t["status"] for url, t in entry["targets"].items()} == {up.url: "healthy", down.url: "degraded"}
        assert up.hits == 1 and down.hits == 1
        assert monitor.latest_check("menu", down.url) == (monitor.clock(), False)
        up.status = 503
        for _ in range(3):
            clock.advance(1)
            monitor.poll_once([menu])
        entry = monitor.services()["services"]["menu"]
        assert entry["status"] == "down"  # every target failing
    finally:
        up.close()
        down.close()


def test_latest_checks_are_read_at_most_twice_a_second() -> None:
    reads: list[int] = []
    clock = FakeClock()

    def read() -> dict[str, Any]:
        reads.append(1)
        return {"menu http://a": [(1.0, False, 2.0), (2.0, True, 2.0)]}

    latest = LatestChecks(read, clock)
    assert latest("menu", "http://a") == (2.0, True) and latest("menu", "http://b") is None
    clock.advance(0.4)
    latest("menu", "http://a")
    assert len(reads) == 1
    clock.advance(0.1)
    latest("menu", "http://a")
    assert len(reads) == 2
