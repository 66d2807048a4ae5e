"""One breaker per configured service, of the kind its builder chooses: in process, or shared through Redis.

Without Redis each worker keeps its own breakers; the instance bus (when given) carries an
operator's forced state to the sibling workers, so an "open" holds whichever worker answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from gateway.breaker.core import CircuitBreaker
from gateway.breaker.rules import ACTIONS, Breaker, BreakerListener, LocalBreaker
from gateway.breaker.shared import SharedBreakers
from gateway.clock import Clock, system_clock
from gateway.config.settings import ServiceConfig, Settings
from gateway.redis.link import RedisLink
from gateway.share.bus import InstanceBus

# Given a service, its in-process breaker and the registry's listeners: the breaker the gateway uses.
BreakerKind = Callable[[ServiceConfig, LocalBreaker, list[BreakerListener]], Breaker]


def local_kind(service: ServiceConfig, local: LocalBreaker, listeners: list[BreakerListener]) -> Breaker:
    """The in-process kind: each worker's own breaker."""
    return local


class BreakerRegistry:
    """One breaker per configured service; Redis-backed (with local fallback) when a link is given.

    ``kind`` chooses otherwise (:func:`local_kind`, a :class:`~gateway.breaker.shared.SharedBreakers`).
    ``shared_clock`` replaces Redis's TIME inside the scripts; tests use it to drive time exactly.
    """

    def __init__(self, settings: Settings, link: RedisLink | None, clock: Clock = system_clock,
                 listeners: Iterable[BreakerListener] = (), *, shared_clock: Clock | None = None,
                 bus: InstanceBus | None = None, kind: BreakerKind | None = None) -> None:
        self.settings = settings
        self.link = link
        self.bus = bus
        self.listeners: list[BreakerListener] = list(listeners)  # shared with every breaker: add_listener reaches them
        if kind is None:
            kind = SharedBreakers(link, shared_clock) if link is not None else local_kind
        self._breakers: dict[str, Breaker] = {
            name: kind(service, CircuitBreaker(service, clock, self.listeners), self.listeners)
            for name, service in settings.services.items()
        }
        if bus is not None:
            bus.subscribe("breaker", self._apply_forced)

    def __getitem__(self, name: str) -> Breaker:
        """The breaker of service ``name``; KeyError if there is no such service."""
        if self.bus is not None:
            self.bus.poll()
        return self._breakers[name]

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __iter__(self) -> Iterator[str]:
        return iter(self._breakers)

    def force(self, name: str, action: str) -> dict[str, Any]:
        """Force service ``name``'s breaker (open, close, reset) in every worker; return its snapshot."""
        snapshot = self[name].force(action)
        if self.bus is not None:
            self.bus.publish("breaker", {"service": name, "action": action})
        return snapshot

    def _apply_forced(self, message: dict[str, Any]) -> None:
        """A sibling worker's forced state, applied here without telling the listeners again."""
        breaker = self._breakers.get(str(message.get("service")))
        if breaker is not None and message.get("action") in ACTIONS:
            breaker.force(message["action"], quiet=True)

    def add_listener(self, listener: BreakerListener) -> None:
        """Subscribe ``listener`` (on_call / on_reject / on_state_change) to every breaker."""
        self.listeners.append(listener)

    def snapshot(self) -> dict[str, Any]:
        """``{"services": {name: {...}}}`` for ``/stats/circuit-breakers``."""
        return {"services": {name: breaker.snapshot() for name, breaker in self._breakers.items()}}
