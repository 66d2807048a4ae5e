"""The Redis-backed breaker: the same scenarios as the in-process one, shared state, and the fallback.

Scenario tests drive the scripts' clock with a FakeClock (``shared_clock``) so they are exact; the
tests at the end use Redis's own TIME with sub-second settings.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest

from gateway.breaker.registry import BreakerRegistry
from gateway.breaker.rules import CLOSED, HALF_OPEN, OPEN, Outcome
from gateway.clock import FakeClock
from gateway.errors import CircuitOpen
from gateway.redis.link import RedisLink
from tests.breaker.test_core import SERVICE, Harness, Recorder, breaker_settings
from tests.breaker.test_core import TestBreakerScenarios as _Scenarios

F, S = Outcome.FAILURE, Outcome.SUCCESS
_prefixes = itertools.count()


def new_prefix() -> str:
    """A key prefix no other test uses on the shared server."""
    return f"t{next(_prefixes)}-{time.monotonic_ns()}:"


@pytest.fixture
def links() -> Any:
    """Open RedisLinks; closed after the test."""
    opened: list[RedisLink] = []
    yield opened
    for link in opened:
        link.close()


def link_to(server: Any, links: list[RedisLink], prefix: str, **options: Any) -> RedisLink:
    link = RedisLink(server.url, prefix, **options)
    links.append(link)
    return link


@pytest.fixture
def make(redis_server_session: Any, links: list[RedisLink]) -> Any:
    """Build a Redis-backed breaker harness whose scripts run on a FakeClock."""

    def build(timeout: float = 10.0, **breaker: Any) -> Harness:
        clock, recorder = FakeClock(), Recorder()
        link = link_to(redis_server_session, links, new_prefix())
        registry = BreakerRegistry(breaker_settings(timeout, **breaker), link, clock, [recorder], shared_clock=clock)
        return Harness(registry, clock, recorder)

    return build


class TestRedisScenarios(_Scenarios):
    """Every in-process scenario, against the Redis scripts."""

    def test_every_snapshot_comes_from_redis(self, make: Any) -> None:
        h = make()
        h.run(S)
        assert h.breaker.snapshot()["store"] == "redis"


def test_two_processes_share_one_breaker_and_one_probe(redis_server_session: Any, links: list[RedisLink]) -> None:
    clock, prefix, settings = FakeClock(), new_prefix(), breaker_settings()
    first = BreakerRegistry(settings, link_to(redis_server_session, links, prefix), clock, shared_clock=clock)
    second = BreakerRegistry(settings, link_to(redis_server_session, links, prefix), clock, shared_clock=clock)
    a, b = first[SERVICE], second[SERVICE]
    a.after_call(a.before_call(), F, 0.01)
    b.after_call(b.before_call(), F, 0.01)
    a.after_call(a.before_call(), F, 0.01)
    assert b.state == OPEN
    with pytest.raises(CircuitOpen):
        b.before_call()
    clock.advance(30)
    probe = b.before_call()
    assert probe.probe
    with pytest.raises(CircuitOpen):
        a.before_call()  # one probe gateway-wide
    b.after_call(probe, S, 0.01)
    assert a.state == CLOSED
    snap = a.snapshot()
    assert (snap["fires"], snap["rejects"], snap["successes"]) == (6, 2, 1)  # both processes' calls


def test_one_round_trip_per_decision(redis_server_session: Any, links: list[RedisLink]) -> None:
    registry = BreakerRegistry(breaker_settings(), link_to(redis_server_session, links, new_prefix()))
    breaker = registry[SERVICE]
    breaker.after_call(breaker.before_call(), S, 0.01)  # loads the scripts
    watcher = redis_server_session.client()
    before = watcher.info("commandstats")
    breaker.after_call(breaker.before_call(), S, 0.01)
    after = watcher.info("commandstats")
    count = {name: after.get(name, {}).get("calls", 0) - before.get(name, {}).get("calls", 0) for name in after}
    assert count.get("cmdstat_evalsha") == 2
    assert count.get("cmdstat_eval", 0) == 0 and count.get("cmdstat_script", 0) == 0


def test_keys_carry_the_prefix_and_a_ttl(redis_server_session: Any, links: list[RedisLink]) -> None:
    prefix = new_prefix()
    breaker = BreakerRegistry(breaker_settings(), link_to(redis_server_session, links, prefix))[SERVICE]
    for outcome in (S, S, F, F, F):
        breaker.after_call(breaker.before_call(), outcome, 0.01)
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    client = redis_server_session.client()
    keys = [k.decode() for k in client.keys(prefix + "*")]
    assert {k.rsplit(":", 1)[-1] for k in keys} >= {"state", "totals", "lat"}
    assert all(k.startswith(prefix + "cb:{svc}:") for k in keys)
    assert all(client.pttl(k) > 0 for k in keys)


def test_redis_time_drives_reset_and_probe(redis_server_session: Any, links: list[RedisLink]) -> None:
    settings = breaker_settings(timeout=0.2, reset_timeout=0.3, rolling_window=0.5)
    breaker = BreakerRegistry(settings, link_to(redis_server_session, links, new_prefix()))[SERVICE]
    for _ in range(3):
        breaker.after_call(breaker.before_call(), F, 0.01)
    assert breaker.state == OPEN
    with pytest.raises(CircuitOpen) as info:
        breaker.before_call()
    assert info.value.retry_after == 1  # never less than one second
    time.sleep(0.35)
    assert breaker.state == HALF_OPEN
    probe = breaker.before_call()
    assert probe.probe
    breaker.after_call(probe, S, 0.01)
    assert breaker.state == CLOSED
    breaker.after_call(breaker.before_call(), F, 0.01)
    time.sleep(0.55)  # the failure rolls out of the half-second window
    assert breaker.snapshot()["window"]["calls"] == 0


def test_redis_killed_falls_back_and_returns(redis_server: Any, links: list[RedisLink]) -> None:
    link = link_to(redis_server, links, new_prefix(), skip_seconds=0.05)
    breaker = BreakerRegistry(breaker_settings(), link)[SERVICE]
    carried = breaker.before_call()
    assert carried.generation[0] == "redis"
    redis_server.kill()
    breaker.after_call(carried, S, 0.01)  # a Redis ticket returned while Redis is gone: counted locally
    local_ticket = breaker.before_call()
    for _ in range(3):
        breaker.after_call(breaker.before_call(), F, 0.01)
    snap = breaker.snapshot()
    assert (snap["store"], snap["state"], snap["successes"], snap["failures"]) == ("local", OPEN, 1, 3)
    with pytest.raises(CircuitOpen):  # the same rules, in process
        breaker.before_call()
    redis_server.start()
    deadline = time.monotonic() + 5
    while breaker.snapshot()["store"] != "redis":
        assert time.monotonic() < deadline, "never went back to Redis"
        time.sleep(0.06)
    ticket = breaker.before_call()  # the new, empty Redis breaker is closed
    assert ticket.generation[0] == "redis"
    for _ in range(3):
        breaker.after_call(local_ticket, F, 0.01)  # a local ticket handed to Redis: counted, no effect
    snap = breaker.snapshot()
    assert (snap["state"], snap["failures"], snap["window"]["calls"]) == (CLOSED, 3, 0)
    breaker.after_call(ticket, S, 0.01)
    assert breaker.snapshot()["successes"] == 1


def test_tickets_of_a_flushed_breaker_change_nothing(redis_server_session: Any, links: list[RedisLink]) -> None:
    clock, prefix = FakeClock(), new_prefix()
    link = link_to(redis_server_session, links, prefix)
    breaker = BreakerRegistry(breaker_settings(), link, clock, shared_clock=clock)[SERVICE]
    old = breaker.before_call()
    client = redis_server_session.client()
    client.delete(*client.keys(prefix + "*"))  # evicted, expired or flushed
    clock.advance(1)
    for _ in range(2):
        breaker.after_call(breaker.before_call(), F, 0.01)
    breaker.after_call(old, F, 0.01)  # would be the third failure if it counted
    snap = breaker.snapshot()
    assert (snap["state"], snap["failures"], snap["window"]["calls"]) == (CLOSED, 3, 2)


def test_forced_open_holds_through_a_redis_outage(redis_server: Any, links: list[RedisLink]) -> None:
    link = link_to(redis_server, links, new_prefix(), skip_seconds=0.05)
    breaker = BreakerRegistry(breaker_settings(), link)[SERVICE]
    assert breaker.force("open")["store"] == "redis"
    redis_server.kill()
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    snap = breaker.snapshot()
    assert (snap["store"], snap["state"], snap["forced"]) == ("local", OPEN, True)
    assert breaker.force("close")["state"] == CLOSED  # with Redis down, the local breaker obeys
    breaker.after_call(breaker.before_call(), S, 0.01)


def test_a_later_outage_starts_from_a_fresh_local_breaker(redis_server: Any, links: list[RedisLink]) -> None:
    link = link_to(redis_server, links, new_prefix(), skip_seconds=0.05)
    breaker = BreakerRegistry(breaker_settings(), link)[SERVICE]
    redis_server.kill()
    for _ in range(3):
        breaker.after_call(breaker.before_call(), F, 0.01)
    with pytest.raises(CircuitOpen):  # the first outage opened the local breaker
        breaker.before_call()
    redis_server.start()
    deadline = time.monotonic() + 5
    while True:
        try:
            ticket = breaker.before_call()
        except CircuitOpen:
            ticket = None
        if ticket is not None and ticket.generation[0] == "redis":
            break
        assert time.monotonic() < deadline, "never went back to Redis"
        time.sleep(0.06)
    breaker.after_call(ticket, S, 0.01)
    redis_server.kill()  # a second outage: the state left by the first one must not shut the service out
    local = breaker.before_call()
    assert local.generation[0] == "local" and not local.probe
    breaker.after_call(local, S, 0.01)
    assert breaker.snapshot()["state"] == CLOSED


def _opened(redis_server_session: Any, links: list[RedisLink], prefix: str | None = None,
            clock: FakeClock | None = None) -> tuple[Any, FakeClock]:
    """A Redis breaker (scripts on a FakeClock, no skip period after a failure) that opened and is due a probe."""
    clock = clock or FakeClock()
    # A generous socket timeout: on a busy machine an answer may take longer than the default.
    link = link_to(redis_server_session, links, prefix or new_prefix(), skip_seconds=0.0, socket_timeout=2.0)
    breaker = BreakerRegistry(breaker_settings(), link, clock, shared_clock=clock)[SERVICE]
    for _ in range(3):
        breaker.after_call(breaker.before_call(), F, 0.01)
    clock.advance(30)  # past the reset timeout
    return breaker, clock


def _sibling(server: Any, links: list[RedisLink], prefix: str, clock: FakeClock) -> Any:
    """Another process's breaker of the same service (same prefix, same script clock)."""
    link = link_to(server, links, prefix, socket_timeout=2.0)
    return BreakerRegistry(breaker_settings(), link, clock, shared_clock=clock)[SERVICE]


