"""The last 15 minutes per service, for the dashboard's charts: ``GET /stats/history``.

Nothing is added to the request path. Every ``STATS_HISTORY_INTERVAL`` seconds one worker per
instance (whichever holds an ``flock`` on ``history.lock`` in the run directory; another takes over
when it dies) reads the instance's running totals from the Prometheus metrics, which already sum
every worker, and keeps the difference from its last reading as one point: request rate, share of
5xx answers, p95 latency (from the duration histogram's buckets, as ``histogram_quantile`` does)
and cache hit rate (hits of lookups, the base of every hit rate the gateway shows), plus the
breaker's state and any state changes in between. Points older than 15 minutes are dropped, so the
memory and the ``history.json`` file every worker reads stay bounded.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import threading
from collections.abc import Mapping
from typing import Any

from gateway.clock import Clock, system_clock
from gateway.observe.instance import atomic_write, try_flock
from gateway.observe.metrics import Metrics

log = logging.getLogger("gateway.stats")

WINDOW_S = 900  # fifteen minutes
FILE = "history.json"
FIELDS = ("requests_per_s", "error_pct", "p95_ms", "cache_hit_pct", "state", "changes")


def quantile(q: float, buckets: Mapping[str, float]) -> float | None:
    """The ``q`` quantile of a cumulative histogram ``{le: count}``, interpolated as Prometheus does."""
    edges = sorted((math.inf if le == "+Inf" else float(le), count) for le, count in buckets.items())
    if not edges or edges[-1][1] <= 0:
        return None
    rank = q * edges[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in edges:
        if count >= rank:
            if math.isinf(upper):
                return lower  # beyond the last finite bound: that bound is all one can say
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def point(before: Mapping[str, Any], after: Mapping[str, Any], seconds: float) -> list[Any]:
    """One service's chart values between two readings of its totals (see :data:`FIELDS`)."""

    def delta(key: str) -> float:
        now, then = float(after.get(key, 0.0)), float(before.get(key, 0.0))
        return now if now < then else now - then  # totals that went down were reset: count from zero

    requests, errors, hits, lookups = delta("req"), delta("err"), delta("hit"), delta("lookup")
    old_le, new_le = before.get("le", {}), after.get("le", {})
    reset = any(new_le.get(le, 0.0) < count for le, count in old_le.items())
    buckets = {le: count - (0.0 if reset else old_le.get(le, 0.0)) for le, count in new_le.items()}
    p95 = quantile(0.95, buckets)
    old_trans, new_trans = before.get("trans", {}), after.get("trans", {})
    changes = sorted({key.split(">")[1] for key, count in new_trans.items() if count > old_trans.get(key, 0.0)})
    return [
        round(requests / seconds, 3) if seconds > 0 else 0.0,
        round(100.0 * errors / requests, 2) if requests else None,
        round(p95 * 1000, 3) if p95 is not None else None,
        round(100.0 * hits / lookups, 2) if lookups else None,
        after.get("state", "CLOSED"),
        changes,
    ]


class StatsHistory:
    """Samples the instance's totals into 15 minutes of points (when elected) and reports them."""

    def __init__(self, metrics: Metrics, run_dir: str, interval: float, clock: Clock = system_clock) -> None:
        self.metrics = metrics
        self.run_dir = run_dir
        self.interval = interval
        self.clock = clock
        self._next = 0.0
        self._lock_fd: int | None = None
        self._sampling = threading.Lock()
        self._last: dict[str, Any] | None = None  # {"t": ..., "totals": ...}: the previous reading
        self._points: list[dict[str, Any]] = []

    def maybe_sample(self) -> None:
        """Take a point when one is due and this worker is the instance's sampler (cheap otherwise)."""
        now = self.clock()
        if now < self._next:
            return
        self._next = now + self.interval
        if self._lock_fd is None and not self._acquire():
            return
        with self._sampling:
            self.sample(now)

    def _acquire(self) -> bool:
        fd = try_flock(os.path.join(self.run_dir, "history.lock"))
        if fd is None:
            return False
        self._lock_fd = fd
        document = self._read()  # take over where the last sampler stopped
        self._last = document.get("last")
        self._points = list(document.get("points", []))
        return True

    def release(self) -> None:
        """Give up sampling (tests, shutdown): another worker takes over."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def sample(self, now: float) -> None:
        """Read the totals, add the point since the previous reading, drop what is past the window, publish."""
        totals = self.metrics.history_totals()
        last = self._last
        if last is not None and 0 < now - float(last["t"]) <= WINDOW_S:
            seconds = now - float(last["t"])
            before = last["totals"]
            services = {name: point(before.get(name, {}), entry, seconds) for name, entry in totals.items()}
            self._points.append({"t": round(now, 3), "s": round(seconds, 3), "services": services})
        self._last = {"t": now, "totals": totals}
        self._points = [p for p in self._points if float(p["t"]) > now - WINDOW_S]
        data = json.dumps({"interval_s": self.interval, "last": self._last, "points": self._points},
                          separators=(",", ":")).encode()
        atomic_write(os.path.join(self.run_dir, FILE), data)

    def _read(self) -> dict[str, Any]:
        try:
            with open(os.path.join(self.run_dir, FILE), "rb") as handle:
                document = json.loads(handle.read())
        except (OSError, ValueError):
            return {}
        return document if isinstance(document, dict) else {}

    def report(self) -> dict[str, Any]:
        """``/stats/history``: per service, one array per field, oldest point first, over the last 15 minutes."""
        now = self.clock()
        points = [p for p in self._read().get("points", []) if isinstance(p, dict) and float(p["t"]) > now - WINDOW_S]
        services: dict[str, Any] = {}
        for name in self.metrics.settings.services:
            rows = [p["services"].get(name) for p in points]
            columns: dict[str, list[Any]] = {field: [] for field in FIELDS}
            for row in rows:
                for field, value in zip(FIELDS, row or [0.0, None, None, None, "CLOSED", []], strict=True):
                    columns[field].append(value)
            services[name] = columns
        return {"window_s": WINDOW_S, "interval_s": self.interval, "now": now,
                "t": [p["t"] for p in points], "services": services}
