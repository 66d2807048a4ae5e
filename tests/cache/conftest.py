"""Fixtures of the cache's tests: Redis links closed after each test, and the harness on every store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gateway.clock import FakeClock
from gateway.redis.link import RedisLink
from tests.support.cache import Gateway, memory_cache, redis_cache

Factory = Callable[..., Gateway]


@pytest.fixture
def links() -> Iterator[list[RedisLink]]:
    """Redis links a test opens (``redis_cache`` appends them), closed when it ends."""
    opened: list[RedisLink] = []
    yield opened
    for link in opened:
        link.close()


@pytest.fixture(params=["memory", "redis", "redis-tier"])
def make(request: pytest.FixtureRequest, links: list[RedisLink]) -> Factory:
    """Build a Gateway harness on the store under test; settings as keyword overrides."""

    def build(**settings: Any) -> Gateway:
        clock = FakeClock()
        if request.param == "memory":
            cache = memory_cache(clock, **settings)
        else:
            # The tier's copies age with the test's clock too, so no answer depends on real time.
            tier = 0.5 if request.param == "redis-tier" else 0.0
            cache = redis_cache(request.getfixturevalue("redis_server_session"), clock, links, tier_seconds=tier,
                                tier_monotonic=clock, **settings)
        gw = Gateway(cache, clock)
        gw.expected_source = "memory" if request.param == "memory" else "Redis"
        return gw

    return build


@pytest.fixture
def gw(make: Factory) -> Gateway:
    """The harness on the store under test, with the default settings."""
    return make()