class LostReply:
    """Wraps a breaker script: Redis runs it, then the reply is lost (the connection drops mid-reply)."""

    def __init__(self, script: Any) -> None:
        self.script, self.armed = script, True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        reply = self.script(*args, **kwargs)
        if self.armed:
            self.armed = False
            import redis
            raise redis.ConnectionError("connection dropped mid-reply")
        return reply


class NeverArrives(LostReply):
    """Wraps a breaker script: the command never reaches Redis (once)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.armed:
            self.armed = False
            import redis
            raise redis.TimeoutError("Timeout reading from socket")
        return self.script(*args, **kwargs)


def test_a_probe_whose_outcome_was_lost_frees_its_lease_at_the_next_call(redis_server_session: Any,
                                                                         links: list[RedisLink]) -> None:
    breaker, _ = _opened(redis_server_session, links)
    probe = breaker.before_call()
    assert probe.probe
    breaker._scripts.after = NeverArrives(breaker._scripts.after)  # the probe succeeded; Redis never hears it
    breaker.after_call(probe, S, 0.01)
    again = breaker.before_call()  # not a 503 until the lease runs out (CB_TIMEOUT + 1 s): a new probe
    assert again.probe and again.generation[0] == "redis"
    breaker.after_call(again, S, 0.01)
    assert breaker.state == CLOSED


def test_a_lease_granted_to_a_call_that_never_heard_of_it_is_freed(redis_server_session: Any,
                                                                   links: list[RedisLink]) -> None:
    prefix = new_prefix()
    breaker, clock = _opened(redis_server_session, links, prefix)
    other = _sibling(redis_server_session, links, prefix, clock)
    breaker._scripts.before = LostReply(breaker._scripts.before)
    lost = breaker.before_call()  # Redis granted the probe; the reply never came: a local ticket
    assert lost.generation[0] == "local"
    with pytest.raises(CircuitOpen):
        other.before_call()  # the lease is held, by nobody
    probe = breaker.before_call()  # names the lost call: the lease is freed and granted again
    assert probe.probe and probe.generation[0] == "redis"
    breaker.after_call(probe, S, 0.01)
    assert other.state == CLOSED


def test_a_lost_grant_frees_itself_after_one_redis_timeout(redis_server_session: Any,
                                                          links: list[RedisLink]) -> None:
    prefix = new_prefix()
    breaker, clock = _opened(redis_server_session, links, prefix)
    other = _sibling(redis_server_session, links, prefix, clock)
    breaker._scripts.before = LostReply(breaker._scripts.before)
    assert breaker.before_call().generation[0] == "local"  # granted, but the answer was lost: never confirmed
    with pytest.raises(CircuitOpen):
        other.before_call()
    clock.advance(breaker._link.socket_timeout)  # the owner says nothing more (it died, say)
    probe = other.before_call()
    assert probe.probe
    other.after_call(probe, S, 0.01)
    assert breaker.state == CLOSED


def test_a_confirmed_probe_keeps_its_lease_for_the_whole_call(redis_server_session: Any,
                                                              links: list[RedisLink]) -> None:
    prefix = new_prefix()
    breaker, clock = _opened(redis_server_session, links, prefix)
    other = _sibling(redis_server_session, links, prefix, clock)
    probe = breaker.before_call()
    clock.advance(9.5)  # a slow probe, still within CB_TIMEOUT (10 s)
    with pytest.raises(CircuitOpen):
        other.before_call()  # exactly one probe gateway-wide
    breaker.after_call(probe, S, 0.01)
    assert other.state == CLOSED


def test_a_late_probe_outcome_still_settles_the_state(redis_server_session: Any, links: list[RedisLink]) -> None:
    breaker, _ = _opened(redis_server_session, links)
    probe = breaker.before_call()
    breaker._offset = -60.0  # Redis runs the outcome long after the probe's process gave up on it
    breaker.after_call(probe, S, 0.01)
    assert breaker.state == CLOSED  # the probe did succeed: the service is back
    assert breaker.snapshot()["successes"] == 0  # counted by the process itself, not twice


def test_a_command_redis_runs_after_its_caller_gave_up_changes_nothing(redis_server_session: Any,
                                                                       links: list[RedisLink]) -> None:
    prefix = new_prefix()
    breaker, clock = _opened(redis_server_session, links, prefix)
    other = _sibling(redis_server_session, links, prefix, clock)
    before = breaker.snapshot()
    breaker._offset = -60.0  # as if sent a minute before Redis ran it (a SIGSTOP in between)
    late = breaker.before_call()
    assert late.generation[0] == "local"  # treated as no answer: the local breaker decided
    after = breaker.snapshot()
    assert (after["state"], after["rejects"]) == (before["state"], before["rejects"]) == (HALF_OPEN, 0)
    probe = other.before_call()  # no lease was taken by the late command
    assert probe.probe
    other.after_call(probe, S, 0.01)
    ticket = breaker.before_call()
    assert ticket.generation[0] == "redis"
    breaker._offset = -60.0
    breaker.after_call(ticket, F, 0.01)  # a late outcome is counted here, not in Redis
    assert other.snapshot()["failures"] == 3 and other.state == CLOSED
    assert breaker.fallback.snapshot()["failures"] == 1


def test_a_probe_that_succeeded_while_redis_was_stalled_closes_the_circuit_when_it_wakes(
        redis_server: Any, links: list[RedisLink]) -> None:
    """Redis frozen (SIGSTOP) while the probe is out: nobody is shut out once it answers again."""
    import signal

    clock, prefix = FakeClock(), new_prefix()  # the scripts' clock and the links' skip period

    def process() -> Any:
        link = link_to(redis_server, links, prefix, socket_timeout=1.0, skip_seconds=0.05, monotonic=clock)
        return BreakerRegistry(breaker_settings(timeout=1.0), link, clock, shared_clock=clock)[SERVICE]
    a, b = process(), process()
    for _ in range(3):
        a.after_call(a.before_call(), F, 0.01)
    clock.advance(30)  # past the reset timeout
    probe = a.before_call()
    assert probe.probe
    with pytest.raises(CircuitOpen):
        b.before_call()  # the probe is out
    redis_server.signal_group(signal.SIGSTOP)
    try:
        a.after_call(probe, S, 0.01)  # the service is back; Redis does not answer
        local = b.before_call()  # b falls back to its own breaker, and its calls succeed
        assert local.generation[0] == "local"
        b.after_call(local, S, 0.01)
    finally:
        redis_server.signal_group(signal.SIGCONT)
    clock.advance(0.06)  # past the links' skip period
    for breaker in (b, a):
        ticket = breaker.before_call()
        assert ticket.generation[0] == "redis" and not ticket.probe
        breaker.after_call(ticket, S, 0.01)
    assert a.state == CLOSED


def test_calls_that_succeeded_on_the_local_breaker_close_the_shared_one(redis_server_session: Any,
                                                                        links: list[RedisLink]) -> None:
    prefix = new_prefix()
    breaker, clock = _opened(redis_server_session, links, prefix)
    clock.advance(-29)  # still OPEN in Redis, the probe not due for a while
    other = _sibling(redis_server_session, links, prefix, clock)
    breaker._scripts.before = NeverArrives(breaker._scripts.before)
    local = breaker.before_call()  # Redis unreachable: the local breaker decides, afresh
    assert local.generation[0] == "local"
    breaker._scripts.after = NeverArrives(breaker._scripts.after)
    clock.advance(1)
    breaker.after_call(local, S, 0.01)  # ... and the service answered
    with pytest.raises(CircuitOpen):
        other.before_call()  # Redis does not know yet
    ticket = breaker.before_call()  # back on Redis, telling it: as good as a probe
    assert ticket.generation[0] == "redis" and not ticket.probe
    assert other.state == CLOSED


def test_a_local_failure_after_the_success_tells_nothing(redis_server_session: Any, links: list[RedisLink]) -> None:
    breaker, clock = _opened(redis_server_session, links)
    clock.advance(-29)
    for outcome in (S, F):
        breaker._scripts.before = NeverArrives(breaker._scripts.before)
        local = breaker.before_call()
        breaker._scripts.after = NeverArrives(breaker._scripts.after)
        breaker.after_call(local, outcome, 0.01)
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # the last word of the local calls was a failure: still OPEN


# --- a CLOSED answer held (CB_CLOSED_HOLD) ---------------------------------------------------------

def _evalshas(server: Any) -> int:
    return int(server.client().info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def _holding(breaker: Any) -> None:
    """Make calls until ``breaker`` holds Redis's CLOSED answer (once its subscription is confirmed), then tell all."""
    deadline = time.monotonic() + 5
    while not breaker._closed_until:
        assert time.monotonic() < deadline, "never held the CLOSED answer"
        breaker.after_call(breaker.before_call(), S, 0.01)
        time.sleep(0.01)
    breaker.push_held()


