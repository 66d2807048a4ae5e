"""A stored response as plain data, encoded with msgpack (never pickle).

A writable Redis must not mean code execution in the gateway, so entries are plain maps of numbers,
strings and bytes; anything that does not decode into exactly that shape is treated as a miss.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass, field

import msgpack

from gateway.cache.policy import freshness, keys, validators
from gateway.cache.policy.directives import CacheControl, response_cache_control
from gateway.messages import Headers, ProxyCall

FORMAT = 1


@dataclass
class Entry:
    """One stored response variant with the times its freshness is computed from."""

    status: int
    headers: Headers
    body: bytes
    request_time: float  # when the upstream request was sent
    response_time: float  # when the upstream response arrived (or was last revalidated)
    lifetime: float  # freshness lifetime in seconds
    heuristic: bool  # the gateway's TTL applied (no explicit freshness)
    personal: bool  # stored under a personal key (the request's credentials), not the shared one
    vary_names: list[str] = field(default_factory=list)
    vary_values: list[str | None] = field(default_factory=list)

    # Entries are never changed in place once stored (a refresh makes a new one with
    # dataclasses.replace), so what is derived from their headers is worked out once.
    @functools.cached_property
    def cache_control(self) -> CacheControl:
        """The stored response's directives (read-only): a targeted field's (RFC 9213), else Cache-Control's."""
        return response_cache_control(self.headers)[0]

    @functools.cached_property
    def initial_age(self) -> float:
        """The age the response had when it arrived (RFC 9111 §4.2.3)."""
        return freshness.initial_age(self.headers, self.request_time, self.response_time)

    def age(self, now: float) -> float:
        """Current age (RFC 9111 §4.2.3): the age on arrival plus the time resident here."""
        return self.initial_age + max(0.0, now - self.response_time)

    def reuse(self, request_cc: CacheControl, now: float) -> freshness.Reuse:
        """How the entry may answer a request with directives ``request_cc`` at ``now`` (see ``reuse_state``)."""
        return freshness.reuse_state(request_cc, self.cache_control, self.age(now), self.lifetime)

    def kept_for(self, grace: float) -> float:
        """Seconds a store should keep the entry (freshness left plus the stale windows)."""
        return freshness.kept_for(self.headers, self.cache_control, self.lifetime, self.initial_age, grace)

    def matches(self, request_headers: Headers) -> bool:
        """True when the request selects this variant (absent headers match only absent)."""
        return keys.vary_values(request_headers, self.vary_names) == self.vary_values

    def variant_id(self) -> str:
        """A stable name for this variant among the entries of one key."""
        material: bytes = msgpack.packb([self.vary_names, self.vary_values], use_bin_type=True)
        return hashlib.sha256(material).hexdigest()[:16]

    @property
    def size(self) -> int:
        """Approximate bytes the entry takes (body plus headers)."""
        return len(self.body) + sum(len(k) + len(v) + 4 for k, v in self.headers) + 128


@dataclass(frozen=True)
class Found:
    """A stored entry that matches a request, and the key it is stored under."""

    entry: Entry
    key: str


def arrived(call: ProxyCall, status: int, headers: Headers, body: bytes, elapsed: float, now: float) -> Entry:
    """The entry for an upstream answer to ``call`` that arrived at ``now``, ``elapsed`` seconds after it was sent."""
    stored = freshness.dated(headers, now)
    lifetime, heuristic = freshness.freshness_lifetime(status, stored, call.service.cache_ttl, now) or (0.0, False)
    names = keys.vary_names(headers)
    return Entry(status=status, headers=stored, body=body, request_time=now - elapsed, response_time=now,
                 lifetime=lifetime, heuristic=heuristic,
                 personal=keys.stored_personally(call, response_cache_control(stored)[0]),
                 vary_names=names, vary_values=keys.vary_values(call.headers, names))


def revalidated(entry: Entry, not_modified: Headers, elapsed: float, now: float, heuristic_ttl: float) -> Entry:
    """The entry refreshed by an upstream 304 (headers ``not_modified``) that arrived at ``now``."""
    headers = validators.revalidated_headers(entry.headers, not_modified, now)
    lifetime = freshness.freshness_lifetime(entry.status, headers, heuristic_ttl, now)
    return dataclasses.replace(entry, headers=headers, request_time=now - elapsed, response_time=now,
                               lifetime=lifetime[0] if lifetime else 0.0,
                               heuristic=lifetime[1] if lifetime else False)


def encode(entry: Entry) -> bytes:
    """Serialise an entry as a msgpack map."""
    packed: bytes = msgpack.packb({
        "f": FORMAT,
        "s": entry.status,
        "h": [[k, v] for k, v in entry.headers],
        "b": entry.body,
        "qt": entry.request_time,
        "rt": entry.response_time,
        "lt": entry.lifetime,
        "hu": entry.heuristic,
        "cr": entry.personal,
        "vn": entry.vary_names,
        "vv": entry.vary_values,
    }, use_bin_type=True)
    return packed


def _is_str_pair(item: object) -> bool:
    return isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)


def decode(raw: object) -> Entry | None:
    """Parse a stored value; return None for anything that is not a well-formed entry."""
    if not isinstance(raw, bytes | bytearray):
        return None
    try:
        data = msgpack.unpackb(raw, raw=False, strict_map_key=True, max_bin_len=1 << 30)
    except Exception:  # any garbage (a pickle, text, truncated data) is just a miss
        return None
    if not isinstance(data, dict) or data.get("f") != FORMAT:
        return None
    try:
        headers, names, values = data["h"], data["vn"], data["vv"]
        numbers = [data["qt"], data["rt"], data["lt"]]
        if not (isinstance(data["s"], int) and isinstance(data["b"], bytes) and isinstance(headers, list)
                and all(_is_str_pair(h) for h in headers) and isinstance(names, list) and isinstance(values, list)
                and len(names) == len(values) and all(isinstance(n, str) for n in names)
                and all(v is None or isinstance(v, str) for v in values)
                and all(isinstance(n, int | float) and not isinstance(n, bool) for n in numbers)):
            return None
        return Entry(
            status=data["s"], headers=[(k, v) for k, v in headers], body=data["b"],
            request_time=float(numbers[0]), response_time=float(numbers[1]), lifetime=float(numbers[2]),
            heuristic=bool(data["hu"]), personal=bool(data["cr"]),
            vary_names=list(names), vary_values=list(values),
        )
    except (KeyError, TypeError, ValueError):
        return None
