"""Per-service circuit breakers: a rolling error-rate window, one probe in half-open, no lock across calls.

The state machine::

    CLOSED ──(>= volume calls in window, failure % > threshold)──► OPEN
    OPEN ──(reset timeout elapsed; next call is the probe)──► HALF_OPEN
    HALF_OPEN ──probe succeeds──► CLOSED (fresh window)
    HALF_OPEN ──probe fails──► OPEN (another reset timeout)

Every state change bumps a generation; a result whose ticket carries an older generation is counted
in the statistics but changes no state. The lock only guards pure bookkeeping: it is never held while
the protected call runs, so concurrent calls to a service stay concurrent under gevent.
This module is the in-process breaker; ``gateway.breaker.shared`` shares the same rules across
workers and instances through Redis.
"""

from __future__ import annotations

import enum
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from gateway.breaker.window import RollingWindow, build_snapshot
from gateway.clock import Clock, system_clock
from gateway.config.settings import ServiceConfig, Settings
from gateway.errors import CircuitOpen, GatewayTimeout
from gateway.redis.link import RedisLink

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "CLOSED", "OPEN", "HALF_OPEN"
ACTIONS = ("open", "close", "reset")

F = TypeVar("F", bound=Callable[..., Any])


class Outcome(enum.Enum):
    """How a protected call ended; a TIMEOUT is a failure that is also counted in ``timeouts``."""

    SUCCESS = "success"
    FAILURE = "failure"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class Ticket:
    """Permission for one call, to be handed back to ``after_call`` with its outcome."""

    service: str
    probe: bool
    generation: Any  # opaque: which breaker (and which of its states) issued the ticket
    started: float


class BreakerListener(Protocol):
    """Hooks for stats and metrics (pybreaker-style); any of them may be left out."""

    def on_call(self, service: str, outcome: Outcome, latency_s: float) -> None: ...

    def on_reject(self, service: str) -> None: ...

    def on_state_change(self, service: str, old: str, new: str) -> None: ...


class Breaker(Protocol):
    """One service's breaker as the flow, the admin endpoints and the stats use it: the local one or the shared one."""

    name: str

    @property
    def refusing(self) -> bool: ...

    @property
    def state(self) -> str: ...

    def before_call(self) -> Ticket: ...

    def after_call(self, ticket: Ticket, outcome: Outcome, latency_s: float) -> None: ...

    def snapshot(self) -> dict[str, Any]: ...

    def force(self, action: str, *, quiet: bool = False) -> dict[str, Any]: ...


def outcome_for(error: BaseException) -> Outcome:
    """Classify an exception raised by a protected call."""
    return Outcome.TIMEOUT if isinstance(error, GatewayTimeout) else Outcome.FAILURE


def notify(listeners: Iterable[Any], hook: str, *args: Any) -> None:
    """Call ``hook`` on every listener that has it; a failing listener never fails a request."""
    for listener in listeners:
        method = getattr(listener, hook, None)
        if method is None:
            continue
        try:
            method(*args)
        except Exception:  # a stats bug must not turn into a 500
            log.exception("breaker listener %r failed in %s", listener, hook)


class BreakerCalls:
    """The decorator style (a breaker wraps the upstream call), shared by the local and the Redis-backed breaker."""

    name: str

    def before_call(self) -> Ticket:
        raise NotImplementedError

    def after_call(self, ticket: Ticket, outcome: Outcome, latency_s: float) -> None:
        raise NotImplementedError

    def __call__(self, fn: F) -> F:
        """Wrap ``fn`` so each call asks the breaker first and reports how it ended."""

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            ticket = self.before_call()
            started = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            except Exception as error:
                self.after_call(ticket, outcome_for(error), time.perf_counter() - started)
                raise
            failed = getattr(result, "status", 200) >= 500
            self.after_call(ticket, Outcome.FAILURE if failed else Outcome.SUCCESS, time.perf_counter() - started)
            return result

        return guarded  # type: ignore[return-value]


