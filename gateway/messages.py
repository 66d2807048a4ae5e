"""The plain data a request carries through the engine: the incoming call, the upstream answer, the reply.

These are Flask-free so the same engine serves both entrances (the Flask blueprints and the fast WSGI one).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from gateway.config.settings import ServiceConfig

Headers = list[tuple[str, str]]


class IndexedHeaders(list[tuple[str, str]]):
    """Headers indexed once by lower-case name: a request asks for a dozen of its own by name on its way
    (credentials, directives, conditionals, ``Range``, ``Vary``), and a miss about thirty of the service's
    answer (storable, freshness, dates, ``Vary``), each a scan lowering every name otherwise.

    Built once the request is parsed, the answer's head read or an entry's headers made, and not changed
    after (a change would not reach the index): whatever adds headers builds a new list.
    """

    __slots__ = ("by_name",)

    def __init__(self, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(headers)
        by_name: dict[str, list[str]] = {}
        for key, value in self:
            lowered = key.lower()
            found = by_name.get(lowered)
            if found is None:
                by_name[lowered] = [value]
            else:
                found.append(value)
        self.by_name = by_name


def header_value(headers: Headers, name: str) -> str | None:
    """Return the first value of header ``name`` (case-insensitive), or None."""
    if type(headers) is IndexedHeaders:
        found = headers.by_name.get(name.lower())
        return found[0] if found else None
    lname = name.lower()
    for key, value in headers:
        if key.lower() == lname:
            return value
    return None


def header_values(headers: Headers, name: str) -> list[str]:
    """Return every value of header ``name`` (case-insensitive), in order."""
    if type(headers) is IndexedHeaders:
        return list(headers.by_name.get(name.lower(), ()))
    lname = name.lower()
    return [value for key, value in headers if key.lower() == lname]


def without_headers(headers: Headers, *names: str) -> Headers:
    """Return ``headers`` less every header in ``names`` (case-insensitive)."""
    drop = {n.lower() for n in names}
    return [(k, v) for k, v in headers if k.lower() not in drop]


def credential_digest(headers: Headers) -> str:
    """A digest of the request's ``Authorization`` and ``Cookie``, so one user's state never reaches another."""
    material = "\0".join(header_values(headers, "Authorization")) + "\1" + "\0".join(header_values(headers, "Cookie"))
    return hashlib.sha256(material.encode("utf-8", "surrogateescape")).hexdigest()


def set_header(headers: Headers, name: str, value: str) -> None:
    """Replace the first ``name`` header in place and drop the others, or append it (Werkzeug's ``set``)."""
    lname = name.lower()
    for index, (key, _) in enumerate(headers):
        if key.lower() == lname:
            headers[index] = (name, value)
            headers[index + 1:] = [(k, v) for k, v in headers[index + 1:] if k.lower() != lname]
            return
    headers.append((name, value))


@dataclass
class ProxyCall:
    """One client request on its way to a service, already parsed and validated."""

    service: ServiceConfig
    method: str
    target: str  # what goes upstream: raw path (prefix stripped) plus "?query", never re-encoded
    path: str  # the client's raw path, prefix included, without the query (cache key, invalidation)
    query: str  # the raw query string, without "?"
    host: str  # the Host the client asked for
    headers: Headers  # the client's end-to-end headers as received (hop-by-hop already dropped)
    body: bytes
    request_id: str
    client_ip: str
    upstream_headers: Headers = field(default_factory=list)  # what is sent upstream (forwarding headers added)
    # Sends an interim (1xx) answer to the client before the final one: the server's, when it can.
    interim: Callable[[int, str, Headers], None] | None = None
    breaker: str | None = None  # breaker state the call met (for logs): CLOSED, HALF_OPEN or OPEN
    upstream_s: float | None = None  # seconds to the upstream's response headers, when it was called
    attempts: int | None = None  # upstream attempts made (retries included), when it was called
    upstream_url: str | None = None  # the target URL the last attempt went to

    def header(self, name: str) -> str | None:
        """First value of a request header."""
        return header_value(self.headers, name)


@dataclass
class UpstreamResponse:
    """A service's answer whose headers have arrived; the body is read on demand."""

    status: int
    reason: str
    headers: Headers  # end-to-end headers, several Set-Cookie kept apart
    chunks: Iterator[bytes]  # raw body chunks (never decoded); raises UpstreamError if cut short or idle
    release_fn: Callable[[], None]  # return the connection to the pool (the body was read to its end)
    discard_fn: Callable[[], None]  # close the connection (the body was not read to its end)
    elapsed: float  # seconds from send to response headers
    spared: bool = False  # a 5xx of one target while another answers: the target's failure, not the service's

    def header(self, name: str) -> str | None:
        """First value of a response header."""
        return header_value(self.headers, name)

    def release(self) -> None:
        """Return the connection to its pool; the body has been read to its end."""
        self.release_fn()

    def discard(self) -> None:
        """Close the connection; the body was not (or not wholly) read."""
        self.discard_fn()

    def read_all(self, limit: int | None = None) -> bytes | None:
        """Read the whole body; return None (and stop reading) once it exceeds ``limit`` bytes."""
        parts: list[bytes] = []
        size = 0
        for chunk in self.chunks:
            size += len(chunk)
            if limit is not None and size > limit:
                return None
            parts.append(chunk)
        return b"".join(parts)


@dataclass
class ProxyResponse:
    """What goes back to the client: status, headers and a body (bytes, or an iterable to stream)."""

    status: int
    headers: Headers
    body: bytes | Iterable[bytes]
    cache: str | None = None  # X-Cache value: HIT, MISS, REVALIDATED, STALE, BYPASS (None: not a cache route)
    cache_source: str | None = None  # X-Cache-Source: Redis or memory
    upstream_ms: float | None = None  # time to the upstream's response headers, for logs and metrics
    on_close: list[Callable[[], None]] = field(default_factory=list)  # run when the body is done or dropped

    def header(self, name: str) -> str | None:
        """First value of a response header."""
        return header_value(self.headers, name)
