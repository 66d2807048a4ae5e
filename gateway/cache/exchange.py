"""One request's dealings with the cache: reuse, revalidate, store, serve stale, invalidate.

``CachedExchange`` carries a GET or HEAD through the forwarder's flow; ``InvalidatingExchange``
carries a write and drops what it made stale. ``X-Cache`` labels: HIT a fresh entry
reused (also by a coalesced waiter, and a 304 answered to a client's conditional request); MISS
fetched and stored; REVALIDATED an upstream 304 refreshed the entry; STALE an expired entry served
on error, under stale-while-revalidate or within a client's max-stale; BYPASS everything that was
not stored (not storable, HEAD misses, oversize or cut-short bodies, the store unreachable).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Iterator
from email.utils import formatdate

from gateway.cache import policy
from gateway.cache.entry import Entry
from gateway.cache.passthrough import BodyStream, Done, Exchange
from gateway.cache.responses import partial_key
from gateway.errors import BadGateway, CircuitOpen, GatewayError, GatewayTimeout, OnlyIfCached, UpstreamError
from gateway.messages import Headers, ProxyCall, ProxyResponse, UpstreamResponse, header_value, header_values
from gateway.redis.link import StoreUnavailable

log = logging.getLogger("gateway.cache")

POLL_SECONDS = 0.02  # how often a waiter in another process looks for the leader's stored response
STALE_ON = (CircuitOpen, BadGateway, GatewayTimeout)
# Stored headers a hit does not serve: Age is recomputed; the field targeted at the gateway stays here.
_NOT_SERVED = frozenset({"age", policy.GATEWAY_TARGETED.lower()})
_NOT_SERVED_PARTIAL = _NOT_SERVED | {"content-range", "content-length"}  # set anew for the bytes served
CLIENT_CONDITIONALS = frozenset({"if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "if-range"})


def _aborted(parts: list[bytes], error: UpstreamError) -> Iterator[bytes]:
    """Send what arrived, then fail the body so the client sees a cut-short response, not a whole one."""
    yield from parts
    raise error


class CachedExchange(Exchange):
    """A GET or HEAD on a cached route."""

    def __init__(self, cache, call: ProxyCall) -> None:  # cache: gateway.cache.responses.ResponseCache
        super().__init__(call, "BYPASS")
        self.cache = cache
        self.method = call.method.upper()
        self.req_cc = policy.request_cache_control(call.headers)
        self.stale: Entry | None = None  # an entry that needs revalidation; may answer on errors
        self.stale_key: str | None = None
        self.revalidating = False
        self._lead: str | None = None  # the coalescing name this request leads in its process
        self._token: str | None = None  # the cross-process lock token, when it holds one

    # -- lookup ---------------------------------------------------------------------------------

    def lookup(self, coalesce: bool = True) -> None:
        """Answer from the cache when allowed; otherwise prepare to go upstream (raises StoreUnavailable)."""
        found = self.cache.find(self.call)
        if found is not None and self._reuse(*found, allow_stale=True):
            return
        if found is None and self._ranged and self._from_partial():
            return
        if "only-if-cached" in self.req_cc:
            raise OnlyIfCached(service=self.call.service.name)
        if coalesce and self.method == "GET" and "no-cache" not in self.req_cc and "no-store" not in self.req_cc:
            self._coalesce()

    def _reuse(self, entry: Entry, key: str, *, allow_stale: bool) -> bool:
        """Answer from ``entry`` if it may be reused now; else keep it for revalidation and errors."""
        now = self.cache.clock()
        age = entry.age(now)
        cc = entry.cache_control
        state = policy.reuse_state(self.req_cc, cc, age, entry.lifetime)
        if state == "fresh":
            self.response = self.answer(entry, "HIT", now)
            return True
        if state == "stale-ok" and allow_stale:
            self.response = self.answer(entry, "STALE", now, conditional=False)
            return True
        staleness = age - entry.lifetime
        window = policy.stale_while_revalidate_window(cc)
        if (allow_stale and 0 <= staleness <= window and "no-cache" not in self.req_cc
                and self.cache.start_refresh(self.call, key)):
            self.response = self.answer(entry, "STALE", now, conditional=False)
            return True
        self.stale, self.stale_key = entry, key
        return False

    @property
    def _ranged(self) -> bool:
        return self.method == "GET" and bool(header_values(self.call.headers, "Range"))

    def _from_partial(self) -> bool:
        """Answer a single-range GET from a fresh stored 206 that holds every byte asked for."""
        if any(name.lower() in CLIENT_CONDITIONALS for name, _ in self.call.headers):
            return False  # conditions are left to the service (or a whole stored answer)
        found = self.cache.find_partial(self.call)
        if found is None:
            return False
        entry, _ = found
        now = self.cache.clock()
        stored = policy.content_range(entry.headers)
        if stored is None or policy.reuse_state(self.req_cc, entry.cache_control, entry.age(now),
                                                 entry.lifetime) != "fresh":
            return False
        first_held, last_held, length = stored
        wanted = policy.byte_range(self.call.headers, entry.headers, length)
        if not isinstance(wanted, tuple) or not first_held <= wanted[0] <= wanted[1] <= last_held:
            return False
        first, last = wanted
        headers = [(k, v) for k, v in entry.headers if k.lower() not in _NOT_SERVED_PARTIAL]
        headers += [("Content-Range", f"bytes {first}-{last}/{length}"), ("Age", str(int(entry.age(now))))]
        body = entry.body[first - first_held:last - first_held + 1]
        self.response = ProxyResponse(status=206, headers=headers, body=body, cache="HIT",
                                      cache_source=self.cache.store.source)
        return True

    def _coalesce(self) -> None:
        """Let one request per key go upstream; others wait (at most the service timeout) for its stored answer."""
        name = self.cache.keys_for(self.call)[0][0]
        timeout = self.call.service.timeout
        event = self.cache.join(name)
        if event is not None:
            event.wait(timeout)
            self._take_leaders_answer()
            return
        self._lead = name
        try:
            self._token, read = self.cache.store.lock_and_read(name, timeout + 1.0)
        except StoreUnavailable:
            return
        if self._token is not None:
            # Double-check: another process may have stored the answer between our lookup and our lock
            # (read with the lock, where the store can).
            self._take_leaders_answer(None if read is None else (name, read))
            return
        deadline = time.monotonic() + timeout  # another process leads: poll for its stored answer
        while time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            if self._take_leaders_answer():
                return
            if not self.cache.store.is_locked(name):
                self._take_leaders_answer()
                return

    def _take_leaders_answer(self, read: tuple[str, list[bytes]] | None = None) -> bool:
        """After waiting: reuse the leader's response if it was stored and is fresh (a coalesced HIT)."""
        try:
            found = self.cache.find(self.call, direct=True, read=read)
        except StoreUnavailable:
            return False
        if found is None:
            return False
        if self._reuse(*found, allow_stale=False):
            self.cache.record("coalesced")
            self._release_lead()
            return True
        return False

    # -- answers --------------------------------------------------------------------------------

    def answer(self, entry: Entry, label: str, now: float, *, conditional: bool = True) -> ProxyResponse:
        """Build the client's answer from a stored entry: its headers as stored (``Date`` included) with
        a new ``Age``; a 304 when the client's own conditional matches; a 206 for one byte range."""
        headers = [(k, v) for k, v in entry.headers if k.lower() not in _NOT_SERVED]
        headers += self._heuristic_header(entry)
        headers.append(("Age", str(int(entry.age(now)))))
        source = self.cache.store.source
        if conditional and entry.status == 200 and policy.not_modified(self.call.headers, entry.headers):
            kept = [(k, v) for k, v in headers if k.lower() in policy.NOT_MODIFIED_HEADERS or k.lower() == "age"]
            return ProxyResponse(status=304, headers=kept, body=b"", cache=label, cache_source=source)
        if self.method == "GET" and entry.status == 200 and header_values(self.call.headers, "Range"):
            partial = self._partial(entry, headers, label, source)
            if partial is not None:
                return partial
        body = entry.body if self.method == "GET" else b""
        return ProxyResponse(status=entry.status, headers=headers, body=body, cache=label, cache_source=source)

    def _partial(self, entry: Entry, headers: Headers, label: str, source: str) -> ProxyResponse | None:
        """A 206 (or 416) cut from a complete stored body for a single-range GET; None: answer it whole."""
        length = len(entry.body)
        wanted = policy.byte_range(self.call.headers, entry.headers, length)
        if wanted is None:
            return None
        headers = [(k, v) for k, v in headers if k.lower() not in ("content-length", "content-range")]
        if isinstance(wanted, str):  # unsatisfiable
            headers.append(("Content-Range", f"bytes */{length}"))
            return ProxyResponse(status=416, headers=headers, body=b"", cache=label, cache_source=source)
        first, last = wanted
        headers.append(("Content-Range", f"bytes {first}-{last}/{length}"))
        return ProxyResponse(status=206, headers=headers, body=entry.body[first:last + 1], cache=label,
                             cache_source=source)

    @staticmethod
    def _heuristic_header(entry: Entry) -> Headers:
        """``Cache-Control: max-age=<TTL>`` where the gateway's TTL applied and the upstream said nothing."""
        if not entry.heuristic or header_values(entry.headers, "Cache-Control"):
            return []
        ttl = int(entry.lifetime)
        return [("Cache-Control", f"private, max-age={ttl}" if entry.credential_keyed else f"max-age={ttl}")]

    def conditional_headers(self) -> Headers:
        """Validators of the stale entry, so the upstream can answer 304 instead of the whole body."""
        if self.stale is None:
            return []
        found = policy.validators(self.stale.headers)
        ours = {name.lower() for name, _ in found}
        if any(name.lower() in CLIENT_CONDITIONALS and name.lower() not in ours for name, _ in self.call.headers):
            # A client condition we cannot replace would make the upstream's 304 answer it, not us.
            return []
        self.revalidating = bool(found)
        return found

    def on_error(self, error: GatewayError) -> ProxyResponse:
        """Serve the expired entry (``STALE``) when the upstream fails or the circuit is open, if allowed."""
        entry = self.stale
        if entry is not None and isinstance(error, STALE_ON):
            now = self.cache.clock()
            cc = entry.cache_control
            window = policy.stale_if_error_window(cc, self.cache.settings.cache_stale_grace)
            if not policy.stale_forbidden(cc) and entry.age(now) - entry.lifetime <= window:
                return self.answer(entry, "STALE", now, conditional=False)
        raise error

    # -- upstream answers -----------------------------------------------------------------------

    def on_response(self, upstream: UpstreamResponse, done: Done) -> ProxyResponse:
        """Refresh on 304, serve stale on 5xx where allowed, store what may be stored, stream the rest."""
        if upstream.status == 304 and self.revalidating and self.stale is not None:
            return self._revalidated(upstream, done)
        if upstream.status >= 500 and self.stale is not None:
            try:
                stale = self.on_error(BadGateway(service=self.call.service.name))
            except BadGateway:
                pass
            else:
                upstream.discard()  # the error body is not wanted; the breaker still counts the 5xx
                done(True)
                self._release_lead()
                return stale
        reason = policy.not_storable_reason(self.method, self.call.headers, upstream.status, upstream.headers,
                                            self.call.service.cache_ttl, self.cache.clock())
        if reason is not None:
            self._release_lead()
            return super().on_response(upstream, done)
        return self._store(upstream, done)

    def _revalidated(self, upstream: UpstreamResponse, done: Done) -> ProxyResponse:
        """An upstream 304: refresh the stored headers and lifetime, answer the entry as REVALIDATED."""
        upstream.discard()  # a 304 has no body; closing keeps this path simple and never blocks
        done(True)
        now = self.cache.clock()
        entry = self.stale
        assert entry is not None and self.stale_key is not None
        headers = policy.refresh_headers(entry.headers, upstream.headers)
        headers = [(k, v) for k, v in headers if k.lower() != "age"] + \
            [("Age", v) for v in header_values(upstream.headers, "Age")]
        if header_value(upstream.headers, "Date") is None:
            headers = [(k, v) for k, v in headers if k.lower() != "date"] + [("Date", formatdate(now, usegmt=True))]
        lifetime = policy.freshness_lifetime(entry.status, headers, self.call.service.cache_ttl, now)
        entry = dataclasses.replace(entry, headers=headers, request_time=now - upstream.elapsed,
                                    response_time=now, lifetime=lifetime[0] if lifetime else 0.0,
                                    heuristic=lifetime[1] if lifetime else False)
        try:
            self.cache.save(self.call, self.stale_key, entry)
        except StoreUnavailable:
            log.debug("could not store the revalidated entry")
        self._release_lead()
        response = self.answer(entry, "REVALIDATED", now)
        response.upstream_ms = upstream.elapsed * 1000.0
        return response

    def _store(self, upstream: UpstreamResponse, done: Done) -> ProxyResponse:
        """Read the body (up to CACHE_MAX_OBJECT_BYTES) and store it; stream it unstored when larger."""
        limit = self.cache.settings.cache_max_object_bytes
        upstream_ms = upstream.elapsed * 1000.0
        chunks = iter(upstream.chunks)
        parts: list[bytes] = []
        size = 0
        try:
            for chunk in chunks:
                parts.append(chunk)
                size += len(chunk)
                if size > limit:
                    self._release_lead()
                    rest = dataclasses.replace(upstream, chunks=itertools.chain(parts, chunks))
                    return ProxyResponse(status=upstream.status, headers=policy.downstream_headers(upstream.headers),
                                         body=BodyStream(rest, done), cache="BYPASS", upstream_ms=upstream_ms)
        except UpstreamError as error:
            upstream.discard()
            done(False)
            self._release_lead()
            return ProxyResponse(status=upstream.status, headers=policy.downstream_headers(upstream.headers),
                                 body=_aborted(parts, error), cache="BYPASS", upstream_ms=upstream_ms)
        upstream.release()
        done(True)
        now = self.cache.clock()
        stored = list(upstream.headers)
        if header_value(stored, "Date") is None:
            stored.append(("Date", formatdate(now, usegmt=True)))  # RFC 9110 §6.6.1: record when it arrived
        lifetime, heuristic = policy.freshness_lifetime(upstream.status, stored,
                                                        self.call.service.cache_ttl, now) or (0.0, False)
        names = policy.vary_names(upstream.headers)
        entry = Entry(status=upstream.status, headers=stored, body=b"".join(parts),
                      request_time=now - upstream.elapsed, response_time=now, lifetime=lifetime,
                      heuristic=heuristic, credential_keyed=False, vary_names=names,
                      vary_values=policy.vary_values(self.call.headers, names))
        key = self.cache.key_to_store(self.call, entry)
        claimed = policy.content_range(entry.headers) if entry.status == 206 else None
        if entry.status == 206:
            key = partial_key(key)  # partial content never stands in for the whole answer
        lock = (self._lead, self._token) if self._lead is not None and self._token is not None else None
        try:
            # A 206 is kept only when its body is exactly the range it claims.
            saved = (claimed is None or len(entry.body) == claimed[1] - claimed[0] + 1) and \
                self.cache.save(self.call, key, entry, release=lock)
        except StoreUnavailable:
            log.debug("could not store the response")
            saved = False
        if saved:
            self._token = None  # released by the store call itself
        self._release_lead()
        headers = policy.downstream_headers(entry.headers) + self._heuristic_header(entry)
        return ProxyResponse(status=upstream.status, headers=headers, body=entry.body,
                             cache="MISS" if saved else "BYPASS",
                             cache_source=self.cache.store.source if saved else None, upstream_ms=upstream_ms)

    # -- cleanup --------------------------------------------------------------------------------

    def _release_lead(self) -> None:
        if self._token is not None and self._lead is not None:
            token, self._token = self._token, None
            try:
                self.cache.store.release(self._lead, token)
            except StoreUnavailable:
                pass  # the lease runs out by itself
        if self._lead is not None:
            name, self._lead = self._lead, None
            self.cache.leave(name)

    def close(self) -> None:
        """Release the coalescing locks this request holds."""
        self._release_lead()


class InvalidatingExchange(Exchange):
    """A write on a cached route: a non-error answer drops the entries it made stale."""

    def __init__(self, cache, call: ProxyCall) -> None:  # cache: gateway.cache.responses.ResponseCache
        super().__init__(call, "BYPASS")
        self.cache = cache

    def on_response(self, upstream: UpstreamResponse, done: Done) -> ProxyResponse:
        """Invalidate on status < 400, then stream the answer through."""
        if upstream.status < 400:
            try:
                self.cache.invalidate(self.call, upstream.headers)
            except StoreUnavailable:
                log.warning("cache invalidation skipped: store unavailable (path %s)", self.call.path)
        return super().on_response(upstream, done)
