"""The rate limiter on a throwaway Redis: one script call a request, shared counts, keys, Redis down."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from gateway.errors import RateLimited, RateLimitUnavailable
from gateway.redis.link import RedisLink
from gateway.traffic.ratelimit import RateLimiter
from tests.breaker import test_shared as test_breaker_redis
from tests.breaker.test_shared import link_to
from tests.traffic.test_ratelimit import call, limited

_prefixes = itertools.count()
links = test_breaker_redis.links  # the fixture: open RedisLinks, closed after the test


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def record_rate_limit(self, service: str, event: str) -> None:
        self.seen.append((service, event))


def test_two_instances_share_one_count_in_one_script_call(redis_server_session: Any, links: list[RedisLink]) -> None:
    prefix = f"rl{next(_prefixes)}-{time.monotonic_ns()}:"
    first = RateLimiter(link_to(redis_server_session, links, prefix))
    second = RateLimiter(link_to(redis_server_session, links, prefix))
    service = limited({"limits": ["4/m", "100/h"]})
    first.check(call(service))  # loads the script
    watcher = redis_server_session.client()
    before = watcher.info("commandstats")
    assert dict(second.check(call(service)))["RateLimit"] == '"per-minute";r=2;t=30, "per-hour";r=98;t=72'
    after = watcher.info("commandstats")
    count = {name: after.get(name, {}).get("calls", 0) - before.get(name, {}).get("calls", 0) for name in after}
    assert count.get("cmdstat_evalsha") == 1 and count.get("cmdstat_eval", 0) == 0
    first.check(call(service))
    second.check(call(service))
    for limiter in (first, second):
        with pytest.raises(RateLimited) as refused:
            limiter.check(call(service))
        assert 14 <= int(dict(refused.value.headers)["Retry-After"]) <= 15
    assert second.check(call(service, ip="10.0.0.2"))  # another client has its own count
    keys = sorted(k.decode() for k in watcher.keys(prefix + "*"))
    assert len(keys) == 4  # two clients, two limits each
    tags = {k[k.index("{"):k.index("}") + 1] for k in keys}
    assert len(tags) == 2 and all(k.startswith(prefix + "rl:{") for k in keys)  # one hash tag per client
    for key in keys:
        ttl = watcher.pttl(key)
        assert 0 < ttl <= (3_600_000 if key.endswith(":3600") else 60_000)
    assert "10.0.0.1" not in "".join(keys)


def test_redis_down_fails_open_closed_or_local_as_configured(redis_server: Any, links: list[RedisLink]) -> None:
    link = link_to(redis_server, links, "down:")
    events = Events()
    limiter = RateLimiter(link, stats=events)
    open_service = limited({"limits": ["1/m"]})
    closed_service = limited({"limits": ["1/m"], "redis_down": "closed"})
    local_service = limited({"limits": ["1/m"], "redis_down": "local"})
    limiter.check(call(open_service))
    redis_server.kill()
    for _ in range(3):
        assert limiter.check(call(open_service)) == []  # open: through, no RateLimit header (nothing known)
    with pytest.raises(RateLimitUnavailable) as refused:
        limiter.check(call(closed_service))
    assert refused.value.status == 503 and dict(refused.value.headers)["Retry-After"] == "1"
    assert dict(limiter.check(call(local_service)))["RateLimit"] == '"per-minute";r=0;t=60'
    with pytest.raises(RateLimited):
        limiter.check(call(local_service))  # this worker's own count
    assert events.seen.count(("order-service", "redis_down_allowed")) == 3
    assert ("order-service", "redis_down_refused") in events.seen
    assert events.seen.count(("order-service", "redis_down_local")) == 2
    assert ("order-service", "limited") in events.seen


def evalsha_calls(watcher: Any) -> int:
    return int(watcher.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def test_a_client_far_from_its_limits_is_counted_here_and_synced(redis_server_session: Any,
                                                                  links: list[RedisLink]) -> None:
    from gateway.clock import FakeClock

    prefix = f"rl{next(_prefixes)}-{time.monotonic_ns()}:"
    clock = FakeClock()
    first = RateLimiter(link_to(redis_server_session, links, prefix), clock=clock, sync_seconds=0)
    second = RateLimiter(link_to(redis_server_session, links, prefix), clock=clock, sync_seconds=0)
    service = limited({"limits": ["1000/m"]})  # headroom: max(20, 10 %) = 100 requests
    watcher = redis_server_session.client()
    first.check(call(service))  # decided in Redis (loads the script too)
    before = evalsha_calls(watcher)
    for _ in range(499):
        first.check(call(service))
    assert evalsha_calls(watcher) == before  # far from the limit: counted in this worker
    assert dict(first.check(call(service)))["RateLimit"].startswith('"per-minute";r=499;t=')
    first.sync()  # one call adds the 500 counted here
    assert evalsha_calls(watcher) == before + 1
    # The other instance sees them: 501 of 1000 spent, about 30 s to a whole quota again.
    state = dict(second.check(call(service)))["RateLimit"]
    assert state.startswith('"per-minute";r=498;t=') and 30 <= int(state.rsplit("=", 1)[1]) <= 31


def test_near_a_limit_every_request_is_decided_in_redis(redis_server_session: Any, links: list[RedisLink]) -> None:
    from gateway.clock import FakeClock

    prefix = f"rl{next(_prefixes)}-{time.monotonic_ns()}:"
    clock = FakeClock()
    first = RateLimiter(link_to(redis_server_session, links, prefix), clock=clock, sync_seconds=0)
    second = RateLimiter(link_to(redis_server_session, links, prefix), clock=clock, sync_seconds=0)
    service = limited({"limits": ["300/m"]})  # headroom 30
    watcher = redis_server_session.client()
    first.check(call(service))
    for _ in range(269):  # 30 left: no more than the headroom
        first.check(call(service))
    first.sync()
    before = evalsha_calls(watcher)
    for _ in range(15):
        second.check(call(service))
        first.check(call(service))
    assert evalsha_calls(watcher) - before == 30  # within the headroom: one script call a request
    with pytest.raises(RateLimited):
        first.check(call(service))  # exactly 300 passed, counted across both
    with pytest.raises(RateLimited):
        second.check(call(service))


def test_a_small_limit_is_never_counted_locally(redis_server_session: Any, links: list[RedisLink]) -> None:
    prefix = f"rl{next(_prefixes)}-{time.monotonic_ns()}:"
    limiter = RateLimiter(link_to(redis_server_session, links, prefix), sync_seconds=0)
    service = limited({"limits": ["10/s"]})  # quota under the headroom floor: always in Redis
    watcher = redis_server_session.client()
    limiter.check(call(service))
    before = evalsha_calls(watcher)
    for _ in range(5):
        limiter.check(call(service))
    assert evalsha_calls(watcher) - before == 5


def test_a_sync_that_fails_forgets_the_view(redis_server: Any, links: list[RedisLink]) -> None:
    from gateway.clock import FakeClock

    clock = FakeClock()
    limiter = RateLimiter(link_to(redis_server, links, f"rl{next(_prefixes)}:"), clock=clock, sync_seconds=0)
    service = limited({"limits": ["1000/m"]})
    limiter.check(call(service))
    limiter.check(call(service))
    redis_server.kill()
    limiter.sync()
    assert not limiter._views  # the next request asks Redis (and meets its redis_down rule)
    assert limiter.check(call(service)) == []  # redis_down open: let through without headers
