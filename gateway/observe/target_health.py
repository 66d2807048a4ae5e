"""Health checks of a service with several targets: each target checked, the service judged on all of them.

Each target of such a service gets its own check, kept in the health histories under
``"<service> <url>"`` (a service name has no spaces). The service's own check passes when any of its
targets passed (it can still answer), so it is ``down`` only when every target is; while it is
``healthy`` but one of its targets is not, it reads ``degraded``. ``/health/services`` lists the
targets under the service.

Every worker's upstream client asks :class:`LatestChecks` for the latest check of an ejected target
(``gateway.http.targets``: a target whose ejection is over stays out while the checks made since it
was ejected fail); it reads the poller's health file, at most once every half second.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.config.settings import ServiceConfig

Check = tuple[float, bool, float]  # (epoch seconds, passed, latency in ms), as in gateway.observe.health
Result = tuple[bool, float]  # one check: passed, latency in ms
READ_EVERY_S = 0.5


def target_key(service: str, url: str) -> str:
    """Where one target's checks are kept among the health histories."""
    return f"{service} {url}"


def target_checks(service: ServiceConfig, checks: Mapping[str, Result]) -> list[tuple[str, Result]]:
    """Each target's check under its key, for a service with several targets (none for a service with one)."""
    return [(target_key(service.name, url), check) for url, check in checks.items()] if service.urls else []


def combine(checks: Mapping[str, Result]) -> Result:
    """The service's check from its targets': passed when any passed, at the fastest passing latency."""
    passed = [ms for ok, ms in checks.values() if ok]
    return (True, min(passed)) if passed else (False, max(ms for _, ms in checks.values()))


def merge(sources: Sequence[Mapping[str, list[Check]]], key: str) -> list[Check]:
    """The checks kept under ``key`` in every source (this instance's file, other instances'), in time order."""
    return sorted(c for source in sources for c in source.get(key, []))


def with_targets(entry: dict[str, Any], service: ServiceConfig, history: Callable[[str], list[Check]], now: float,
                 summarize: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """A service's ``/health/services`` entry with its targets (when it has several) and their worst status."""
    if not service.urls or entry["status"] == "off":
        return entry
    targets = {}
    for url in service.urls:
        one = summarize(service, history(target_key(service.name, url)), now)
        targets[url] = {k: one[k] for k in ("status", "last_check", "latency_ms", "uptime_pct")}
    if entry["status"] == "healthy" and any(t["status"] not in ("healthy", "unknown") for t in targets.values()):
        entry = {**entry, "status": "degraded"}
    return {**entry, "targets": targets}


class LatestChecks:
    """``(service, url)`` -> the latest check of that target (epoch seconds, passed), from the poller's file."""

    def __init__(self, read: Callable[[], dict[str, list[Check]]], clock: Callable[[], float] = time.monotonic) -> None:
        self.read = read
        self.clock = clock
        self._latest: dict[str, tuple[float, bool]] = {}
        self._read_at: float | None = None

    def __call__(self, service: str, url: str) -> tuple[float, bool] | None:
        now = self.clock()
        if self._read_at is None or now - self._read_at >= READ_EVERY_S:
            self._latest = {key: (checks[-1][0], checks[-1][1]) for key, checks in self.read().items() if checks}
            self._read_at = now
        return self._latest.get(target_key(service, url))
