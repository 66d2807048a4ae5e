"""Calls to backend services over pooled ``http.client`` connections, one pool per service.

Why not ``requests`` or urllib3: both re-encode the request target (``%7e`` becomes ``~``, one bad
escape makes urllib3 re-encode every ``%``), and ``requests`` adds ``Accept-Encoding`` and folds
``Set-Cookie``. ``http.client`` sends the target and headers exactly as given, keeps repeated
headers apart, and costs a fraction of the CPU per call. Under gevent's monkey patching its sockets
are cooperative, so a pool of idle connections per service is all the concurrency needs.
"""

from __future__ import annotations

import functools
import http.client
import random
import select
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from gateway.clock import Clock, system_clock
from gateway.config.settings import ServiceConfig, Settings
from gateway.config.upstream import service_targets
from gateway.errors import BadGateway, GatewayTimeout, UpstreamError
from gateway.http.inbound import end_to_end
from gateway.http.redirects import ReverseMap
from gateway.http.retries import CONNECT, RETRY_STATUSES, SENT, RetryPlan, budget_for
from gateway.http.targets import HealthLookup, Target, TargetSet, tell
from gateway.messages import Headers, IndexedHeaders, ProxyCall, UpstreamResponse
from gateway.sockets import os_socket, waiting

CHUNK_SIZE = 64 * 1024
MAX_IDLE_PER_SERVICE = 256
# Methods a repeat cannot change the origin's state with (RFC 9110 §9.2.1). PUT and DELETE are
# idempotent, but the first attempt may already have changed the state, and an origin may count
# or refuse a repeat (a second PUT that creates answers 409): they are not resent either. (That is
# the resend on a dead pooled connection; a service's configured retries follow gateway.http.retries.)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

# Failures of a pooled connection the server closed just as the request went out. A safe request is
# resent once on a new connection when nothing of the response arrived; any other is answered 502.
STALE_CONNECTION_ERRORS = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
                           ConnectionAbortedError)


class FinalResponse(http.client.HTTPResponse):
    """An ``HTTPResponse`` that reads past interim answers (102, 103, ...) to the final one.

    ``http.client`` skips only ``100 Continue``; any other 1xx would be taken for the answer and the
    real one left in the socket for the next call. Each interim answer goes to ``interim`` (the
    client's connection, where the gateway's server can send it: end-to-end headers only) and is
    never stored; ``101`` is left alone (no upgrade is ever asked for).
    """

    def __init__(self, sock: Any, debuglevel: int = 0, method: str | None = None, url: str | None = None,
                 interim: Callable[[int, str, Headers], None] | None = None) -> None:
        super().__init__(sock, debuglevel, method, url)
        self.interim = interim

    def _read_status(self) -> tuple[str, int, str]:
        while True:
            version, status, reason = super()._read_status()  # type: ignore[misc]
            if not (100 < status < 200) or status == 101:
                return version, status, reason
            lines = http.client._read_headers(self.fp)  # type: ignore[attr-defined]
            if self.interim is not None:
                self.interim(status, reason.strip(), end_to_end(interim_headers(lines)))


def interim_headers(lines: list[bytes]) -> Headers:
    """The header lines of an interim answer as (name, value) pairs (obs-fold and junk left out)."""
    headers: Headers = []
    for line in lines:
        name, colon, value = line.decode("latin-1").rstrip("\r\n").partition(":")
        if colon and name and name == name.strip() and not name.startswith((" ", "\t")):
            headers.append((name, value.strip()))
    return headers


