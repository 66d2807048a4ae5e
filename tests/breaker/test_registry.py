"""The registry: one breaker per service, of the kind its builder chooses, forced states between workers."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway.breaker.core import CircuitBreaker
from gateway.breaker.registry import BreakerRegistry, local_kind
from gateway.breaker.rules import CLOSED, OPEN, Outcome
from gateway.breaker.shared import SharedBreaker
from gateway.clock import FakeClock
from gateway.errors import CircuitOpen
from gateway.redis.link import RedisLink
from tests.breaker.test_core import SERVICE, Recorder, breaker_settings


@pytest.fixture
def link(redis_server_session: Any) -> Any:
    """A link to the session's Redis under a key prefix of its own."""
    opened = RedisLink(redis_server_session.url, f"tr{time.monotonic_ns()}:")
    yield opened
    opened.close()


def test_lookup_and_late_listeners() -> None:
    registry = BreakerRegistry(breaker_settings(), None, FakeClock())
    with pytest.raises(KeyError):
        registry["nope"]
    assert SERVICE in registry and "nope" not in registry
    assert set(registry) == set(registry.settings.services)
    late = Recorder()
    registry.add_listener(late)  # reaches the breakers already made
    breaker = registry[SERVICE]
    for _ in range(3):
        breaker.after_call(breaker.before_call(), Outcome.FAILURE, 0.01)
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    assert [e[0] for e in late.events] == ["call", "call", "call", "state", "reject"]
    assert registry.snapshot()["services"][SERVICE]["state"] == OPEN


def test_a_failing_listener_never_fails_a_call() -> None:
    class Broken:
        def on_call(self, *args: Any) -> None:
            raise RuntimeError("stats bug")

    registry = BreakerRegistry(breaker_settings(), None, FakeClock(), [Broken()])
    breaker = registry[SERVICE]
    breaker.after_call(breaker.before_call(), Outcome.SUCCESS, 0.01)
    assert breaker.snapshot()["successes"] == 1


def test_the_kind_follows_the_link_unless_the_builder_chooses(link: RedisLink) -> None:
    assert isinstance(BreakerRegistry(breaker_settings(), None)[SERVICE], CircuitBreaker)
    assert isinstance(BreakerRegistry(breaker_settings(), link)[SERVICE], SharedBreaker)
    assert isinstance(BreakerRegistry(breaker_settings(), link, kind=local_kind)[SERVICE], CircuitBreaker)


@pytest.mark.parametrize("shared", [False, True])
def test_a_siblings_forced_state_is_applied_quietly_by_either_kind(link: RedisLink, shared: bool) -> None:
    recorder, clock = Recorder(), FakeClock()
    registry = BreakerRegistry(breaker_settings(), link if shared else None, clock, [recorder], shared_clock=clock)
    registry._apply_forced({"service": SERVICE, "action": "open"})  # as the instance bus delivers it
    assert registry[SERVICE].state == OPEN
    registry._apply_forced({"service": SERVICE, "action": "close"})
    registry._apply_forced({"service": "nope", "action": "open"})
    registry._apply_forced({"service": SERVICE, "action": "explode"})
    assert registry[SERVICE].state == CLOSED
    assert recorder.changes() == []  # the worker that took the action told the listeners
