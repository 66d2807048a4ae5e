"""The breaker's rolling window (one bucket per second, finer for sub-second windows) and its snapshot."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

LATENCY_SAMPLES_PER_BUCKET = 256  # bounds memory under load; percentiles come from the latest samples


def bucket_layout(rolling_window: float) -> tuple[float, int]:
    """Return (bucket width in seconds, bucket count): one-second buckets, finer for sub-second windows."""
    width = min(1.0, rolling_window / 10)
    return width, max(1, math.ceil(rolling_window / width - 1e-9))


def latency_summary(total_ms: float, calls: int, samples: Iterable[float]) -> dict[str, float]:
    """Return mean (exact) and nearest-rank p50/p95/p99 of the sampled latencies, in milliseconds."""
    ordered = sorted(samples)
    if not calls or not ordered:
        return {"mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0}

    def rank(p: float) -> float:
        return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)], 3)

    return {"mean": round(total_ms / calls, 3), "p50": rank(50), "p95": rank(95), "p99": rank(99)}


class _Bucket:
    __slots__ = ("calls", "failures", "timeouts", "rejects", "latency_ms", "samples")

    def __init__(self) -> None:
        self.calls = self.failures = self.timeouts = self.rejects = 0
        self.latency_ms = 0.0
        self.samples: deque[float] = deque(maxlen=LATENCY_SAMPLES_PER_BUCKET)


@dataclass
class WindowTotals:
    """Sums over the buckets of the rolling window."""

    calls: int = 0
    failures: int = 0
    timeouts: int = 0
    rejects: int = 0
    latency_ms: float = 0.0


class RollingWindow:
    """Calls, failures, timeouts, rejects and latencies over the last ``rolling_window`` seconds."""

    def __init__(self, rolling_window: float) -> None:
        self.width, self.count = bucket_layout(rolling_window)
        self._buckets: dict[int, _Bucket] = {}
        self._current: tuple[int, _Bucket] | None = None  # the last bucket counted into, and its index

    def _bucket(self, now: float) -> _Bucket:
        """The bucket of ``now``; buckets gone out of the window are dropped when a new one begins."""
        index = math.floor(now / self.width)
        current = self._current
        if current is not None and current[0] == index:
            return current[1]  # the same bucket as the call before: nothing has left the window since
        for old in [i for i in self._buckets if i <= index - self.count]:
            del self._buckets[old]
        bucket = self._buckets.setdefault(index, _Bucket())
        self._current = (index, bucket)
        return bucket

    def record(self, now: float, failed: bool, timed_out: bool, latency_s: float) -> None:
        """Count one completed call."""
        bucket = self._bucket(now)
        bucket.calls += 1
        bucket.failures += failed
        bucket.timeouts += timed_out
        bucket.latency_ms += latency_s * 1000
        bucket.samples.append(latency_s * 1000)

    def reject(self, now: float) -> None:
        """Count one call refused while open."""
        self._bucket(now).rejects += 1

    def _live(self, now: float) -> Iterator[_Bucket]:
        index = math.floor(now / self.width)
        return (b for i, b in self._buckets.items() if index - self.count < i <= index)

    def totals(self, now: float) -> WindowTotals:
        """Sum the buckets still inside the window."""
        total = WindowTotals()
        for b in self._live(now):
            total.calls += b.calls
            total.failures += b.failures
            total.timeouts += b.timeouts
            total.rejects += b.rejects
            total.latency_ms += b.latency_ms
        return total

    def samples(self, now: float) -> list[float]:
        """Latency samples (ms) inside the window."""
        return [s for b in self._live(now) for s in b.samples]

    def clear(self) -> None:
        """Start a fresh window."""
        self._buckets.clear()
        self._current = None


def build_snapshot(*, state: str, forced: bool, totals: dict[str, int], window: WindowTotals,
                   samples: Iterable[float], opened_at: float | None, next_attempt_at: float | None,
                   store: str) -> dict[str, Any]:
    """Assemble one breaker's ``/stats/circuit-breakers`` fields (plus window counts, ``forced``, ``store``)."""
    calls = window.calls
    return {
        "state": state,
        "fires": totals["successes"] + totals["failures"] + totals["rejects"],
        "successes": totals["successes"],
        "failures": totals["failures"],
        "timeouts": totals["timeouts"],
        "rejects": totals["rejects"],
        "failure_rate": round(window.failures * 100.0 / calls, 2) if calls else 0.0,
        "latency_ms": latency_summary(window.latency_ms, calls, samples),
        "opened_at": opened_at,
        "next_attempt_at": next_attempt_at,
        "forced": forced,
        "window": {"calls": calls, "failures": window.failures, "timeouts": window.timeouts,
                   "rejects": window.rejects},
        "store": store,
    }
