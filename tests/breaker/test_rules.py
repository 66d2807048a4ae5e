"""What every breaker shares: the opening rule, outcomes, listeners, and one protocol for both kinds."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import pytest

from gateway.breaker.core import CircuitBreaker
from gateway.breaker.rules import Breaker, LocalBreaker, Outcome, notify, outcome_for, should_open
from gateway.breaker.shared import SharedBreaker
from gateway.config.settings import BreakerSettings
from gateway.errors import BadGateway, GatewayTimeout


@pytest.mark.parametrize(
    ("calls", "failures", "opens"),
    [(2, 2, False),  # below the volume threshold (3)
     (3, 2, True), (4, 2, False),  # exactly 50 % is not more than 50 %
     (9, 5, True), (0, 0, False)],
)
def test_opens_on_volume_and_a_rate_strictly_above_the_threshold(calls: int, failures: int, opens: bool) -> None:
    assert should_open(calls, failures, BreakerSettings()) is opens


def test_thresholds_come_from_the_settings() -> None:
    strict = BreakerSettings(error_threshold=0, volume_threshold=1)
    assert should_open(1, 1, strict) and not should_open(1, 0, strict)
    assert not should_open(10, 10, BreakerSettings(volume_threshold=11))


def test_a_timeout_is_its_own_outcome() -> None:
    assert outcome_for(GatewayTimeout(service="s")) is Outcome.TIMEOUT
    assert outcome_for(BadGateway(service="s")) is Outcome.FAILURE
    assert outcome_for(RuntimeError()) is Outcome.FAILURE


def test_listeners_may_leave_hooks_out_and_never_fail_a_call(caplog: pytest.LogCaptureFixture) -> None:
    heard: list[tuple[Any, ...]] = []

    class Partial:
        def on_reject(self, service: str) -> None:
            heard.append(("reject", service))

    class Broken:
        def on_reject(self, service: str) -> None:
            raise RuntimeError("stats bug")

    with caplog.at_level(logging.ERROR, logger="gateway.breaker"):
        notify([Broken(), Partial(), object()], "on_reject", "svc")
    assert heard == [("reject", "svc")]
    assert "failed in on_reject" in caplog.text


def _members(protocol: type) -> list[str]:
    return [name for name in vars(protocol) if not name.startswith("_")] + list(protocol.__annotations__)


@pytest.mark.parametrize("kind", [CircuitBreaker, SharedBreaker])
def test_both_kinds_take_the_protocols_calls_alike(kind: type) -> None:
    """The registry treats both kinds alike (``force(action, quiet=True)`` for a sibling's forced state)."""
    for name in _members(Breaker):
        if name == "name":
            continue  # an instance attribute
        assert hasattr(kind, name), name
        mine, wanted = getattr(kind, name), getattr(Breaker, name)
        if inspect.isfunction(wanted):
            assert inspect.signature(mine) == inspect.signature(wanted), name


def test_the_local_breaker_is_a_fallback() -> None:
    assert all(hasattr(CircuitBreaker, name) for name in _members(LocalBreaker) if name != "clock")
