"""Every greenlet's commands to one Redis node written together on one connection, each reply handed back in order.

redis-py under gevent gives each greenlet a pooled connection of its own: every command is its own
``send``, its own ``recv`` (first ``EAGAIN``, then a wait through gevent's hub), its own wake-up, and
Redis reads and answers each connection on its own. A miss makes two such calls (read-or-lock, store).
Node's redis client writes every concurrent request's commands on one connection instead, so both
sides pay for a batch what they would pay for one command.

:class:`Multiplexer` does the same under gevent. A caller packs its command, queues it with a waiter,
and sleeps; once per turn of the hub's loop everything queued goes out in one ``send``. Replies come
back in the order the commands went, so the hub's read callback hands each to the oldest waiter. Both
run in the hub, on the OS socket, and never wait: a send cut short keeps the rest for when the
socket can take it.

Failures are the connection's, never one caller's: a connection that closes, fails, or has a command
unanswered for ``timeout`` seconds is dropped, every waiter gets the error, and the next call makes a
new one. A caller that leaves early (its greenlet killed, or an outer ``gevent.Timeout``) leaves its
reply to be read and thrown away, so the replies after it still reach their own waiters.

Redis's error replies come back as exceptions (``redis.ResponseError``, with redis-py's subclasses for
``NOSCRIPT`` and ``MOVED``/``ASK``) for the caller to handle: the link loads a missing script and
hands a redirected command to redis-py's cluster client.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis
import redis
from redis._parsers.base import BaseParser

from gateway.sockets import os_socket

Arg = str | bytes | int | float

READ_SIZE = 65536


def pack(args: tuple[Arg, ...]) -> bytes:
    """One command in Redis's protocol (RESP), as redis-py's encoder writes it for these types."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            value = arg
        elif isinstance(arg, str):
            value = arg.encode()
        elif isinstance(arg, int):
            value = b"%d" % arg
        else:
            value = repr(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(value), value))
    return b"".join(parts)


def available() -> bool:
    """Whether commands can be multiplexed here: gevent's sockets in place (hiredis, a requirement, reads replies)."""
    try:
        from gevent import monkey
    except ImportError:
        return False
    return bool(monkey.is_module_patched("socket"))


