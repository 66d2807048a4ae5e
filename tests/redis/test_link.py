"""The Redis link: fast, contained failures and a short skip after one."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from gateway.clock import FakeClock
from gateway.config.settings import load_settings
from gateway.redis.link import RedisLink, StoreUnavailable
from gateway.redis.slots import TAG_LENGTH, hash_tag
from tests.support.processes import free_port


def test_keys_live_under_the_prefix() -> None:
    link = RedisLink("redis://127.0.0.1:1/0", "gw-test:")
    assert link.key("cache", "e", "k") == "gw-test:cache:e:k"


def test_a_failure_is_store_unavailable_and_skips_redis_for_a_while() -> None:
    clock = FakeClock(0.0)
    link = RedisLink(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2, skip_seconds=1.0, monotonic=clock)
    calls: list[int] = []

    def ping(client: Any) -> Any:
        calls.append(1)
        return client.ping()

    with pytest.raises(StoreUnavailable):
        link.run(ping)  # nothing listens: refused at once
    assert link.status == "down" and not link.is_up
    with pytest.raises(StoreUnavailable):
        link.run(ping)  # skipped: not even tried
    assert len(calls) == 1
    with pytest.raises(StoreUnavailable):
        link.run(ping, always=True)  # a command that must be sent if at all possible is tried anyway
    assert len(calls) == 2
    clock.advance(1.0)
    assert link.is_up and link.status == "up"


def test_a_working_link_runs_the_operation(redis_server_session: Any) -> None:
    link = RedisLink(redis_server_session.url, "gw-link-test:")
    try:
        assert link.run(lambda client: client.set(link.key("x"), b"1", ex=5)) is True
        assert link.run(lambda client: client.get(link.key("x"))) == b"1"
        assert link.ping() is True
        assert link.used_memory() > 0
        scanned = {k.decode() if isinstance(k, bytes) else k for batch in link.scan(link.key("*")) for k in batch}
        assert link.key("x") in scanned
    finally:
        link.close()


def test_an_error_redis_raises_is_contained_too(redis_server_session: Any) -> None:
    link = RedisLink(redis_server_session.url, "gw-link-test:")
    try:
        def wrong(client: Any) -> Any:
            raise redis.ConnectionError("reset by peer")

        with pytest.raises(StoreUnavailable):
            link.run(wrong)
        assert not link.is_up
    finally:
        link.close()


def test_no_redis_configured_means_no_link() -> None:
    assert RedisLink.from_settings(load_settings({})) is None
    link = RedisLink.from_settings(load_settings({"REDIS_URL": "redis://127.0.0.1:1/0"}))
    assert link is not None and not link.cluster


def test_a_hash_tag_keeps_a_texts_keys_together_and_spreads_others() -> None:
    assert hash_tag("/orders/1") == hash_tag("/orders/1")
    assert len(hash_tag("/orders/1")) == TAG_LENGTH + 2 and hash_tag("/orders/1").startswith("{")
    assert len({hash_tag(f"/orders/{n}") for n in range(50)}) == 50