def should_open(calls: int, failures: int, settings: Any) -> bool:
    """CLOSED -> OPEN rule: enough volume and a failure percentage strictly above the threshold."""
    return calls >= settings.volume_threshold and calls > 0 and failures * 100.0 / calls > settings.error_threshold


def _zero_totals() -> dict[str, int]:
    return {"successes": 0, "failures": 0, "timeouts": 0, "rejects": 0}


class CircuitBreaker(BreakerCalls):
    """The in-process breaker of one service (also the fallback of the Redis-backed one)."""

    def __init__(self, service: ServiceConfig, clock: Clock = system_clock,
                 listeners: list[Any] | None = None) -> None:
        self.name = service.name
        self.service = service
        self.settings = service.breaker
        self.listeners: list[Any] = listeners if listeners is not None else []
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


class BreakerRegistry:
    """One breaker per configured service; Redis-backed (with local fallback) when a link is given."""

    def __init__(self, settings: Settings, link: RedisLink | None, clock: Clock = system_clock,
                 listeners: Iterable[Any] = (), *, shared_clock: Clock | None = None,
                 bus: Any = None) -> None:
        # shared_clock replaces Redis's TIME inside the scripts; tests use it to drive time exactly.
        self.settings = settings
        self.link = link
        # Without Redis each worker has its own breakers; the instance bus carries forced states to
        # the sibling workers, so an operator's "open" holds whichever worker answers.
        self.bus = bus
        if bus is not None:
            bus.subscribe("breaker", self._apply_forced)
        self.listeners: list[Any] = list(listeners)
        local_breakers = {
            name: CircuitBreaker(service, clock, self.listeners) for name, service in settings.services.items()
        }
        self._breakers: dict[str, Breaker] = dict(local_breakers)
        if link is not None:
            from gateway.breaker.shared import BreakerScripts, SharedBreaker  # imports this module
            from gateway.redis.subscription import Subscription

            scripts = BreakerScripts(link)
            # Forced states are announced here, so no process keeps answering an OPEN it remembers.
            self.subscription = Subscription(link, link.key("cb", "forced"), self._forget_open, self._forget_all)
            self._breakers = {
                name: SharedBreaker(local.service, link, scripts, local, self.listeners, shared_clock,
                                    subscription=self.subscription)
                for name, local in local_breakers.items()
            }

    def __getitem__(self, name: str) -> Breaker:
        """The breaker of service ``name``; KeyError if there is no such service."""
        if self.bus is not None:
            self.bus.poll()
        return self._breakers[name]

    def force(self, name: str, action: str) -> dict[str, Any]:
        """Force service ``name``'s breaker (open, close, reset) in every worker; return its snapshot."""
        snapshot = self[name].force(action)
        if self.bus is not None:
            self.bus.publish("breaker", {"service": name, "action": action})
        return snapshot

    def _forget_open(self, name: bytes) -> None:
        forget = getattr(self._breakers.get(name.decode(errors="replace")), "forget_open", None)
        if forget is not None:
            forget()

    def _forget_all(self) -> None:
        for breaker in getattr(self, "_breakers", {}).values():
            forget = getattr(breaker, "forget_open", None)
            if forget is not None:
                forget()

    def _apply_forced(self, message: dict[str, Any]) -> None:
        breaker = self._breakers.get(str(message.get("service")))
        if breaker is not None and message.get("action") in ACTIONS:
            breaker.force(message["action"], quiet=True)

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __iter__(self) -> Iterator[str]:
        return iter(self._breakers)

    def add_listener(self, listener: Any) -> None:
        """Subscribe ``listener`` (on_call / on_reject / on_state_change) to every breaker."""
        self.listeners.append(listener)

    def snapshot(self) -> dict[str, Any]:
        """``{"services": {name: {...}}}`` for ``/stats/circuit-breakers``."""
        return {"services": {name: breaker.snapshot() for name, breaker in self._breakers.items()}}
