"""Pub/sub subscriptions: live once confirmed, every message delivered, restarted in a forked process."""

from __future__ import annotations

from typing import Any

from gateway.redis.link import RedisLink
from gateway.redis.subscription import Subscription
from tests.support.chaos import wait_for


def test_a_subscription_goes_live_and_hears_what_is_published(redis_server_session: Any) -> None:
    link = RedisLink(redis_server_session.url, "gw-sub-test:")
    heard: list[bytes] = []
    resets: list[int] = []
    sub = Subscription(link, link.key("channel"), heard.append, lambda: resets.append(1))
    try:
        assert resets == [] and not sub.live
        sub.ensure()
        assert resets  # a fresh start in this process: what it held is dropped
        assert wait_for(lambda: sub.live, 5.0)
        told = len(resets)  # once more when Redis confirmed: anything published before was missed
        sub.publish(b"one")
        sub.publish(b"two")
        assert wait_for(lambda: heard == [b"one", b"two"], 5.0), heard
        sub.ensure()
        assert len(resets) == told  # the same process: not started twice
    finally:
        sub.stop()
        link.close()


def test_a_subscription_is_not_live_while_redis_is_gone(redis_server: Any) -> None:
    link = RedisLink(redis_server.url, "gw-sub-test:", skip_seconds=0.1)
    resets: list[int] = []
    sub = Subscription(link, link.key("channel"), lambda data: None, lambda: resets.append(1))
    try:
        sub.ensure()
        assert wait_for(lambda: sub.live, 5.0)
        redis_server.kill()
        assert wait_for(lambda: not sub.live, 5.0)  # holders of pub/sub-kept state stop trusting it
        redis_server.start()
        assert wait_for(lambda: sub.live, 10.0)
        assert len(resets) >= 2  # the loss was told, so what depended on the messages was dropped
    finally:
        sub.stop()
        link.close()
