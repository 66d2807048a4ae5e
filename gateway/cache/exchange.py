"""The exchanges of cached routes: a read (GET or HEAD) that may be answered, revalidated or stored, and a write.

``X-Cache`` labels: HIT a fresh entry reused (also by a coalesced waiter, and a 304 answered to a
client's conditional request); MISS fetched and stored; REVALIDATED an upstream 304 refreshed the
entry; STALE an expired entry served on error, under stale-while-revalidate or within a client's
max-stale; BYPASS everything that was not stored (not storable, HEAD misses, oversize or cut-short
bodies, the store unreachable).

An exchange asks its cache (:class:`Cache`, that is ``ResponseCache``) to look up, coalesce, save,
refresh and invalidate, and asks ``policy`` every caching rule; it never reaches into a store.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Iterator
from typing import Protocol

from gateway.cache import answers
from gateway.cache.coalescing import Coalesced, Lead
from gateway.cache.entry import Entry, Found, arrived, revalidated
from gateway.cache.passthrough import BodyStream, Done, Exchange
from gateway.cache.policy import freshness, keys, ranges, storable, validators
from gateway.cache.policy.directives import CacheControl, downstream_headers, request_cache_control
from gateway.clock import Clock
from gateway.config.settings import Settings
from gateway.errors import BadGateway, CircuitOpen, GatewayError, GatewayTimeout, OnlyIfCached, UpstreamError
from gateway.messages import Headers, ProxyCall, ProxyResponse, UpstreamResponse, header_values
from gateway.redis.link import StoreUnavailable

log = logging.getLogger("gateway.cache")

STALE_ON = (CircuitOpen, BadGateway, GatewayTimeout)  # the failures a stored answer may stand in for


class Cache(Protocol):
    """What an exchange asks of the cache it came from (``ResponseCache``); each may raise StoreUnavailable."""

    settings: Settings
    clock: Clock

    @property
    def source(self) -> str:
        """Where entries live, for ``X-Cache-Source``."""
        ...

    def lookup_or_lead(self, call: ProxyCall) -> tuple[Found | None, Lead | None]:
        """``lookup``, and on a miss the lead of the fetch when the same read could take it."""
        ...

    def lookup(self, call: ProxyCall, *, partial: bool = False) -> Found | None:
        """The newest stored whole (or ``partial``) answer that matches ``call``."""
        ...

    def may_hold_parts(self, call: ProxyCall) -> bool:
        """Whether a stored part (206) of ``call``'s service may exist: only then is one looked up for a whole GET."""
        ...

    def coalesce(self, call: ProxyCall, request_cc: CacheControl) -> Coalesced:
        """Lead the fetch for ``call``'s key, or wait for the leader's answer."""
        ...

    def start_refresh(self, call: ProxyCall, found: Found) -> bool:
        """Refresh ``found`` in the background (stale-while-revalidate); False if that cannot be done."""
        ...

    def save(self, call: ProxyCall, entry: Entry, *, lead: Lead | None = None, key: str | None = None) -> bool:
        """Store ``entry`` (under ``key`` when it replaces one); False when it was not stored."""
        ...

    def release(self, lead: Lead | None) -> None:
        """Let go of a lead (never raises)."""
        ...

    def invalidate(self, call: ProxyCall, response_headers: Headers) -> int:
        """Drop what a successful write made stale."""
        ...


def begin_read(call: ProxyCall, cache: Cache, coalesce: bool = True) -> Exchange:
    """A GET or HEAD on a cached route: answered from the cache, ready to go upstream, or BYPASS if the store fails."""
    exchange = ReadExchange(call, cache)
    try:
        exchange.lookup(coalesce)
    except StoreUnavailable as exc:
        log.debug("cache store unavailable, bypassing: %s", exc)
        exchange.close()
        if "only-if-cached" in exchange.request_cc:
            raise OnlyIfCached(service=call.service.name) from None
        return Exchange(call, "BYPASS")
    return exchange


def _aborted(parts: list[bytes], error: UpstreamError) -> Iterator[bytes]:
    """Send what arrived, then fail the body so the client sees a cut-short response, not a whole one."""
    yield from parts
    raise error


