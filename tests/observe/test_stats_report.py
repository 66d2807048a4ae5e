"""The ``/stats/*`` figures from merged counters (gateway/observe/stats_report.py): pure arithmetic."""

from __future__ import annotations

import pytest

from gateway.observe.stats_report import (
    COUNTED,
    LATENCY_BOUNDS_MS,
    breaker_report,
    breaker_state_fields,
    cache_report,
    latency_bin,
    percentile,
    rate_limit_counts,
    window_fields,
    with_state,
)


def test_latency_bins_are_fixed_and_ordered() -> None:
    assert latency_bin(0.0) == 0 and latency_bin(LATENCY_BOUNDS_MS[10]) == 10
    assert latency_bin(LATENCY_BOUNDS_MS[10] * 1.01) == 11
    assert latency_bin(10**9) == len(LATENCY_BOUNDS_MS)  # past the last bound: one overflow bin


def test_percentiles_interpolate_inside_their_bin() -> None:
    assert percentile({}, 50) == 0.0
    assert percentile({latency_bin(10.0): 1}, 99) == pytest.approx(10.0, rel=0.1)
    histogram = {latency_bin(1.0): 90, latency_bin(100.0): 10}
    assert percentile(histogram, 50) == pytest.approx(1.0, rel=0.1)
    assert percentile(histogram, 95) == pytest.approx(100.0, rel=0.1)
    assert percentile({len(LATENCY_BOUNDS_MS): 3}, 50) == LATENCY_BOUNDS_MS[-1]


def test_cache_figures_leave_bypasses_out_of_the_hit_rate() -> None:
    c = cache_report({"req": 10, "hit": 3, "miss": 1, "stale": 1, "revalidated": 1, "bypass": 4, "coalesced": 2,
                      "upstream": 5, "hit_us": 6000, "miss_us": 50_000}, 300)
    assert (c["requests"], c["hits"], c["bypass"], c["upstream_calls"], c["window_s"]) == (10, 3, 4, 5, 300)
    assert c["hit_rate"] == 50.0  # 3 hits of 6 lookups
    assert (c["avg_hit_latency_ms"], c["avg_miss_latency_ms"]) == (2.0, 50.0)
    assert c["keys"] is None and c["memory_used_bytes"] is None
    empty = cache_report({}, 300)
    assert (empty["hit_rate"], empty["avg_hit_latency_ms"], empty["requests"]) == (0.0, 0.0, 0)


def test_breaker_figures_from_window_and_totals() -> None:
    window = {"ok": 3, "fail": 1, "us": 40_000, f"h{latency_bin(10.0)}": 4}
    b = breaker_report(window, {"ok": 7, "fail": 2, "to": 1, "rej": 5}, 10.0)
    assert (b["fires"], b["successes"], b["failures"], b["timeouts"], b["rejects"]) == (14, 7, 2, 1, 5)
    assert (b["failure_rate"], b["window_calls"], b["window_s"], b["state"]) == (25.0, 4, 10.0, "CLOSED")
    assert b["latency_ms"]["mean"] == 10.0 and b["latency_ms"]["p99"] == pytest.approx(10.0, rel=0.1)
    assert breaker_report({}, {}, 10.0)["failure_rate"] == 0.0


def test_the_shared_breakers_own_counts_come_with_its_state() -> None:
    local = {"state": "OPEN", "opened_at": 5.0, "next_attempt_at": 35.0, "forced": None, "store": "memory",
             "fires": 99}
    assert breaker_state_fields(local) == {"state": "OPEN", "opened_at": 5.0, "next_attempt_at": 35.0, "forced": None}
    shared = {**local, "store": "redis", "window": {"calls": 4}, **{k: 1 for k in COUNTED}}
    fields = breaker_state_fields(shared)
    assert fields["counts"] == {**{k: 1 for k in COUNTED}, "window_calls": 4}
    report = with_state(breaker_report({}, {}, 10.0), fields, shared=True)
    assert (report["state"], report["fires"], report["window_calls"], report["counts_lagging"]) == ("OPEN", 1, 4, False)
    lagging = with_state(breaker_report({}, {}, 10.0), {"state": "CLOSED"}, shared=True)
    assert lagging["counts_lagging"] is True  # with Redis, flushed counts may trail the state
    assert with_state(breaker_report({}, {}, 10.0), {}, shared=False)["counts_lagging"] is False
    assert "counts" in fields  # the fields given are not changed


def test_window_fields_name_every_counter_a_reset_clears() -> None:
    fields = window_fields("orders")
    assert fields[:3] == ["orders|ok", "orders|fail", "orders|us"]
    assert len(fields) == 3 + len(LATENCY_BOUNDS_MS) + 1 and fields[-1] == f"orders|h{len(LATENCY_BOUNDS_MS)}"


def test_every_rate_limit_event_is_reported_even_when_it_never_happened() -> None:
    assert rate_limit_counts({"limited": 4, "other": 1}) == {
        "limited": 4, "redis_down_allowed": 0, "redis_down_refused": 0, "redis_down_local": 0}
