"""One request as llhttp has parsed it so far (:class:`Request`), and its body as ``wsgi.input`` (:class:`Input`).

The body is not read before the app asks for it: :class:`Input` takes the pieces the parser has
queued and, when there are none left and the body is not complete, asks the connection to read
more from the socket (:class:`BodySource`).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterator
from typing import Protocol


class Request:
    """What the parser has seen of one request: its head, its body so far, whether it is complete."""

    __slots__ = ("method", "target", "headers", "version", "keep_alive", "upgrade", "body", "body_size",
                 "complete", "expect_continue")

    def __init__(self) -> None:
        self.target = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: deque[bytes] = deque()
        self.body_size = 0
        self.complete = False
        self.upgrade = False
        self.expect_continue = False
        self.method = "GET"
        self.version = "1.1"
        self.keep_alive = True


class BodySource(Protocol):
    """Where more of a request's body comes from: the connection, reading its socket."""

    def pull(self, request: Request) -> None:
        """Parse more of ``request``'s body from the socket (raises a ``GatewayError`` when it cannot)."""


class Input:
    """``wsgi.input``: the request body, pulled from the socket as the app reads it."""

    __slots__ = ("_conn", "_request", "_buffer")

    def __init__(self, conn: BodySource, request: Request) -> None:
        self._conn = conn
        self._request = request
        self._buffer = b""

    def _fill(self) -> bool:
        """Have at least one more body piece in the request's queue; False at the end of the body."""
        request = self._request
        while not request.body:
            if request.complete:
                return False
            self._conn.pull(request)
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Read up to ``size`` bytes (all that is left when ``size`` is negative or None)."""
        request = self._request
        if size is None or size < 0:
            parts = [self._buffer]
            self._buffer = b""
            while self._fill():
                parts.append(request.body.popleft())
            return b"".join(parts)
        while len(self._buffer) < size and self._fill():
            self._buffer += request.body.popleft()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        """Read one line (up to ``size`` bytes)."""
        limit = sys.maxsize if size is None or size < 0 else size
        while b"\n" not in self._buffer and len(self._buffer) < limit and self._fill():
            self._buffer += self._request.body.popleft()
        end = self._buffer.find(b"\n")
        end = len(self._buffer) if end < 0 else end + 1
        end = min(end, limit)
        line, self._buffer = self._buffer[:end], self._buffer[end:]
        return line

    def readlines(self, hint: int = -1) -> list[bytes]:
        """Read every remaining line."""
        return list(iter(self.readline, b""))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")