def test_a_held_closed_circuit_costs_no_round_trip_and_tells_its_successes_in_one(
        redis_server_session: Any, links: list[RedisLink]) -> None:
    clock, prefix, settings = FakeClock(), new_prefix(), breaker_settings(closed_hold=0.5)
    breaker, other = (BreakerRegistry(settings, link_to(redis_server_session, links, prefix), clock,
                                      shared_clock=clock)[SERVICE] for _ in range(2))
    _holding(breaker)
    told = other.snapshot()["successes"]
    before = _evalshas(redis_server_session)
    for _ in range(50):
        breaker.after_call(breaker.before_call(), S, 0.01)
    assert _evalshas(redis_server_session) == before  # no round trip for 50 calls
    assert breaker.snapshot()["successes"] == told + 50  # its own snapshot counts them at once
    assert other.snapshot()["successes"] == told  # not told yet
    clock.advance(0.2)  # past TOLD_SECONDS, within the hold
    before = _evalshas(redis_server_session)
    breaker.after_call(breaker.before_call(), S, 0.01)
    assert _evalshas(redis_server_session) == before + 1  # one script tells all 51
    snap = other.snapshot()
    assert snap["successes"] == told + 51 and snap["window"]["calls"] >= 51
    assert snap["latency_ms"]["p50"] == 10.0
    clock.advance(0.5)  # the hold ends: the next call asks Redis again
    before = _evalshas(redis_server_session)
    breaker.before_call()
    assert _evalshas(redis_server_session) == before + 1


