"""One HTTP/1.1 connection served to a WSGI app: llhttp parses, the app answers, one ``send`` per answer.

The loop, per connection::

    recv ─► parser.feed_data ─► on_headers_complete queues a Request
                                   │
              environ ◄────────────┘   (wsgi.input pulls the rest of the body from the socket)
                 │
    app(environ, start_response) ─► status line + headers + first chunk in one send
                 │                   (further chunks as they come: SSE is never buffered)
    close() the app's iterable ─► keep-alive: the next queued (pipelined) request, or recv again

llhttp (through httptools) is strict where gunicorn's and gevent's parsers are lenient: a chunk size
is hex digits only, ``Content-Length`` with ``Transfer-Encoding`` is refused, so are duplicate
lengths, obs-fold, bare CR or LF. Whatever is refused gets the gateway's JSON envelope and a 4xx
(501 for a transfer coding the gateway does not know), then the connection closes.

This module reads and serves the connection; what the parser has of one request and its
``wsgi.input`` are :mod:`gateway.http.parsed`, the writing of one answer :mod:`gateway.http.writer`.
"""

from __future__ import annotations

import re
import socket
import sys
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

import httptools

from gateway import errors
from gateway.http.ids import new_request_id
from gateway.http.parsed import Input, Request
from gateway.http.writer import Writer, http_date

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication, WSGIEnvironment

RECV_SIZE = 65536
DRAIN_LIMIT = 256 * 1024  # unread request body a kept-alive connection will skip; past it, close
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
INTERIM_KEY = "gateway.interim"  # environ: send(status, reason, headers) an interim answer before the final one
ALLOW = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"
REASONS = {400: b"BAD REQUEST", 405: b"METHOD NOT ALLOWED", 413: b"REQUEST ENTITY TOO LARGE",
           414: b"REQUEST-URI TOO LARGE", 431: b"REQUEST HEADER FIELDS TOO LARGE", 501: b"NOT IMPLEMENTED"}


class Limits:
    """The request limits (gunicorn's ``limit_request_*`` settings, 0 meaning none) and timeouts."""

    __slots__ = ("request_line", "fields", "field_size", "keepalive", "read_timeout")

    def __init__(self, request_line: int = 4094, fields: int = 100, field_size: int = 8190,
                 keepalive: float = 5.0, read_timeout: float = 30.0) -> None:
        self.request_line = request_line or sys.maxsize
        self.fields = fields or sys.maxsize
        self.field_size = field_size or sys.maxsize
        self.keepalive = keepalive
        self.read_timeout = read_timeout


