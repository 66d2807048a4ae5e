"""Which stored answers a request may meet: methods looked up, keys, ``Vary``, credentials, what a write drops.

A primary key names one URL for everyone (shared) or for one set of credentials (personal); under it
live the URL's variants, one per set of ``Vary`` values. Keys are opaque digests: the store decides
how they are written in Redis.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from gateway.cache.policy.directives import CacheControl
from gateway.messages import Headers, ProxyCall, credential_digest, header_values

LOOKUP_METHODS = frozenset({"GET", "HEAD"})  # answered from the cache (HEAD from a stored GET)
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})  # a success invalidates what it changed


def has_credentials(headers: Headers) -> bool:
    """True when the request carries ``Authorization`` or ``Cookie``."""
    return bool(header_values(headers, "Authorization") or header_values(headers, "Cookie"))


def sorted_query(query: str) -> str:
    """The query string with its parameters in a stable order (``b=2&a=1`` and ``a=1&b=2`` share a key)."""
    return "&".join(sorted(part for part in query.split("&") if part))


def _digest(*parts: str) -> str:
    material = "\0".join(parts).encode("utf-8", "surrogateescape")
    return hashlib.sha256(material).hexdigest()[:40]


def shared_key(call: ProxyCall) -> str:
    """The key of the request's URL for everyone: host (any case), service, path and sorted query."""
    return _digest(call.host.lower(), call.service.name, call.path, sorted_query(call.query))


def personal_key(call: ProxyCall) -> str:
    """The key of the request's URL for its credentials alone."""
    return _digest(call.host.lower(), call.service.name, call.path, sorted_query(call.query),
                   credential_digest(call.headers))


def lookup_keys(call: ProxyCall, shared: str) -> list[tuple[str, bool]]:
    """The keys to look in, in order, each with whether it is personal; ``shared`` is :func:`shared_key`'s.

    A request with credentials meets its personal entries, and the shared ones too where the service
    shares public answers across users.
    """
    if not has_credentials(call.headers):
        return [(shared, False)]
    keys = [(personal_key(call), True)]
    if call.service.share_public_across_users:
        keys.append((shared, False))
    return keys


def stored_personally(call: ProxyCall, cc: CacheControl) -> bool:
    """True when a response goes under the request's personal key: credentials, unless it is public and the
    service shares public answers across users."""
    return has_credentials(call.headers) and not (call.service.share_public_across_users and "public" in cc)


def reusable_by(credentials: bool, personal: bool, cc: CacheControl) -> bool:
    """Whether a request (with or without ``credentials``) may reuse an entry found under a personal or shared key.

    A request with credentials reuses a shared entry only when it is public (RFC 9111 §3.5).
    """
    return not credentials or personal or "public" in cc


def partial_key(key: str) -> str:
    """Where the partial (206) answers of a key are stored: apart, so a whole answer never meets one."""
    return key + ":partial"


def key_for_status(key: str, status: int) -> str:
    """Where an answer of ``status`` to a request with ``key`` is stored: a 206 under its partial key."""
    return partial_key(key) if status == 206 else key


def coalescable(method: str, request_cc: CacheControl) -> bool:
    """Whether a request may wait for another's identical fetch: a GET that accepts a stored answer."""
    return method == "GET" and "no-cache" not in request_cc and "no-store" not in request_cc


def invalidates(status: int) -> bool:
    """Whether a write's answer drops what it changed: any that is not an error (RFC 9111 §4.4)."""
    return status < 400


def vary_names(headers: Headers) -> list[str]:
    """The request header names the response varies on, lower-cased and sorted (``*`` kept)."""
    names: set[str] = set()
    for line in header_values(headers, "Vary"):
        names.update(part.strip().lower() for part in line.split(",") if part.strip())
    return sorted(names)


def vary_values(request_headers: Headers, names: list[str]) -> list[str | None]:
    """The request's values of the ``Vary`` headers, normalised; None where absent (RFC 9111 §4.1).

    Lines are combined and list members trimmed (``Foo: 1`` + ``Foo: 2`` equals ``Foo: 1,2``);
    ``Accept-Language`` is also compared without regard to case, spaces or the order of its members.
    """
    values: list[str | None] = []
    for name in names:
        found = header_values(request_headers, name)
        if not found:
            values.append(None)
            continue
        members = [" ".join(m.split()) for line in found for m in line.split(",")]
        members = [m for m in members if m]
        if name == "accept-language":
            members = sorted(m.lower().replace(" ", "") for m in members)
        values.append(", ".join(members))
    return values


def _parent(path: str) -> str:
    trimmed = path.rstrip("/")
    head = trimmed.rsplit("/", 1)[0]
    return head or "/"


def invalidation_paths(call: ProxyCall, response_headers: Headers) -> list[str]:
    """The paths a successful write drops: its own, its parent, and the Location/Content-Location on this service."""
    parent = _parent(call.path)
    paths = {call.path, call.path.rstrip("/") or "/", parent, parent.rstrip("/") + "/"}
    prefix = call.service.prefix
    for name in ("Location", "Content-Location"):
        for value in header_values(response_headers, name):
            parts = urlsplit(value.strip())
            if parts.netloc and parts.netloc.lower() != call.host.lower():
                continue  # another host: not one of this service's entries
            target = parts.path
            if not target:
                continue
            if not target.startswith("/"):
                target = call.path.rsplit("/", 1)[0] + "/" + target  # relative reference
            # The service may name its own path (prefix stripped) or the gateway's; drop both readings.
            if target == prefix or target.startswith(prefix + "/"):
                paths.add(target)
            if call.service.strip_prefix:
                paths.add(prefix + target if target != "/" else prefix)
    return sorted(paths)
