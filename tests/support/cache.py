"""A stand-in for the forwarder and a service, driving ResponseCache the way the request flow does; header helpers."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from typing import Any

from gateway.cache.responses import ResponseCache
from gateway.clock import FakeClock
from gateway.config.settings import ServiceConfig, Settings
from gateway.errors import GatewayError, UpstreamError
from gateway.messages import ProxyCall, ProxyResponse, UpstreamResponse
from gateway.redis.link import RedisLink

T0 = 1_700_000_000.0  # FakeClock's start
DATE = formatdate(T0, usegmt=True)


def h(*pairs: str) -> list[tuple[str, str]]:
    """Headers from "Name: value" strings."""
    return [tuple(p.split(": ", 1)) for p in pairs]  # type: ignore[misc]


SERVICE = ServiceConfig(name="order-service", prefix="/orders", url="http://127.0.0.1:9", cache_ttl=300.0,
                        timeout=2.0)
_prefixes = itertools.count()


def new_prefix() -> str:
    """A key prefix no other test uses on a shared Redis."""
    return f"tc{next(_prefixes)}-{time.monotonic_ns()}:"


def make_settings(**overrides: Any) -> Settings:
    """Settings with the order service and the default settings."""
    return replace(Settings(services={SERVICE.name: SERVICE}), **overrides)


def make_call(path: str = "/orders/1", query: str = "", method: str = "GET", headers: Iterable = (),
              service: ServiceConfig = SERVICE) -> ProxyCall:
    """A parsed client request."""
    target = path[len(service.prefix):] or "/"
    return ProxyCall(service=service, method=method, target=target + ("?" + query if query else ""), path=path,
                     query=query, host="gw.test", headers=list(headers), body=b"", request_id="rid",
                     client_ip="127.0.0.1")


@dataclass
class Reply:
    """What the fake service answers: status, headers, body chunks, and an optional cut-off error."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=lambda: [b'{"id": 1}'])
    cut: UpstreamError | None = None


def partial_reply(content_range: str = "bytes 4-9/10", body: bytes = b"456789") -> Reply:
    """A fresh 206 of ``body`` claiming ``content_range``."""
    return Reply(status=206, headers=[("Cache-Control", "max-age=60"), ("Content-Range", content_range),
                                      ("Content-Length", str(len(body)))], chunks=[body])


def upstream_of(reply: Reply, log: list[str]) -> UpstreamResponse:
    """An UpstreamResponse whose body comes from ``reply.chunks``; release/discard are logged."""
    def chunks():
        yield from reply.chunks
        if reply.cut is not None:
            raise reply.cut
    return UpstreamResponse(status=reply.status, reason="OK", headers=list(reply.headers), chunks=chunks(),
                            release_fn=lambda: log.append("release"), discard_fn=lambda: log.append("discard"),
                            elapsed=0.0)


@dataclass
class Result:
    """A response with its body read, and how the upstream part ended."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    cache: str | None
    source: str | None
    aborted: UpstreamError | None = None

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class Gateway:
    """Runs calls through begin / breaker-less upstream / on_response as ``forward_request`` does."""

    def __init__(self, cache: ResponseCache, clock: FakeClock) -> None:
        self.cache = cache
        self.clock = clock
        self.handler: Callable[[ProxyCall, list], Reply] = lambda call, cond: Reply()
        self.error: GatewayError | None = None  # raised instead of calling the service (breaker open, refused)
        self.upstream_calls: list[tuple[ProxyCall, list]] = []
        self.done: list[bool] = []
        self.connection_log: list[str] = []
        self.expected_source: str | None = None  # the store answers must name (set by the test's fixture)

    def request(self, path: str = "/orders/1", **kw: Any) -> Result:
        call = make_call(path, **kw)
        exchange = self.cache.begin(call)
        try:
            if exchange.response is not None:
                return self._result(exchange.response)
            if self.error is not None:
                return self._result(exchange.on_error(self.error))
            conditional = exchange.conditional_headers()
            self.upstream_calls.append((call, conditional))
            reply = self.handler(call, conditional)
            if isinstance(reply, GatewayError):
                return self._result(exchange.on_error(reply))
            return self._result(exchange.on_response(upstream_of(reply, self.connection_log), self.done.append))
        finally:
            exchange.close()

    @staticmethod
    def _result(response: ProxyResponse) -> Result:
        aborted = None
        if isinstance(response.body, bytes | bytearray):
            body = bytes(response.body)
        else:
            parts = []
            try:
                for chunk in response.body:
                    parts.append(chunk)
            except UpstreamError as error:
                aborted = error
            body = b"".join(parts)
        return Result(response.status, response.headers, body, response.cache, response.cache_source, aborted)


def memory_cache(clock: FakeClock, **settings: Any) -> ResponseCache:
    """A ResponseCache on the per-worker store."""
    return ResponseCache(make_settings(**settings), None, clock)


def redis_cache(server: Any, clock: FakeClock, links: list[RedisLink], prefix: str | None = None,
                tier_seconds: float = 0.0, tier_monotonic: Callable[[], float] | None = None,
                **settings: Any) -> ResponseCache:
    """A ResponseCache on a Redis server under a fresh prefix (with a per-worker tier if ``tier_seconds``).

    ``tier_monotonic`` is the tier's clock for the age of its copies (``time.monotonic`` if not given).
    """
    link = RedisLink(server.url, prefix or new_prefix(), skip_seconds=0.05)
    links.append(link)
    cache = ResponseCache(make_settings(redis_key_prefix=link.prefix, **settings), link, clock,
                          tier_seconds=tier_seconds, tier_monotonic=tier_monotonic)
    stop = getattr(cache.store, "stop", None)
    if stop is not None:
        link.close = _chain(stop, link.close)  # type: ignore[method-assign]
    return cache


def _chain(*fns: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        for fn in fns:
            fn()
    return run