def still_open(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle pooled connection can carry a request: not readable (no EOF, no stray bytes).

    Under gevent, one non-blocking peek at the OS socket (``gateway.sockets.waiting``: a few µs,
    where gevent's ``select`` goes through its hub). Otherwise ``select``; a descriptor it cannot
    watch (numbered past ``FD_SETSIZE``) is taken to be open: the request then goes out on it, and a
    dead connection is met by the resend rule of ``send``.
    """
    sock = conn.sock
    if sock is None:
        return False
    raw = os_socket(sock)
    if raw is not None and raw is not sock and raw.gettimeout() == 0.0:
        return not waiting(raw)
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except ValueError:
        return True
    except OSError:
        return False
    return not readable


class ServicePool:
    """Idle keep-alive connections to one target URL of a service, created on demand and never capped in use."""

    def __init__(self, service: ServiceConfig, ssl_context: ssl.SSLContext | None, url: str | None = None) -> None:
        parts = urlsplit(url or service.url)
        self.service = service
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.https else 80)
        self.base_path = parts.path.rstrip("/")
        default_port = 443 if self.https else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if self.port == default_port else f"{host}:{self.port}"
        self._ssl_context = ssl_context
        # The answer's Location and cookie paths, back under the prefix (this target's own URL too).
        self.reverse = ReverseMap(service if url in (None, service.url) else replace(service, url=url))
        self._idle: deque[http.client.HTTPConnection] = deque()

    def acquire(self, timeout: float, fresh: bool = False) -> tuple[http.client.HTTPConnection, bool]:
        """Return a connection and whether it was reused from the pool (never, when ``fresh``).

        An idle connection the service has closed (its keep-alive timeout ran out) is dropped here,
        before anything is sent on it, so the request goes out once on a new connection instead.
        """
        while self._idle and not fresh:
            idle = self._idle.pop()
            if still_open(idle):
                idle.sock.settimeout(timeout)
                return idle, True
            idle.close()
        conn: http.client.HTTPConnection
        if self.https:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self._ssl_context)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        conn.response_class = FinalResponse
        return conn, False

    def release(self, conn: http.client.HTTPConnection) -> None:
        """Keep ``conn`` for the next call, unless the pool is full or the connection is done."""
        if conn.sock is None or len(self._idle) >= MAX_IDLE_PER_SERVICE:
            conn.close()
        else:
            self._idle.append(conn)

    def close(self) -> None:
        """Close every idle connection."""
        while self._idle:
            self._idle.pop().close()


class AttemptFailed(Exception):
    """One attempt got no answer: the error the client would get, and whether anything was sent."""

    def __init__(self, error: UpstreamError, phase: str) -> None:
        super().__init__(error.message)
        self.error = error
        self.phase = phase  # gateway.http.retries.CONNECT (nothing sent) or SENT


class UpstreamClient:
    """Sends a :class:`ProxyCall` to one of its service's targets and returns the answer once its headers arrive.

    A service with ``retries`` may get several attempts (``gateway.http.retries``), each to a target
    chosen by ``gateway.http.targets``; whatever happens, ``send`` returns one answer or raises one
    error, so the breaker sees the client's request once.
    """

    def __init__(self, settings: Settings, clock: Clock = system_clock, rng: random.Random | None = None,
                 sleep: Callable[[float], None] | None = None) -> None:
        context = None
        if any(url.startswith("https://") for s in settings.services.values() for url in service_targets(s)):
            context = ssl.create_default_context(cafile=settings.upstream_ca_bundle)
        self.rng = rng or random.Random()
        # Looked up when called: gevent patches time.sleep after this module may have been imported.
        self.sleep = sleep or (lambda seconds: time.sleep(seconds))
        self.listeners: list[Any] = []  # on_attempt, on_retry, on_retry_refused, on_eject, on_return
        self.health: HealthLookup | None = None  # the health checker's latest result per target, when wired
        self.targets = {
            name: TargetSet(service, [ServicePool(service, context, url) for url in service_targets(service)],
                            clock, self.rng, self._latest_check, self.listeners)
            for name, service in settings.services.items()
        }
        self.budgets = {name: budget_for(service.retries, clock) for name, service in settings.services.items()}
        self.pools = {name: targets.targets[0].pool for name, targets in self.targets.items()}  # the first target's

    def _latest_check(self, service: str, url: str) -> tuple[float, bool] | None:
        return self.health(service, url) if self.health is not None else None

    def send(self, call: ProxyCall, extra_headers: Headers | None = None) -> UpstreamResponse:
        """Send ``call`` to a target, retried where its service allows; raise BadGateway or GatewayTimeout if no answer.

        Sets ``call.attempts`` and ``call.upstream_url`` (the last attempt's target) for the access line.
        """
        service = call.service
        targets = self.targets[service.name]
        headers = list(call.upstream_headers)
        if extra_headers:
            names = {k.lower() for k, _ in extra_headers}
            headers = [(k, v) for k, v in headers if k.lower() not in names] + list(extra_headers)
        started = time.monotonic()
        plan = RetryPlan(call, service.retries, self.budgets[service.name], self.rng) if service.retries else None
        tried: list[Target] = []
        while True:
            target = targets.pick(tried)
            tried.append(target)
            call.attempts, call.upstream_url = len(tried), target.url
            attempt_started = time.monotonic()
            targets.started(target)
            try:
                response, conn = self._attempt(target.pool, call, headers, started)
            except AttemptFailed as failed:
                targets.finished(target)
                targets.record(target, False)
                if not isinstance(failed.error, GatewayTimeout) and self._retry(plan, failed.phase, call, started,
                                                                                attempt_started):
                    continue
                failed.error.spared = targets.spared()
                raise failed.error from None
            except BaseException:  # a bug, or the worker stopping the greenlet: the attempt is over
                targets.finished(target)
                raise
            ok = response.status < 500
            targets.record(target, ok)
            if response.status in RETRY_STATUSES and self._retry(plan, SENT, call, started, attempt_started):
                conn.close()  # the error's body is not wanted
                targets.finished(target)
                continue
            return self._answer(call, target, targets, response, conn, started, spared=not ok and targets.spared())

    def _retry(self, plan: RetryPlan | None, phase: str, call: ProxyCall, started: float,
               attempt_started: float) -> bool:
        """Whether to try again after a failed attempt; waits the backoff first when so."""
        if plan is None:
            return False
        now = time.monotonic()
        wait, refused = plan.next_wait(phase, call.service.timeout - (now - started), now - attempt_started)
        if refused is not None:
            tell(self.listeners, "on_retry_refused", call.service.name, refused)
        if wait is None:
            return False
        tell(self.listeners, "on_retry", call.service.name)
        if wait > 0:
            self.sleep(wait)
        return True

    def _answer(self, call: ProxyCall, target: Target, targets: TargetSet, response: http.client.HTTPResponse,
                conn: http.client.HTTPConnection, started: float, spared: bool) -> UpstreamResponse:
        pool = target.pool
        pending = [target]  # the attempt ends once, whether the body is released or discarded

        def finished() -> None:
            if pending:
                targets.finished(pending.pop())

        def release() -> None:
            finished()
            if response.will_close:
                conn.close()
            else:
                pool.release(conn)

        def discard() -> None:
            finished()
            conn.close()

        return UpstreamResponse(
            status=response.status,
            reason=response.reason,
            headers=IndexedHeaders(pool.reverse.headers(end_to_end(response.getheaders()))),
            chunks=_chunks(response, call.service.name),
            release_fn=release,
            discard_fn=discard,
            elapsed=time.monotonic() - started,
            spared=spared,
        )

    def _attempt(self, pool: ServicePool, call: ProxyCall, headers: Headers,
                 started: float) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
        """One attempt to one target: the response (headers read) and its connection, or AttemptFailed."""
        name, timeout = call.service.name, call.service.timeout
        target = pool.base_path + call.target
        for resend in (False, True):
            # The resend never takes another pooled connection: it may be just as dead.
            conn, reused = pool.acquire(max(0.001, timeout - (time.monotonic() - started)), fresh=resend)
            try:
                if conn.sock is None:
                    conn.connect()
            except TimeoutError:
                conn.close()
                raise AttemptFailed(GatewayTimeout(f"{name} did not answer within {timeout:g} s", service=name),
                                    SENT) from None
            except OSError as exc:
                conn.close()
                raise AttemptFailed(BadGateway(f"{name} could not be reached: {_reason(exc)}", service=name),
                                    CONNECT) from None
            try:
                return self._exchange(conn, pool, call.method, target, headers, call.body, started, timeout,
                                      call.interim), conn
            except STALE_CONNECTION_ERRORS as exc:
                conn.close()
                if not (reused and not resend and call.method in SAFE_METHODS):
                    raise AttemptFailed(BadGateway(f"{name} closed the connection: {exc.__class__.__name__}",
                                                   service=name), SENT) from None
            except TimeoutError:
                conn.close()
                raise AttemptFailed(GatewayTimeout(f"{name} did not answer within {timeout:g} s", service=name),
                                    SENT) from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise AttemptFailed(BadGateway(f"{name} could not be reached: {_reason(exc)}", service=name),
                                    SENT) from None
        raise AssertionError("unreachable: the resend either answers or raises")

    @staticmethod
    def _exchange(conn: http.client.HTTPConnection, pool: ServicePool, method: str, target: str,
                  headers: Headers, body: bytes, started: float, timeout: float,
                  interim: Callable[[int, str, Headers], None] | None = None) -> http.client.HTTPResponse:
        # Connect plus response headers share one deadline (every attempt's): each phase gets what is left.
        remaining = timeout - (time.monotonic() - started)
        if remaining <= 0:
            raise TimeoutError
        sock = conn.sock
        sock.settimeout(remaining)
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", pool.host_header)
        for name, value in headers:
            conn.putheader(name, value)
        if body or method in {"POST", "PUT", "PATCH"}:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        reader = FinalResponse if interim is None else functools.partial(FinalResponse, interim=interim)
        conn.response_class = reader  # type: ignore[assignment]  # http.client calls it as a class
        response = conn.getresponse()
        # From here on the timeout is the idle limit between body chunks. When the upstream will close
        # the connection, getresponse drops conn.sock, but the response still reads from that socket.
        sock.settimeout(timeout)
        return response

    def close(self) -> None:
        """Close every pooled connection."""
        for targets in self.targets.values():
            for target in targets.targets:
                target.pool.close()


def _chunks(response: http.client.HTTPResponse, service: str) -> Iterator[bytes]:
    """Yield the raw body as it arrives; a body cut short or idle too long raises an UpstreamError."""
    if response.status in (204, 304) or response.status < 200 or response._method == "HEAD":  # type: ignore[attr-defined]
        response.close()
        return
    while True:
        try:
            chunk = response.read1(CHUNK_SIZE)
        except TimeoutError:
            raise GatewayTimeout(f"{service} stopped sending the body", service=service) from None
        except (OSError, http.client.HTTPException) as exc:
            raise BadGateway(f"{service} cut the body short: {_reason(exc)}", service=service) from None
        if not chunk:
            if response.length:  # declared Content-Length not reached
                raise BadGateway(f"{service} cut the body short", service=service)
            response.close()  # lets the connection carry the next request
            return
        yield chunk
        if response.length == 0:
            response.close()
            return


def _reason(exc: BaseException) -> str:
    return exc.__class__.__name__ if not str(exc) else f"{exc.__class__.__name__}: {exc}"
