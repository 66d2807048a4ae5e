"""The request flow, top to bottom: cache lookup, breaker, upstream, store, response.

This is the one place to read to know what happens to a proxied request (a service with rate limiting
or CORS goes through ``guarded_request`` first: preflight, limit, this flow, their headers; a stale
entry's background ``refresh`` is this flow too)::

    cache.begin ──HIT──────────────────────────────────────────────► response
        │ miss / stale / bypass
    breaker.before_call ──OPEN──► exchange.on_error (STALE or 503)
        │
    upstream.send ──502/504──► breaker.after_call(failure) ► exchange.on_error (STALE or error)
        │ headers arrived   (send picks a target and makes any retries: the breaker is told once)
    exchange.on_response (revalidate / store / stream / invalidate) ► breaker.after_call when the body ends
"""

from __future__ import annotations

import time

from gateway.breaker.core import Outcome
from gateway.cache.passthrough import outcome_told
from gateway.engine import Gateway
from gateway.errors import CircuitOpen, GatewayError, GatewayTimeout, UpstreamError
from gateway.messages import ProxyCall, ProxyResponse


def forward_request(call: ProxyCall, gw: Gateway, guard: bool = True) -> ProxyResponse:
    """Answer ``call`` from the cache or its service, guarded by the service's circuit breaker.

    ``guard`` False skips the rate limit and CORS (a background refresh is no client's request).
    """
    if call.service.guarded and guard:
        return guarded_request(call, gw)
    breaker = gw.breakers[call.service.name]
    # While the circuit refuses calls nothing goes upstream, so there is no call to coalesce: only
    # the lookup is worth its cost (a fresh or stale entry may still answer).
    exchange = gw.cache.begin(call, coalesce=not breaker.refusing)
    try:
        if exchange.response is not None:
            return exchange.response
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
            # A failure is the service's unless another of its targets still answers (spared).
            breaker.after_call(ticket, Outcome.SUCCESS if error.spared else outcome, call.upstream_s)
            return exchange.on_error(error)
        call.upstream_s = upstream.elapsed
        if upstream.status >= 500:
            # A 5xx is a failure whatever its body: count it now, before the client has the answer,
            # so the next request (on any worker or instance) already meets the updated breaker.
            breaker.after_call(ticket, Outcome.SUCCESS if upstream.spared else Outcome.FAILURE, upstream.elapsed)
            return exchange.on_response(upstream, outcome_told)
        if ticket.probe:
            # The probe's question (does the service answer?) is settled by its headers: close the
            # circuit before the client has the answer, so its next request, anywhere, finds it closed.
            breaker.after_call(ticket, Outcome.SUCCESS, upstream.elapsed)
            return exchange.on_response(upstream, outcome_told)

        def done(ok: bool) -> None:
            breaker.after_call(ticket, Outcome.SUCCESS if ok else Outcome.FAILURE, upstream.elapsed)

        return exchange.on_response(upstream, done)
    finally:
        exchange.close()


def guarded_request(call: ProxyCall, gw: Gateway) -> ProxyResponse:
    """A service with rate limiting or CORS: preflight, limit, the flow above, then their headers on the way out."""
    traffic = gw.traffic
    preflight = traffic.preflight(call)
    if preflight is not None:
        return preflight  # answered by the gateway: never limited, never forwarded
    limit_headers = traffic.limit(call)  # raises RateLimited over the limit: a cache hit counts too
    try:
        response = forward_request(call, gw, guard=False)
    except GatewayError as error:
        traffic.on_error(call, error, limit_headers)  # a page can read the gateway's 502, 503, 504
        raise
    return traffic.on_response(call, response, limit_headers)


def refresh(call: ProxyCall, gw: Gateway) -> None:
    """Stale-while-revalidate, in the background: the flow for a stale entry, its body drained so the cache stores it.

    Unguarded: no client sent it, so no rate limit counts it and no CORS applies.
    """
    body = forward_request(call, gw, guard=False).body
    try:
        if not isinstance(body, bytes):
            for _ in body:
                pass
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
