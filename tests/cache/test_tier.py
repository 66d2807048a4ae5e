"""The per-worker tier in front of Redis: remembered misses and the OPEN answers a breaker holds."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway.breaker.registry import BreakerRegistry
from gateway.cache.policy import keys
from gateway.clock import FakeClock
from gateway.config.settings import load_settings
from gateway.errors import CircuitOpen
from gateway.redis.link import RedisLink
from gateway.redis.slots import hash_tag
from tests.support.cache import Gateway, make_call, new_prefix, redis_cache


def instance(server: Any, links: list[RedisLink], prefix: str) -> Gateway:
    clock = FakeClock()
    gw = Gateway(redis_cache(server, clock, links, prefix, tier_seconds=1.0), clock)
    gw.request("/warm-up")  # the listener starts on first use
    deadline = time.monotonic() + 2
    while not gw.cache.store.listening and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gw.cache.store.listening
    return gw


def test_a_remembered_miss_goes_when_another_instance_stores_the_key(redis_server_session: Any,
                                                                     links: list[RedisLink]) -> None:
    prefix = new_prefix()
    first, second = instance(redis_server_session, links, prefix), instance(redis_server_session, links, prefix)
    first.error = CircuitOpen(service="order-service")  # first only looks: a miss, remembered
    with pytest.raises(CircuitOpen):
        first.request()
    assert second.request().cache == "MISS"  # stored, and announced with its key
    deadline = time.monotonic() + 0.5
    while True:
        try:
            answer = first.request()
            break
        except CircuitOpen:
            assert time.monotonic() < deadline, "the store did not reach the other instance"
            time.sleep(0.01)
    assert answer.cache == "HIT" and answer.body == b'{"id": 1}'  # second's entry, not first's remembered miss
    assert first.upstream_calls == [] or all(c.path == "/warm-up" for c, _ in first.upstream_calls)


def test_an_open_circuit_is_held_briefly_and_dropped_when_forced_closed(redis_server_session: Any) -> None:
    url = f"redis://127.0.0.1:{redis_server_session.port}/0"
    settings = load_settings({"REDIS_URL": url, "REDIS_KEY_PREFIX": new_prefix(), "CB_RESET_TIMEOUT": "30"})
    one, two = RedisLink(url, settings.redis_key_prefix), RedisLink(url, settings.redis_key_prefix)
    try:
        first, second = BreakerRegistry(settings, one), BreakerRegistry(settings, two)
        first.force("order-service", "open")
        for registry in (first, second):
            with pytest.raises(CircuitOpen):
                registry["order-service"].before_call()
        deadline = time.monotonic() + 2
        while not second["order-service"].refusing:  # once its subscription is live, the answer is held
            assert time.monotonic() < deadline
            with pytest.raises(CircuitOpen) as refused:
                second["order-service"].before_call()
            time.sleep(0.01)
        with pytest.raises(CircuitOpen) as refused:
            second["order-service"].before_call()  # answered in process
        assert 25 <= refused.value.retry_after <= 30
        first.force("order-service", "close")
        deadline = time.monotonic() + 0.5
        while second["order-service"].refusing:
            assert time.monotonic() < deadline, "a forced close did not reach the other instance"
            time.sleep(0.01)
        assert not second["order-service"].before_call().probe
        snapshot = second["order-service"].snapshot()
        assert snapshot["rejects"] >= 3  # the ones answered in process are counted too
    finally:
        one.close()
        two.close()


def test_a_store_by_another_worker_drops_the_copy_and_a_fork_has_its_own_origin(
        redis_server_session: Any, links: list[RedisLink], monkeypatch: pytest.MonkeyPatch) -> None:
    gw = instance(redis_server_session, links, new_prefix())
    store = gw.cache.store
    gw.request()
    assert gw.request().cache == "HIT"
    key = hash_tag("/orders/1") + keys.shared_key(make_call())  # where an anonymous request's entry lives
    assert key in store._copies
    store._on_message(b"drop")  # not an announcement of a store: every copy goes
    assert not store._copies
    gw.request()
    assert key in store._copies
    store._on_message(b"s:" + store.origin + b":" + key.encode())  # our own echo: kept
    assert key in store._copies
    other = b"0" * len(store.origin)
    store._on_message(b"s:" + other + b":" + key.encode())  # a sibling's store of the key: dropped
    assert key not in store._copies
    gw.request()
    store._on_message(b"k:" + key.encode())  # announced without an origin: dropped
    assert key not in store._copies
    mine = store.origin
    monkeypatch.setattr("gateway.cache.tier.os.getpid", lambda: -1)  # as if forked from this process
    assert store.origin != mine and len(store.origin) == len(mine)
