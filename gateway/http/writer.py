"""Writing one answer: the app's ``start_response``, then the status line, headers and body framing.

The head and the first piece of the body go out in one ``send`` (all of an ordinary answer). A
body of known length gets ``Content-Length``; one that streams gets chunked framing on HTTP/1.1,
or is ended by closing the connection on HTTP/1.0. Hop-by-hop headers the app sets are dropped
(the server frames the answer itself), a ``Date`` is added when the app set none, and a header
with a line break is refused before anything is sent.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterable
from email.utils import formatdate
from typing import TYPE_CHECKING

from gateway import errors
from gateway.http.parsed import Request

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import WSGIEnvironment

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "transfer-encoding", "upgrade"})
NO_BODY = frozenset({204, 304})


class _Dates:
    """The ``Date`` header value, formatted once a second."""

    second = 0
    value = b""

    @classmethod
    def now(cls) -> bytes:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.value = second, formatdate(second, usegmt=True).encode()
        return cls.value


def http_date() -> bytes:
    """Now as an HTTP ``Date`` value (formatted at most once a second)."""
    return _Dates.now()


class Writer:
    """``start_response`` and the writing of one answer."""

    __slots__ = ("sock", "request", "status", "headers", "sent_head", "chunked", "length", "sent", "close",
                 "bodiless")

    def __init__(self, sock: socket.socket, request: Request) -> None:
        self.sock = sock
        self.request = request
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        self.sent_head = False
        self.chunked = False
        self.length: int | None = None
        self.sent = 0
        self.close = not request.keep_alive
        self.bodiless = False

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: OptExcInfo | None = None) -> Callable[[bytes], None]:
        """PEP 3333's ``start_response``: keep the status and headers until the first body piece."""
        if exc_info is not None and exc_info[1] is not None and self.sent_head:
            raise exc_info[1].with_traceback(exc_info[2])
        self.status = status
        self.headers = headers
        return self.write

    def head(self, first: bytes | None) -> bytes:
        """The status line and headers; ``first`` is the whole body when it is known to be the whole."""
        status = self.status
        code = int(status[:3])
        request = self.request
        self.bodiless = request.method == "HEAD" or code in NO_BODY or code < 200
        lines = ["HTTP/1.1 ", status, "\r\n"]
        has_date = False
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == "content-length":
                self.length = int(value)
            elif lowered == "date":
                has_date = True
            elif lowered in HOP_BY_HOP:
                if lowered == "connection" and "close" in value.lower():
                    self.close = True
                continue
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
                raise ValueError(f"header {name!r} holds a line break")
            lines += (name, ": ", value, "\r\n")
        if not has_date:
            lines += ("Date: ", _Dates.now().decode(), "\r\n")
        if self.length is None and not self.bodiless:
            if first is not None:
                self.length = len(first)
                lines += ("Content-Length: ", str(self.length), "\r\n")
            elif request.version == "1.1":
                self.chunked = True
                lines.append("Transfer-Encoding: chunked\r\n")
            else:
                self.close = True
        if self.close:
            lines.append("Connection: close\r\n")
        elif request.version == "1.0":
            lines.append("Connection: keep-alive\r\n")
        lines.append("\r\n")
        self.sent_head = True
        return "".join(lines).encode("latin-1")

    def interim(self, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
        """Send an interim answer (102, 103, ...) now, before the final one; HTTP/1.0 clients get none."""
        if self.sent_head or self.request.version != "1.1" or not 100 < status < 200 or status == 101:
            return
        lines = [f"HTTP/1.1 {status} {reason}\r\n"]
        for name, value in headers:
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
                continue
            lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        self.output("".join(lines).encode("latin-1", "replace"))

    def write(self, data: bytes) -> None:
        """Send one piece of the body (the head first, with it, if not sent yet)."""
        if not self.sent_head:
            self.output(self.head(None) + self.frame(data))
        elif data:
            self.output(self.frame(data))

    def output(self, data: bytes) -> None:
        """One ``send`` for what fits the socket buffer (all of an ordinary answer), ``sendall`` for the rest.

        gevent's ``sendall`` asks the socket for its buffer size on every call: one syscall per answer
        that a single ``send`` of a few hundred bytes does not need.
        """
        sent = self.sock.send(data)
        if sent < len(data):
            self.sock.sendall(memoryview(data)[sent:])

    def frame(self, data: bytes) -> bytes:
        """``data`` as it goes on the wire: a chunk when chunked, nothing for a bodiless answer."""
        if self.bodiless or not data:
            return b""
        self.sent += len(data)
        if self.chunked:
            return b"%x\r\n%s\r\n" % (len(data), data)
        return data

    def send(self, result: Iterable[bytes]) -> bool:
        """Send the app's answer; True if the connection may be kept."""
        if isinstance(result, (list, tuple)) and len(result) <= 1:
            whole = result[0] if result else b""
            self.output(self.head(whole) + self.frame(whole))
        else:
            for data in result:
                if data or not self.sent_head:
                    self.write(data)
            if not self.sent_head:
                self.output(self.head(b""))
            if self.chunked:
                self.output(b"0\r\n\r\n")
        if not self.bodiless and self.length is not None and self.sent != self.length:
            return False  # the body was cut short: the client must see the connection end
        return not self.close

    def fail(self, environ: WSGIEnvironment) -> bool:
        """The app raised: a 500 envelope if nothing was sent yet; the connection closes either way."""
        logging.getLogger("gateway").exception("unhandled error in the application")
        if not self.sent_head:
            status, headers, body = errors.error_answer(errors.GatewayError(), environ.get("HTTP_X_REQUEST_ID"))
            self.status, self.headers, self.close = f"{status} INTERNAL SERVER ERROR", headers, True
            try:
                self.sock.sendall(self.head(body) + body)
            except OSError:
                pass
        return False
