"""Pub/sub subscriptions: live once confirmed, every message delivered, restarted in a forked process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway.redis.link import RedisLink
from gateway.redis.subscription import Subscription
from tests.support.chaos import wait_for

ROOT = Path(__file__).resolve().parents[2]


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


QUIET_UNDER_GEVENT = r"""
from gevent import monkey
monkey.patch_all()
import sys, gevent
from gateway.redis.link import RedisLink
from gateway.redis.subscription import Subscription

link = RedisLink(sys.argv[1], "gw-sub-quiet:")
heard = []
sub = Subscription(link, link.key("channel"), heard.append, lambda: None)
sub.ensure()
for _ in range(500):
    if sub.live:
        break
    gevent.sleep(0.01)
assert sub.live and sub.quiet(), "live and nothing waiting"
# Published over a blocking socket: this greenlet never yields, so the listener cannot run meanwhile.
# Redis writes the message in the same pass as its answer to PUBLISH (Redis 7: just after it), so the
# bytes are awaited on the subscription's socket with the OS's own select, which does not yield either.
blocking = monkey.get_original("socket", "socket")()
where = link.client.connection_pool.connection_kwargs
blocking.connect((where["host"], where["port"]))
channel = link.key("channel").encode()
blocking.sendall(b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$6\r\nopened\r\n" % (len(channel), channel))
assert blocking.recv(64).startswith(b":1"), "one subscriber heard it"
readable, _, _ = monkey.get_original("select", "select")([sub._socket], [], [], 5.0)
assert readable, "the message never reached the subscription's socket"
assert not sub.quiet(), "the message waits unread: not quiet"
assert heard == [], "the listener has not run yet (no switch since the publish)"
for _ in range(500):
    if heard:
        break
    gevent.sleep(0.01)
assert heard == [b"opened"] and sub.quiet(), (heard, sub.quiet())
print("ok")
"""


def test_a_message_that_waits_unread_makes_the_subscription_not_quiet(redis_server_session: Any) -> None:
    # Under gevent, as in a worker: the listener is a greenlet that reads only when this one waits.
    done = subprocess.run([sys.executable, "-c", QUIET_UNDER_GEVENT, redis_server_session.url],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_without_hiredis_messages_come_through_redis_pys_own_loop() -> None:
    heard: list[bytes] = []
    sub = Subscription(RedisLink("redis://127.0.0.1:9", "gw-sub-test:"), "channel", heard.append, lambda: None)
    replies = [None, {"type": "subscribe", "data": 1}, {"type": "message", "data": b"one"},
               {"type": "message", "data": "two"}]

    class PythonParsed:  # a connection whose parser is redis-py's own (no hiredis reader)
        connection = type("Connection", (), {"_parser": object()})()

        def get_message(self, timeout: float) -> Any:
            if not replies:
                sub.stop()
                return None
            return replies.pop(0)

    sub._hand_on(PythonParsed())
    assert heard == [b"one", b"two"]
