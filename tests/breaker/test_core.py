"""The circuit breaker's rules (opossum's scenarios, ported), against the in-process breaker.

``TestBreakerScenarios`` is written against the ``make`` fixture only, so ``test_shared.py``
runs the very same scenarios against the Redis-backed breaker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gevent
import pytest

from gateway.breaker.registry import BreakerRegistry
from gateway.breaker.rules import CLOSED, HALF_OPEN, OPEN, Outcome, Ticket
from gateway.clock import FakeClock
from gateway.config.settings import load_settings
from gateway.errors import BadGateway, CircuitOpen, GatewayTimeout

SERVICE = "svc"
S, F, T = Outcome.SUCCESS, Outcome.FAILURE, Outcome.TIMEOUT
SNAPSHOT_FIELDS = {
    "state", "fires", "successes", "failures", "timeouts", "rejects", "failure_rate", "latency_ms",
    "opened_at", "next_attempt_at", "forced", "window", "store",
}


def breaker_settings(timeout: float = 10.0, **breaker: Any) -> Any:
    """Settings with one extra service whose breaker uses ``breaker`` overrides.

    A shared breaker asks Redis on every call here (``closed_hold`` 0) unless a test holds CLOSED answers.
    """
    breaker = {"closed_hold": 0, **breaker}
    service = {"prefix": "/svc", "url": "http://127.0.0.1:9", "timeout": timeout, "breaker": breaker}
    return load_settings({}, {"services": {SERVICE: service}})


@dataclass
class Recorder:
    """A listener that keeps every event."""

    events: list[tuple[Any, ...]] = field(default_factory=list)

    def on_call(self, service: str, outcome: Outcome, latency_s: float) -> None:
        self.events.append(("call", service, outcome))

    def on_reject(self, service: str) -> None:
        self.events.append(("reject", service))

    def on_state_change(self, service: str, old: str, new: str) -> None:
        self.events.append(("state", service, old, new))

    def changes(self) -> list[tuple[str, str]]:
        return [(e[2], e[3]) for e in self.events if e[0] == "state"]


@dataclass
class Harness:
    """One breaker under test, its registry, its clock and a recording listener."""

    registry: BreakerRegistry
    clock: FakeClock
    recorder: Recorder

    @property
    def breaker(self) -> Any:
        return self.registry[SERVICE]

    def run(self, *outcomes: Outcome, latency_s: float = 0.01) -> None:
        """Complete one call per outcome."""
        for outcome in outcomes:
            self.breaker.after_call(self.breaker.before_call(), outcome, latency_s)

    def rejected(self) -> CircuitOpen:
        """Assert the next call is refused and return the error."""
        with pytest.raises(CircuitOpen) as info:
            self.breaker.before_call()
        return info.value

    def open(self) -> None:
        """Drive the breaker OPEN with the default thresholds."""
        self.run(F, F, F)
        assert self.breaker.state == OPEN


@pytest.fixture
def make() -> Any:
    """Build an in-process breaker harness: ``make(timeout=..., volume_threshold=...)``."""

    def build(timeout: float = 10.0, **breaker: Any) -> Harness:
        clock, recorder = FakeClock(), Recorder()
        registry = BreakerRegistry(breaker_settings(timeout, **breaker), None, clock, [recorder])
        return Harness(registry, clock, recorder)

    return build


class TestBreakerScenarios:
    """The breaker's rules; every test here also runs against Redis."""

    def test_opens_on_the_third_failure_with_defaults(self, make: Any) -> None:
        h = make()
        h.run(F, F)
        assert h.breaker.state == CLOSED
        h.run(F)
        assert h.breaker.state == OPEN
        assert h.recorder.changes() == [(CLOSED, OPEN)]

    def test_fails_fast_while_open_with_retry_after(self, make: Any) -> None:
        h = make()
        h.open()
        error = h.rejected()
        assert (error.status, error.code, error.service, error.retry_after) == (503, "circuit_open", SERVICE, 30)
        assert ("Retry-After", "30") in error.headers
        h.clock.advance(10.5)
        assert h.rejected().retry_after == 20
        h.clock.advance(19.2)
        assert h.rejected().retry_after == 1
        snap = h.breaker.snapshot()
        assert (snap["rejects"], snap["fires"], snap["failures"]) == (3, 6, 3)

    def test_error_rate_not_consecutive_count(self, make: Any) -> None:
        h = make()
        h.run(S, S, F, S, F)  # 2 of 5 failing: 40 %
        assert h.breaker.state == CLOSED
        h = make()
        h.run(S, S, S, S, F, F, F, F)  # 4 of 8: exactly 50 % is not more than 50 %
        assert h.breaker.state == CLOSED
        h.run(F)  # 5 of 9
        assert h.breaker.state == OPEN
        assert h.breaker.snapshot()["failure_rate"] == pytest.approx(55.56)

    def test_volume_threshold_respected(self, make: Any) -> None:
        h = make(volume_threshold=5)
        h.run(F, F, F, F)
        assert h.breaker.state == CLOSED
        h.run(F)
        assert h.breaker.state == OPEN

    def test_volume_threshold_ignored_in_half_open(self, make: Any) -> None:
        h = make(volume_threshold=5)
        h.run(F, F, F, F, F)
        h.clock.advance(30)
        assert h.breaker.state == HALF_OPEN
        h.run(F)  # one failed probe is enough
        assert h.breaker.state == OPEN

    def test_only_one_probe_while_it_is_slow(self, make: Any) -> None:
        h = make()
        h.open()
        h.clock.advance(30)
        reached = []

        @h.breaker
        def call(n: int) -> None:
            reached.append(n)
            gevent.sleep(0.05)

        probe = gevent.spawn(call, 0)
        gevent.sleep(0)  # let the probe take its lease
        others = [gevent.spawn(call, n) for n in range(1, 6)]
        gevent.joinall([probe, *others])
        assert reached == [0]
        assert all(isinstance(g.exception, CircuitOpen) for g in others)
        assert probe.successful()
        assert h.breaker.state == CLOSED
        assert h.recorder.changes() == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]

    def test_probe_success_closes_with_a_fresh_window(self, make: Any) -> None:
        h = make()
        h.open()
        h.clock.advance(30)
        h.run(S)
        snap = h.breaker.snapshot()
        assert snap["state"] == CLOSED
        assert (snap["failure_rate"], snap["window"]["calls"], snap["opened_at"], snap["next_attempt_at"]) == (
            0.0, 0, None, None)
        h.run(F, F)  # the old failures are gone: two new ones are below the volume threshold
        assert h.breaker.state == CLOSED

    def test_probe_failure_reopens_and_restarts_the_timer(self, make: Any) -> None:
        h = make()
        h.open()
        h.clock.advance(31)
        h.run(T)
        snap = h.breaker.snapshot()
        assert snap["state"] == OPEN
        assert snap["opened_at"] == pytest.approx(h.clock.now)
        assert snap["next_attempt_at"] == pytest.approx(h.clock.now + 30)
        assert h.rejected().retry_after == 30
        h.clock.advance(29.5)
        h.rejected()
        h.clock.advance(0.5)
        assert h.breaker.before_call().probe

    def test_result_of_a_call_started_before_open_changes_nothing(self, make: Any) -> None:
        h = make()
        early = h.breaker.before_call()
        h.open()
        h.breaker.after_call(early, S, 0.01)
        assert h.breaker.state == OPEN
        h.clock.advance(30)
        probe = h.breaker.before_call()
        late = Ticket(SERVICE, True, early.generation, early.started)  # even one claiming to be a probe
        h.breaker.after_call(late, S, 0.01)
        h.rejected()  # still half-open with the probe out
        h.breaker.after_call(probe, S, 0.01)
        assert h.breaker.state == CLOSED
        assert h.breaker.snapshot()["successes"] == 3  # stale results are still counted

    def test_counts_roll_out_of_the_window(self, make: Any) -> None:
        h = make()
        h.run(F, F)
        h.clock.advance(10.5)
        assert h.breaker.snapshot()["window"]["calls"] == 0
        h.run(F)
        assert h.breaker.state == CLOSED
        h.clock.advance(5)
        h.run(F)
        assert h.breaker.state == CLOSED
        h.run(F)
        assert h.breaker.state == OPEN

    def test_a_lost_probe_lease_expires(self, make: Any) -> None:
        h = make(timeout=2.0)
        h.open()
        h.clock.advance(30)
        lost = h.breaker.before_call()
        assert lost.probe
        h.clock.advance(2.9)  # lease = timeout + 1 s
        h.rejected()
        h.clock.advance(0.2)
        probe = h.breaker.before_call()
        assert probe.probe
        h.breaker.after_call(lost, S, 3.0)  # the lost probe comes back late: no effect
        assert h.breaker.state == HALF_OPEN
        h.breaker.after_call(probe, S, 0.01)
        assert h.breaker.state == CLOSED

    def test_force_open_holds_until_close(self, make: Any) -> None:
        h = make()
        snap = h.breaker.force("open")
        assert (snap["state"], snap["forced"], snap["next_attempt_at"]) == (OPEN, True, None)
        h.clock.advance(1000)
        assert h.breaker.state == OPEN
        assert h.rejected().retry_after == 30
        snap = h.breaker.force("close")
        assert (snap["state"], snap["forced"], snap["rejects"]) == (CLOSED, False, 1)
        h.run(S)

    def test_force_close_gives_a_fresh_window_and_normal_rules(self, make: Any) -> None:
        h = make()
        h.open()
        assert h.breaker.force("close")["window"]["calls"] == 0
        h.run(F, F)
        assert h.breaker.state == CLOSED
        h.run(F)
        assert h.breaker.state == OPEN

    def test_force_reset_clears_counters(self, make: Any) -> None:
        h = make()
        h.open()
        h.rejected()
        snap = h.breaker.force("reset")
        assert snap["state"] == CLOSED
        assert [snap[k] for k in ("fires", "successes", "failures", "timeouts", "rejects")] == [0] * 5
        with pytest.raises(ValueError):
            h.breaker.force("explode")

    def test_decorator_classifies_outcomes(self, make: Any) -> None:
        h = make(volume_threshold=100)

        @dataclass
        class Reply:
            status: int

        @h.breaker
        def call(result: Any) -> Any:
            if isinstance(result, Exception):
                raise result
            return result

        assert call(Reply(404)).status == 404
        call(Reply(503))
        with pytest.raises(GatewayTimeout):
            call(GatewayTimeout(service=SERVICE))
        with pytest.raises(BadGateway):
            call(BadGateway(service=SERVICE))
        snap = h.breaker.snapshot()
        assert (snap["successes"], snap["failures"], snap["timeouts"]) == (1, 3, 1)

    def test_snapshot_fields_and_latency(self, make: Any) -> None:
        h = make(volume_threshold=1000)
        for ms in range(1, 101):
            h.run(S, latency_s=ms / 1000)
        h.run(T, latency_s=0.1)
        snap = h.breaker.snapshot()
        assert set(snap) == SNAPSHOT_FIELDS
        assert snap["latency_ms"] == {"mean": pytest.approx(50.99, abs=0.01), "p50": 51.0, "p95": 96.0,
                                      "p99": 100.0}
        assert (snap["fires"], snap["timeouts"], snap["failures"]) == (101, 1, 1)
        assert snap["failure_rate"] == pytest.approx(0.99)
        assert set(h.registry.snapshot()["services"]) >= {SERVICE, "order-service"}

    def test_concurrent_calls_are_not_serialised(self, make: Any) -> None:
        h = make()

        inside = [0]
        most = [0]

        @h.breaker
        def slow() -> None:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            gevent.sleep(0.05)  # every call is inside at once unless the breaker serialises them
            inside[0] -= 1

        gevent.joinall([gevent.spawn(slow) for _ in range(10)], raise_error=True)
        assert most[0] == 10
        assert h.breaker.snapshot()["successes"] == 10