def test_an_opening_anywhere_ends_every_held_closed_answer(redis_server_session: Any,
                                                            links: list[RedisLink]) -> None:
    clock, prefix = FakeClock(), new_prefix()
    settings = breaker_settings(closed_hold=60)  # only the announcement of the opening can end it in time
    a = BreakerRegistry(settings, link_to(redis_server_session, links, prefix), clock, shared_clock=clock)[SERVICE]
    b = BreakerRegistry(settings, link_to(redis_server_session, links, prefix), clock, shared_clock=clock)[SERVICE]
    _holding(a)
    _holding(b)
    clock.advance(11)  # the successes so far leave the window; both hold on
    for _ in range(2):
        a.after_call(a.before_call(), S, 0.01)  # held: told with the failure below, before the rule is applied
    for _ in range(3):
        a.after_call(a.before_call(), F, 0.01)
    snap = a.snapshot()
    assert (snap["state"], snap["window"]["calls"], snap["window"]["failures"]) == (OPEN, 5, 3)
    with pytest.raises(CircuitOpen):
        a.before_call()  # the opener dropped its own hold at the reply
    for _ in range(200):  # 2 s at most; fewer calls than TOLD_MAX, so b never has to ask Redis itself
        try:
            ticket = b.before_call()
        except CircuitOpen:
            break
        b.after_call(ticket, S, 0.01)
        time.sleep(0.01)
    else:
        raise AssertionError("the other process never heard the circuit open")


