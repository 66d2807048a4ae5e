"""Every error the gateway itself answers with, and its JSON envelope.

The tree::

    GatewayError                      (status, code)
    ├── ClientError
    │   ├── NotFound                  404 not_found          unknown prefix or path
    │   ├── MethodNotAllowed          405 method_not_allowed (carries Allow)
    │   ├── BadPath                   400 bad_path           dot segment or encoded slash in the raw target
    │   ├── InvalidJSON               400 invalid_json
    │   ├── PayloadTooLarge           413 payload_too_large
    │   ├── NotImplementedFeature     501 not_implemented    WebSocket upgrades
    │   │   └── UnsupportedTransferCoding 501 not_implemented a transfer coding other than chunked
    │   ├── BadRequest                400 bad_request        not valid HTTP/1.1 (framing, syntax)
    │   ├── URITooLong                414 uri_too_long       request target over the limit
    │   ├── HeadersTooLarge           431 headers_too_large  too many or too large header fields
    │   ├── Unauthorized              401 unauthorized       (carries WWW-Authenticate)
    │   ├── Forbidden                 403 forbidden
    │   ├── CorsForbidden             403 cors_forbidden     a preflight from an origin, method or header not allowed
    │   └── RateLimited               429 rate_limited       over a rate limit (carries Retry-After, RateLimit)
    ├── CacheUnavailable              503 cache_unavailable  admin purge while Redis is unreachable
    ├── RateLimitUnavailable          503 rate_limit_unavailable Redis down and the service's limit fails closed
    └── UpstreamError                 the service could not answer
        ├── BadGateway                502 bad_gateway        connection refused, reset, cut short
        ├── GatewayTimeout            504 gateway_timeout    no response headers within the timeout
        ├── OnlyIfCached              504 only_if_cached     client asked for cache only and we have none
        └── CircuitOpen               503 circuit_open       breaker open (carries Retry-After)

``error_body`` renders the envelope:
``{"error": {"status", "code", "message", "service"?, "request_id"}}``.
"""

from __future__ import annotations

import json

from gateway.messages import set_header


class GatewayError(Exception):
    """An error answered by the gateway itself, never a traceback."""

    status = 500
    code = "internal_error"
    message = "The gateway could not handle the request."

    def __init__(self, message: str | None = None, *, service: str | None = None,
                 headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        self.service = service
        self.headers = headers or []


class ClientError(GatewayError):
    """The request cannot be forwarded as sent."""


class NotFound(ClientError):
    status, code, message = 404, "not_found", "No service is mounted at this path."


class MethodNotAllowed(ClientError):
    status, code, message = 405, "method_not_allowed", "This method is not forwarded."


class BadPath(ClientError):
    status, code, message = 400, "bad_path", "The request path has a dot segment or an encoded slash."


class InvalidJSON(ClientError):
    status, code, message = 400, "invalid_json", "The request body is not valid JSON."


class PayloadTooLarge(ClientError):
    status, code, message = 413, "payload_too_large", "The request body is larger than the gateway accepts."


class NotImplementedFeature(ClientError):
    status, code, message = 501, "not_implemented", "WebSocket upgrades are not supported."


class UnsupportedTransferCoding(NotImplementedFeature):
    message = "The request's transfer coding is not supported (only chunked is)."


class BadRequest(ClientError):
    status, code, message = 400, "bad_request", "The request is not valid HTTP/1.1."


class URITooLong(ClientError):
    status, code, message = 414, "uri_too_long", "The request target is longer than the gateway accepts."


class HeadersTooLarge(ClientError):
    status, code, message = 431, "headers_too_large", "A request header field is larger than the gateway accepts."


class Unauthorized(ClientError):
    status, code, message = 401, "unauthorized", "A valid bearer token is required."


class Forbidden(ClientError):
    status, code, message = 403, "forbidden", "This endpoint is disabled."


class CorsForbidden(ClientError):
    status, code, message = 403, "cors_forbidden", "This origin may not call this service from a browser."


class RateLimited(ClientError):
    status, code, message = 429, "rate_limited", "Too many requests; retry after the Retry-After seconds."


class RateLimitUnavailable(GatewayError):
    status, code, message = 503, "rate_limit_unavailable", "The rate limit cannot be checked right now."


class CacheUnavailable(GatewayError):
    status, code, message = 503, "cache_unavailable", "The shared cache store is unreachable; nothing was purged."


class UpstreamError(GatewayError):
    """The backend service could not give an answer."""

    # Set by the upstream client when the failure is one target's while another target answers: the
    # breaker then does not count it against the service (gateway.http.targets).
    spared = False


class BadGateway(UpstreamError):
    status, code, message = 502, "bad_gateway", "The service could not be reached."


class GatewayTimeout(UpstreamError):
    status, code, message = 504, "gateway_timeout", "The service did not answer in time."


class OnlyIfCached(UpstreamError):
    status, code, message = 504, "only_if_cached", "The response is not in the cache (only-if-cached)."


class CircuitOpen(UpstreamError):
    status, code, message = 503, "circuit_open", "The service is failing; the circuit is open."

    def __init__(self, message: str | None = None, *, service: str | None = None, retry_after: int = 1) -> None:
        self.retry_after = max(1, int(retry_after))
        super().__init__(message, service=service, headers=[("Retry-After", str(self.retry_after))])


_ENVELOPES: dict[tuple[int, str, str, str | None], str] = {}  # everything but the request id, rendered once


def error_body(error: GatewayError, request_id: str | None) -> bytes:
    """Render ``error`` as the gateway's JSON error envelope."""
    shape = (error.status, error.code, error.message, error.service)
    head = _ENVELOPES.get(shape)
    if head is None:
        payload: dict[str, object] = {"status": error.status, "code": error.code, "message": error.message}
        if error.service:
            payload["service"] = error.service
        head = json.dumps({"error": payload})[:-2]  # without the closing "}}", to add the request id
        if len(_ENVELOPES) < 512:  # messages naming a service or a limit are few; others render each time
            _ENVELOPES[shape] = head
    return f'{head}, "request_id": {json.dumps(request_id)}}}}}'.encode()


def error_answer(error: GatewayError, request_id: str | None) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and JSON body of an error answer (its own headers; ``no-store`` on 502/503/504)."""
    headers = [("Content-Type", "application/json")]
    for name, value in error.headers:
        set_header(headers, name, value)
    if error.status in (502, 503, 504):
        set_header(headers, "Cache-Control", "no-store")
    body = error_body(error, request_id)
    headers.append(("Content-Length", str(len(body))))
    return error.status, headers, body