class Refused(Exception):
    """The request cannot be served as sent; carries the gateway error that answers it."""

    def __init__(self, error: errors.GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


class Connection:
    """Serves the requests of one client connection, in order, until it closes or may not be kept."""

    def __init__(self, sock: socket.socket, addr: object, app: WSGIApplication, base_environ: WSGIEnvironment,
                 limits: Limits, alive: Callable[[], bool] = lambda: True,
                 served: Callable[[], None] = lambda: None, pause: Callable[[], None] = lambda: None) -> None:
        self.sock = sock
        self.app = app
        self.limits = limits
        self.alive = alive
        self.served = served
        self.pause = pause
        self.queue: deque[Request] = deque()
        self.current: Request | None = None  # the request the parser is in
        self.refusal: errors.GatewayError | None = None  # what the parser refused, answered in turn
        self.parser = httptools.HttpRequestParser(self)
        self.environ = dict(base_environ)
        if isinstance(addr, tuple) and len(addr) >= 2:
            self.environ["REMOTE_ADDR"], self.environ["REMOTE_PORT"] = str(addr[0]), str(addr[1])
        else:
            self.environ["REMOTE_ADDR"], self.environ["REMOTE_PORT"] = "", ""
        self.environ["gunicorn.socket"] = sock

    # -- the parser's callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.current = Request()

    def on_url(self, url: bytes) -> None:
        request = self.current
        assert request is not None
        request.target += url  # llhttp may hand the target over in pieces
        if len(request.target) > self.limits.request_line:
            raise Refused(errors.URITooLong())

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.current
        assert request is not None
        if len(request.headers) >= self.limits.fields:
            raise Refused(errors.HeadersTooLarge("The request has too many header fields."))
        if len(name) + len(value) + 2 > self.limits.field_size:
            raise Refused(errors.HeadersTooLarge())
        request.headers.append((name, value))

    def on_headers_complete(self) -> None:
        request = self.current
        assert request is not None
        parser = self.parser
        request.method = parser.get_method().decode("latin-1")
        request.version = parser.get_http_version()
        request.keep_alive = parser.should_keep_alive()
        request.upgrade = parser.should_upgrade()
        for name, value in request.headers:
            lowered = name.lower()
            if lowered == b"transfer-encoding" and value.strip().lower() != b"chunked":
                # llhttp takes "gzip, chunked"; the gateway decodes no transfer coding but chunked.
                raise Refused(errors.UnsupportedTransferCoding())
            if lowered == b"expect" and value.strip().lower() == b"100-continue":
                request.expect_continue = True
        self.queue.append(request)

    def on_body(self, body: bytes) -> None:
        request = self.current
        assert request is not None
        request.body.append(body)
        request.body_size += len(body)

    def on_message_complete(self) -> None:
        request = self.current
        assert request is not None
        request.complete = True
        self.current = None

    # -- reading ----------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Parse ``data``; a refusal is kept, to be answered once the requests before it are."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self.current is not None:
                self.current.complete = True  # no body is read past an upgrade request's head
                self.current.keep_alive = False
        except httptools.HttpParserError as exc:
            self.refusal = self.refusal_for(exc, data)

    def refusal_for(self, exc: Exception, data: bytes) -> errors.GatewayError:
        """The gateway error that answers what the parser refused."""
        cause = exc.__context__
        if isinstance(cause, Refused):
            return cause.error
        if isinstance(exc, httptools.HttpParserInvalidMethodError):
            method = data.split(b" ", 1)[0]
            if self.current is None or not self.current.headers and TOKEN.fullmatch(method):
                return errors.MethodNotAllowed(headers=[("Allow", ALLOW)])
        request = self.current
        if request is not None:
            for name, value in request.headers:
                if name.lower() == b"transfer-encoding":
                    codings = [c.strip().lower() for c in value.split(b",")]
                    if any(c not in (b"chunked", b"") for c in codings):
                        return errors.UnsupportedTransferCoding()
        reason = str(exc).strip() or "malformed request"
        return errors.BadRequest(f"The request is not valid HTTP/1.1: {reason}.")

    def recv(self, timeout: float) -> bytes:
        """Read from the client; b"" when it has gone or stayed silent for ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(RECV_SIZE)
        except (OSError, ValueError):
            return b""

    def pull(self, request: Request) -> None:
        """Read more of ``request``'s body from the socket (for ``wsgi.input``)."""
        if self.refusal is not None:
            raise self.refusal
        if request.expect_continue:
            request.expect_continue = False
            self.sock.sendall(CONTINUE)
        data = self.recv(self.limits.read_timeout)
        if not data:
            raise errors.BadRequest("The client closed the connection before the request body ended.")
        self.feed(data)
        if self.refusal is not None and not request.body:
            raise self.refusal

    def next_request(self) -> Request | None:
        """The next request to answer, reading from the socket as needed; None when the connection ends."""
        while not self.queue:
            if self.refusal is not None:
                self.answer_refusal(self.refusal)
                return None
            started = self.current is not None
            data = self.recv(self.limits.read_timeout if started else self.limits.keepalive)
            if not data:
                return None
            self.feed(data)
        return self.queue.popleft()

    # -- serving ----------------------------------------------------------------------------------

    def serve(self) -> None:
        """Answer requests until the connection may not be kept."""
        try:
            while True:
                request = self.next_request()
                if request is None or not self.answer(request):
                    return
                self.served()
                self.pause()  # let the worker's other connections have their turn
        finally:
            try:
                self.sock.close()
            except OSError:
                pass

    def environ_for(self, request: Request) -> WSGIEnvironment:
        """The WSGI environ of ``request`` (gunicorn's shape: repeated headers joined by commas)."""
        environ = self.environ.copy()
        target = request.target.decode("latin-1")
        if target.startswith("/"):
            path, _, query = target.partition("?")
        elif target == "*":
            path, query = "*", ""
        else:  # absolute form: http://host/path?query
            url = httptools.parse_url(request.target)
            path = (url.path or b"/").decode("latin-1")
            query = (url.query or b"").decode("latin-1")
        path = path.partition("#")[0]
        environ["REQUEST_METHOD"] = request.method
        environ["RAW_URI"] = target
        environ["PATH_INFO"] = unquote_to_bytes(path).decode("latin-1") if "%" in path else path
        environ["QUERY_STRING"] = query
        environ["SERVER_PROTOCOL"] = "HTTP/" + request.version
        environ["wsgi.input"] = Input(self, request)
        for name, value in request.headers:
            if b"_" in name:
                continue  # X_Forwarded_For must never stand in for X-Forwarded-For (gunicorn drops them too)
            key = name.decode("latin-1").upper().replace("-", "_")
            text = value.decode("latin-1")
            if key == "CONTENT_TYPE" or key == "CONTENT_LENGTH":
                environ[key] = text
                continue
            key = "HTTP_" + key
            previous = environ.get(key)
            environ[key] = text if previous is None else previous + "," + text
        return environ

    def answer(self, request: Request) -> bool:
        """Run the app for ``request`` and send its answer; True if the connection may serve another."""
        writer = Writer(self.sock, request)
        if not self.alive():
            writer.close = True  # a stopping worker answers what it has read, then says Connection: close
        environ = self.environ_for(request)
        environ[INTERIM_KEY] = writer.interim
        try:
            result = self.app(environ, writer.start_response)
        except Exception:
            return self.failed(writer, environ)
        try:
            kept = writer.send(result)
        except (OSError, errors.GatewayError):
            # The client went away, or the gateway cut a body short on purpose (an upstream that
            # stopped mid-body): the connection ends here, nothing more to say or log.
            return False if writer.sent_head else self.failed(writer, environ)
        except Exception:
            return self.failed(writer, environ)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    pass
        return kept and self.skip_body(request)

    def failed(self, writer: Writer, environ: WSGIEnvironment) -> bool:
        """The app raised: a body the parser refused is the client's 4xx; anything else is the app's 500."""
        if self.refusal is not None and not writer.sent_head:
            self.answer_refusal(self.refusal)
            return False
        return writer.fail(environ)

    def skip_body(self, request: Request) -> bool:
        """Read past what the app left unread of the body, so the next request starts where it should."""
        skipped = 0
        while not request.complete:
            if self.refusal is not None or skipped > DRAIN_LIMIT:
                return False
            request.body.clear()
            data = self.recv(self.limits.read_timeout)
            if not data:
                return False
            skipped += len(data)
            self.feed(data)
        request.body.clear()
        return True

    def answer_refusal(self, error: errors.GatewayError) -> None:
        """Send what the parser refused as the JSON envelope, then let the connection close."""
        status, headers, body = errors.error_answer(error, new_request_id())
        head = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Error"))]
        for name, value in [*headers, ("Connection", "close")]:
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        head.append(b"Date: " + http_date() + b"\r\n\r\n")
        try:
            self.sock.sendall(b"".join(head) + body)
        except OSError:
            pass
