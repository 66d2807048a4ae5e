"""Validators (``ETag``, ``Last-Modified``): revalidating a stored response, merging a 304, client conditionals."""

from __future__ import annotations

from email.utils import formatdate

from gateway.cache.policy.dates import http_date
from gateway.cache.policy.directives import split_list
from gateway.messages import Headers, header_value, header_values, without_headers

# Request headers that make a request conditional (RFC 9110 §13.1).
CLIENT_CONDITIONALS = frozenset({"if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "if-range"})
# Headers a 304 must not overwrite in the stored response (RFC 9111 §3.2 and §4.3.4).
_KEEP_ON_304 = frozenset({"content-length", "content-encoding", "transfer-encoding", "content-range", "age"})
# Headers sent with a 304 answer to a client's conditional request (RFC 9110 §15.4.5).
NOT_MODIFIED_HEADERS = frozenset({"cache-control", "content-location", "date", "etag", "expires", "vary",
                                  "last-modified"})


def has_validator(headers: Headers) -> bool:
    """True when the response has an ``ETag`` or ``Last-Modified`` to revalidate with."""
    return header_value(headers, "ETag") is not None or header_value(headers, "Last-Modified") is not None


def is_conditional(request_headers: Headers) -> bool:
    """True when the client's request carries a condition of its own (``If-None-Match``, ``If-Range``, ...)."""
    return any(name.lower() in CLIENT_CONDITIONALS for name, _ in request_headers)


def _etags(value: str) -> list[str]:
    return [tag.strip() for tag in split_list(value)]


def _weak(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


def not_modified(request_headers: Headers, stored_headers: Headers) -> bool:
    """True when the client's conditional GET/HEAD matches the stored response (answer 304)."""
    inm = header_values(request_headers, "If-None-Match")
    if inm:
        etag = header_value(stored_headers, "ETag")
        if etag is None:
            return False
        wanted = [t for line in inm for t in _etags(line)]
        return "*" in wanted or _weak(etag.strip()) in {_weak(t) for t in wanted}
    ims = http_date(header_value(request_headers, "If-Modified-Since"))
    if ims is None:
        return False
    modified = http_date(header_value(stored_headers, "Last-Modified"))
    if modified is None:
        modified = http_date(header_value(stored_headers, "Date"))
    return modified is not None and modified <= ims


def validators(stored_headers: Headers) -> Headers:
    """Conditional request headers that revalidate a stored response."""
    out: Headers = []
    etag = header_value(stored_headers, "ETag")
    if etag is not None:
        out.append(("If-None-Match", etag))
    last_modified = header_value(stored_headers, "Last-Modified")
    if last_modified is not None:
        out.append(("If-Modified-Since", last_modified))
    return out


def revalidation_headers(request_headers: Headers, stored_headers: Headers) -> Headers:
    """The validators to send upstream for a stored response; none when a client condition would be left in place.

    A client condition left in place would make the upstream's 304 answer it, not the cache.
    """
    found = validators(stored_headers)
    ours = {name.lower() for name, _ in found}
    if any(name.lower() in CLIENT_CONDITIONALS and name.lower() not in ours for name, _ in request_headers):
        return []
    return found


def refresh_headers(stored: Headers, fresh: Headers) -> Headers:
    """Merge a 304's headers into a stored response's headers."""
    replaced = {k.lower() for k, _ in fresh if k.lower() not in _KEEP_ON_304}
    kept = [(k, v) for k, v in stored if k.lower() not in replaced]
    return kept + [(k, v) for k, v in fresh if k.lower() in replaced]


def revalidated_headers(stored: Headers, fresh: Headers, now: float) -> Headers:
    """A stored response's headers after an upstream 304: merged, with the 304's ``Age`` and ``Date``.

    The stored ``Age`` goes (the 304's, if any, takes its place); a 304 without a ``Date`` is dated
    ``now``, when it arrived.
    """
    headers = without_headers(refresh_headers(stored, fresh), "Age") + [("Age", v) for v in header_values(fresh, "Age")]
    if header_value(fresh, "Date") is None:
        headers = without_headers(headers, "Date") + [("Date", formatdate(now, usegmt=True))]
    return headers
