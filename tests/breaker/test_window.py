"""The breaker's rolling window: bucket layout, counts rolling out, latency percentiles, the snapshot."""

from __future__ import annotations

import pytest

from gateway.breaker.window import (
    LATENCY_SAMPLES_PER_BUCKET,
    RollingWindow,
    WindowTotals,
    bucket_layout,
    build_snapshot,
    latency_summary,
)


@pytest.mark.parametrize(("window", "layout"), [(10, (1.0, 10)), (10.5, (1.0, 11)), (0.5, (0.05, 10)),
                                                (1, (0.1, 10)), (60, (1.0, 60))])
def test_one_second_buckets_finer_below_ten_seconds(window: float, layout: tuple[float, int]) -> None:
    width, count = bucket_layout(window)
    assert (width, count) == pytest.approx(layout)


def test_counts_roll_out_bucket_by_bucket() -> None:
    window = RollingWindow(10)
    window.record(100.2, failed=True, timed_out=False, latency_s=0.01)
    window.record(104.9, failed=False, timed_out=False, latency_s=0.02)
    window.reject(105.0)
    totals = window.totals(109.9)
    assert (totals.calls, totals.failures, totals.rejects) == (2, 1, 1)
    assert totals.latency_ms == pytest.approx(30)
    assert window.totals(110.0).calls == 1  # the bucket of 100.2 has left the window
    assert window.totals(115.0).calls == 0 and window.totals(115.0).rejects == 0
    assert window.samples(115.0) == []


def test_timeouts_and_samples_are_kept_per_bucket() -> None:
    window = RollingWindow(1)
    window.record(5.0, failed=True, timed_out=True, latency_s=0.5)
    assert (window.totals(5.05).timeouts, window.samples(5.05)) == (1, [500.0])
    for _ in range(LATENCY_SAMPLES_PER_BUCKET + 10):
        window.record(5.0, failed=False, timed_out=False, latency_s=0.001)
    assert len(window.samples(5.0)) == LATENCY_SAMPLES_PER_BUCKET  # bounded, the newest kept
    assert window.totals(5.0).calls == LATENCY_SAMPLES_PER_BUCKET + 11  # counts stay exact
    window.clear()
    assert window.totals(5.0) == WindowTotals()


def test_latency_summary_is_exact_mean_and_nearest_rank() -> None:
    assert latency_summary(0, 0, []) == {"mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0}
    samples = [float(ms) for ms in range(1, 101)]
    assert latency_summary(sum(samples), 100, reversed(samples)) == {"mean": 50.5, "p50": 50.0, "p95": 95.0,
                                                                     "p99": 99.0}
    assert latency_summary(7.0, 1, [7.0]) == {"mean": 7.0, "p50": 7.0, "p95": 7.0, "p99": 7.0}


def test_snapshot_fields() -> None:
    totals = {"successes": 5, "failures": 3, "timeouts": 1, "rejects": 2}
    window = WindowTotals(calls=4, failures=1, timeouts=1, rejects=2, latency_ms=40.0)
    snap = build_snapshot(state="OPEN", forced=False, totals=totals, window=window, samples=[10.0, 30.0],
                          opened_at=1.5, next_attempt_at=31.5, store="local")
    assert (snap["fires"], snap["failure_rate"], snap["store"]) == (10, 25.0, "local")
    assert snap["window"] == {"calls": 4, "failures": 1, "timeouts": 1, "rejects": 2}
    assert snap["latency_ms"]["mean"] == 10.0 and snap["latency_ms"]["p99"] == 30.0
    empty = build_snapshot(state="CLOSED", forced=False, totals=dict.fromkeys(totals, 0), window=WindowTotals(),
                           samples=[], opened_at=None, next_attempt_at=None, store="redis")
    assert empty["failure_rate"] == 0.0 and empty["fires"] == 0
