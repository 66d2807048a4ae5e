"""Coalescing: while one request for a key goes upstream (the leader), the others wait for what it stores.

Within a worker the waiters block on the leader's event; across workers and instances the leader holds
the store's lock for the key, and the others poll for its answer. ``ResponseCache.coalesce`` runs the
whole dance; this module holds what it hands to the request and the in-process half.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from gateway.cache.entry import Found

POLL_SECONDS = 0.02  # how often a waiter in another process looks for the leader's stored response


@dataclass
class Lead:
    """The fetch one request leads: its name in this worker and, when it holds it, the store lock's token."""

    name: str
    token: str | None = None


@dataclass
class Coalesced:
    """What coalescing left a request with."""

    lead: Lead | None = None  # the fetch it now leads: let go once its answer is stored (or it gives up)
    found: Found | None = None  # the newest matching entry met while waiting
    fresh: bool = False  # ``found`` is a leader's fresh answer, fit to answer the request (a coalesced HIT)


class Inflight:
    """The fetches led in this worker, each with the event its waiters block on."""

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def join(self, name: str) -> threading.Event | None:
        """Lead the fetch of ``name`` (None) or get the event of the request that leads it, to wait on."""
        with self._lock:
            event = self._events.get(name)
            if event is not None:
                return event
            self._events[name] = threading.Event()
            return None

    def led(self, name: str) -> bool:
        """Whether a request in this worker leads the fetch of ``name``."""
        return name in self._events

    def leave(self, name: str) -> None:
        """End the lead of ``name`` and wake its waiters."""
        with self._lock:
            event = self._events.pop(name, None)
        if event is not None:
            event.set()