class Multiplexer:
    """One connection to one Redis node, shared by every greenlet of one hub (see the module's notes).

    ``make_connection`` gives a redis-py connection not yet connected (its ``connect`` does the
    handshake: AUTH, SELECT, a Sentinel's master lookup); only its socket is used after that.
    """

    def __init__(self, make_connection: Callable[[], Any], timeout: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        from gevent import get_hub

        self._make_connection = make_connection
        self.timeout = timeout
        self._monotonic = monotonic
        self._hub = get_hub()
        self._loop = self._hub.loop
        self._pid = os.getpid()
        self._connection: Any = None
        self._raw: Any = None
        self._connecting = False
        self._reader: Any = None
        self._reading: Any = None  # the hub's read watcher
        self._writing: Any = None  # the hub's write watcher, while a send waits for room
        self._watchdog: Any = None
        self._out: list[bytes] = []
        self._backlog = b""  # the rest of a send the socket could not take at once
        self._flushing = False
        self._waiters: deque[Any] = deque()
        self._since = 0.0  # when the oldest unanswered command went, or a reply last came

    @property
    def usable(self) -> bool:
        """Whether the calling greenlet may use this multiplexer (same process, same hub)."""
        from gevent import get_hub

        return self._pid == os.getpid() and get_hub() is self._hub

    def call(self, *args: Arg) -> Any:
        """Send one command with everyone else's and wait for its reply (Redis's error replies are raised)."""
        from gevent.hub import Waiter

        waiter = Waiter(self._hub)
        if not self._waiters:
            self._since = self._monotonic()
        self._waiters.append(waiter)
        self._out.append(pack(args))
        if self._raw is None and not self._connecting:
            self._connect()
        elif not self._flushing:
            self._flushing = True
            self._loop.run_callback(self._flush)
        reply = waiter.get()
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def close(self) -> None:
        """Drop the connection; every waiter gets a connection error."""
        self._fail(redis.ConnectionError("connection closed"))

    # -- in the calling greenlet -------------------------------------------------------------------

    def _connect(self) -> None:
        self._connecting = True
        connection = self._make_connection()
        try:
            connection.connect()
            raw = os_socket(connection._sock)
            if raw is None or raw.gettimeout() != 0.0:
                connection.disconnect()
                raise redis.ConnectionError("no plain non-blocking socket to multiplex on (TLS?)")
        except BaseException as exc:
            self._connecting = False
            self._fail(exc if isinstance(exc, Exception) else redis.ConnectionError(str(exc)))
            raise
        self._connecting = False
        self._connection = connection
        self._raw = raw
        self._reader = hiredis.Reader(replyError=redis.ResponseError)
        self._reading = self._loop.io(raw.fileno(), 1)
        self._reading.start(self._on_readable)
        self._watchdog = self._loop.timer(self.timeout / 2, self.timeout / 2)
        self._watchdog.start(self._on_watch)
        self._flushing = True
        self._loop.run_callback(self._flush)

    # -- in the hub --------------------------------------------------------------------------------

    def _flush(self) -> None:
        self._flushing = False
        if self._out:
            self._on_writable()

    def _send(self, raw: Any, data: bytes) -> None:
        try:
            sent = raw.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._fail(redis.ConnectionError(f"Error while writing to Redis: {exc}"))
            return
        if sent < len(data):
            self._backlog = data[sent:]
            if self._writing is None:
                self._writing = self._loop.io(raw.fileno(), 2)
                self._writing.start(self._on_writable)
        elif self._writing is not None:
            self._writing.stop()
            self._writing = None

    def _on_writable(self) -> None:
        raw = self._raw
        if raw is None:
            return
        data = self._backlog + b"".join(self._out)
        self._out.clear()
        self._backlog = b""
        self._send(raw, data)

    def _on_readable(self) -> None:
        raw, reader = self._raw, self._reader
        if raw is None:
            return
        try:
            data = raw.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(redis.ConnectionError(f"Error while reading from Redis: {exc}"))
            return
        if not data:
            self._fail(redis.ConnectionError("Connection closed by server."))
            return
        self._since = self._monotonic()
        try:
            reader.feed(data)
            while self._reader is reader:
                reply = reader.gets()
                if reply is False:
                    return
                if not self._waiters:
                    raise redis.ConnectionError("a reply nobody asked for")
                waiter = self._waiters.popleft()
                waiter.switch(_error(reply) if isinstance(reply, redis.ResponseError) else reply)
        except (hiredis.ProtocolError, redis.ConnectionError) as exc:
            self._fail(redis.ConnectionError(f"Protocol error from Redis: {exc}"))

    def _on_watch(self) -> None:
        if self._waiters and self._monotonic() - self._since > self.timeout:
            self._fail(redis.TimeoutError("Timeout reading from Redis"))

    def _fail(self, error: Exception) -> None:
        """Drop the connection and give every waiter ``error`` (from the hub or from a caller)."""
        for watcher in (self._reading, self._writing, self._watchdog):
            if watcher is not None:
                watcher.stop()
        self._reading = self._writing = self._watchdog = None
        connection, self._connection, self._raw, self._reader = self._connection, None, None, None
        self._out.clear()
        self._backlog = b""
        waiters, self._waiters = self._waiters, deque()
        if connection is not None:
            connection.disconnect()
        for waiter in waiters:
            self._loop.run_callback(waiter.switch, error)


def _error(reply: redis.ResponseError) -> redis.ResponseError:
    """redis-py's own class for an error reply (``NoScriptError`` for NOSCRIPT, ``MovedError``, ``AskError``...)."""
    return BaseParser.parse_error(str(reply))  # type: ignore[no-any-return]
