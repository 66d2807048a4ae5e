"""Turn merged counters into the ``/stats/*`` figures: pure functions, no I/O.

Counter names: per-second cache buckets hold ``req``, ``hit``, ``miss``, ``stale``, ``revalidated``,
``bypass``, ``coalesced``, ``upstream`` and the latency sums ``hit_us``/``miss_us``; breaker window
buckets hold ``<service>|ok``, ``|fail``, ``|us`` (latency sum) and ``|h<bin>`` (latency histogram);
cumulative breaker counters are ``<service>|ok``, ``|fail`` (timeouts included), ``|to`` and ``|rej``;
cumulative rate-limit counters are ``rl/<service>|<event>`` (one of ``RATE_LIMIT_EVENTS``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from typing import Any

# Latency histogram bounds in milliseconds, 10 % apart (0.05 ms .. ~70 s): fixed, so histograms of
# different workers add up field by field and percentiles come out within a few percent.
LATENCY_BOUNDS_MS = tuple(0.05 * 1.1**i for i in range(150))
RATE_LIMIT_EVENTS = ("limited", "redis_down_allowed", "redis_down_refused", "redis_down_local")
# The breaker's own figures shown next to its state (latency stays with the stats' histograms).
COUNTED = ("fires", "successes", "failures", "timeouts", "rejects", "failure_rate")


def latency_bin(ms: float) -> int:
    """Index of the histogram bucket that holds a latency of ``ms`` milliseconds."""
    return bisect.bisect_left(LATENCY_BOUNDS_MS, ms)


def percentile(histogram: Mapping[int, int], p: float) -> float:
    """The ``p``-th percentile (nearest rank, interpolated inside its bucket) of a latency histogram."""
    total = sum(histogram.values())
    if total <= 0:
        return 0.0
    rank = max(1, math.ceil(p / 100 * total))
    seen = 0
    for index in sorted(histogram):
        count = histogram[index]
        if seen + count >= rank:
            if index >= len(LATENCY_BOUNDS_MS):
                return LATENCY_BOUNDS_MS[-1]
            lower = LATENCY_BOUNDS_MS[index - 1] if index > 0 else 0.0
            upper = LATENCY_BOUNDS_MS[index]
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return LATENCY_BOUNDS_MS[-1]


def cache_report(c: Mapping[str, int], window_s: int) -> dict[str, Any]:
    """``/stats/cache`` figures from the summed cache counters of the window."""
    hits, misses = c.get("hit", 0), c.get("miss", 0)
    # hit_rate is over cache lookups (HIT, MISS, REVALIDATED, STALE): a BYPASS was never looked up.
    lookups = hits + misses + c.get("stale", 0) + c.get("revalidated", 0)
    return {
        "window_s": window_s,
        "requests": c.get("req", 0),
        "hits": hits,
        "misses": misses,
        "stale": c.get("stale", 0),
        "revalidated": c.get("revalidated", 0),
        "bypass": c.get("bypass", 0),
        "coalesced": c.get("coalesced", 0),
        "upstream_calls": c.get("upstream", 0),
        "hit_rate": round(hits * 100.0 / lookups, 2) if lookups else 0.0,
        "avg_hit_latency_ms": round(c.get("hit_us", 0) / hits / 1000, 3) if hits else 0.0,
        "avg_miss_latency_ms": round(c.get("miss_us", 0) / misses / 1000, 3) if misses else 0.0,
        "keys": None,
        "memory_used_bytes": None,
    }


def breaker_report(window: Mapping[str, int], totals: Mapping[str, int], window_s: float) -> dict[str, Any]:
    """``/stats/circuit-breakers`` counters of one service (state fields are added by the caller)."""
    calls = window.get("ok", 0) + window.get("fail", 0)
    histogram = {int(k[1:]): v for k, v in window.items() if k.startswith("h")}
    successes, failures, rejects = totals.get("ok", 0), totals.get("fail", 0), totals.get("rej", 0)
    return {
        "state": "CLOSED",
        "fires": successes + failures + rejects,
        "successes": successes,
        "failures": failures,
        "timeouts": totals.get("to", 0),
        "rejects": rejects,
        "failure_rate": round(window.get("fail", 0) * 100.0 / calls, 2) if calls else 0.0,
        "latency_ms": {
            "mean": round(window.get("us", 0) / calls / 1000, 3) if calls else 0.0,
            "p50": round(percentile(histogram, 50), 3),
            "p95": round(percentile(histogram, 95), 3),
            "p99": round(percentile(histogram, 99), 3),
        },
        "opened_at": None,
        "next_attempt_at": None,
        "window_s": window_s,
        "window_calls": calls,
    }


def with_state(report: dict[str, Any], state: Mapping[str, Any], shared: bool) -> dict[str, Any]:
    """A breaker's ``report`` with its state fields; the shared breaker's own counters replace the flushed ones.

    With Redis (``shared``), counts from the workers' flushes may trail the state by up to a second
    (Redis unreachable, or no breaker to read): ``counts_lagging`` says so. Without it, each worker's
    state and counts are published together.
    """
    fields = dict(state)
    counts = fields.pop("counts", None)
    if counts is not None:
        report.update(counts)  # read with the state, by the same Redis script
    report["counts_lagging"] = counts is None and shared
    report.update(fields)
    return report


def window_fields(service: str) -> list[str]:
    """Every window counter of ``service``'s breaker: ``ok``, ``fail``, ``us`` and each latency bin."""
    return [f"{service}|{f}" for f in ("ok", "fail", "us")] + [
        f"{service}|h{i}" for i in range(len(LATENCY_BOUNDS_MS) + 1)]


def breaker_state_fields(snap: Mapping[str, Any]) -> dict[str, Any]:
    """The state fields of a breaker's snapshot; for the shared breaker, its counters too (``counts``)."""
    fields = {k: snap[k] for k in ("state", "opened_at", "next_attempt_at", "forced") if k in snap}
    if snap.get("store") == "redis":  # the shared breaker: its counters came with its state
        counts = {k: snap[k] for k in COUNTED}
        counts["window_calls"] = snap["window"]["calls"]
        fields["counts"] = counts
    return fields


def rate_limit_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """Every rate-limiting event of one service since start (zero for one that never happened)."""
    return {event: counts.get(event, 0) for event in RATE_LIMIT_EVENTS}
