"""Health checks of a service with several targets."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway.clock import FakeClock
from gateway.config.settings import load_settings
from gateway.observe.target_health import LatestChecks, combine, merge, target_checks, target_key, with_targets

SERVICE = load_settings({}, {"services": {"menu": {"prefix": "/menus", "urls": ["http://a:1", "http://b:1"]}}}
                        ).services["menu"]


def test_each_target_is_kept_under_its_own_key_only_for_several_targets() -> None:
    checks = {"http://a:1": (True, 3.0), "http://b:1": (False, 2000.0)}
    assert target_checks(SERVICE, checks) == [("menu http://a:1", (True, 3.0)), ("menu http://b:1", (False, 2000.0))]
    assert target_checks(replace(SERVICE, urls=()), {"http://a:1": (True, 1.0)}) == []


def test_the_service_passes_while_any_target_passes() -> None:
    assert combine({"a": (False, 900.0), "b": (True, 4.0), "c": (True, 2.0)}) == (True, 2.0)
    assert combine({"a": (False, 900.0), "b": (False, 1000.0)}) == (False, 1000.0)


def test_checks_from_every_source_are_merged_in_time_order() -> None:
    assert merge([{"k": [(3.0, True, 1.0)]}, {"k": [(1.0, False, 2.0)], "other": [(2.0, True, 1.0)]}], "k") == [
        (1.0, False, 2.0), (3.0, True, 1.0)]


def summary(service: Any, checks: list[tuple[float, bool, float]], now: float) -> dict[str, Any]:
    status = "unknown" if not checks else ("healthy" if checks[-1][1] else "down")
    return {"status": status, "last_check": checks[-1][0] if checks else None, "latency_ms": None, "uptime_pct": None}


def test_a_healthy_service_with_a_target_down_reads_degraded() -> None:
    history = {target_key("menu", "http://a:1"): [(1.0, True, 1.0)],
               target_key("menu", "http://b:1"): [(1.0, False, 1.0)]}
    entry = with_targets({"status": "healthy"}, SERVICE, lambda key: history.get(key, []), 2.0, summary)
    assert entry["status"] == "degraded"
    assert {url: t["status"] for url, t in entry["targets"].items()} == {"http://a:1": "healthy", "http://b:1": "down"}
    off = with_targets({"status": "off"}, SERVICE, lambda key: history.get(key, []), 2.0, summary)
    assert off == {"status": "off"}


def test_latest_checks_read_the_file_at_most_every_half_second() -> None:
    clock = FakeClock(0.0)
    reads: list[int] = []
    data = {target_key("menu", "http://a:1"): [(1.0, True, 1.0), (2.0, False, 1.0)]}

    def read() -> dict[str, list[tuple[float, bool, float]]]:
        reads.append(1)
        return data

    latest = LatestChecks(read, clock)
    assert latest("menu", "http://a:1") == (2.0, False)
    assert latest("menu", "http://b:1") is None
    assert len(reads) == 1
    clock.advance(0.5)
    latest("menu", "http://a:1")
    assert len(reads) == 2
