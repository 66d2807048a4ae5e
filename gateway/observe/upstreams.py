"""Retries and upstream targets as operators see them: ``/stats/upstreams``, Prometheus, the dashboard.

The upstream client tells :class:`UpstreamEvents` (its listener) of every attempt, retry, refused
retry, ejection and return. Counts go two ways: cumulative counters of the stats (family ``up/``,
summed over every worker and, with Redis, every instance) and Prometheus metrics with a ``target``
label (the target's configured URL: a bounded set). Whether a target is out of rotation is per
worker process; each worker publishes its view with its stats snapshot, and ``/stats/upstreams``
says in how many of this instance's live workers each target is ejected.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.config.settings import Settings
from gateway.config.upstream import service_targets

UPSTREAM_FAMILY = "up/"  # cumulative counters "up/<service>|retries", "up/<service>@<url>|ok"...
REFUSALS = ("budget", "deadline")
TargetStates = dict[str, dict[str, dict[str, Any]]]  # service -> target url -> ejected, ejected_until, outstanding


class UpstreamMetrics:
    """The Prometheus side: retries and refusals per service, attempts and ejections per target."""

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.retries = Counter("gateway_upstream_retries", "Attempts after the first one of a request (retries).",
                               ["service"], registry=registry)
        self.refusals = Counter("gateway_upstream_retry_refusals",
                                "Retries not made: budget (the service's retry budget was spent), deadline "
                                "(too little of the service's timeout left).", ["service", "reason"], registry=registry)
        self.attempts = Counter("gateway_upstream_attempts",
                                "Upstream attempts per target: success (an answer under 500), failure (5xx, "
                                "timeout, no answer).", ["service", "target", "outcome"], registry=registry)
        self.ejections = Counter("gateway_upstream_ejections", "Targets taken out of rotation by outlier detection.",
                                 ["service", "target"], registry=registry)
        self.ejected = Gauge("gateway_upstream_target_ejected", "1 while a target is out of rotation (in any live "
                             "worker).", ["service", "target"], registry=registry, multiprocess_mode="livemax")
        for name, service in settings.services.items():
            if service.retries is not None:
                self.retries.labels(name)
                for reason in REFUSALS:
                    self.refusals.labels(name, reason)
            for url in service_targets(service):
                for outcome in ("success", "failure"):
                    self.attempts.labels(name, url, outcome)
        self._pending: dict[tuple[str, ...], int] = {}  # (kind, labels...) -> count, written by flush
        self._lock = threading.Lock()

    def count(self, *key: str) -> None:
        """Add one to ``("retry", service)``, ``("refusal", service, reason)``, ``("attempt", service, url, outcome)``
        or ``("ejection", service, url)`` (written to the metric values by :meth:`flush`)."""
        with self._lock:
            self._pending[key] = self._pending.get(key, 0) + 1

    def flush(self) -> None:
        """Write the counts added since the last flush."""
        with self._lock:
            pending, self._pending = self._pending, {}
        metric = {"retry": self.retries, "refusal": self.refusals, "attempt": self.attempts,
                  "ejection": self.ejections}
        for (kind, *labels), count in pending.items():
            metric[kind].labels(*labels).inc(count)

    def publish(self, states: TargetStates) -> None:
        """Set the ejected gauge of every target of the services with several targets."""
        for name, targets in states.items():
            if len(targets) > 1:
                for url, state in targets.items():
                    self.ejected.labels(name, url).set(state.get("ejected", 0))


class UpstreamEvents:
    """The upstream client's listener: each event counted in the stats and the metrics."""

    def __init__(self, stats: Any) -> None:
        self.stats = stats  # gateway.observe.stats.GatewayStats

    def _count(self, field: str, *metric: str) -> None:
        self.stats.count(UPSTREAM_FAMILY + field)
        upstream = getattr(self.stats.metrics, "upstream", None)
        if upstream is not None:
            upstream.count(*metric)

    def on_attempt(self, service: str, target: str, ok: bool) -> None:
        self._count(f"{service}@{target}|{'ok' if ok else 'fail'}", "attempt", service, target,
                    "success" if ok else "failure")

    def on_retry(self, service: str) -> None:
        self._count(f"{service}|retries", "retry", service)

    def on_retry_refused(self, service: str, reason: str) -> None:
        self._count(f"{service}|refused_{reason}", "refusal", service, reason)

    def on_eject(self, service: str, target: str, seconds: float) -> None:
        self._count(f"{service}@{target}|ejections", "ejection", service, target)


def target_states(upstream: Any) -> TargetStates:
    """This worker's view of every service's targets (``{}`` without an upstream client)."""
    sets = getattr(upstream, "targets", None) or {}
    return {name: targets.snapshot() for name, targets in sets.items()}


def upstream_report(settings: Settings, cumulative: Mapping[str, int], views: list[TargetStates]) -> dict[str, Any]:
    """``/stats/upstreams``: per service its balancing, retry and ejection settings, counts and targets.

    ``cumulative`` holds the gateway-wide ``up/`` counters; ``views`` one :func:`target_states` per
    live worker of this instance.
    """
    def counter(field: str) -> int:
        return int(cumulative.get(UPSTREAM_FAMILY + field, 0))

    services: dict[str, Any] = {}
    for name, service in settings.services.items():
        retries, outlier = service.retries, service.outlier
        targets: dict[str, Any] = {}
        for url in service_targets(service):
            seen = [view[name][url] for view in views if url in view.get(name, {})]
            ejected = sum(1 for state in seen if state.get("ejected"))
            until = [state["ejected_until"] for state in seen if state.get("ejected_until")]
            ok, failed = counter(f"{name}@{url}|ok"), counter(f"{name}@{url}|fail")
            targets[url] = {
                "state": "in" if not ejected else ("ejected" if ejected == len(seen) else "ejected in some workers"),
                "ejected_workers": ejected, "workers": len(seen), "ejected_until": max(until) if until else None,
                "outstanding": sum(int(state.get("outstanding") or 0) for state in seen),
                "attempts": ok + failed, "failures": failed, "ejections": counter(f"{name}@{url}|ejections"),
            }
        services[name] = {
            "balance": service.balance if service.urls else None,
            "retries": None if retries is None else {
                "attempts": retries.attempts, "backoff_s": {"base": retries.backoff_base, "max": retries.backoff_max},
                "budget": {"percent": retries.budget.percent, "min_retries": retries.budget.min_retries,
                           "window_s": retries.budget.window}},
            "outlier_detection": None if outlier is None or not service.urls else {
                "consecutive_failures": outlier.consecutive_failures, "ejection_time_s": outlier.ejection_time,
                "max_ejection_time_s": outlier.max_ejection_time},
            "retried": counter(f"{name}|retries"),
            "retry_refused": {reason: counter(f"{name}|refused_{reason}") for reason in REFUSALS},
            "targets": targets,
        }
    return {"services": services}
