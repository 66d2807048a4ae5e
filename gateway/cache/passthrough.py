"""The exchange: one request's dealings with the cache, as the forwarder drives it; this one passes all through.

``ResponseCache.begin`` returns an :class:`Exchange`: this pass-through one (nothing looked up or
stored), or a ``ReadExchange`` or ``WriteExchange`` (``exchange``). The forwarder drives each the
same way, so the request flow in ``forwarder.py`` reads the same for cached and uncached routes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from gateway.cache.policy.directives import downstream_headers
from gateway.errors import GatewayError, UpstreamError
from gateway.messages import Headers, ProxyCall, ProxyResponse, UpstreamResponse

Done = Callable[[bool], None]
"""Told once whether the upstream body arrived whole (True) or was cut short (False)."""


class BodyStream:
    """Streams an upstream body to the client, then reports how it ended and frees the connection.

    WSGI servers call ``close()`` when they are done with the body, including when the client went
    away; that is not the upstream's fault, so it counts as a whole body.
    """

    def __init__(self, upstream: UpstreamResponse, done: Done) -> None:
        self._upstream = upstream
        self._done: Done | None = done

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._upstream.chunks:
                if chunk:
                    yield chunk
        except UpstreamError:
            self._finish(False)
            raise
        self._finish(True)

    def _finish(self, ok: bool) -> None:
        if ok:
            self._upstream.release()
        else:
            self._upstream.discard()
        done, self._done = self._done, None
        if done is not None:
            done(ok)

    def close(self) -> None:
        """Called by the server when the client has the body or has gone away."""
        if self._done is not None:
            self._upstream.discard()
            done, self._done = self._done, None
            done(True)


def is_event_stream(upstream: UpstreamResponse) -> bool:
    """Whether the answer is a server-sent-events stream (streamed unbuffered, never stored)."""
    content_type = upstream.header("Content-Type") or ""
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


def outcome_told(ok: bool) -> None:
    """A ``Done`` for a call whose outcome the breaker was already told (at its headers)."""


class Exchange:
    """Pass-through: nothing looked up, nothing stored; answers carry ``X-Cache: BYPASS``."""

    response: ProxyResponse | None = None

    def __init__(self, call: ProxyCall, cache_status: str | None = "BYPASS") -> None:
        self.call = call
        self.cache_status = cache_status

    def conditional_headers(self) -> Headers:
        """Extra request headers for the upstream call (validators when revalidating)."""
        return []

    def on_error(self, error: GatewayError) -> ProxyResponse:
        """The circuit is open or the upstream failed: answer something else, or re-raise."""
        raise error

    def on_response(self, upstream: UpstreamResponse, done: Done) -> ProxyResponse:
        """Turn the upstream's answer into the client's, streaming the body."""
        if is_event_stream(upstream):
            # An event stream may never end: its call is judged by its headers, not its body.
            done(upstream.status < 500)
            done = outcome_told
        return ProxyResponse(
            status=upstream.status,
            headers=downstream_headers(upstream.headers),
            body=BodyStream(upstream, done),
            cache=self.cache_status,
            upstream_ms=upstream.elapsed * 1000.0,
        )

    def close(self) -> None:
        """Release anything held for this request (coalescing locks)."""
