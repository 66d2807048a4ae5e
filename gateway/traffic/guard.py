"""What the request flow does for a service with rate limiting or CORS, before and after the cache.

:func:`gateway.forwarder.guarded_request` uses it, only for a service that configures either
(``ServiceConfig.guarded``, one attribute read); every other request pays nothing. Order, and why:

1. A CORS preflight is answered here, never limited nor forwarded (as Kong's cors plugin, which runs
   before its rate limiting and ends preflights itself): it costs the service nothing, browsers cache
   it for ``max_age``, and a 429 without CORS headers would only show up as a CORS failure.
2. The rate limit is checked before the cache lookup: a cache hit counts against the limit, as with
   Kong and Envoy. A limit protects the gateway and bounds what one client may take, not only the
   service; a client hammering a cached path is still hammering.
3. The cache, the breaker and the service (the rest of ``forward_request``).
4. On the way out, hit or miss, the ``RateLimit`` headers and this origin's CORS headers are added;
   an error the gateway answers (429, 502, 503...) gets them too, so a browser can read it.
"""

from __future__ import annotations

from gateway.errors import GatewayError
from gateway.messages import Headers, ProxyCall, ProxyResponse
from gateway.redis.link import RedisLink
from gateway.traffic import cors as cors_rules
from gateway.traffic.ratelimit import RateLimiter, RateLimitEvents


class TrafficGuard:
    """Rate limiting and CORS around the request flow of the services that configure them."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    def preflight(self, call: ProxyCall) -> ProxyResponse | None:
        """The gateway's answer to a CORS preflight (raises ``CorsForbidden``); None for any other request."""
        cors = call.service.cors
        if cors is None or not cors_rules.is_preflight(call):
            return None
        return cors_rules.preflight(cors, call)

    def limit(self, call: ProxyCall) -> Headers:
        """The ``RateLimit`` headers for the answer; raises ``RateLimited`` (with CORS headers) over the limit."""
        if call.service.rate_limit is None:
            return []
        try:
            return self.limiter.check(call)
        except GatewayError as error:
            self.on_error(call, error, [])
            raise

    def on_response(self, call: ProxyCall, result: ProxyResponse, limit_headers: Headers) -> ProxyResponse:
        """The answer with the RateLimit headers and this origin's CORS headers (a copy: hit or miss)."""
        cors = call.service.cors
        if cors is not None:
            headers = cors_rules.with_cors(cors, call.header("Origin"), result.headers, limit_headers)
            return _with_headers(result, headers)
        if limit_headers:
            return _with_headers(result, result.headers + limit_headers)
        return result

    def on_error(self, call: ProxyCall, error: GatewayError, limit_headers: Headers) -> None:
        """Add the RateLimit and CORS headers to an error the gateway answers, so a page can read it."""
        headers = error.headers + limit_headers if limit_headers else list(error.headers)
        cors = call.service.cors
        error.headers = cors_rules.with_cors(cors, call.header("Origin"), headers) if cors is not None else headers


def _with_headers(result: ProxyResponse, headers: Headers) -> ProxyResponse:
    """``result`` with other headers, as a new answer: the one given may be the cache's to keep."""
    answer = ProxyResponse.__new__(ProxyResponse)
    answer.__dict__.update(result.__dict__)  # every field, whatever fields it has (a shallow copy, fast)
    answer.headers = headers
    return answer


def traffic_guard(link: RedisLink | None, stats: RateLimitEvents | None = None) -> TrafficGuard:
    """The guard the app's engine carries (Redis-backed limits when there is a link)."""
    return TrafficGuard(RateLimiter(link, stats=stats))
