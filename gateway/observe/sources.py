"""What the observers read of parts they may not import: a breaker, the breaker registry, the cache.

``observe`` sits beside ``breaker`` and ``cache`` (parts of one tier never import one another), so
it names here, as Protocols, the little it reads of them; their classes fit without knowing of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class CallOutcome(Protocol):
    """How a call through a breaker ended (the breaker's ``Outcome``): ``SUCCESS``, ``FAILURE``, ``TIMEOUT``..."""

    @property
    def name(self) -> str: ...


class BreakerReading(Protocol):
    """One service's circuit breaker, as read for the stats, the metrics and the service listing."""

    @property
    def state(self) -> str:
        """``CLOSED``, ``OPEN`` or ``HALF_OPEN``."""

    def snapshot(self) -> Mapping[str, Any]:
        """``state``, ``opened_at``, ``next_attempt_at``, ``forced``, the counters; ``store`` for the shared one."""


class Breakers(Protocol):
    """The breaker registry: the breaker of each configured service, by name."""

    def __contains__(self, name: object) -> bool: ...

    def __getitem__(self, name: str) -> BreakerReading: ...
