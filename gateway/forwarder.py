"""The request flow, top to bottom: cache lookup, breaker, upstream, store, response.

This is the one place to read to know what happens to a proxied request::

    cache.begin ──HIT──────────────────────────────────────────────► response
        │ miss / stale / bypass
    breaker.before_call ──OPEN──► exchange.on_error (STALE or 503)
        │
    upstream.send ──502/504──► breaker.after_call(failure) ► exchange.on_error (STALE or error)
        │ headers arrived
    exchange.on_response (revalidate / store / stream / invalidate) ► breaker.after_call when the body ends
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from gateway.breaker import Outcome
from gateway.errors import CircuitOpen, GatewayTimeout, UpstreamError
from gateway.messages import ProxyCall, ProxyResponse


class Engine(Protocol):
    """The engine parts the flow needs (``app.extensions`` in the app, fakes in tests)."""

    cache: Any
    breakers: Any
    upstream: Any


def forward_request(call: ProxyCall, gw: Engine) -> ProxyResponse:
    """Answer ``call`` from the cache or its service, guarded by the service's circuit breaker."""
    exchange = gw.cache.begin(call)
    try:
        if exchange.response is not None:
            return exchange.response
        breaker = gw.breakers[call.service.name]
        try:
            ticket = breaker.before_call()
        except CircuitOpen as error:
            call.breaker = "OPEN"
            return exchange.on_error(error)
        call.breaker = "HALF_OPEN" if ticket.probe else "CLOSED"
        started = time.monotonic()
        try:
            upstream = gw.upstream.send(call, exchange.conditional_headers())
        except UpstreamError as error:
            call.upstream_s = time.monotonic() - started
            outcome = Outcome.TIMEOUT if isinstance(error, GatewayTimeout) else Outcome.FAILURE
            breaker.after_call(ticket, outcome, call.upstream_s)
            return exchange.on_error(error)
        call.upstream_s = upstream.elapsed

        def done(ok: bool) -> None:
            failed = not ok or upstream.status >= 500
            breaker.after_call(ticket, Outcome.FAILURE if failed else Outcome.SUCCESS, upstream.elapsed)

        return exchange.on_response(upstream, done)
    finally:
        exchange.close()
