"""The in-process circuit breaker of one service: a rolling error-rate window, one probe in half-open.

Every state change bumps a generation; a result whose ticket carries an older generation is counted
in the statistics but changes no state. The lock only guards pure bookkeeping: it is never held while
the protected call runs, so concurrent calls to a service stay concurrent under gevent.
The state machine and the opening rule are in ``gateway.breaker.rules``; ``gateway.breaker.shared``
keeps the same rules across workers and instances through Redis, with this breaker as its fallback.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from gateway.breaker.rules import (
    ACTIONS,
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerCalls,
    BreakerListener,
    Outcome,
    Ticket,
    notify,
    should_open,
)
from gateway.breaker.window import RollingWindow, build_snapshot
from gateway.clock import Clock, system_clock
from gateway.config.settings import ServiceConfig
from gateway.errors import CircuitOpen

# Importers of these names from here (the request flow, the operators' routes) keep working.
__all__ = ["ACTIONS", "CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker", "Outcome", "Ticket"]


def _zero_totals() -> dict[str, int]:
    return {"successes": 0, "failures": 0, "timeouts": 0, "rejects": 0}


class CircuitBreaker(BreakerCalls):
    """The in-process breaker of one service (also the fallback of the Redis-backed one)."""

    def __init__(self, service: ServiceConfig, clock: Clock = system_clock,
                 listeners: list[BreakerListener] | None = None) -> None:
        self.name = service.name
        self.service = service
        self.settings = service.breaker
        self.listeners: list[BreakerListener] = listeners if listeners is not None else []
        self.clock = clock
        self._lock = threading.Lock()  # guards bookkeeping only, never the protected call
        self._window = RollingWindow(self.settings.rolling_window)
        self._totals = _zero_totals()
        self._state = CLOSED
        self._generation = 0
        self._forced = False
        self._opened_at: float | None = None
        self._next_attempt_at: float | None = None
        self._lease_until: float | None = None

    def _token(self) -> tuple[str, int, int]:
        return ("local", id(self), self._generation)

    def _move(self, new: str, events: list[tuple[str, str]]) -> None:
        if new != self._state:
            events.append((self._state, new))
        self._state = new
        self._generation += 1
        self._lease_until = None

    def _open(self, now: float, events: list[tuple[str, str]]) -> None:
        self._move(OPEN, events)
        self._opened_at, self._next_attempt_at = now, now + self.settings.reset_timeout

    def _close(self, events: list[tuple[str, str]]) -> None:
        self._move(CLOSED, events)
        self._forced = False
        self._opened_at = self._next_attempt_at = None
        self._window.clear()

    def _probe_due(self, now: float) -> bool:
        return (self._state == OPEN and not self._forced and self._next_attempt_at is not None
                and now >= self._next_attempt_at)

    def _emit(self, events: list[tuple[str, str]]) -> None:
        for old, new in events:
            notify(self.listeners, "on_state_change", self.name, old, new)

    def before_call(self) -> Ticket:
        """Return a ticket for one call, or raise :class:`CircuitOpen` (and count a reject)."""
        now = self.clock()
        events: list[tuple[str, str]] = []
        ticket: Ticket | None = None
        with self._lock:
            if self._probe_due(now):
                self._move(HALF_OPEN, events)
            if self._state == CLOSED:
                ticket = Ticket(self.name, False, self._token(), now)
            elif self._state == HALF_OPEN and (self._lease_until is None or now >= self._lease_until):
                # A new lease also bumps the generation, so a lost probe that returns late is ignored.
                self._generation += 1
                self._lease_until = now + self.service.timeout + 1
                ticket = Ticket(self.name, True, self._token(), now)
            else:
                retry_after = self._retry_after(now)
                self._totals["rejects"] += 1
                self._window.reject(now)
        self._emit(events)
        if ticket is None:
            notify(self.listeners, "on_reject", self.name)
            raise CircuitOpen(service=self.name, retry_after=retry_after)
        return ticket

    def _retry_after(self, now: float) -> int:
        if self._state == OPEN and not self._forced and self._next_attempt_at is not None:
            return max(1, math.ceil(self._next_attempt_at - now))
        if self._state == OPEN:  # forced open: no probe is scheduled
            return max(1, math.ceil(self.settings.reset_timeout))
        return 1  # half-open with the probe in flight: it usually settles within a second

    def after_call(self, ticket: Ticket, outcome: Outcome, latency_s: float) -> None:
        """Count how a call ended and apply the state rules if its ticket is still current."""
        now = self.clock()
        events: list[tuple[str, str]] = []
        with self._lock:
            self._count(outcome)
            if ticket.generation == self._token():
                self._window.record(now, outcome is not Outcome.SUCCESS, outcome is Outcome.TIMEOUT, latency_s)
                if self._state == CLOSED:
                    totals = self._window.totals(now)
                    if should_open(totals.calls, totals.failures, self.settings):
                        self._open(now, events)
                elif self._state == HALF_OPEN and ticket.probe:
                    if outcome is Outcome.SUCCESS:
                        self._close(events)
                    else:
                        self._open(now, events)
        notify(self.listeners, "on_call", self.name, outcome, latency_s)
        self._emit(events)

    def count_successes(self, count: int) -> None:
        """Count successes of Redis tickets that could not be told to Redis (no state effect)."""
        with self._lock:
            self._totals["successes"] += count

    def _count(self, outcome: Outcome) -> None:
        if outcome is Outcome.SUCCESS:
            self._totals["successes"] += 1
        else:
            self._totals["failures"] += 1
            self._totals["timeouts"] += outcome is Outcome.TIMEOUT

    @property
    def refusing(self) -> bool:
        """True while calls are refused for sure (OPEN, its probe not yet due): a hint, read without the lock."""
        return self._state == OPEN and not self._probe_due(self.clock())

    @property
    def forced(self) -> bool:
        """Whether an operator forced this breaker open (it holds until close or reset)."""
        return self._forced

    @property
    def state(self) -> str:
        """CLOSED, OPEN or HALF_OPEN (OPEN past its reset timeout reads HALF_OPEN: the next call probes)."""
        with self._lock:
            return HALF_OPEN if self._probe_due(self.clock()) else self._state

    def snapshot(self) -> dict[str, Any]:
        """The ``/stats/circuit-breakers`` figures of this breaker."""
        now = self.clock()
        with self._lock:
            return build_snapshot(
                state=HALF_OPEN if self._probe_due(now) else self._state, forced=self._forced,
                totals=dict(self._totals), window=self._window.totals(now), samples=self._window.samples(now),
                opened_at=self._opened_at, next_attempt_at=self._next_attempt_at, store="local",
            )

    def force(self, action: str, *, quiet: bool = False) -> dict[str, Any]:
        """Operator control: ``open`` holds OPEN until close/reset; ``close`` closes with a fresh window;
        ``reset`` also zeroes the counters."""
        if action not in ACTIONS:
            raise ValueError(f"unknown breaker action {action!r}")
        now = self.clock()
        events: list[tuple[str, str]] = []
        with self._lock:
            if action == "open":
                self._move(OPEN, events)
                self._forced, self._opened_at, self._next_attempt_at = True, now, None
            else:
                self._close(events)
                if action == "reset":
                    self._totals = _zero_totals()
        if not quiet:
            self._emit(events)
        return self.snapshot()

    def forget_open(self) -> None:
        """Nothing to forget: this breaker's state is its own."""

    def push_held(self) -> None:
        """Nothing held back: every reject is counted as it happens."""