class ReadExchange(Exchange):
    """A GET or HEAD on a cached route: reuse, revalidate, store, or serve stale."""

    def __init__(self, call: ProxyCall, cache: Cache) -> None:
        super().__init__(call, "BYPASS")
        self.cache = cache
        self.method = call.method.upper()
        self.request_cc = request_cache_control(call.headers)
        self.stale: Found | None = None  # an entry that needs revalidation; may answer on errors
        self.revalidating = False
        self.part: Found | None = None  # a stored partial answer from byte 0 that may be completed
        self.completing = False  # the upstream was asked for the rest of ``part`` (Range, If-Range)
        self.lead: Lead | None = None  # the fetch this request leads, until its answer is stored

    # -- lookup ---------------------------------------------------------------------------------

    def lookup(self, coalesce: bool = True) -> None:
        """Answer from the cache when allowed; otherwise prepare to go upstream (raises StoreUnavailable)."""
        coalesce = coalesce and keys.coalescable(self.method, self.request_cc) \
            and "only-if-cached" not in self.request_cc
        if coalesce:
            found, self.lead = self.cache.lookup_or_lead(self.call)  # a miss may come back led already
        else:
            found = self.cache.lookup(self.call)
        if found is not None and self._reuse(found):
            return
        if found is None and self.method == "GET" and (self._ranged or self.cache.may_hold_parts(self.call)) \
                and self._from_partial():
            self._release_lead()
            return
        if "only-if-cached" in self.request_cc:
            raise OnlyIfCached(service=self.call.service.name)
        if coalesce and self.lead is None:
            self._coalesce()

    def _reuse(self, found: Found) -> bool:
        """Answer from ``found`` if it may be reused now; else keep it for revalidation and errors."""
        now = self.cache.clock()
        entry = found.entry
        state = entry.reuse(self.request_cc, now)
        if state == "fresh":
            self.response = self._answer(entry, "HIT", now)
            return True
        if state == "stale-ok":
            self.response = self._answer(entry, "STALE", now, conditional=False)
            return True
        if (freshness.serves_while_revalidating(self.request_cc, entry.cache_control, entry.age(now), entry.lifetime)
                and self.cache.start_refresh(self.call, found)):
            self.response = self._answer(entry, "STALE", now, conditional=False)
            return True
        self.stale = found
        return False

    @property
    def _ranged(self) -> bool:
        return self.method == "GET" and bool(header_values(self.call.headers, "Range"))

    def _from_partial(self) -> bool:
        """Answer a single-range GET from a fresh stored 206 that holds every byte asked for; else keep the
        stored 206 (``part``), which the upstream may be asked to complete."""
        if validators.is_conditional(self.call.headers):
            return False  # conditions are left to the service (or a whole stored answer)
        found = self.cache.lookup(self.call, partial=True)
        if found is None:
            return False
        now = self.cache.clock()
        cut = ranges.held_range(self.call.headers, found.entry.headers) if self._ranged else None
        if cut is None or found.entry.reuse(self.request_cc, now) != "fresh":
            self.part = found
            return False
        self.response = answers.from_partial(found.entry, cut, now, self.cache.source)
        return True

    def _coalesce(self) -> None:
        """Lead the fetch, or wait for the leader's answer: a fresh one answers (HIT), another is kept as stale."""
        waited = self.cache.coalesce(self.call, self.request_cc)
        self.lead = waited.lead
        if waited.found is None:
            return
        if waited.fresh:
            self.response = self._answer(waited.found.entry, "HIT", self.cache.clock())
        else:
            self.stale = waited.found

    def _answer(self, entry: Entry, label: str, now: float, *, conditional: bool = True) -> ProxyResponse:
        return answers.answer(self.call, entry, label, now, self.cache.source, conditional=conditional)

    # -- going upstream -------------------------------------------------------------------------

    def conditional_headers(self) -> Headers:
        """Validators of the stale entry, so the upstream can answer 304 instead of the whole body; or the
        range a stored part lacks, so it sends only the rest (RFC 9111 §3.4)."""
        if self.stale is None:
            if self.part is None:
                return []
            wanted = ranges.completion_headers(self.call.headers, self.part.entry.headers,
                                               self.cache.settings.cache_max_object_bytes)
            self.completing = bool(wanted)
            return wanted
        found = validators.revalidation_headers(self.call.headers, self.stale.entry.headers)
        self.revalidating = bool(found)
        return found

    def on_error(self, error: GatewayError) -> ProxyResponse:
        """Serve the expired entry (``STALE``) when the upstream fails or the circuit is open, if allowed."""
        if self.stale is not None and isinstance(error, STALE_ON):
            now = self.cache.clock()
            entry = self.stale.entry
            if freshness.serves_on_error(entry.cache_control, entry.age(now), entry.lifetime,
                                         self.cache.settings.cache_stale_grace):
                return self._answer(entry, "STALE", now, conditional=False)
        raise error

    def on_response(self, upstream: UpstreamResponse, done: Done) -> ProxyResponse:
        """Refresh on 304, serve stale on 5xx where allowed, store what may be stored, stream the rest."""
        if upstream.status == 304 and self.revalidating and self.stale is not None:
            return self._revalidated(upstream, done)
        if upstream.status in (206, 416) and self.completing:
            return self._completed(upstream, done)
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
        reason = storable.not_storable_reason(self.method, self.call.headers, upstream.status, upstream.headers,
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
        assert self.stale is not None
        entry = revalidated(self.stale.entry, upstream.headers, upstream.elapsed, now, self.call.service.cache_ttl)
        try:
            self.cache.save(self.call, entry, key=self.stale.key)
        except StoreUnavailable:
            log.debug("could not store the revalidated entry")
        self._release_lead()
        response = self._answer(entry, "REVALIDATED", now)
        response.upstream_ms = upstream.elapsed * 1000.0
        return response

    def _completed(self, upstream: UpstreamResponse, done: Done) -> ProxyResponse:
        """The upstream's answer to the range that completes the stored part: the whole, stored as a complete
        entry where it may be (RFC 9111 §3.4), or a 502 when it is not the rest of the same representation.

        The client asked for the whole (or a range the part lacks), never for the upstream's part, so an
        answer that does not complete the stored one cannot be passed on.
        """
        assert self.part is not None
        part = self.part.entry
        try:
            rest = upstream.read_all(self.cache.settings.cache_max_object_bytes)
        except UpstreamError:
            upstream.discard()
            done(False)
            self._release_lead()
            raise
        if rest is None or upstream.status != 206 or not ranges.completes(part.headers, upstream.headers, len(rest)):
            if rest is None:
                upstream.discard()
            else:
                upstream.release()
            done(True)  # the service answered; its answer just does not fit the stored part
            self._release_lead()
            raise BadGateway("The service's partial answer does not complete the stored one.",
                             service=self.call.service.name)
        upstream.release()
        done(True)
        now = self.cache.clock()
        headers = ranges.combined_headers(part.headers, upstream.headers)
        entry = arrived(self.call, 200, headers, part.body + rest, upstream.elapsed, now)
        saved = storable.not_storable_reason(self.method, self.call.headers, 200, headers,
                                             self.call.service.cache_ttl, now) is None and self._save(entry)
        self._release_lead()
        response = self._answer(entry, "MISS" if saved else "BYPASS", now, conditional=False)
        if not saved:
            response.cache_source = None
        response.upstream_ms = upstream.elapsed * 1000.0
        return response

    def _save(self, entry: Entry) -> bool:
        """Store a new answer (with the lead's lock); False when it was not stored or the store is down."""
        try:
            return self.cache.save(self.call, entry, lead=self.lead)
        except StoreUnavailable:
            log.debug("could not store the response")
            return False

    def _store(self, upstream: UpstreamResponse, done: Done) -> ProxyResponse:
        """Read the body (up to CACHE_MAX_OBJECT_BYTES) and store it; stream it unstored when larger."""
        read = self._read_body(upstream, done)
        if isinstance(read, ProxyResponse):
            return read
        upstream.release()
        done(True)
        entry = arrived(self.call, upstream.status, upstream.headers, read, upstream.elapsed, self.cache.clock())
        saved = self._save(entry)
        self._release_lead()
        headers = downstream_headers(entry.headers) + answers.gateway_ttl_header(entry)
        return ProxyResponse(status=upstream.status, headers=headers, body=entry.body,
                             cache="MISS" if saved else "BYPASS", cache_source=self.cache.source if saved else None,
                             upstream_ms=upstream.elapsed * 1000.0)

    def _read_body(self, upstream: UpstreamResponse, done: Done) -> bytes | ProxyResponse:
        """The whole body; or, when it is too large or cut short, the unstored (BYPASS) answer that streams it."""
        limit = self.cache.settings.cache_max_object_bytes
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
                    return self._bypass(upstream, BodyStream(rest, done))
        except UpstreamError as error:
            upstream.discard()
            done(False)
            self._release_lead()
            return self._bypass(upstream, _aborted(parts, error))
        return b"".join(parts)

    @staticmethod
    def _bypass(upstream: UpstreamResponse, body: BodyStream | Iterator[bytes]) -> ProxyResponse:
        return ProxyResponse(status=upstream.status, headers=downstream_headers(upstream.headers), body=body,
                             cache="BYPASS", upstream_ms=upstream.elapsed * 1000.0)

    # -- cleanup --------------------------------------------------------------------------------

    def _release_lead(self) -> None:
        lead, self.lead = self.lead, None
        self.cache.release(lead)

    def close(self) -> None:
        """Let go of the fetch this request leads (its coalescing locks)."""
        self._release_lead()


class WriteExchange(Exchange):
    """A write (POST, PUT, PATCH, DELETE) on a cached route: a non-error answer drops the entries it made stale."""

    def __init__(self, call: ProxyCall, cache: Cache) -> None:
        super().__init__(call, "BYPASS")
        self.cache = cache

    def on_response(self, upstream: UpstreamResponse, done: Done) -> ProxyResponse:
        """Invalidate on status < 400, then stream the answer through."""
        if keys.invalidates(upstream.status):
            try:
                self.cache.invalidate(self.call, upstream.headers)
            except StoreUnavailable:
                log.warning("cache invalidation skipped: store unavailable (path %s)", self.call.path)
        return super().on_response(upstream, done)
