"""A service's upstream targets: which one takes the next attempt, and which are out of rotation for a while.

Balancing, per ``balance``:

* ``round_robin``: each target in turn;
* ``least_outstanding``: the power of two choices — two targets drawn at random, the one with fewer
  attempts in flight (connect to end of body) wins, so a slow target gets less without every
  worker herding onto the same idle one.

Passive outlier detection (``outlier_detection``), as Envoy's consecutive-failure rule: a target whose
last ``consecutive_failures`` attempts failed (connect error, timeout, no answer, any 5xx) is ejected:
no attempt goes to it for ``ejection_time`` seconds, doubled at each ejection that follows one
within ``max_ejection_time`` of its return (up to ``max_ejection_time``). A target is never ejected
while it is the last one in rotation: if every target is failing they all stay in, and the requests'
failures reach the breaker. Once its time is up a target returns, unless the service's health
checker has checked it since it was ejected and the latest of those checks failed: then it stays
out until a check passes. A returned target is on probation: its first failure ejects it again.

The breaker judges the service, not one target: a failure on a target while another target is in
good standing (in rotation, its last attempt a success) is *spared* — it counts against that target
here, and the breaker records the call as answered. With one target nothing is ever spared, ejected
or balanced, so a one-``url`` service behaves as before.

State is per worker process (each worker ejects on what it sees). Under gevent a worker's greenlets
share one thread, so the plain counters need no lock.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from typing import Any

from gateway.clock import Clock, system_clock
from gateway.config.settings import ServiceConfig
from gateway.config.upstream import service_targets

log = logging.getLogger("gateway.upstream")

HealthLookup = Callable[[str, str], "tuple[float, bool] | None"]
"""``(service, target url)`` -> the latest health check of that target (epoch seconds, passed), if any."""


def tell(listeners: Iterable[Any], hook: str, *args: Any) -> None:
    """Call ``hook`` on every listener that has it; a failing listener never fails a request."""
    for listener in listeners:
        method = getattr(listener, hook, None)
        if method is not None:
            try:
                method(*args)
            except Exception:  # counting must never fail a request
                log.exception("upstream listener %s failed", hook)


class Target:
    """One upstream URL of a service and what the gateway knows of it in this worker."""

    __slots__ = ("url", "pool", "outstanding", "failures", "ejected_at", "ejected_until", "streak",
                 "returned_at", "probation", "last_ok")

    def __init__(self, url: str, pool: Any) -> None:
        self.url = url
        self.pool = pool  # gateway.http.upstream.ServicePool: the idle connections to this URL
        self.outstanding = 0  # attempts in flight, from connect to the end of the body
        self.failures = 0  # consecutive failed attempts
        self.ejected_at: float | None = None
        self.ejected_until: float | None = None
        self.streak = 0  # ejections in a row (each one doubles the next ejection time)
        self.returned_at: float | None = None
        self.probation = False
        self.last_ok = True

    @property
    def ejected(self) -> bool:
        return self.ejected_until is not None


class TargetSet:
    """Picks the target of each attempt and keeps the outlier-detection books of one service."""

    def __init__(self, service: ServiceConfig, pools: Iterable[Any], clock: Clock = system_clock,
                 rng: random.Random | None = None, health: HealthLookup | None = None,
                 listeners: list[Any] | None = None) -> None:
        self.service = service.name
        self.outlier = service.outlier
        self.least_outstanding = service.balance == "least_outstanding"
        self.targets = [Target(url, pool) for url, pool in zip(service_targets(service), pools, strict=True)]
        self.clock = clock
        self.rng = rng or random.Random()
        self.health = health
        self.listeners: list[Any] = listeners if listeners is not None else []
        self._turn = 0

    # -- choosing ---------------------------------------------------------------------------------

    def pick(self, tried: Iterable[Target] = ()) -> Target:
        """The target of the next attempt: one in rotation, preferring those this request has not tried."""
        targets = self.targets
        if len(targets) == 1:
            return targets[0]
        now = self.clock()
        rotation = [t for t in targets if self._in_rotation(t, now)] or targets
        fresh = [t for t in rotation if t not in tried] or rotation
        if self.least_outstanding:
            if len(fresh) == 1:
                return fresh[0]
            first, second = self.rng.sample(fresh, 2)
            return second if second.outstanding < first.outstanding else first
        for _ in range(len(targets)):  # the next one in turn that is a candidate
            target = targets[self._turn % len(targets)]
            self._turn += 1
            if target in fresh:
                return target
        return fresh[0]

    def _in_rotation(self, target: Target, now: float) -> bool:
        """Whether ``target`` may take attempts now; an ejection that is over ends here (lazily)."""
        if target.ejected_until is None:
            return True
        if now < target.ejected_until:
            return False
        check = self.health(self.service, target.url) if self.health is not None else None
        checked = check is not None and target.ejected_at is not None and check[0] >= target.ejected_at
        if checked and not check[1]:  # type: ignore[index]
            return False  # the health checker saw it failing since: it stays out until a check passes
        self._return(target, now, "health check" if checked else "time")
        return True

    # -- outcomes ---------------------------------------------------------------------------------

    def started(self, target: Target) -> None:
        """An attempt to ``target`` begins."""
        target.outstanding += 1

    def finished(self, target: Target) -> None:
        """An attempt to ``target`` is over (its body read or dropped, or it failed)."""
        target.outstanding = max(0, target.outstanding - 1)

    def record(self, target: Target, ok: bool) -> None:
        """How an attempt to ``target`` ended: its answer's headers came (ok unless a 5xx), or it failed."""
        self._tell("on_attempt", self.service, target.url, ok)
        target.last_ok = ok
        if ok:
            target.failures = 0
            target.probation = False
            return
        target.failures += 1
        outlier = self.outlier
        if outlier is None or target.ejected or len(self.targets) == 1:
            return
        if target.probation or target.failures >= outlier.consecutive_failures:
            self._eject(target)

    def spared(self) -> bool:
        """Whether a failure now is one target's, not the service's: another target is in good standing."""
        if len(self.targets) == 1:
            return False
        now = self.clock()
        return any(t.last_ok and not t.probation and self._in_rotation(t, now) for t in self.targets)

    def _eject(self, target: Target) -> None:
        now = self.clock()
        if not any(other is not target and self._in_rotation(other, now) for other in self.targets):
            return  # never the last one in rotation: every target failing stays in
        outlier = self.outlier
        assert outlier is not None
        if target.returned_at is not None and now - target.returned_at > outlier.max_ejection_time:
            target.streak = 0  # it served long enough since its last ejection: start again from the base
        target.streak += 1
        seconds = min(outlier.max_ejection_time, outlier.ejection_time * 2 ** (target.streak - 1))
        target.ejected_at, target.ejected_until = now, now + seconds
        target.probation = False
        log.warning("upstream target ejected", extra={"service": self.service, "target": target.url,
                                                      "ejected_s": seconds, "consecutive_failures": target.failures})
        self._tell("on_eject", self.service, target.url, seconds)

    def _return(self, target: Target, now: float, how: str) -> None:
        target.ejected_at = target.ejected_until = None
        target.returned_at = now
        target.probation = True
        log.info("upstream target returned", extra={"service": self.service, "target": target.url, "by": how})
        self._tell("on_return", self.service, target.url, how)

    def _tell(self, hook: str, *args: Any) -> None:
        tell(self.listeners, hook, *args)

    # -- reading ----------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per target URL: ``ejected`` (0/1), ``ejected_until``, ``outstanding``, ``failures`` (consecutive)."""
        now = self.clock()
        out: dict[str, dict[str, Any]] = {}
        for target in self.targets:
            out_now = len(self.targets) > 1 and not self._in_rotation(target, now)
            out[target.url] = {"ejected": int(out_now), "ejected_until": target.ejected_until if out_now else None,
                               "outstanding": target.outstanding, "failures": target.failures}
        return out