def test_calls_that_end_while_successes_are_told_are_counted_once(redis_server_session: Any,
                                                                 links: list[RedisLink]) -> None:
    clock, prefix, settings = FakeClock(), new_prefix(), breaker_settings(closed_hold=0.5)
    breaker, other = (BreakerRegistry(settings, link_to(redis_server_session, links, prefix), clock,
                                      shared_clock=clock)[SERVICE] for _ in range(2))
    _holding(breaker)
    told = other.snapshot()["successes"]
    original = breaker._scripts.told

    def calls_end_meanwhile(*args: Any, **kwargs: Any) -> Any:
        breaker._scripts.told = original
        for _ in range(3):  # other requests of this process end while the batch is on its way
            breaker.after_call(breaker.before_call(), S, 0.01)
        return original(*args, **kwargs)

    breaker._scripts.told = calls_end_meanwhile
    for _ in range(5):
        breaker.after_call(breaker.before_call(), S, 0.01)
    clock.advance(0.2)
    breaker.after_call(breaker.before_call(), S, 0.01)  # tells these 6
    breaker.push_held()  # and then the 3
    assert other.snapshot()["successes"] == told + 9


def _holding_open(redis_server_session: Any, links: list[RedisLink]) -> Any:
    """A breaker that opened, asked Redis once (a reject counted there) and refused 3 more calls itself."""
    clock = FakeClock()
    link = link_to(redis_server_session, links, new_prefix(), socket_timeout=2.0)
    breaker = BreakerRegistry(breaker_settings(), link, clock, shared_clock=clock)[SERVICE]
    deadline = time.monotonic() + 5
    while not breaker.subscription.ensure():  # an OPEN answer is held only once the subscription is live
        assert time.monotonic() < deadline, "the subscription never went live"
        time.sleep(0.01)
    for _ in range(3):
        breaker.after_call(breaker.before_call(), F, 0.01)
    for _ in range(4):
        with pytest.raises(CircuitOpen):
            breaker.before_call()  # the first asks Redis, the other 3 are refused here
    assert breaker._held_rejects == 3
    return breaker


