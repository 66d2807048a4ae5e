"""What every circuit breaker shares: its states, outcomes and tickets, the opening rule, the ``Breaker`` protocol.

The state machine::

    CLOSED ──(>= volume calls in window, failure % > threshold)──► OPEN
    OPEN ──(reset timeout elapsed; next call is the probe)──► HALF_OPEN
    HALF_OPEN ──probe succeeds──► CLOSED (fresh window)
    HALF_OPEN ──probe fails──► OPEN (another reset timeout)

``gateway.breaker.core`` keeps it in process, ``gateway.breaker.shared`` in Redis (its Lua scripts
apply the same rule as :func:`should_open`); both satisfy :class:`Breaker`.
"""

from __future__ import annotations

import enum
import functools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from gateway.config.settings import BreakerSettings
from gateway.errors import GatewayTimeout

log = logging.getLogger("gateway.breaker")

CLOSED, OPEN, HALF_OPEN = "CLOSED", "OPEN", "HALF_OPEN"
ACTIONS = ("open", "close", "reset")  # what an operator may force

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
    """One service's breaker as the request flow, the registry and the operators use it, local or shared."""

    name: str

    @property
    def state(self) -> str:
        """CLOSED, OPEN or HALF_OPEN."""

    @property
    def refusing(self) -> bool:
        """True while calls are refused for sure: a hint that costs no round trip."""

    def before_call(self) -> Ticket:
        """A ticket for one call, or raise :class:`~gateway.errors.CircuitOpen`."""

    def after_call(self, ticket: Ticket, outcome: Outcome, latency_s: float) -> None:
        """Count how the call of ``ticket`` ended and apply the state rules."""

    def snapshot(self) -> dict[str, Any]:
        """The ``/stats/circuit-breakers`` figures of this breaker."""

    def force(self, action: str, *, quiet: bool = False) -> dict[str, Any]:
        """Operator control (one of :data:`ACTIONS`); ``quiet``: tell no listener. Return the snapshot."""

    def forget_open(self) -> None:
        """Drop any OPEN or CLOSED answer remembered to spare a round trip (the state changed elsewhere)."""

    def push_held(self) -> None:
        """Hand over counts kept back to spare round trips (the stats flusher calls this)."""


class LocalBreaker(Breaker, Protocol):
    """A breaker kept in this process (the fallback of a shared one): it also tells whether it is forced."""

    clock: Callable[[], float]

    @property
    def forced(self) -> bool:
        """Whether an operator forced this breaker open (it holds until close or reset)."""

    def count_successes(self, count: int) -> None:
        """Count successes of a shared breaker's tickets that could not be told to Redis (no state effect)."""


def should_open(calls: int, failures: int, settings: BreakerSettings) -> bool:
    """CLOSED -> OPEN rule: enough volume and a failure percentage strictly above the threshold."""
    return calls >= settings.volume_threshold and calls > 0 and failures * 100.0 / calls > settings.error_threshold


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
