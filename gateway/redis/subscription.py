"""One Redis pub/sub subscription per worker process, for what a worker may keep only while it hears every change.

A worker keeps short-lived copies of shared state (cache entries, an open circuit) to spare a Redis
round trip per request; it may use them only while it is sure to hear every change made elsewhere.
:class:`Subscription` is live only once Redis has confirmed it, and calls ``on_reset`` whenever it
(re)starts or is lost, so its holder drops everything it kept: a message missed while the
subscription was down can never leave a stale copy in use.
"""

from __future__ import annotations

import _socket
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from gateway.redis.link import RedisLink, StoreUnavailable
from gateway.sockets import os_socket, waiting

log = logging.getLogger("gateway.redis")

RETRY_SECONDS = 0.5
CONFIRM_SECONDS = 2.0
POLL_SECONDS = 0.2


class Subscription:
    """A per-process listener on one channel, started lazily in the serving (forked) process."""

    def __init__(self, link: RedisLink, channel: str, on_message: Callable[[bytes], None],
                 on_reset: Callable[[], None]) -> None:
        self.link = link
        self.channel = channel
        self.on_message = on_message
        self.on_reset = on_reset
        self._pid: int | None = None
        self._live = False
        self._stopped = False
        self._lock = threading.Lock()
        self._socket: _socket.socket | None = None  # the live subscription's own socket (see ``quiet``)

    @property
    def live(self) -> bool:
        """True while every message published on the channel reaches this process."""
        return self._live

    def quiet(self) -> bool:
        """True when nothing waits on the live subscription's socket: every message Redis sent reached ``on_message``.

        A copy kept on the word of this subscription can be stale for as long as a message waits to be read:
        Redis writes it in the same pass as its answer to the command that published it, but the listener
        may run only after a request that came in meanwhile. One non-blocking peek (no wait, no switch).
        """
        sock = self._socket
        if sock is None or not self._live:
            return False
        if sock.gettimeout() != 0.0:
            return True  # not gevent's non-blocking socket: a peek could wait, so the listener's word is taken as is
        return not waiting(sock)  # a byte waits, or the socket closed: not quiet either way

    def ensure(self) -> bool:
        """Start the listener in this process if needed (threads do not survive a fork); return ``live``."""
        pid = os.getpid()
        if self._pid != pid:
            with self._lock:
                if self._pid != pid:
                    self._pid = pid
                    self._live = False
                    self.on_reset()
                    threading.Thread(target=self._listen, name=f"subscription {self.channel}", daemon=True).start()
        return self._live

    def publish(self, data: bytes) -> None:
        """Publish ``data`` to every subscribed process (raises StoreUnavailable)."""
        self.link.run(lambda client: client.publish(self.channel, data))

    def stop(self) -> None:
        """Stop listening (tests and shutdown)."""
        self._stopped = True

    def _listen(self) -> None:
        while not self._stopped:
            pubsub: Any = None
            try:
                pubsub = self.link.pubsub()
                pubsub.subscribe(self.channel)
                self._await_confirmation(pubsub)
                self.on_reset()
                self._socket = _raw_socket(pubsub)
                self._live = True
                self._hand_on(pubsub)
            except Exception:  # any failure: stop using what was kept until subscribed again
                log.debug("subscription to %s lost", self.channel, exc_info=True)
            finally:
                self._live = False
                self._socket = None
                self.on_reset()
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass
            if not self._stopped:
                time.sleep(RETRY_SECONDS)

    def _hand_on(self, pubsub: Any) -> None:
        """Give each message to ``on_message`` until stopped; raises when the connection fails.

        With hiredis, each reply is read straight from the connection's parser, which waits on the
        socket itself: redis-py's ``get_message`` polls the socket through gevent's hub first and makes
        a dict per message, and its RESP3 push handler formats a log line for each (82 → 42 µs of CPU per
        message here, a paced stream to one gevent subscriber; every store announces one to every
        worker). Messages that arrive together are all handed on before the listener waits again, so
        none is left in the parser's buffer while other greenlets run (``quiet`` looks at the socket).
        """
        parser: Any = getattr(pubsub.connection, "_parser", None)
        if getattr(parser, "_reader", None) is None:  # no hiredis: redis-py's own loop
            while not self._stopped:
                message = pubsub.get_message(timeout=POLL_SECONDS)
                if message is not None and message.get("type") == "message":
                    self._heard(message.get("data"))
            return
        if hasattr(parser, "set_pubsub_push_handler"):  # RESP3: a message is a push, handed back as it is
            parser.set_pubsub_push_handler(_as_it_is)  # (redis-py's own handler formats a log line for each)
        while not self._stopped:
            try:
                reply = parser.read_response(push_request=True, timeout=POLL_SECONDS)
            except redis.TimeoutError:
                continue  # nothing for a while: see whether to stop
            if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                self._heard(reply[2])

    def _heard(self, data: Any) -> None:
        self.on_message(data if isinstance(data, bytes) else str(data).encode())

    @staticmethod
    def _await_confirmation(pubsub: Any) -> None:
        """Wait until Redis confirms the subscription: a message published before that would be missed."""
        deadline = time.monotonic() + CONFIRM_SECONDS
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.1)
            if message is not None and message.get("type") == "subscribe":
                return
        raise StoreUnavailable("no subscription confirmation from Redis")


def _as_it_is(reply: Any) -> Any:
    return reply


def _raw_socket(pubsub: Any) -> _socket.socket | None:
    """The OS socket under a redis-py PubSub's connection (gevent's wrapper would wait, not answer at once)."""
    return os_socket(getattr(getattr(pubsub, "connection", None), "_sock", None))