def _snapshot_after(breaker: Any, name: str, seen: list[int]) -> None:
    """Wrap one of ``breaker``'s scripts: once Redis has run it, read the snapshot before the reply is taken in
    (as another request of the same process may, while the caller waits for its round trip)."""
    original = getattr(breaker._scripts, name)

    def then_read(*args: Any, **kwargs: Any) -> Any:
        reply = original(*args, **kwargs)
        setattr(breaker._scripts, name, original)
        seen.append(breaker.snapshot()["rejects"])
        return reply

    setattr(breaker._scripts, name, then_read)


def test_rejects_on_their_way_to_redis_are_never_counted_twice(redis_server_session: Any,
                                                               links: list[RedisLink]) -> None:
    breaker, seen = _holding_open(redis_server_session, links), []
    _snapshot_after(breaker, "held", seen)
    breaker.push_held()  # the stats flusher's push of the 3
    assert seen == [4]
    assert breaker.snapshot()["rejects"] == 4


def test_rejects_sent_with_a_call_are_never_counted_twice(redis_server_session: Any,
                                                          links: list[RedisLink]) -> None:
    breaker, seen = _holding_open(redis_server_session, links), []
    breaker.forget_open()  # the next call asks Redis again, carrying the 3
    _snapshot_after(breaker, "before", seen)
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    assert seen == [5]
    assert breaker.snapshot()["rejects"] == 5


def test_a_failure_follows_the_successes_on_their_way_to_redis(redis_server_session: Any,
                                                               links: list[RedisLink]) -> None:
    """One success then two failures open the circuit (3 calls the minimum), even when the stats flusher's
    batch with the success is still on its way as the failures end: each failure waits for its answer."""
    clock, prefix = FakeClock(), new_prefix()
    settings = breaker_settings(closed_hold=60)
    link = link_to(redis_server_session, links, prefix, socket_timeout=2.0)  # a failure waits up to this long
    breaker = BreakerRegistry(settings, link, clock, shared_clock=clock)[SERVICE]
    _holding(breaker)
    clock.advance(11)  # the successes so far leave the window; the hold goes on
    breaker.after_call(breaker.before_call(), S, 0.01)  # held: counted here
    original, on_its_way, failing = breaker._scripts.told, threading.Event(), threading.Event()
    take = breaker._batches.take_for_failure

    def held_back(*args: Any, **kwargs: Any) -> Any:
        breaker._scripts.told = original
        on_its_way.set()
        assert failing.wait(5)  # the batch goes once a failure has come to wait for it, not before
        return original(*args, **kwargs)

    def failure_comes(wait: float) -> Any:
        failing.set()
        return take(wait)

    breaker._scripts.told = held_back
    breaker._batches.take_for_failure = failure_comes  # type: ignore[method-assign]
    flusher = threading.Thread(target=breaker.push_held)  # the stats flush, in its own thread
    flusher.start()
    assert on_its_way.wait(5)
    for _ in range(2):
        breaker.after_call(breaker.before_call(), F, 0.01)
    flusher.join(5)
    snap = breaker.snapshot()
    assert (snap["state"], snap["window"]["calls"], snap["window"]["failures"]) == (OPEN, 3, 2)
    with pytest.raises(CircuitOpen):
        breaker.before_call()
